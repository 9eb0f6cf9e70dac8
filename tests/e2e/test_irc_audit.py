"""What issue 3 asks that no other story proved, against real ngIRCd, InspIRCd and
Prosody: self-pings (XEP-0410), the server policy's globs, servers users name with
their own port and TLS, `fixed_server`, `&channels`, and multi-prefix."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from gateway.localservers import InspIRCd, NgIrcd
from tests.e2e.conftest import IRC_JID, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures: ngircd, irc_people, irc_gateway)
    IrcPerson,
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
from tests.e2e.xmpp_client import Client, muc_status, start_command

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


async def self_ping(client: Client, occupant: str) -> str:
    """XEP-0410: "ok", or the error condition of the ping to our own occupant JID."""
    try:
        await client.plugin["xep_0199"].send_ping(JID(occupant), timeout=20)
    except IqError as e:
        return str(e.iq["error"]["condition"])
    return "ok"


async def test_self_pings_tell_a_client_whether_it_is_still_in_the_room(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
) -> None:
    gateway = await start_with_irc(start_passerelle, ngircd.port)
    alice, nick, bob, room61 = await in_channel(new_client, irc_people, "bob61", "#story61")
    await bob.expect(rf"^:{nick}!\S+ JOIN :?#story61")
    assert await self_ping(alice, f"{room61}/{nick}") == "ok"
    # Someone else's client that is not in the room is told so (it would rejoin).
    carol, _ = await registered(new_client, "carol")
    assert await self_ping(carol, f"{room61}/{nick}") == "not-acceptable"

    # Kicked on IRC: she is out of the room, and her client's next self-ping says so.
    bob.send(f"KICK #story61 {nick} :out")
    await alice.next_occupant(room61, nick, "unavailable")
    assert await self_ping(alice, f"{room61}/{nick}") == "not-acceptable"
    pres = await alice.join_muc(room61, nick)
    assert pres["type"] == "available", pres
    assert await self_ping(alice, f"{room61}/{nick}") == "ok"

    # The gateway restarts: the client has to join again, and a self-ping tells it.
    gateway.stop()
    again = PasserelleProcess(gateway.config)
    try:
        await again.wait_for(r"^irc \| .*Slidge has successfully started")
        assert await self_ping(alice, f"{room61}/{nick}") == "not-acceptable"
        while not alice.presences.empty():  # what the stopping gateway said before
            alice.presences.get_nowait()
        pres = await alice.join_muc(room61, nick)
        assert pres["type"] == "available", pres
        assert await self_ping(alice, f"{room61}/{nick}") == "ok"
    finally:
        again.stop()


async def test_allowed_and_denied_server_globs(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    gateway = await start_with_irc(
        start_passerelle,
        ngircd.port,
        extra='allowed_servers = ["*.allowed.test", "localhost"]\ndenied_servers = ["bad.*"]',
    )
    alice, nick = await registered(new_client, "alice")
    for server, why in [
        ("bad.allowed.test", "does not connect to IRC server 'bad.allowed.test'"),  # denied
        ("elsewhere.test", "does not connect to IRC server 'elsewhere.test'"),  # not allowed
        ("localhost", "private or local address"),  # allowed, but loopback
    ]:
        pres = await alice.join_muc(room("#x", server=server), nick)
        assert pres["type"] == "error", server
        assert pres["error"]["condition"] == "not-allowed", server
        assert why in pres["error"]["text"], pres["error"]["text"]
    # The admin's own server is reachable whatever the globs say.
    pres = await alice.join_muc(room("#story62"), nick)
    assert pres["type"] != "error", pres
    assert gateway.proc.poll() is None


async def test_a_server_she_names_takes_her_port_and_tls(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
) -> None:
    # 'localhost' is not admin-defined: 6697 with TLS, unless she says otherwise. (The
    # admin lets users reach loopback here, which real deployments would not.)
    await start_with_irc(
        start_passerelle,
        ngircd.port,
        extra='allowed_servers = ["localhost"]\nallow_private_addresses = true',
    )
    alice, nick = await registered(new_client, "alice")
    form = await start_command(alice, server_jid("localhost"), "configure")
    fields = form["command"]["form"].get_fields()
    assert (fields["port"]["value"], fields["tls"]["value"]) == ("6697", True)
    result = await alice.run_command(
        server_jid("localhost"), "configure", port=str(ngircd.port), tls="false"
    )
    assert result["command"]["status"] == "completed"

    bob = await irc_people("bob63")
    await bob.join("#story63")
    pres = await alice.join_muc(room("#story63", server="localhost"), nick)
    assert pres["type"] != "error", pres
    await bob.expect(rf"^:{nick}!\S+ JOIN :?#story63")
    bob.say("#story63", "found you on your port")
    msg = await alice.next_groupchat(room("#story63", server="localhost"), "bob63")
    assert msg["body"] == "found you on your port"


async def test_a_fixed_server_needs_no_server_in_addresses_and_local_channels_work(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
) -> None:
    await start_with_irc(start_passerelle, ngircd.port, extra='fixed_server = "127.0.0.1"')
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob64")
    await bob.join("#story64")
    await bob.join("&story64")

    channel = f"#story64@{IRC_JID}"
    pres = await alice.join_muc(channel, nick)
    assert pres["type"] != "error", pres
    # No server contact: the gateway's own presence shows the connection.
    [gateway_presence] = alice.client_roster[IRC_JID].resources.values()
    assert gateway_presence["status"] == f"Connected to 127.0.0.1 as {nick}"
    bob.say("#story64", "no server in the address")
    assert (await alice.next_groupchat(channel, "bob64"))["body"] == "no server in the address"
    _, bob_item = muc_status(alice.occupants[channel]["bob64"])
    assert bob_item["jid"].startswith(f"bob64@{IRC_JID}")

    # A private message: the contact is nick@gateway.
    alice.send_chat(f"bob64@{IRC_JID}", "psst")
    assert await bob.heard(nick, "bob64") == "psst"
    bob.say(nick, "psst back")
    assert (await alice.next_message(f"bob64@{IRC_JID}"))["body"] == "psst back"

    # &local channels: '&' is escaped as XEP-0106 says (\26).
    local = f"\\26story64@{IRC_JID}"
    pres = await alice.join_muc(local, nick)
    assert pres["type"] != "error", pres
    await bob.expect(rf"^:{nick}!\S+ JOIN :?&story64")
    alice.send_groupchat(local, "on the local channel")
    assert await bob.heard(nick, "&story64") == "on the local channel"


async def test_multi_prefix_keeps_voice_under_op(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    # With multi-prefix the member list says "@+bob65": when bob loses his op he keeps
    # his voice (a member), where a single "@" would leave him with nothing.
    with InspIRCd(tmp_path / "inspircd") as server:
        await start_with_irc(start_passerelle, server.port)
        alice, nick = await registered(new_client, "alice")
        bob = await IrcPerson.connect(server.port, "bob65")
        try:
            await bob.join("#story65")
            bob.send("MODE #story65 +v bob65")
            await bob.expect(r" MODE #story65 \+v :?bob65")
            room65 = room("#story65")
            await alice.join_muc(room65, nick)
            _, item = muc_status(alice.occupants[room65]["bob65"])
            assert (item["role"], item["affiliation"]) == ("moderator", "admin")
            bob.send("MODE #story65 -o bob65")
            changed = await alice.next_occupant(room65, "bob65")
            _, item = muc_status(changed)
            assert (item["role"], item["affiliation"]) == ("participant", "member")
        finally:
            await bob.close()


async def test_registration_by_chat_command(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    # In a chat with the gateway, "register" asks the form's questions one by one.
    alice = await new_client("alice")
    nick = f"{alice.boundjid.user}_c"
    alice.send_chat(IRC_JID, "register")
    answers = {"IRC nick?": nick, "Real name": "Alice by Chat"}
    dialogue: list[str] = []
    for _ in range(100):  # the two questions, then slidge's preferences (defaults: "yes")
        said = (await alice.next_message(IRC_JID))["body"]
        dialogue.append(said)
        if said.startswith("Welcome to IRC through Passerelle"):
            break
        if said.endswith("(or 'abort')"):
            answer = next((a for q, a in answers.items() if said.startswith(q)), "yes")
            alice.send_chat(IRC_JID, answer)
    else:
        raise AssertionError(f"no welcome message at the end of: {dialogue}")

    bob = await irc_people("bob66")
    await bob.join("#story66")
    pres = await alice.join_muc(room("#story66"), nick)
    assert pres["type"] != "error", pres
    await bob.expect(rf"^:{nick}!\S+ JOIN :?#story66")
    bob.send(f"WHOIS {nick}")
    whois = await bob.expect(rf" 311 bob66 {nick} \S+ \S+ \* :(.*)$")
    assert whois.group(1) == "Alice by Chat"


async def test_private_conversations_land_in_the_users_own_archive(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick = await registered(new_client, "alice")
    bob = await irc_people("bob67")
    await alice.join_muc(room("#story67"), nick)  # connects her to the server
    bob.say(nick, "hello in private")
    assert (await alice.next_message(user("bob67")))["body"] == "hello in private"
    alice.send_chat(user("bob67"), "hello back")
    assert await bob.heard(nick, "bob67") == "hello back"
    # A raw PRIVMSG through the server's JID is part of the conversation too: her server
    # gets it as a message she sent to bob67 (a carbon through the message privilege).
    alice.send_chat(server_jid(), "PRIVMSG bob67 :sent as a raw line")
    assert await bob.heard(nick, "bob67") == "sent as a raw line"

    if "xep_0313" not in alice.plugin:
        alice.register_plugin("xep_0313")
    bodies: list[tuple[str, str]] = []
    for _ in range(20):  # her server archives asynchronously: look again, a bounded while
        iq = await alice.plugin["xep_0313"].retrieve(with_jid=JID(user("bob67")), timeout=20)
        bodies = [
            (str(m["from"].bare), m["body"])
            for m in (r["mam_result"]["forwarded"]["stanza"] for r in iq["mam"]["results"])
        ]
        if len(bodies) >= 3:
            break
        await asyncio.sleep(0.5)
    me = alice.boundjid.bare
    assert bodies == [
        (user("bob67"), "hello in private"),
        (me, "hello back"),
        (me, "sent as a raw line"),
    ]
    # The carbon is not sent to IRC again.
    bob.say(nick, "got them")
    assert (await alice.next_message(user("bob67")))["body"] == "got them"
    assert sum("sent as a raw line" in line for line in bob.lines) == 1


async def test_flood_control_keeps_the_order_and_an_own_encoding_decodes(
    ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    irc_people: People,
) -> None:
    # A small bucket (2 lines at once, then 4 a second) and a Cyrillic server encoding.
    await start_with_irc(
        start_passerelle,
        ngircd.port,
        extra="flood_burst = 2\nflood_rate = 4.0",
        server_extra='encoding = "cp1251"',
    )
    alice, nick, bob, room68 = await in_channel(new_client, irc_people, "bob68", "#story68")
    sent = [f"line {i}" for i in range(12)]
    for text in sent:
        alice.send_groupchat(room68, text)
    assert [await bob.heard(nick, "#story68") for _ in sent] == sent

    bob.send_raw("PRIVMSG #story68 :Привет, как дела?\r\n".encode("cp1251"))
    assert (await alice.next_groupchat(room68, "bob68"))["body"] == "Привет, как дела?"


async def test_what_irc_cannot_carry_is_not_offered(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room69 = await in_channel(new_client, irc_people, "bob69", "#story69")
    bob.say(nick, "hi")
    await alice.next_message(user("bob69"))
    # IRC cannot take a message back nor react to one: neither the room nor a nick offer
    # reactions, retractions or moderation (a moderator's retraction, XEP-0425).
    for jid in (room69, f"{user('bob69')}/slidge"):
        info = await alice.plugin["xep_0030"].get_info(jid=JID(jid), timeout=20)
        features = set(info["disco_info"]["features"])
        assert "urn:xmpp:reactions:0" not in features, jid
        assert not {f for f in features if "retract" in f or "moderate" in f}, features
    assert "urn:xmpp:message-correct:0" in features  # corrections are (s/old/new/)


async def test_a_long_line_without_spaces_is_split_between_characters(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    # 600 characters of 2, 3 and 4 bytes with no space to split on: several PRIVMSGs,
    # each valid UTF-8 (IrcPerson decodes with "replace": a cut character would show).
    alice, nick, bob, room70 = await in_channel(new_client, irc_people, "bob70", "#story70")
    text = "é€😀" * 200
    alice.send_groupchat(room70, text)
    received = ""
    for _ in range(10):
        received += await bob.heard(nick, "#story70")
        if len(received) >= len(text):
            break
    assert "\ufffd" not in received
    assert received == text


async def test_halfop_and_voice_become_roles_and_affiliations(
    irc_gateway: PasserelleProcess, new_client: NewClient, irc_people: People
) -> None:
    alice, nick, bob, room71 = await in_channel(new_client, irc_people, "bob71", "#story71")
    for modes, standing in [
        (f"+h {nick}", ("moderator", "member")),  # halfop (%): moderates, not an admin
        (f"-h+v {nick} {nick}", ("participant", "member")),  # voice (+)
        (f"-v {nick}", ("participant", "none")),
    ]:
        bob.send(f"MODE #story71 {modes}")
        _, item = muc_status(await alice.next_occupant(room71, nick))
        assert (item["role"], item["affiliation"]) == standing, modes
