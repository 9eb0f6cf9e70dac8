"""The Matrix gateway's inbox (legacy_plugins/matrix/inbox.py) on a real slixmpp component
stream, fed stanzas as its XML parser would (no socket): a sender's burst is held to a few
live message stanzas, then handled whole and in order; other senders and IQ gets pass."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Callable
from xml.etree import ElementTree as ET

from slixmpp import ComponentXMPP, Message, Presence

from legacy_plugins.matrix.inbox import Inbox

NS = "jabber:component:accept"


def _feed(xmpp: ComponentXMPP, xml: str) -> None:
    xmpp._spawn_event(ET.fromstring(xml))


def _message(sender: str, body: str) -> str:
    return (
        f"<message xmlns='{NS}' from='{sender}/res' to='room@gw.localhost' type='groupchat'>"
        f"<body>{body}</body><active xmlns='http://jabber.org/protocol/chatstates'/></message>"
    )


async def _until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll: what is checked (slixmpp's handler tasks) has no event to wait on."""
    async with asyncio.timeout(timeout):
        while not check():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


def _component(
    kept: list[Message] | None = None,
) -> tuple[ComponentXMPP, list[str], asyncio.Event]:
    """A component stream whose message handler waits for `gate` (or keeps each stanza
    in `kept` for good, if given)."""
    xmpp = ComponentXMPP("gw.localhost", "secret", "127.0.0.1", 5347)  # type: ignore[no-untyped-call]
    seen: list[str] = []
    gate = asyncio.Event()

    async def on_message(msg: Message) -> None:
        if kept is not None:
            kept.append(msg)
            return
        seen.append(f"{msg['from'].bare} {msg['body']}")
        await gate.wait()

    async def on_presence(pres: Presence) -> None:  # async, as slidge's handlers are
        seen.append(f"{pres['from'].bare} presence {pres['status']}")

    xmpp.add_event_handler("message", on_message)
    xmpp.add_event_handler("presence_available", on_presence)
    return xmpp, seen, gate


async def test_a_burst_waits_as_text_and_is_handled_whole_and_in_order() -> None:
    xmpp, seen, gate = _component()
    inbox = Inbox(xmpp, live=3)
    inbox.install()
    for n in range(10):
        _feed(xmpp, _message("alice@localhost", f"a{n}"))
    _feed(
        xmpp,
        f"<presence xmlns='{NS}' from='alice@localhost/res' to='room@gw.localhost/alice'>"
        "<status>after a9</status></presence>",
    )
    for n in range(10, 20):
        _feed(xmpp, _message("alice@localhost", f"a{n}"))
    _feed(xmpp, _message("bob@localhost", "b0"))
    await _until(lambda: len(seen) == 4)
    await asyncio.sleep(0.05)
    # Three of alice's messages are live, the rest wait; bob is not held up by her.
    assert seen == [
        "alice@localhost a0",
        "alice@localhost a1",
        "alice@localhost a2",
        "bob@localhost b0",
    ]
    assert inbox.held() == 18  # 17 messages and the presence

    gate.set()
    await _until(lambda: len(seen) == 22)
    alice = [s for s in seen if s.startswith("alice")]
    assert alice == (
        [f"alice@localhost a{n}" for n in range(10)]
        + ["alice@localhost presence after a9"]
        + [f"alice@localhost a{n}" for n in range(10, 20)]
    )
    await _until(lambda: not inbox.senders)
    assert inbox.held() == 0


async def test_an_iq_get_passes_a_waiting_burst() -> None:
    xmpp, seen, _gate = _component()
    inbox = Inbox(xmpp, live=1)
    inbox.install()
    answered: list[str] = []
    xmpp.add_event_handler("ping", lambda iq: answered.append(iq["id"]))
    xmpp.register_plugin("xep_0199")
    for n in range(3):
        _feed(xmpp, _message("alice@localhost", f"a{n}"))
    _feed(
        xmpp,
        f"<iq xmlns='{NS}' type='get' id='p1' from='alice@localhost/res' to='gw.localhost'>"
        "<ping xmlns='urn:xmpp:ping'/></iq>",
    )
    await _until(lambda: bool(seen))
    assert inbox.held() == 2  # the two messages behind a0; the ping went through
    # Leave no task waiting behind.
    _gate.set()
    await _until(lambda: not inbox.senders)
    assert len(seen) == 3


async def test_a_stanza_kept_alive_delays_the_burst_but_never_stops_it() -> None:
    kept: list[Message] = []
    xmpp, seen, _gate = _component(kept)
    inbox = Inbox(xmpp, live=1, watch=0.05)
    inbox.install()
    for n in range(4):
        _feed(xmpp, _message("alice@localhost", f"a{n}"))
    await _until(lambda: len(kept) == 4)
    assert [m["body"] for m in kept] == ["a0", "a1", "a2", "a3"]
    assert inbox.held() == 0
    kept.clear()
    gc.collect()
    await _until(lambda: not inbox.senders)
    assert seen == []
