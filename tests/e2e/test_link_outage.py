"""What is said while one side of a link is down waits in a bounded queue and arrives
once, in order, when that side is back; what does not fit is reported to its sender,
once per outage rather than once per message.

The bounds are small here (``PASSERELLE_LINK_IRC_QUEUE_SIZE``: lines kept per IRC
connection while it reconnects, 100 by default; ``PASSERELLE_LINK_QUEUE_MAX``: items
waiting in each direction of a link, 1000 by default) so that a few lines overflow them.
"""

from __future__ import annotations

import pytest

from gateway.localservers import NgIrcd, Prosody
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    StartLink,
    alice_linked,
    channel_texts,
    irc_down,
    irc_up,
    link_prosody_fixture,
    linked_room,
    own_ngircd_fixture,
    people_fixture,
    private_notices,
    quiet,
    start_link_fixture,
    xmpp_down,
    xmpp_up,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

BOUND = 5


async def too_much_while_irc_is_down(
    server: NgIrcd, gateway: PasserelleProcess, alice: Client, room: str, said: list[str]
) -> tuple[int, str]:
    """The IRC server goes away and alice says `said` (more than the bound) in `room`:
    she is told once, privately, by the room's listener. Returns (the link's log position
    before, the notice)."""
    mark = await irc_down(server, gateway)
    for text in said:
        alice.send_groupchat(room, text)
    notices = await private_notices(alice, room, timeout=8)
    assert len(notices) == 1, notices
    return mark, notices[0]


async def test_irc_down_lines_wait_up_to_the_bound_and_the_sender_is_told_once(
    own_ngircd: NgIrcd,
    people: XmppPeople,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PASSERELLE_LINK_IRC_QUEUE_SIZE", str(BOUND))
    room, channel, alice, gateway, first = await alice_linked(
        "outage1", own_ngircd, people, start_link
    )
    assert first == ("alice[x]", "before")

    # The IRC server goes away; alice says more than her IRC connection keeps for it.
    said = [f"while IRC is down {i}" for i in range(1, BOUND + 4)]
    mark, notice = await too_much_while_irc_is_down(own_ngircd, gateway, alice, room, said)
    assert notice.startswith("Not relayed to IRC: not connected to IRC server '127.0.0.1'")
    assert "this is the only notice" in notice
    dave = await irc_up(own_ngircd, gateway, mark, "doutage1", channel)
    try:
        # The lines that fit arrive once, in order; the others never do.
        assert await channel_texts(dave, channel, BOUND, timeout=30) == [
            ("alice[x]", text) for text in said[:BOUND]
        ]
        await quiet(3)
        with pytest.raises(AssertionError):
            await channel_texts(dave, channel, 1, timeout=0.2)
        # Back to normal: her next line goes through.
        alice.send_groupchat(room, "is it back?")
        assert await channel_texts(dave, channel, 1) == [("alice[x]", "is it back?")]
    finally:
        await dave.close()

    # Down again: she is told again (once), since a line of hers went through meanwhile.
    said = [f"second outage {i}" for i in range(BOUND + 2)]
    mark, _notice = await too_much_while_irc_is_down(own_ngircd, gateway, alice, room, said)
    # She leaves the room before IRC is back: what waits for it is not lost with her
    # connection, which closes only once it has said it.
    alice.leave_muc(room, "alice")
    dave = await irc_up(own_ngircd, gateway, mark, "doutage1", channel)
    try:
        assert await channel_texts(dave, channel, BOUND, timeout=30) == [
            ("alice[x]", text) for text in said[:BOUND]
        ]
        await dave.expect(r"^:alice\[x\]!\S+ QUIT :.*left the room", timeout=60)
    finally:
        await dave.close()


async def test_irc_down_the_relay_bot_keeps_the_bound_too(
    own_ngircd: NgIrcd,
    people: XmppPeople,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In relay-bot mode the lines wait in the relay's connection: same bound, same
    single notice."""
    monkeypatch.setenv("PASSERELLE_LINK_IRC_QUEUE_SIZE", str(BOUND))
    room, channel, alice, gateway, first = await alice_linked(
        "outage3", own_ngircd, people, start_link, double_puppet=False
    )
    assert first == ("passerelle", "<alice> before")

    said = [f"relayed later {i}" for i in range(1, BOUND + 4)]
    mark, notice = await too_much_while_irc_is_down(own_ngircd, gateway, alice, room, said)
    assert "this is the only notice" in notice
    dave = await irc_up(own_ngircd, gateway, mark, "doutage3", channel)
    try:
        assert await channel_texts(dave, channel, BOUND, timeout=30) == [
            ("passerelle", f"<alice> {text}") for text in said[:BOUND]
        ]
        alice.send_groupchat(room, "is it back?")
        assert await channel_texts(dave, channel, 1) == [("passerelle", "<alice> is it back?")]
        await quiet()
        with pytest.raises(AssertionError):
            await channel_texts(dave, channel, 1, timeout=0.2)
    finally:
        await dave.close()


async def test_xmpp_down_lines_wait_up_to_the_bound_and_the_sender_is_told_once(
    link_prosody: Prosody,
    ngircd: NgIrcd,
    people: XmppPeople,
    irc_people: People,
    start_link: StartLink,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Last in this module: it restarts the module's Prosody."""
    monkeypatch.setenv("PASSERELLE_LINK_QUEUE_MAX", str(BOUND))
    alice, dave = await people("alice"), await irc_people("odave2")
    room, channel, gateway = await linked_room("outage2", ngircd.port, alice, dave, start_link)
    dave.say(channel, "before")
    assert (await alice.next_groupchat_text(room))["body"] == "before"

    # The XMPP server goes away; dave says more than the link keeps for the room.
    mark = await xmpp_down(link_prosody, gateway)
    said = [f"while XMPP is down {i}" for i in range(1, BOUND + 5)]
    for text in said:
        dave.say(channel, text)
    # He is told once, by a NOTICE from the relay.
    notice = await dave.expect(r"^:passerelle!\S+ NOTICE odave2 :(.*)$", timeout=20)
    assert notice.group(1).startswith(f"Not relayed to {room}: it is unreachable")
    assert "this is the only notice" in notice.group(1)
    with pytest.raises(AssertionError):
        await dave.expect(r"^:passerelle!\S+ NOTICE odave2 ", timeout=3)

    alice = await xmpp_up(link_prosody, gateway, mark, room, channel, alice)
    try:
        await alice.join_muc(room, "alice", history=20)
        # What the link kept is in the room once, in order: the first `BOUND` lines,
        # and the one it held when the room went away if it had taken one by then.
        # Nothing said after the notice is, as the notice said.
        got: list[str] = []
        while len(got) < BOUND:
            msg = await alice.next_groupchat_text(room, timeout=30)
            if msg["body"] != "before":
                assert msg["from"].resource == "odave2"
                got.append(msg["body"])
        dave.say(channel, "and now")
        got.append((await alice.next_groupchat_text(room))["body"])
        if got[-1] != "and now":
            got.append((await alice.next_groupchat_text(room))["body"])
        assert got in ([*said[:BOUND], "and now"], [*said[: BOUND + 1], "and now"]), got
        alice.send_groupchat(room, "welcome back")
        assert await channel_texts(dave, channel, 1) == [("alice[x]", "welcome back")]
    finally:
        await alice.stop()
