"""History and connection state across a reconnection, against real IRC servers.

InspIRCd's `chanhistory` plays a channel's last lines to whoever joins, in a
`chathistory` batch with their msgids — also to the gateway when it rejoins after a
reconnection, while the XMPP user is still in the room: what the archive holds already
must not reach her twice. (IRCv3 `CHATHISTORY` requests, the back-fill proper, are
offered by no server available here: see `tests/unit/test_irc_chathistory.py`.) The
server's contact shows the connection's state as its presence, with the reason.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.localservers import InspIRCd
from gateway.localservers.inspircd import IRCV3_MODULES
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, server_jid, start_with_irc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(150)]


async def test_history_replayed_on_a_rejoin_is_not_shown_twice(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    with InspIRCd(tmp_path / "history", modules=(*IRCV3_MODULES, "chanhistory")) as server:
        await start_with_irc(start_passerelle, server.port)
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
