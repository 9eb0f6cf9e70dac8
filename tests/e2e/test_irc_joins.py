"""Stories of people joining a channel while an XMPP user is in its room, against a real
ngIRCd: what the room shows of a newcomer is what it shows of who was there before."""

from __future__ import annotations

import pytest
from slixmpp import JID, Presence

from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    IrcPerson,
    NewClient,
    People,
    irc_gateway_fixture,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
    user,
)
from tests.e2e.xmpp_client import MUC_USER_NS, Client, muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def presences_before(
    client: Client, room_jid: str, speaker: IrcPerson, line: str
) -> list[Presence]:
    """`speaker` says `line` in the channel of `room_jid`: the presences `client` got
    before the line reached it (the stream is in order)."""
    speaker.say(room_jid.split("%", 1)[0], line)
    for _ in range(50):
        if (await client.next_message(room_jid, with_body=False))["body"] == line:
            break
    else:
        raise AssertionError(f"{line!r} never arrived")
    return [client.presences.get_nowait() for _ in range(client.presences.qsize())]


async def test_a_newcomer_has_the_standing_of_a_plain_member_and_no_affiliation_news(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    # bob opens #story90 (its operator), carol joins it plainly, then alice from XMPP.
    alice, nick = await registered(new_client, "alice")
    bob, carol = await irc_people("bob90"), await irc_people("carol90")
    await bob.join("#story90")
    await carol.join("#story90")
    room90 = room("#story90")
    pres = await alice.join_muc(room90, nick)
    assert pres["type"] != "error", pres
    _, item = muc_status(alice.occupants[room90]["carol90"])
    assert (item["role"], item["affiliation"]) == ("participant", "none")

    # dave joins on IRC: alice sees him as she saw carol, once, with no affiliation
    # change message (a plain member's affiliation is "none", as the member list says).
    dave = await irc_people("dave90")
    await dave.join("#story90")
    bob.say("#story90", "after dave")
    before: list[str] = []
    for _ in range(50):
        msg = await alice.next_message(room90, with_body=False)
        if msg["body"] == "after dave":
            break
        before.append(str(msg))
    else:
        raise AssertionError("bob's line never arrived")
    news = [m for m in before if MUC_USER_NS in m and "dave90%" in m]
    assert news == [], news
    # (the stream is in order: his presences came before bob's line)
    seen = [alice.presences.get_nowait() for _ in range(alice.presences.qsize())]
    daves = [p for p in seen if p["from"].resource == "dave90"]
    assert len(daves) == 1, daves
    _, item = muc_status(daves[0])
    assert (item["role"], item["affiliation"]) == ("participant", "none")  # as carol
    assert item["jid"].startswith("dave90%127.0.0.1@irc.localhost")

    # He joins another room of alice's: one presence there too (the contact has its
    # "available" from the first room already).
    await bob.join("#story90b")
    room90b = room("#story90b")
    pres = await alice.join_muc(room90b, nick)
    assert pres["type"] != "error", pres
    await dave.join("#story90b")
    seen = await presences_before(alice, room90b, bob, "after dave again")
    daves = [p for p in seen if p["from"] == JID(f"{room90b}/dave90")]
    assert len(daves) == 1, daves

    # Erin, new to alice, joins with capitals: her occupant and her contact (both
    # made by the JOIN, in one transaction) show her nick as she writes it, once, and
    # the contact is one alice can talk to privately, both ways.
    erin = await irc_people("Erin90")
    await erin.join("#story90")
    seen = await presences_before(alice, room90, bob, "after erin")
    erins = [p for p in seen if p["from"].bare == room90 and "erin" in p["from"].resource.lower()]
    assert [p["from"].resource for p in erins] == ["Erin90"], erins
    _, item = muc_status(erins[0])
    assert (item["role"], item["affiliation"]) == ("participant", "none")
    assert JID(item["jid"]).bare == user("erin90")
    alice.send_chat(user("erin90"), "hi Erin")
    assert await erin.heard(nick, "Erin90") == "hi Erin"
    erin.say(nick, "hi alice")
    assert (await alice.next_message(user("erin90")))["body"] == "hi alice"

    # His modes still make him a member, and taking them back makes him plain again.
    bob.send("MODE #story90 +v dave90")
    _, item = muc_status(await alice.next_occupant(room90, "dave90"))
    assert (item["role"], item["affiliation"]) == ("participant", "member")
    bob.send("MODE #story90 -v dave90")
    _, item = muc_status(await alice.next_occupant(room90, "dave90"))
    assert (item["role"], item["affiliation"]) == ("participant", "none")
