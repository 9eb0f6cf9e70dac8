"""The IRC server restarts under a joined user: Passerelle reconnects, rejoins, delivers."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.localservers import NgIrcd
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, server_jid, start_with_irc

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture
def own_ngircd(tmp_path: Path) -> Iterator[NgIrcd]:
    """An ngIRCd this test may stop and start again (same port)."""
    with NgIrcd(tmp_path / "ngircd") as server:
        yield server


async def test_server_restart_reconnects_rejoins_and_delivers_the_queue(
    own_ngircd: NgIrcd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    gateway = await start_with_irc(
        start_passerelle, own_ngircd.port, extra="reconnect_queue_size = 2"
    )
    alice, nick = await registered(new_client, "alice")
    bob = await IrcPerson.connect(own_ngircd.port, "bob21")
    try:
        await bob.join("#story21")
        room21 = room("#story21")
        await alice.join_muc(room21, nick)
        await bob.expect(rf"^:{nick}!\S+ JOIN :?#story21")
    finally:
        await bob.close()

    # The IRC server goes away. alice is told once, however many attempts fail.
    mark = len(gateway.lines)
    await asyncio.to_thread(own_ngircd.stop)
    lost = await alice.next_message(server_jid())
    while "Lost the connection" not in lost["body"]:
        lost = await alice.next_message(server_jid())

    # What she says meanwhile waits in the queue (2 lines here); beyond it, a clear error.
    alice.send_groupchat(room21, "said while away")
    alice.send_groupchat(room21, "and this too")
    alice.send_groupchat(room21, "one too many")
    error = await alice.next_groupchat(room21)
    while error["type"] != "error":
        error = await alice.next_groupchat(room21)
    assert error["error"]["condition"] == "resource-constraint"
    assert "not connected to IRC server '127.0.0.1'" in error["error"]["text"]
    assert "not sent" in error["error"]["text"]

    # Wait until the gateway backs off for a few seconds, then bring the server back and
    # let bob in first, so that he is there to hear the queue.
    await gateway.wait_for(r"reconnecting in ([3-9]|\d\d)\.\d s", after=mark, timeout=60)
    await asyncio.to_thread(own_ngircd.start)
    bob = await IrcPerson.connect(own_ngircd.port, "bob21")
    try:
        await bob.join("#story21")
        await bob.expect(rf"^:{nick}!\S+ JOIN :?#story21", timeout=30)
        assert await bob.heard(nick, "#story21") == "said while away"
        assert await bob.heard(nick, "#story21") == "and this too"

        back = await alice.next_message(server_jid())
        notices = [lost["body"], back["body"]]
        while "Reconnected" not in back["body"]:
            back = await alice.next_message(server_jid())
            notices.append(back["body"])
        assert sum("Lost the connection" in n for n in notices) == 1

        # And the room works again, both ways.
        bob.say("#story21", "welcome back")
        assert (await alice.next_groupchat(room21, "bob21"))["body"] == "welcome back"
        alice.send_groupchat(room21, "thanks")
        assert await bob.heard(nick, "#story21") == "thanks"
    finally:
        await bob.close()
