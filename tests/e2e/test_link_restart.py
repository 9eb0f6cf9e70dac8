"""A link survives its own death, the IRC server's restart and the XMPP server's restart:
each time both sides are joined again by themselves, and nothing is said twice."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from gateway.localservers import NgIrcd, Prosody
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
    linked,
    linked_room,
    own_ngircd_fixture,
    people_fixture,
    start_link_fixture,
    three_and_three,
    xmpp_down,
    xmpp_up,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_killed_link_comes_back_and_nothing_is_said_twice(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    talk = await three_and_three(1, ngircd, people, irc_people, start_link, name="restart")
    await talk.turn("alice1", "before the crash")
    await talk.turn("dave1", "me too")
    await talk.turn("bob1", "and me")

    # The link's process dies mid-conversation; the supervisor starts it again.
    mark = len(talk.gateway.lines)
    os.kill(talk.gateway.child_pid("link"), signal.SIGKILL)
    await talk.gateway.wait_for(linked(talk.room, talk.channel), after=mark, timeout=60)

    # Everyone goes on talking under the same names; every line is seen once.
    for speaker, text in [
        ("alice1", "after the crash"),
        ("erin1", "welcome back"),
        ("bob1", "did we lose anything?"),
        ("dave1", "no"),
        ("carol1", "/me checks"),
        ("frank1", "all fine"),
    ]:
        await talk.turn(speaker, text)
    await talk.nothing_more()
    # No second occupant appeared for anyone.
    assert not any("[irc]" in line for line in talk.gateway.lines[mark:] if "joined" in line)


async def test_irc_server_restart_puppets_reconnect(
    own_ngircd: NgIrcd, people: XmppPeople, start_link: StartLink
) -> None:
    room, channel, alice, gateway, first = await alice_linked(
        "restart2", own_ngircd, people, start_link
    )
    assert first == ("alice[x]", "before")

    # The IRC server goes away; what alice says meanwhile waits for it.
    mark = await irc_down(own_ngircd, gateway)
    alice.send_groupchat(room, "said while IRC was down")
    assert (await alice.link_room_texts(room, 2))[-1] == ("alice", "said while IRC was down")
    dave = await irc_up(own_ngircd, gateway, mark, "rdave2", channel)
    try:
        # alice's own IRC connection came back and said it, once.
        assert await channel_texts(dave, channel, 1, timeout=30) == [
            ("alice[x]", "said while IRC was down")
        ]
        # The relay, which reads the channel for the link, is back in it too.
        await dave.expect(
            r"^:passerelle!\S+ JOIN :?#restart2|^:\S+ 353 rdave2 . #restart2 :.*passerelle",
            timeout=30,
        )
        dave.say(channel, "welcome back")
        assert (await alice.link_room_texts(room, 1))[0] == ("rdave2", "welcome back")
        alice.send_groupchat(room, "thanks")
        assert await channel_texts(dave, channel, 1) == [("alice[x]", "thanks")]
        await asyncio.sleep(1.5)
        with pytest.raises(AssertionError):
            await channel_texts(dave, channel, 1, timeout=0.2)
    finally:
        await dave.close()


async def test_xmpp_server_restart_link_rejoins_and_delivers_once(
    link_prosody: Prosody,
    ngircd: NgIrcd,
    people: XmppPeople,
    irc_people: People,
    start_link: StartLink,
) -> None:
    """Last in this module: it restarts the module's Prosody."""
    alice, dave = await people("alice"), await irc_people("rdave3")
    room, channel, gateway = await linked_room("restart3", ngircd.port, alice, dave, start_link)
    alice.send_groupchat(room, "before")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "before")]

    mark = await xmpp_down(link_prosody, gateway)
    dave.say(channel, "said while XMPP was down")
    # alice logs in again; the line dave said meanwhile is in the room once.
    alice = await xmpp_up(link_prosody, gateway, mark, room, channel, alice)
    try:
        await alice.join_muc(room, "alice", history=10)
        got = await alice.next_groupchat_text(room, "said while XMPP was down")
        assert got["from"].resource == "rdave3"
        dave.say(channel, "and now")
        assert (await alice.next_groupchat_text(room))["body"] == "and now"
        alice.send_groupchat(room, "back again")
        assert await channel_texts(dave, channel, 1) == [("alice[x]", "back again")]
        await asyncio.sleep(1.5)
        while not alice.messages.empty():
            assert alice.messages.get_nowait()["body"] != "said while XMPP was down"
    finally:
        await alice.stop()
