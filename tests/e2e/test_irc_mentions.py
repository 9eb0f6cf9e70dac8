"""Mentions (XEP-0372) between IRC and XMPP, against a real ngIRCd and Prosody.

On IRC a mention is the nick in the text. A channel line that names the XMPP user or
other people of the channel reaches her client with a `<reference type='mention'>` per
nick (begin/end in code points of the body, uri `xmpp:ROOM/NICK`), also in the room's
archive. The other way, a mention her client marks — over a display name, say — reaches
IRC as the person's nick.
"""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    NewClient,
    People,
    in_channel,
    irc_gateway_fixture,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
)
from tests.e2e.xmpp_client import mention_references

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


def uri(channel: str, nick: str) -> str:
    """RFC 5122 by hand: '#' and '%' of the room's local part are %-encoded."""
    return f"xmpp:%23{channel.removeprefix('#')}%25127.0.0.1@irc.localhost/{nick}"


async def test_channel_lines_carry_mentions_of_the_user_and_of_other_people(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob41")
    carol = await irc_people("Carol41")
    await bob.join("#mention1")
    await carol.join("#mention1")
    room1 = room("#mention1")
    await alice.join_muc(room1, nick)

    # IRC style: "nick:" first, and a nick inside the text, in another case (RFC 1459
    # case mapping); an emoji first, so code points and UTF-16 units differ.
    line = f"💬 {nick.upper()}: ask carol41, not carol41x"
    bob.say("#mention1", line)
    msg = await alice.next_groupchat(room1, "bob41")
    assert msg["body"] == line
    start = line.index(nick.upper())
    carol_at = line.index("carol41,")
    assert mention_references(msg) == [
        (start, start + len(nick), uri("#mention1", nick)),
        (carol_at, carol_at + len("carol41"), uri("#mention1", "Carol41")),
    ]

    # A line without nicks has no reference; the archive keeps the mentions.
    bob.say("#mention1", "nobody named here")
    assert mention_references(await alice.next_groupchat(room1, "bob41")) == []
    archived = [m for m in await alice.archive(room1) if m["body"] == line]
    assert len(archived) == 1
    assert mention_references(archived[0]) == mention_references(msg)


async def test_a_mention_marked_by_the_client_reaches_irc_as_the_nick(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room2 = await in_channel(new_client, irc_people, "bob42", "#mention2")

    # Her client shows bob42 as "Bobby Tables" and marks that span as his mention: the
    # channel reads his nick. One URI %-encoded (RFC 5122), one raw, as clients differ.
    body = "Bobby Tables: lunch? Bobby Tables?"
    alice.send_groupchat_mentioning(
        room2,
        body,
        [(0, 12, uri("#mention2", "bob42")), (21, 33, f"xmpp:{room2}/bob42")],
    )
    assert await bob.heard(nick, "#mention2") == "bob42: lunch? bob42?"

    # Without references the text goes as it is.
    alice.send_groupchat(room2, "Bobby Tables, again")
    assert await bob.heard(nick, "#mention2") == "Bobby Tables, again"
