"""Stories of people joining a channel while an XMPP user is in its room, against a real
ngIRCd: what the room shows of a newcomer is what it shows of who was there before."""

from __future__ import annotations

import pytest
from slixmpp import JID, Presence

from gateway.localservers import Prosody
from tests.e2e.conftest import PASSWORD, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    IrcPerson,
    NewClient,
    People,
    irc_gateway_fixture,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
    server_jid,
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


async def who_answered(client: Client, channel: str) -> None:
    """`client` asks the IRC server WHO is in `channel` through its JID and waits for
    the answer: a point both streams (XMPP and IRC) have passed."""
    client.send_chat(server_jid(), f"WHO {channel}")
    for _ in range(20):
        if channel in (await client.next_message(server_jid()))["body"]:
            return
    raise AssertionError(f"no answer to WHO {channel}")


class Listed(dict[str, Presence]):
    """An occupant list (`Client.occupants[room]`) that also keeps every occupant's
    presence it was given, in order, so that one sent twice shows."""

    def __init__(self) -> None:
        super().__init__()
        self.given: list[Presence] = []

    def __setitem__(self, nick: str, presence: Presence) -> None:
        if nick:  # not the room's own presence (its avatar)
            self.given.append(presence)
        super().__setitem__(nick, presence)


async def test_who_joined_before_any_client_came_back_is_listed_once(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People, prosody: Prosody
) -> None:
    # alice keeps #story91 joined (persistent) and goes offline; the gateway restarts
    # and rejoins it: slidge forgot the occupants, no client of hers is in the room.
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob91")
    await bob.join("#story91")
    room91 = room("#story91")
    assert (await alice.join_muc(room91, nick))["type"] != "error"
    result = await alice.run_command(room91, "configure", persistent="true")
    assert result["command"]["status"] == "completed"
    await alice.stop()
    irc_gateway.stop()
    await bob.expect(rf"^:{nick}!\S+ QUIT")
    again = PasserelleProcess(irc_gateway.config)
    try:
        await again.wait_for(r"^irc \| .*Slidge has successfully started")
        await bob.expect(rf"^:{nick}!\S+ JOIN :?#story91", timeout=30)

        # Meanwhile on IRC: carol joins, dave joins and gets voice, erin joins and goes.
        erin = await irc_people("erin91")
        for person in (await irc_people("carol91"), await irc_people("dave91"), erin):
            await person.join("#story91")
        bob.send("MODE #story91 +v dave91")
        erin.send("PART #story91 :bye")
        await bob.expect(r"^:erin91!\S+ PART #story91")

        # Back (another client): everyone there once, available, with the standing of
        # their modes and their contact; erin is gone; her own presence comes last.
        phone = Client(f"{alice.boundjid.bare}/phone", PASSWORD)
        await phone.start(prosody.c2s_port)
        try:
            await who_answered(phone, "#story91")  # it follows those lines on IRC
            listed = phone.occupants[room91] = Listed()
            pres = await phone.join_muc(room91, nick)
            assert pres["type"] != "error", pres
        finally:
            await phone.stop()
    finally:
        again.stop()
    got = [str(p) for p in listed.given]
    standing: dict[str, tuple[str, str, str, str]] = {}
    for p in listed.given:
        item = muc_status(p)[1]
        standing[p["from"].resource] = (p["type"], p["show"], item["role"], item["affiliation"])
        assert JID(item["jid"]).bare == user(p["from"].resource), got
    assert len(listed.given) == 3, got
    assert standing == {
        "bob91": ("available", "", "moderator", "admin"),
        "carol91": ("available", "", "participant", "none"),
        "dave91": ("available", "", "participant", "member"),
    }, got
