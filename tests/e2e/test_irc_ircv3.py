"""History and connection state across a reconnection, against real IRC servers.

InspIRCd's `chanhistory` plays a channel's last lines to whoever joins, in a
`chathistory` batch with their msgids — also to the gateway when it rejoins after a
reconnection, while the XMPP user is still in the room: what the archive holds already
must not reach her twice. (IRCv3 `CHATHISTORY` requests, the back-fill proper, are
proven against Ergo: `test_irc_ergo.py`.) The
server's contact shows the connection's state as its presence, with the reason. Who is
logged in to a services account (WHOX on join, extended-join, account-tag,
account-notify) shows as a hat on the occupant.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from slixmpp import Presence

from gateway.localservers import Atheme, InspIRCd, ServicesLink
from gateway.localservers.inspircd import IRCV3_MODULES
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, server_jid, start_with_irc
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


async def test_history_replayed_on_a_rejoin_is_not_shown_twice(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    with InspIRCd(tmp_path / "history", modules=(*IRCV3_MODULES, "chanhistory")) as server:
        # (DEBUG: the plugin logs the lines it sends, checked at the end)
        gateway = await start_with_irc(start_passerelle, server.port, extra='log_level = "DEBUG"')
        alice, nick = await registered(new_client, "alice")
        bob = await IrcPerson.connect(server.port, "bob51")
        try:
            await bob.join("#story51")
            bob.send("MODE #story51 +H 10:1d")
            room51 = room("#story51")
            await alice.join_muc(room51, nick)
            bob.say("#story51", "said once")
            assert (await alice.next_groupchat(room51, "bob51"))["body"] == "said once"

            # Her connection to the server ends and comes back (a raw QUIT to the
            # server's JID); she stays in the room meanwhile.
            alice.send_chat(server_jid(), "QUIT :come back")
            await bob.expect(rf"^(@\S+ )?:{nick}!\S+ QUIT")
            await bob.expect(rf"^(@\S+ )?:{nick}!\S+ JOIN :?#story51", timeout=30)
            # The server replays "said once" to the gateway at its JOIN, before this line.
            bob.say("#story51", "after the reconnection")
            msg = await alice.next_groupchat(room51, "bob51")
            assert msg["body"] == "after the reconnection"
            bodies = [m["body"] for m in await alice.archive(room51)]
            assert bodies.count("said once") == 1
            # InspIRCd 3 offers no chathistory: the gateway never asked for it (two joins).
            sent = [line for line in gateway.lines if ".irc.client." in line and " >> " in line]
            assert sum(" >> JOIN #story51" in line for line in sent) == 2, sent[-20:]
            assert not [line for line in sent if " >> CHATHISTORY" in line]
        finally:
            await bob.close()


async def test_the_server_contact_shows_the_connection_state(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    with InspIRCd(tmp_path / "state") as server:
        gateway = await start_with_irc(start_passerelle, server.port)
        alice, nick = await registered(new_client, "alice")
        room52 = room("#story52")
        await alice.join_muc(room52, nick)  # (the presences meanwhile are in her roster)
        [(_, up)] = alice.client_roster[server_jid()].resources.items()
        assert (up["show"], up["status"]) == ("", f"Connected to 127.0.0.1 as {nick}")

        # The server goes away: offline, saying why and when the next attempt is.
        await asyncio.to_thread(server.stop)
        down = await alice.next_presence(server_jid(), "unavailable")
        assert down["status"].startswith("Disconnected: the server closed the connection: ")
        assert "Server shutting down" in down["status"]  # the server's own words
        assert "before registration" not in down["status"]  # no password hint: we were in
        assert "reconnecting in" in down["status"]
        # While it tries again: busy, "Connecting to …".
        trying = await alice.next_presence(server_jid(), "dnd", timeout=30)
        assert trying["status"] == "Connecting to 127.0.0.1"
        await asyncio.to_thread(server.start)
        back = await alice.next_presence(server_jid(), timeout=60)
        while back["show"]:  # skip further "connecting" presences
            back = await alice.next_presence(server_jid(), timeout=60)
        assert back["status"] == f"Connected to 127.0.0.1 as {nick}"
    assert gateway.proc.poll() is None


def hats(pres: Presence) -> list[str]:
    """The titles of an occupant's hats (XEP-0317)."""
    return [hat.get("title", "") for hat in pres.xml.iter("{urn:xmpp:hats:0}hat")]


async def shows_hats(client: Client, room_jid: str, nick: str, titles: list[str]) -> None:
    """Wait for a presence of occupant `nick` with these hats."""
    seen: list[list[str]] = []
    while (seen := [*seen, hats(await client.next_occupant(room_jid, nick))])[-1] != titles:
        assert len(seen) < 5, seen


async def register_account(person: IrcPerson) -> None:
    """NickServ REGISTER: Atheme logs the person in to the new account at once."""
    person.say("NickServ", f"REGISTER pass-{person.nick} {person.nick}@example.org")
    await person.expect(
        rf"NickServ!\S+ NOTICE {person.nick} :\W*{person.nick}\W* is now registered"
    )


async def test_services_accounts_show_as_hats_on_occupants(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    inspircd = InspIRCd(tmp_path / "inspircd", services=ServicesLink())
    with inspircd, Atheme(tmp_path / "atheme", uplink=inspircd):
        await start_with_irc(start_passerelle, inspircd.port)
        alice, nick = await registered(new_client, "alice")
        people = [await IrcPerson.connect(inspircd.port, n) for n in ("dave53", "bob53")]
        dave, bob = people
        try:
            # dave is logged in and in the channel before alice comes, bob is there
            # without an account: the WHOX the gateway sends on joining tells who is
            # logged in. (Her first join opens the connection, and its JOIN goes out
            # before the server says it has WHOX: then the hat follows the occupant list.)
            await register_account(dave)
            await dave.join("#story53")
            await bob.join("#story53")
            room53 = room("#story53")
            await alice.join_muc(room53, nick)
            if hats(alice.occupants[room53]["dave53"]) == []:
                await shows_hats(alice, room53, "dave53", ["IRC account: dave53"])
            assert hats(alice.occupants[room53]["bob53"]) == []
            # A channel she joins on the open connection has it in the list at once.
            await dave.join("#story53b")
            room53b = room("#story53b")
            await alice.join_muc(room53b, nick)
            assert hats(alice.occupants[room53b]["dave53"]) == ["IRC account: dave53"]
            bob.send("PART #story53")
            await alice.next_occupant(room53, "bob53", "unavailable")

            # bob logs in, then joins again: extended-join tells his account with the
            # JOIN, on his first presence.
            await register_account(bob)
            await bob.join("#story53")
            assert hats(await alice.next_occupant(room53, "bob53")) == ["IRC account: bob53"]

            # carol joins without an account, then registers: account-notify.
            carol = await IrcPerson.connect(inspircd.port, "carol53")
            people.append(carol)
            await carol.join("#story53")
            assert hats(await alice.next_occupant(room53, "carol53")) == []
            await register_account(carol)
            await shows_hats(alice, room53, "carol53", ["IRC account: carol53"])

            # dave speaks: his message's account tag says what is shown already.
            dave.say("#story53", "still here")
            assert (await alice.next_groupchat(room53, "dave53"))["body"] == "still here"
            # (A logout, ACCOUNT *, takes the hat off: unit-tested only, as the test
            # Atheme has no LOGOUT command.)
        finally:
            for person in people:
                await person.close()
