"""Stories of people on XMPP and on IRC talking through Passerelle, against a real ngIRCd.

Each story starts its own Passerelle (echo + IRC) and uses its own nicks and channels,
so the stories share the ngIRCd of this module without seeing each other.
"""

from __future__ import annotations

import pytest

from gateway.localservers import Prosody
from tests.e2e.conftest import PASSWORD, PasserelleProcess
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
from tests.e2e.xmpp_client import Client, muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_join_and_talk_both_ways(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, alice_nick = await registered(new_client, "alice")
    bob = await irc_people("bob1")
    await bob.join("#story1")
    room1 = room("#story1")

    # alice@xmpp joins #story1: the channel sees her come in, she sees bob, its operator.
    pres = await alice.join_muc(room1, alice_nick)
    assert pres["type"] != "error", pres
    assert muc_status(pres)[1]["role"] == "participant"
    await bob.expect(rf"^:{alice_nick}!\S+ JOIN :?#story1")
    _, bob_item = muc_status(alice.occupants[room1]["bob1"])
    assert (bob_item["role"], bob_item["affiliation"]) == ("moderator", "admin")
    assert bob_item["jid"].startswith("bob1%127.0.0.1@irc.localhost")

    bob.say("#story1", "hi alice")
    msg = await alice.next_groupchat(room1, "bob1")
    assert msg["body"] == "hi alice"

    alice.send_groupchat(room1, "hello bob")
    assert await bob.heard(alice_nick, "#story1") == "hello bob"
    # slidge echoes her message back to her in the room, as MUCs do.
    echo = await alice.next_groupchat(room1, alice_nick)
    assert echo["body"] == "hello bob"


async def test_actions_formatting_and_long_messages(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room2 = await in_channel(new_client, irc_people, "bob2", "#story2")

    # /me both ways
    bob.send("PRIVMSG #story2 :\x01ACTION waves\x01")
    assert (await alice.next_groupchat(room2, "bob2"))["body"] == "/me waves"
    alice.send_groupchat(room2, "/me waves back")
    assert await bob.heard(nick, "#story2") == "\x01ACTION waves back\x01"

    # mIRC bold and italic <-> XEP-0393 *strong* and _emphasis_
    bob.say("#story2", "this is \x02bold\x02 and \x1ditalic\x1d")
    assert (await alice.next_groupchat(room2, "bob2"))["body"] == "this is *bold* and _italic_"
    alice.send_groupchat(room2, "really *bold*")
    assert await bob.heard(nick, "#story2") == "really \x02bold"

    # A long message is split at word boundaries into lines that each fit in 512 bytes.
    words = [f"word{i:03d}" for i in range(150)]
    alice.send_groupchat(room2, " ".join(words))
    received: list[str] = []
    while len(received) < len(words):
        received += (await bob.heard(nick, "#story2")).split()
    assert received == words


async def test_line_breaks_never_inject_commands(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room3 = await in_channel(new_client, irc_people, "bob3", "#story3")

    # Each line is its own PRIVMSG: "QUIT" and "JOIN" arrive as text, not as commands.
    alice.send_groupchat(room3, "first line\r\nQUIT :gone\nJOIN #elsewhere")
    assert await bob.heard(nick, "#story3") == "first line"
    assert await bob.heard(nick, "#story3") == "QUIT :gone"
    assert await bob.heard(nick, "#story3") == "JOIN #elsewhere"
    bob.say("#story3", "still here?")
    assert (await alice.next_groupchat(room3, "bob3"))["body"] == "still here?"


async def test_invalid_utf8_is_decoded_not_dropped(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, _, bob, room4 = await in_channel(new_client, irc_people, "bob4", "#story4")
    bob.send_raw(b"PRIVMSG #story4 :caf\xe9 cr\xe8me\r\n")
    assert (await alice.next_groupchat(room4, "bob4"))["body"] == "café crème"


async def test_irc_people_come_go_and_change_nick(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room5 = await in_channel(new_client, irc_people, "bob5", "#story5")

    carol = await irc_people("carol5")
    await carol.join("#story5")
    await alice.next_occupant(room5, "carol5")
    carol.change_nick("caroline5")
    gone = await alice.next_occupant(room5, "carol5", "unavailable")
    codes, item = muc_status(gone)
    assert 303 in codes and item["nick"] == "caroline5"
    await alice.next_occupant(room5, "caroline5")
    carol.say("#story5", "new name, same me")
    assert (await alice.next_groupchat(room5, "caroline5"))["body"] == "new name, same me"

    # alice changes her nick in the room: it is an IRC NICK, and she is renamed (303).
    alice.change_muc_nick(room5, f"{nick}z")
    await bob.expect(rf"^:{nick}!\S+ NICK :?{nick}z")
    renamed = await alice.next_occupant(room5, nick, "unavailable")
    assert {303, 110} <= muc_status(renamed)[0]
    await alice.next_occupant(room5, f"{nick}z")

    carol.send("PART #story5 :see you")
    await alice.next_occupant(room5, "caroline5", "unavailable")
    await carol.join("#story5")
    await alice.next_occupant(room5, "caroline5")
    carol.send("QUIT :off to bed")
    await alice.next_occupant(room5, "caroline5", "unavailable")


async def test_topic_both_ways(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob6")
    await bob.join("#story6")
    bob.send("TOPIC #story6 :the first topic")
    await bob.expect(r" TOPIC #story6 :the first topic")
    room6 = room("#story6")
    await alice.join_muc(room6, nick)
    assert (await alice.next_subject(room6))["subject"] == "the first topic"

    bob.send("TOPIC #story6 :bob changed it")
    subject = await alice.next_subject(room6)
    assert subject["subject"] == "bob changed it"
    assert subject["from"].resource == "bob6"

    # ngIRCd lets anyone set the topic of a channel without +t.
    bob.send("MODE #story6 -t")
    alice.set_subject(room6, "alice changed it")
    await bob.expect(rf"^:{nick}!\S+ TOPIC #story6 :alice changed it")
    assert (await alice.next_subject(room6))["subject"] == "alice changed it"


async def test_modes_become_roles_and_kicks_work_both_ways(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room7 = await in_channel(new_client, irc_people, "bob7", "#story7")

    # bob (channel operator) gives alice +o: she becomes a moderator.
    bob.send(f"MODE #story7 +o {nick}")
    pres = await alice.next_occupant(room7, nick)
    assert muc_status(pres)[1]["role"] == "moderator"

    # alice kicks dave from her XMPP client; on IRC it is a KICK.
    dave = await irc_people("dave7")
    await dave.join("#story7")
    await alice.next_occupant(room7, "dave7")
    await alice.kick(room7, "dave7", "behave")
    await dave.expect(rf"^:{nick}!\S+ KICK #story7 dave7 :behave")
    kicked = await alice.next_occupant(room7, "dave7", "unavailable")
    assert 307 in muc_status(kicked)[0]

    # bob kicks alice: her client learns it was kicked (307, 110).
    bob.send(f"KICK #story7 {nick} :out")
    out = await alice.next_occupant(room7, nick, "unavailable")
    assert {307, 110} <= muc_status(out)[0]


async def test_two_clients_of_one_user_share_the_nick_and_get_history(
    irc_gateway: PasserelleProcess,
    new_client: NewClient,
    irc_people: People,
    prosody: Prosody,
) -> None:
    alice, nick, bob, room8 = await in_channel(new_client, irc_people, "bob8", "#story8")
    bob.say("#story8", "said before the phone joined")
    await alice.next_groupchat(room8, "bob8")

    # alice's phone joins the same room: same nick, same IRC connection, and the
    # room's archive replays what was said (with its original time, XEP-0203).
    phone = Client(f"{alice.boundjid.bare}/phone", PASSWORD)
    await phone.start(prosody.c2s_port)
    try:
        pres = await phone.join_muc(room8, nick, history=10)
        assert pres["from"].resource == nick
        old = await phone.next_groupchat(room8, "bob8")
        assert old["body"] == "said before the phone joined"
        assert old.xml.find("{urn:xmpp:delay}delay") is not None

        bob.say("#story8", "to both of you")
        assert (await alice.next_groupchat(room8, "bob8"))["body"] == "to both of you"
        assert (await phone.next_groupchat(room8, "bob8"))["body"] == "to both of you"
        phone.send_groupchat(room8, "from the phone")
        assert await bob.heard(nick, "#story8") == "from the phone"
        # One IRC connection: bob never saw alice join twice.
        assert sum(f":{nick}!" in line and " JOIN " in line for line in bob.lines) == 1
    finally:
        await phone.stop()
