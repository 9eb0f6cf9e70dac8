"""Stories of an IRC channel linked to an existing room on the XMPP server (issue 4).

People on both sides talk in one conversation: each IRC user who speaks is an occupant
of the room under their own nick and JID, each XMPP occupant who speaks is on IRC under
their own nick (``{nick}[x]``). Everyone sees every line once, in the same order.
Real Prosody (its MUC service) and real ngIRCd; each story has its own room and channel.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from slixmpp import JID

from gateway.localservers import NgIrcd, Prosody
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    LINK_JID,
    LINK_SECRET,
    StartLink,
    channel_texts,
    link_config,
    link_prosody_fixture,
    link_toml,
    linked,
    people_fixture,
    quiet,
    room_jid,
    start_link_fixture,
    start_linked,
    three_and_three,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.xmpp_client import child, muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


async def test_three_and_three_hold_a_conversation(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    talk = await three_and_three(1, ngircd, people, irc_people, start_link)
    script = [
        ("alice1", "hello everyone"),
        ("dave1", "hi alice"),
        ("bob1", "hi dave, bob here"),
        ("erin1", "erin on IRC"),
        ("carol1", "/me waves"),
        ("frank1", "\x01ACTION waves back\x01"),
        ("alice1", "so we are six"),
        ("dave1", "and each of us has a name"),
    ]
    for speaker, text in script:
        await talk.turn(speaker, text)

    # Each IRC person is an occupant of their own, with their own JID on the link
    # component (alice, the room's owner, sees real JIDs).
    alice = talk.xmpp["alice1"]
    for nick in ("dave1", "erin1", "frank1"):
        _, item = muc_status(await alice.next_occupant(talk.room, nick))
        assert item["jid"].startswith(f"{nick}%127.0.0.1@{LINK_JID}/"), item

    # Bursts: lines from three people on one side arrive on the other in the order
    # that side's own people saw them.
    for round_ in range(2):
        for nick in ("alice1", "bob1", "carol1"):
            talk.say(nick, f"burst {round_} from {nick}")
    in_room = await alice.link_room_texts(talk.room, 6)
    for client in (talk.xmpp["bob1"], talk.xmpp["carol1"]):
        assert await client.link_room_texts(talk.room, 6) == in_room
    for person in talk.irc.values():
        assert await channel_texts(person, talk.channel, 6) == [
            talk.seen_on_irc(nick, text) for nick, text in in_room
        ]

    for round_ in range(2):
        for nick in ("dave1", "erin1", "frank1"):
            talk.say(nick, f"burst {round_} from {nick}")
    in_room = await alice.link_room_texts(talk.room, 6)
    for client in (talk.xmpp["bob1"], talk.xmpp["carol1"]):
        assert await client.link_room_texts(talk.room, 6) == in_room
    for nick, person in talk.irc.items():
        assert await channel_texts(person, talk.channel, 4) == [
            line for line in in_room if line[0] != nick
        ]
    await talk.nothing_more()


async def test_nick_changes_and_line_breaks_both_ways(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    talk = await three_and_three(2, ngircd, people, irc_people, start_link)
    await talk.turn("bob2", "bob speaks first")
    await talk.turn("erin2", "erin too")

    # bob renames himself in the room: his IRC nick follows.
    bob, dave = talk.xmpp["bob2"], talk.irc["dave2"]
    bob.change_muc_nick(talk.room, "robert2")
    await dave.expect(r"^:bob2\[x\]!\S+ NICK :?robert2\[x\]")
    del talk.xmpp["bob2"]
    talk.xmpp["robert2"] = bob
    await talk.turn("robert2", "robert now")

    # erin renames herself on IRC: her occupant follows (status 303).
    alice = talk.xmpp["alice2"]
    erin = talk.irc.pop("erin2")
    erin.change_nick("erina2")
    gone = await alice.next_occupant(talk.room, "erin2", "unavailable")
    codes, item = muc_status(gone)
    assert 303 in codes and item["nick"] == "erina2"
    talk.irc["erina2"] = erin
    await talk.turn("erina2", "erina now")

    # A multi-line XMPP message is several IRC lines, never a smuggled command.
    alice.send_groupchat(talk.room, "line one\r\nQUIT :gotcha\nline three")
    assert await channel_texts(dave, talk.channel, 3) == [
        ("alice2[x]", "line one"),
        ("alice2[x]", "QUIT :gotcha"),
        ("alice2[x]", "line three"),
    ]
    assert not dave.saw(r"^:alice2\[x\]!\S+ QUIT")
    for client in talk.xmpp.values():
        assert (await client.link_room_texts(talk.room, 1))[0][0] == "alice2"
    for nick in ("erina2", "frank2"):
        await channel_texts(talk.irc[nick], talk.channel, 3)
    await talk.nothing_more()


async def test_an_xmpp_nick_taken_on_irc_and_in_the_room(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    """An IRC user whose nick an XMPP occupant holds gets a suffix (409 conflict)."""
    talk = await three_and_three(3, ngircd, people, irc_people, start_link)
    twin = await irc_people("alice3")
    await twin.join(talk.channel)
    twin.say(talk.channel, "I am the other alice")
    for client in talk.xmpp.values():
        assert await client.link_room_texts(talk.room, 1) == [
            ("alice3[irc]", "I am the other alice")
        ]
    for person in talk.irc.values():
        assert await channel_texts(person, talk.channel, 1) == [("alice3", "I am the other alice")]
    await talk.turn("alice3", "two alices then")
    assert await channel_texts(twin, talk.channel, 1) == [("alice3[x]", "two alices then")]


async def test_idle_irc_connections_close_and_come_back(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    room, channel = room_jid("story4"), "#story4"
    alice = await people("alice")
    await alice.link_create_room(room, "alice4", persistentroom="1")
    dave = await irc_people("dave4")
    await dave.join(channel)
    await start_linked(start_link, room, ngircd.port, channel, link_extra="idle_timeout = 3")

    # Lazily opened: nobody from the room is on IRC before speaking.
    await quiet(0.5)
    assert not dave.saw(r"^:alice4\[x\]!\S+ JOIN")
    alice.send_groupchat(room, "first")
    await dave.expect(r"^:alice4\[x\]!\S+ JOIN :?#story4")
    assert await dave.heard("alice4[x]", channel) == "first"
    # Idle-closed, and opened again by the next line.
    await dave.expect(r"^:alice4\[x\]!\S+ QUIT", timeout=15)
    alice.send_groupchat(room, "second")
    await dave.expect(r"^:alice4\[x\]!\S+ JOIN :?#story4")
    assert await dave.heard("alice4[x]", channel) == "second"
    # Leaving the room closes it at once.
    alice.leave_muc(room, "alice4")
    await dave.expect(r"^:alice4\[x\]!\S+ QUIT", timeout=10)


@pytest.mark.parametrize(
    ("n", "options", "extra"),
    [(5, {"double_puppet": False}, ""), (6, {}, "max_irc_connections = 0")],
    ids=["double_puppet=false", "max_irc_connections=0"],
)
async def test_relay_bot_speaks_for_xmpp_people(
    n: int,
    options: dict[str, object],
    extra: str,
    ngircd: NgIrcd,
    people: XmppPeople,
    irc_people: People,
    start_link: StartLink,
) -> None:
    room, channel = room_jid(f"story{n}"), f"#story{n}"
    alice, bob = await people("alice"), await people("bob")
    # Non-anonymous: the link's listener sees every real JID (its own occupants' too).
    await alice.link_create_room(room, f"alice{n}", persistentroom="1", whois="anyone")
    await bob.join_muc(room, f"bob{n}")
    dave = await irc_people(f"dave{n}")
    await dave.join(channel)
    await start_linked(start_link, room, ngircd.port, channel, "irc", extra, **options)

    alice.send_groupchat(room, "hello from the room")
    assert await channel_texts(dave, channel, 1) == [
        ("passerelle", f"<alice{n}> hello from the room")
    ]
    bob.send_groupchat(room, "/me nods")
    assert await channel_texts(dave, channel, 1) == [("passerelle", f"* bob{n} nods")]
    # IRC people are still occupants of their own.
    dave.say(channel, "hi both")
    assert (await alice.link_room_texts(room, 3))[-1] == (f"dave{n}", "hi both")
    assert not re.search(rf"\b(alice|bob){n}\[x\]", "\n".join(dave.lines))
    await quiet()
    with pytest.raises(AssertionError):
        await channel_texts(dave, channel, 1, timeout=0.2)


async def test_a_missing_room_is_not_created(
    ngircd: NgIrcd, people: XmppPeople, start_link: StartLink
) -> None:
    admin = await people("linkadmin")
    room = room_jid("nosuchroom")
    gateway = start_link(link_toml(room, ngircd.port, "#nosuchroom"))
    report = await admin.next_message(LINK_JID)
    assert "does not exist" in report["body"] and room in report["body"]
    await gateway.wait_for(r"^link \| .*does not exist")
    # Nobody created it behind the admin's back.
    info = admin.plugin["xep_0030"]
    with pytest.raises(Exception, match="item-not-found"):
        await info.get_info(jid=JID(room), timeout=10)


async def test_topic_corrections_and_replies(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    room, channel = room_jid("story7"), "#story7"
    alice = await people("alice")
    # Occupants may set the subject here, so IRC topics can become the room's subject.
    await alice.link_create_room(room, "alice7", persistentroom="1", changesubject="1")
    dave = await irc_people("dave7")
    await dave.join(channel)
    await start_linked(start_link, room, ngircd.port, channel)

    # IRC topic → room subject, set by dave's occupant.
    dave.send(f"TOPIC {channel} :all about linking")
    subject = await alice.next_subject(room)
    while subject["subject"] != "all about linking":
        subject = await alice.next_subject(room)
    assert subject["from"].resource == "dave7"

    # Room subject → IRC topic, once the relay may set it.
    dave.send(f"MODE {channel} +o passerelle")
    await dave.expect(rf"^:dave7!\S+ MODE {channel} \+o passerelle")
    alice.set_subject(room, "linked both ways")
    await dave.expect(rf"^:passerelle!\S+ TOPIC {channel} :linked both ways")

    # A correction is a short s/old/new/ line on IRC.
    first = alice.send_groupchat(room, "the room is on Prosody 0.11")
    assert await channel_texts(dave, channel, 1) == [("alice7[x]", "the room is on Prosody 0.11")]
    alice.send_groupchat(room, "the room is on Prosody 0.12", replace=first["id"])
    assert await channel_texts(dave, channel, 1) == [("alice7[x]", "s/0.11/0.12/")]

    # A reply names the person and quotes a little of what they said.
    dave.say(channel, "which version of ngIRCd is it?")
    question = await alice.next_groupchat_text(room, "which version of ngIRCd is it?")
    stanza_id = child(question, "{urn:xmpp:sid:0}stanza-id").get("id")
    assert stanza_id
    alice.send_reply(room, "26.1", stanza_id, f"{room}/dave7", mtype="groupchat")
    assert await channel_texts(dave, channel, 1) == [
        ("alice7[x]", "dave7: «which version of ngIRCd is it?» 26.1")
    ]


async def test_a_wrong_secret_is_a_configuration_error(
    link_prosody: Prosody, tmp_path: Path, start_link: StartLink
) -> None:
    config = link_config(tmp_path / "wrong", link_prosody, "")
    config.write_text(config.read_text().replace(LINK_SECRET, "not-the-secret"))
    gateway = start_link(config=config)
    await gateway.wait_for(r"refused the component link\.localhost \(not-authorized\)")
    await gateway.wait_for(r"link: configuration error \(see above\); not restarting it")


async def test_every_irc_user_present_is_an_occupant_when_asked(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    room, channel = room_jid("story8"), "#story8"
    alice = await people("alice")
    await alice.link_create_room(room, "alice8", persistentroom="1")
    dave, erin = await irc_people("dave8"), await irc_people("erin8")
    for person in (dave, erin):
        await person.join(channel)
    await start_linked(start_link, room, ngircd.port, channel, relay_joins_parts=True)
    # Present before anyone spoke; the link's own IRC users are not shown.
    seen: set[str] = set()
    async with asyncio.timeout(20):
        while not {"dave8", "erin8"} <= seen:
            pres = await alice.presences.get()
            if pres["from"].bare == room and pres["type"] == "available":
                seen.add(pres["from"].resource)
    assert not seen & {"passerelle", "alice8[x]"}
    frank = await irc_people("frank8")
    await frank.join(channel)
    await alice.next_occupant(room, "frank8")
    erin.send(f"PART {channel} :off to bed")
    await alice.next_occupant(room, "erin8", "unavailable")
    alice.send_groupchat(room, "good night erin")
    assert await channel_texts(dave, channel, 1) == [("alice8[x]", "good night erin")]
