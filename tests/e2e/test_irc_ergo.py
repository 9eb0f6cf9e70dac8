"""IRCv3 `chathistory` back-fill against a real Ergo (`gateway.localservers.Ergo`).

Ergo is the one server here that offers `draft/chathistory`: when the gateway joins a
channel for the user it asks for what was said before (`CHATHISTORY LATEST`), all of it
the first time, and after a gap (the gateway was down, the connection dropped) only
what came after the room archive's last message. What arrives is shown with its
original time, archived once, never twice across a rejoin, and Ergo's summaries of
joins and parts (lines from `HistServ`, sent to clients without `draft/event-playback`)
are not shown as somebody's messages.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest

from gateway.localservers import Ergo, Prosody
from tests.e2e.conftest import PASSWORD, PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, start_with_irc
from tests.e2e.test_irc_bouncer import delay_of
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


@pytest.fixture(scope="module", name="ergo")
def ergo_fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ergo]:
    with Ergo(tmp_path_factory.mktemp("ergo")) as server:
        yield server


def sent_lines(gateway: PasserelleProcess, command: str) -> list[str]:
    """The IRC lines the gateway sent starting with `command` (logged at DEBUG)."""
    return [
        line.split(" >> ", 1)[1]
        for line in gateway.lines
        if ".irc.client." in line and f" >> {command}" in line
    ]


async def archive_until(client: Client, room_jid: str, body: str) -> list[tuple[str, str]]:
    """(nick, body) of the room archive, once it holds `body` (read again for up to 30 s)."""
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        bodies = [(m["from"].resource, m["body"]) for m in await client.archive(room_jid)]
        if any(text == body for _, text in bodies) or asyncio.get_running_loop().time() > deadline:
            return bodies
        await asyncio.sleep(0.2)


async def test_a_first_join_brings_what_was_said_before_once_with_its_time(
    ergo: Ergo, start_passerelle: Callable[..., PasserelleProcess], new_client: NewClient
) -> None:
    gateway = await start_with_irc(start_passerelle, ergo.port, extra='log_level = "DEBUG"')
    bob = await IrcPerson.connect(ergo.port, "bob61")
    carol = await IrcPerson.connect(ergo.port, "carol61")
    try:
        await bob.join("#story61")
        await carol.join("#story61")
        before = datetime.now(UTC)
        bob.say("#story61", "first")
        bob.say("#story61", "\x01ACTION waves\x01")
        carol.send("PART #story61 :gone")  # (Ergo keeps the part as a HistServ line)
        await bob.expect(r"^:carol61!\S+ PART #story61")
        bob.say("#story61", "third")

        alice, nick = await registered(new_client, "alice")
        room61 = room("#story61")
        joined = datetime.now(UTC)
        assert (await alice.join_muc(room61, nick))["type"] != "error"
        got = [await alice.next_groupchat_text(room61) for _ in range(3)]
        assert [(m["from"].resource, m["body"]) for m in got] == [
            ("bob61", "first"),
            ("bob61", "/me waves"),
            ("bob61", "third"),
        ]
        for msg in got:  # the server's time, not the time it reached her
            assert before.replace(microsecond=0) <= delay_of(msg) < joined, msg
        bob.say("#story61", "live")
        assert (await alice.next_groupchat_text(room61))["body"] == "live"

        bodies = [(m["from"].resource, m["body"]) for m in await alice.archive(room61)]
        assert bodies == [
            ("bob61", "first"),
            ("bob61", "/me waves"),
            ("bob61", "third"),
            ("bob61", "live"),
        ]
        [request] = sent_lines(gateway, "CHATHISTORY")
        assert request == "CHATHISTORY LATEST #story61 * 100", request
    finally:
        await bob.close()
        await carol.close()


async def test_after_a_gateway_restart_only_what_was_missed_is_added(
    ergo: Ergo,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    prosody: Prosody,
) -> None:
    gateway = await start_with_irc(start_passerelle, ergo.port, extra='log_level = "DEBUG"')
    bob = await IrcPerson.connect(ergo.port, "bob62")
    again: PasserelleProcess | None = None
    try:
        await bob.join("#story62")
        alice, nick = await registered(new_client, "alice")
        room62 = room("#story62")
        assert (await alice.join_muc(room62, nick))["type"] != "error"
        result = await alice.run_command(room62, "configure", persistent="true")
        assert result["command"]["status"] == "completed"
        bob.say("#story62", "before")
        assert (await alice.next_groupchat_text(room62))["body"] == "before"
        alice.send_groupchat(room62, "hers, before")
        assert await bob.heard(nick, "#story62") == "hers, before"
        await alice.stop()

        # The gateway goes down; on IRC the talk goes on without her.
        gateway.stop()
        await bob.expect(rf"^:{nick}!\S+ QUIT")
        bob.say("#story62", "while away 1")
        bob.say("#story62", "while away 2")

        again = PasserelleProcess(gateway.config)
        await again.wait_for(r"^irc \| .*Slidge has successfully started")
        await bob.expect(rf"^:{nick}!\S+ JOIN :?#story62", timeout=30)  # persistent
        bob.say("#story62", "after")

        phone = Client(f"{alice.boundjid.bare}/phone", PASSWORD)
        await phone.start(prosody.c2s_port)
        try:
            assert (await phone.join_muc(room62, nick))["type"] != "error"
            bob.say("#story62", "to her phone")
            # (the back-filled lines may reach her first, as delayed messages)
            await phone.next_groupchat_text(room62, "to her phone")
            # The back-fill is asked once the gateway has the member list, and may reach
            # Ergo after bob's last lines: wait (bounded) until the archive has it.
            bodies = await archive_until(phone, room62, "while away 2")
        finally:
            await phone.stop()
        assert bodies == [
            ("bob62", "before"),
            (nick, "hers, before"),
            ("bob62", "while away 1"),
            ("bob62", "while away 2"),
            ("bob62", "after"),
            ("bob62", "to her phone"),
        ]
        # Asked from (a little before) the archive's last message, not for everything.
        [request] = sent_lines(again, "CHATHISTORY")
        assert request.startswith("CHATHISTORY LATEST #story62 timestamp="), request
    finally:
        await bob.close()
        if again is not None:
            again.stop()
