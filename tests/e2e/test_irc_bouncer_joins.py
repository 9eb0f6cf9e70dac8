"""People joining a persistent channel whose room has been shown to a client, while no
client of the user's is in it (the gateway kept running), against a real ngIRCd: when
she comes back, the room lists exactly who is there, once each, with their standing.

(`test_irc_joins.py` has the same story after a restart, when slidge has forgotten the
occupants; here the room's occupant list was filled by her first join and stays.)
"""

from __future__ import annotations

import pytest
from slixmpp import JID

from gateway.localservers import Prosody
from tests.e2e.conftest import PASSWORD, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    NewClient,
    People,
    irc_gateway_fixture,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
    user,
)
from tests.e2e.test_irc_joins import Listed, who_answered
from tests.e2e.xmpp_client import Client, muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_who_joined_a_filled_room_while_no_client_was_in_it_is_listed_once(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People, prosody: Prosody
) -> None:
    # alice joins #story92 (her client gets its occupant list), keeps it joined
    # (persistent) and goes offline; the gateway keeps running.
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob92")
    await bob.join("#story92")
    room92 = room("#story92")
    assert (await alice.join_muc(room92, nick))["type"] != "error"
    result = await alice.run_command(room92, "configure", persistent="true")
    assert result["command"]["status"] == "completed"
    await alice.stop()
    phone = Client(f"{alice.boundjid.bare}/phone", PASSWORD)
    await phone.start(prosody.c2s_port)  # (the gateway has had her departure by then)
    try:
        # Meanwhile on IRC: carol joins, dave joins and gets voice, erin joins and goes.
        erin = await irc_people("erin92")
        for person in (await irc_people("carol92"), await irc_people("dave92"), erin):
            await person.join("#story92")
        bob.send("MODE #story92 +v dave92")
        erin.send("PART #story92 :bye")
        await bob.expect(r"^:erin92!\S+ PART #story92")
        bob.say("#story92", "while alice was away")

        # Back: everyone there once, available, with the standing of their modes and
        # their contact; erin is gone; what was said is in the history.
        await who_answered(phone, "#story92")  # it follows those lines on IRC
        assert not bob.saw(rf"^:{nick}!\S+ (PART|QUIT)")  # she stayed in the channel
        listed = phone.occupants[room92] = Listed()
        pres = await phone.join_muc(room92, nick, history=10)
        assert pres["type"] != "error", pres
        said = await phone.next_groupchat(room92, "bob92")
        assert said["body"] == "while alice was away"
    finally:
        await phone.stop()
    # (a presence twice, or one missing, shows in the sorted list)
    seen = []
    for p in listed.given:
        item = muc_status(p)[1]
        seen.append((p["from"].resource, p["type"], p["show"], item["role"],
                     item["affiliation"], JID(item["jid"]).bare))  # fmt: skip
    assert sorted(seen) == [
        ("bob92", "available", "", "moderator", "admin", user("bob92")),
        ("carol92", "available", "", "participant", "none", user("carol92")),
        ("dave92", "available", "", "participant", "member", user("dave92")),
    ], [str(p) for p in listed.given]
