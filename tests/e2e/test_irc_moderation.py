"""Stories about bans and invitations, both ways, against a real ngIRCd."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import PasserelleProcess
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
from tests.e2e.xmpp_client import muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_bans_are_outcasts_both_ways(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob51")
    await bob.join("#story51")
    carol = await irc_people("carol51")
    await carol.join("#story51")
    room51 = room("#story51")
    await alice.join_muc(room51, nick)

    # bob bans carol on IRC: in alice's room carol is an outcast (and may not speak).
    bob.send("MODE #story51 +b carol51!*@*")
    banned = await alice.next_occupant(room51, "carol51")
    assert muc_status(banned)[1]["affiliation"] == "outcast"
    assert muc_status(banned)[1]["role"] == "visitor"
    outcasts = await alice.affiliation_list(room51, "outcast")
    assert [item["jid"] for item in outcasts] == [user("carol51")]
    # ...and when he kicks her, she leaves the room banned (301), not just kicked.
    bob.send("KICK #story51 carol51 :go away")
    gone = await alice.next_occupant(room51, "carol51", "unavailable")
    assert 301 in muc_status(gone)[0]

    # alice, made operator, bans dave from her client: +b on his nick, then a KICK.
    bob.send(f"MODE #story51 +o {nick}")
    await alice.next_occupant(room51, nick)
    dave = await irc_people("dave51")
    await dave.join("#story51")
    await alice.next_occupant(room51, "dave51")
    await alice.set_affiliation(room51, "outcast", nick="dave51", reason="spam")
    await dave.expect(rf"^:{nick}!\S+ MODE #story51 \+b :?dave51!\*@\*")
    await dave.expect(rf"^:{nick}!\S+ KICK #story51 dave51 :spam")
    out = await alice.next_occupant(room51, "dave51", "unavailable")
    assert 301 in muc_status(out)[0]
    dave.send("JOIN #story51")
    await dave.expect(r" 474 dave51 #story51 ")  # banned

    # Lifting the ban from XMPP (affiliation "none", by JID) removes the mask on IRC.
    await alice.set_affiliation(room51, "none", jid=user("dave51"))
    await bob.expect(rf"^:{nick}!\S+ MODE #story51 -b :?dave51!\*@\*")
    await dave.join("#story51")


async def test_invitations_both_ways(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    alice.queue_bodyless_messages()
    bob = await irc_people("bob52")
    await bob.join("#story52")
    await bob.join("#secret52")
    room52 = room("#story52")
    await alice.join_muc(room52, nick)

    # bob invites alice on IRC: her client gets a XEP-0249 invitation to the room.
    bob.send(f"INVITE {nick} #secret52")
    invite = await alice.next_matching(lambda m: m.xml.find("{jabber:x:conference}x") is not None)
    x = invite.xml.find("{jabber:x:conference}x")
    assert x is not None and x.get("jid") == room("#secret52")
    assert "bob52" in (x.get("reason") or "")

    # alice invites erin (XEP-0249 to erin's contact): an IRC INVITE.
    erin = await irc_people("erin52")
    alice.send_direct_invite(user("erin52"), room52, reason="come and see")
    await erin.expect(rf"^:{nick}!\S+ INVITE erin52 :?#story52")
    # slidge makes an occupant of whoever is invited; she is not in the channel yet,
    # so she leaves the room again at once.
    await alice.next_occupant(room52, "erin52", "unavailable")
    await erin.join("#story52")
    joined = await alice.next_occupant(room52, "erin52")
    assert muc_status(joined)[1]["jid"].startswith(user("erin52"))
