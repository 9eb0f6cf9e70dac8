"""An admin links, lists, pauses, resumes and removes channel ↔ room links with ad-hoc
commands on the link component; nobody else may. Links added this way survive a restart."""

from __future__ import annotations

import pytest
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

from gateway.localservers import NgIrcd
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    ADMIN,
    LINK_JID,
    StartLink,
    channel_texts,
    link_prosody_fixture,
    linked,
    linked_room,
    people_fixture,
    room_jid,
    start_link_fixture,
    start_linked,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.xmpp_client import Client, send_iq

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

CONNECTED = rf"^link \| .*link component {LINK_JID} is connected"


def notes(iq: object) -> str:
    return "\n".join(text for _, text in iq["command"]["notes"])  # type: ignore[index]


async def test_admin_adds_lists_pauses_resumes_and_removes_a_link(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    room, channel = room_jid("admin1"), "#admin1"
    url = f"irc://127.0.0.1:{ngircd.port}/{channel}"
    link_id = f"{room} ↔ {url}"
    admin, alice, mallory = await people(ADMIN), await people("alice"), await people("mallory")
    await alice.link_create_room(room, "alice", persistentroom="1")
    dave = await irc_people("adave1")
    await dave.join(channel)
    gateway = start_link()
    await gateway.wait_for(CONNECTED)

    # Someone who is not an admin may not even look.
    for node in ("list", "add", "remove", "pause"):
        with pytest.raises(IqError) as refused:
            await mallory.run_command(LINK_JID, node)
        assert refused.value.iq["error"]["condition"] == "forbidden"

    # A room that does not exist is refused, and not created.
    missing = await admin.run_command(
        LINK_JID, "add", muc=room_jid("nowhere"), irc=f"irc://127.0.0.1:{ngircd.port}/#x"
    )
    assert "does not exist" in notes(missing)

    added = await admin.run_command(LINK_JID, "add", muc=room, irc=url)
    assert f"Linked {room} and {channel}" in notes(added), notes(added)
    await gateway.wait_for(linked(room, channel))
    await talk_once(alice, dave, room, channel)
    listed = notes(await admin.run_command(LINK_JID, "list"))
    assert link_id in listed and "linked" in listed and "added by an admin" in listed

    # Paused: the link leaves the room and the channel; nothing crosses.
    paused = await admin.run_command(LINK_JID, "pause", link=link_id, paused="true")
    assert f"Paused {link_id}" in notes(paused)
    await dave.expect(r"^:passerelle!\S+ PART #admin1")
    assert "paused" in notes(await admin.run_command(LINK_JID, "list"))
    dave.say(channel, "anyone there?")
    with pytest.raises(TimeoutError):
        await alice.next_groupchat_text(room, timeout=2)

    # Resumed, and still there after a restart of Passerelle.
    mark = len(gateway.lines)
    resumed = await admin.run_command(LINK_JID, "pause", link=link_id, paused="false")
    assert f"Resumed {link_id}" in notes(resumed)
    await gateway.wait_for(linked(room, channel), after=mark)
    gateway.stop()
    assert "link stopped (exit code 0)" in gateway.output()
    again = start_link(config=gateway.config)
    await again.wait_for(linked(room, channel))
    await talk_once(alice, dave, room, channel, "after the restart")

    removed = await admin.run_command(LINK_JID, "remove", link=link_id)
    assert f"Removed {link_id}" in notes(removed)
    await dave.expect(r"^:passerelle!\S+ (PART #admin1|QUIT)")
    assert "There is no link yet" in notes(await admin.run_command(LINK_JID, "list"))


async def talk_once(
    alice: Client, dave: object, room: str, channel: str, text: str = "hello"
) -> None:
    alice.send_groupchat(room, f"{text} from the room")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", f"{text} from the room")]  # type: ignore[arg-type]
    assert (await alice.link_room_texts(room, 1))[0] == ("alice", f"{text} from the room")
    dave.say(channel, f"{text} from IRC")  # type: ignore[attr-defined]
    assert await alice.link_room_texts(room, 1) == [("adave1", f"{text} from IRC")]


async def test_check_says_what_a_members_only_room_must_grant(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    room, channel = room_jid("members1"), "#members1"
    admin, alice = await people(ADMIN), await people("alice")
    await alice.link_create_room(room, "alice", persistentroom="1", membersonly="1")
    # The owner lets the link's listener in, as the README says, but no IRC user yet.
    listener = f"#members1%127.0.0.1@{LINK_JID}"
    await alice.set_affiliation(room, "member", jid=listener)
    dave = await irc_people("mdave1")
    await dave.join(channel)
    await start_linked(start_link, room, ngircd.port, channel)

    # dave's own occupant is refused: the listener speaks for him, and nothing is lost.
    dave.say(channel, "can I come in?")
    assert await alice.link_room_texts(room, 1) == [("#members1", "<mdave1> can I come in?")]
    alice.send_groupchat(room, "not yet")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "not yet")]

    # The admin's check says what the room must grant, and whom it refused.
    checked = notes(await admin.run_command(LINK_JID, "check"))
    assert "members-only" in checked and listener in checked, checked
    dave_jid = f"mdave1%127.0.0.1@{LINK_JID}"
    assert f"{dave_jid} (IRC mdave1: registration-required)" in checked, checked

    # The owner makes dave a member: from his next line on, he speaks as himself.
    await alice.set_affiliation(room, "member", jid=dave_jid)
    dave.say(channel, "thanks")
    assert (await alice.link_room_texts(room, 2))[-1] == ("mdave1", "thanks")


async def test_in_a_moderated_room_an_ircer_without_voice_is_told_until_given_voice(
    ngircd: NgIrcd, people: XmppPeople, irc_people: People, start_link: StartLink
) -> None:
    admin, alice, dave = await people(ADMIN), await people("alice"), await irc_people("vdave1")
    room, channel, _gateway = await linked_room(
        "moderated1", ngircd.port, alice, dave, start_link, moderatedroom="1"
    )

    # dave's occupant joins as a visitor: the room refuses his line, and he is told.
    dave.say(channel, "may I speak?")
    await dave.expect(r"^:passerelle!\S+ NOTICE vdave1 :Not relayed to .*refused it")
    checked = notes(await admin.run_command(LINK_JID, "check"))
    assert "moderated" in checked and f"vdave1%127.0.0.1@{LINK_JID}" in checked, checked

    # alice gives him voice (XEP-0045 §8.3): his next line reaches the room.
    iq = alice.make_iq_set(ito=room)
    query = ET.SubElement(iq.xml, "{http://jabber.org/protocol/muc#admin}query")
    ET.SubElement(
        query,
        "{http://jabber.org/protocol/muc#admin}item",
        {"nick": "vdave1", "role": "participant"},
    )
    await send_iq(iq, timeout=20)
    dave.say(channel, "thank you")
    assert (await alice.link_room_texts(room, 1))[0] == ("vdave1", "thank you")
