"""Stories about private messages, the server JID, nicks and what the gateway refuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from slixmpp.exceptions import IqError

from gateway.localservers import NgIrcd
from tests.e2e.conftest import IRC_JID, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    NewClient,
    People,
    in_channel,
    irc_gateway_fixture,
    irc_people_fixture,
    ngircd_fixture,
    registered,
    room,
    server_jid,
    start_with_irc,
    user,
)
from tests.e2e.xmpp_client import muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_private_messages_both_ways_with_a_short_correction(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob11")

    # alice writes to bob11%127.0.0.1@irc.localhost: a PRIVMSG to bob11.
    sent = alice.send_chat(user("bob11"), "hello wrld")
    assert await bob.heard(nick, "bob11") == "hello wrld"
    # Her correction (XEP-0308) is a short line, not the whole message again.
    alice.send_chat(user("bob11"), "hello world", replace=sent["id"])
    assert await bob.heard(nick, "bob11") == "s/wrld/world/"

    bob.say(nick, "hi alice, this is private")
    reply = await alice.next_message(user("bob11"))
    assert reply["type"] == "chat"
    assert reply["body"] == "hi alice, this is private"
    bob.send(f"PRIVMSG {nick} :\x01ACTION smiles\x01")
    assert (await alice.next_message(user("bob11")))["body"] == "/me smiles"


async def test_the_server_talks_and_takes_raw_commands(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room12 = await in_channel(new_client, irc_people, "bob12", "#story12")

    # The server's message of the day arrives from 127.0.0.1@irc.localhost, in one piece.
    motd = await alice.next_message(server_jid())
    assert "a Passerelle test server on loopback" in motd["body"]
    # The server contact is in her roster and online while connected.
    assert server_jid() in alice.client_roster

    # A raw IRC line sent to the server JID goes to the server as it is.
    alice.send_chat(server_jid(), "PRIVMSG bob12 :sent raw")
    assert await bob.heard(nick, "bob12") == "sent raw"

    # NICK through the server JID renames her everywhere, the room included (303).
    alice.send_chat(server_jid(), f"NICK {nick}x")
    await bob.expect(rf"^:{nick}!\S+ NICK :?{nick}x")
    gone = await alice.next_occupant(room12, nick, "unavailable")
    codes, item = muc_status(gone)
    assert {303, 110} <= codes and item["nick"] == f"{nick}x"
    await alice.next_occupant(room12, f"{nick}x")
    alice.send_groupchat(room12, "renamed")
    assert await bob.heard(f"{nick}x", "#story12") == "renamed"


async def test_nick_collision_retries_and_tells_the_user(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice = await new_client("alice")
    nick = alice.boundjid.user
    squatter = await irc_people(nick)  # someone on IRC already has alice's nick
    await squatter.join("#story13")
    await alice.register(IRC_JID, nick=nick)

    pres = await alice.join_muc(room("#story13"), nick)
    codes, _ = muc_status(pres)
    # She is in the room as nick_, and her client is told its nick was changed (210).
    assert pres["from"].resource == f"{nick}_"
    assert 210 in codes
    notice = await alice.next_message(server_jid())
    while "rejected nick" not in notice["body"]:
        notice = await alice.next_message(server_jid())
    assert notice["body"] == (
        f"IRC server '127.0.0.1' rejected nick '{nick}' (433 in use); retrying as '{nick}_'"
    )


async def test_registration_checks_the_nick_and_takes_a_real_name(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice = await new_client("alice")
    with pytest.raises(IqError) as err:
        await alice.register(IRC_JID, nick="not a nick")
    assert err.value.condition == "not-acceptable"
    assert "Invalid IRC nick" in err.value.text

    # The ad-hoc command registers too; the real name is what WHOIS shows on IRC.
    nick = alice.boundjid.user
    result = await alice.run_command(
        IRC_JID, "jabber:iq:register", nick=nick, realname="Alice Liddell"
    )
    assert result["command"]["status"] == "completed"
    await alice.join_muc(room("#story14"), nick)
    bob = await irc_people("bob14")
    bob.send(f"WHOIS {nick}")
    whois = await bob.expect(rf" 311 bob14 {nick} (\S+) \S+ \* :(.*)$")
    assert whois.group(2) == "Alice Liddell"
    assert whois.group(1).lstrip("~") == nick  # the user name comes from the JID


async def test_private_addresses_are_refused_for_servers_users_name(
    irc_gateway: PasserelleProcess, new_client: NewClient
) -> None:
    alice, nick = await registered(new_client, "alice")
    # 'localhost' is not admin-defined and resolves to loopback: no connection is made.
    pres = await alice.join_muc(room("#x", server="localhost"), nick)
    assert pres["type"] == "error"
    assert pres["error"]["condition"] == "not-allowed"
    assert "private or local address" in pres["error"]["text"]
    assert irc_gateway.proc.poll() is None


async def test_per_server_settings_through_the_configure_command(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob15")

    # On the server's JID, "configure" sets her nick there and commands run on connect.
    result = await alice.run_command(
        server_jid(),
        "configure",
        nick=f"{nick}cfg",
        after_connect=["PRIVMSG bob15 :connected with my settings", "PRIVMSG bob15 :and more"],  # type: ignore[arg-type]
    )
    assert result["command"]["status"] == "completed"
    assert "Saved" in result["command"]["notes"][0][1]

    pres = await alice.join_muc(room("#story15"), nick)
    assert pres["from"].resource == f"{nick}cfg"
    assert await bob.heard(f"{nick}cfg", "bob15") == "connected with my settings"
    assert await bob.heard(f"{nick}cfg", "bob15") == "and more"

    # A bad line is refused with a reason, and nothing is saved.
    with pytest.raises(IqError) as err:
        await alice.run_command(server_jid(), "configure", after_connect=["JOIN #ok", "4 :no"])  # type: ignore[arg-type]
    assert err.value.condition == "not-acceptable"


async def test_notices_stand_out_and_ctcp_requests_are_answered(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room16 = await in_channel(new_client, irc_people, "bob16", "#story16")

    # A NOTICE is not an ordinary message: it arrives marked, in the room or in private.
    bob.send("NOTICE #story16 :the channel is moving")
    assert (await alice.next_groupchat(room16, "bob16"))["body"] == "[notice] the channel is moving"
    bob.send(f"NOTICE {nick} :just so you know")
    notice = await alice.next_message(user("bob16"))
    assert notice["body"] == "[notice] just so you know"

    # CTCP VERSION and PING are answered for her, as IRC clients do.
    bob.send(f"PRIVMSG {nick} :\x01VERSION\x01")
    version = await bob.expect(rf"^:{nick}!\S+ NOTICE bob16 :\x01VERSION (.+)\x01$")
    assert "Passerelle" in version.group(1)
    bob.send(f"PRIVMSG {nick} :\x01PING 1234567890\x01")
    await bob.expect(rf"^:{nick}!\S+ NOTICE bob16 :\x01PING 1234567890\x01$")
    # ...without bothering her: the next thing she sees is bob's message.
    bob.say(nick, "thanks")
    assert (await alice.next_message(user("bob16")))["body"] == "thanks"


async def test_auto_register_lets_allowed_jids_join_without_registering(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
) -> None:
    await start_with_irc(
        start_passerelle,
        ngircd.port,
        top_level='allowed_jids = ["alice*@localhost"]',
        extra="auto_register = true",
    )
    bob = await irc_people("bob17")
    await bob.join("#story17")

    # alice never registered: joining the room registers her, with the nick she asked for.
    alice = await new_client("alice")
    pres = await alice.join_muc(room("#story17"), "wonderland17")
    assert pres["type"] != "error", pres
    assert pres["from"].resource == "wonderland17"
    await bob.expect(r"^:wonderland17!\S+ JOIN :?#story17")
    bob.say("#story17", "welcome, stranger")
    assert (await alice.next_groupchat(room("#story17"), "bob17"))["body"] == "welcome, stranger"

    # A JID the gateway does not allow still has to register, and cannot.
    mallory = await new_client("mallory")
    refused = await mallory.join_muc(room("#story17"), "mallory17")
    assert refused["type"] == "error"
    assert refused["error"]["condition"] == "registration-required"
