"""Private messages across a link: an IRC user writing to an XMPP person's nick
(``alice[x]``) reaches alice as a private message in the room from the IRC user's
occupant, and her answer to that occupant reaches the IRC user from ``alice[x]``. The
relay bot and the listener, which are nobody, say so instead of swallowing messages."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp import Message

from gateway.localservers import NgIrcd
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    WAIT,
    StartLink,
    channel_texts,
    link_prosody_fixture,
    linked_room,
    people_fixture,
    start_link_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

MUC_USER = "{http://jabber.org/protocol/muc#user}x"


async def next_private(client: Client, room: str) -> Message:
    """The next private message through `room` (groupchat messages are skipped)."""
    async with asyncio.timeout(WAIT):
        while True:
            msg = await client.messages.get()
            if msg["from"].bare == room and msg["type"] == "chat" and msg["body"]:
                return msg


async def test_private_messages_both_ways(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    alice, dave = await people("alice"), await irc_people("pdave1")
    room, channel, _ = await linked_room("private1", ngircd.port, alice, dave, start_link)
    alice.send_groupchat(room, "hi all")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "hi all")]

    # dave writes to alice's nick on IRC: alice gets it privately, from dave's occupant.
    dave.say("alice[x]", "psst, alice")
    got = await next_private(alice, room)
    assert (got["from"].resource, got["body"]) == ("pdave1", "psst, alice")
    assert got.xml.find(MUC_USER) is not None
    dave.say("alice[x]", "\x01ACTION whispers\x01")
    got = await next_private(alice, room)
    assert got["body"] == "/me whispers"

    # alice answers dave's occupant privately: dave gets it from alice[x], not the channel.
    alice.send_chat(f"{room}/pdave1", "hello dave, just you")
    assert await dave.heard("alice[x]", "pdave1") == "hello dave, just you"

    # The relay bot reads no private message, and says so (once).
    dave.say("passerelle", "who are you?")
    await dave.expect(r"^(?:@\S+ )?:passerelle!\S+ NOTICE pdave1 :.*not read")
    # The listener neither.
    alice.send_chat(f"{room}/#private1", "hello listener")
    got = await next_private(alice, room)
    assert got["from"].resource == "#private1" and "not relayed" in got["body"]

    # Nothing private leaked into the room or the channel.
    await asyncio.sleep(1.5)
    assert not any(
        "psst" in line or "just you" in line for line in dave.lines if f" {channel} " in line
    )
    with pytest.raises(TimeoutError):
        await alice.next_groupchat_text(room, timeout=0.2)
