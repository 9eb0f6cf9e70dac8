"""Attachments from the room reach IRC as their URL: what Conversations and Gajim send
after an HTTP upload (XEP-0066 OOB, the body being the URL, some text, or nothing),
also in a reply and in a /me."""

from __future__ import annotations

import pytest

from gateway.localservers import NgIrcd
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    StartLink,
    channel_texts,
    link_prosody_fixture,
    people_fixture,
    send_attachment,
    start_link_fixture,
    three_and_three,
)
from tests.e2e.xmpp_client import child

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

UPLOAD = "https://upload.example.org/f3a9"


async def test_attachments_reach_irc_as_their_url(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    talk = await three_and_three(1, ngircd, people, irc_people, start_link, name="files")
    alice, bob, carol = talk.xmpp.values()

    async def everyone_on_irc_sees(nick: str, text: str) -> None:
        for person in talk.irc.values():
            assert await channel_texts(person, talk.channel, 1) == [(nick, text)]
        for client in talk.xmpp.values():  # the room has it too (read, in order)
            await client.next_groupchat_text(talk.room)

    # Conversations: the body is the URL, once on IRC.
    send_attachment(alice, talk.room, f"{UPLOAD}/cat.jpg", f"{UPLOAD}/cat.jpg")
    await everyone_on_irc_sees("alice1[x]", f"{UPLOAD}/cat.jpg")
    # Some text with the attachment: the URL follows the text.
    send_attachment(bob, talk.room, "the slides", f"{UPLOAD}/slides.pdf")
    await everyone_on_irc_sees("bob1[x]", f"the slides {UPLOAD}/slides.pdf")
    # Text that already holds the URL: it is not said twice.
    send_attachment(carol, talk.room, f"map: {UPLOAD}/map.png", f"{UPLOAD}/map.png")
    await everyone_on_irc_sees("carol1[x]", f"map: {UPLOAD}/map.png")
    # No body at all: the URL alone. (No XMPP occupant reads a bodyless message.)
    send_attachment(alice, talk.room, "", f"{UPLOAD}/song.ogg")
    for person in talk.irc.values():
        assert await channel_texts(person, talk.channel, 1) == [("alice1[x]", f"{UPLOAD}/song.ogg")]

    # A reply with an attachment names the person, quotes them, then the URL.
    talk.say("dave1", "any photo of the venue?")
    for nick in ("erin1", "frank1"):
        assert await channel_texts(talk.irc[nick], talk.channel, 1) == [
            ("dave1", "any photo of the venue?")
        ]
    for client in talk.xmpp.values():
        question = await client.next_groupchat_text(talk.room, "any photo of the venue?")
    stanza_id = child(question, "{urn:xmpp:sid:0}stanza-id").get("id")
    assert stanza_id
    send_attachment(
        carol, talk.room, f"{UPLOAD}/venue.jpg", f"{UPLOAD}/venue.jpg",
        reply=(stanza_id, f"{talk.room}/dave1"),
    )  # fmt: skip
    await everyone_on_irc_sees("carol1[x]", f"dave1: «any photo of the venue?» {UPLOAD}/venue.jpg")
    # A /me with an attachment is an ACTION ending with the URL.
    send_attachment(bob, talk.room, "/me uploads the minutes", f"{UPLOAD}/minutes.txt")
    await everyone_on_irc_sees(
        "bob1[x]", f"\x01ACTION uploads the minutes {UPLOAD}/minutes.txt\x01"
    )
    await talk.nothing_more()
