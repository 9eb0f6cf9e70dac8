"""The same stories against InspIRCd, the IRCv3 server (CAP 302, server-time, msgid,
multi-prefix, extended-join...): what works on ngIRCd must work here too."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gateway.localservers import InspIRCd
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, start_with_irc
from tests.e2e.xmpp_client import muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def inspircd(tmp_path: Path) -> Iterator[InspIRCd]:
    with InspIRCd(tmp_path / "inspircd") as server:
        yield server


async def test_talk_topic_and_modes_on_an_ircv3_server(
    inspircd: InspIRCd,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    gateway = await start_with_irc(start_passerelle, inspircd.port)
    alice, nick = await registered(new_client, "alice")
    bob = await IrcPerson.connect(inspircd.port, "bob31")
    try:
        await bob.join("#story31")
        bob.send("TOPIC #story31 :ircv3 topic")
        room31 = room("#story31")
        pres = await alice.join_muc(room31, nick)
        assert pres["type"] != "error", pres
        _, bob_item = muc_status(alice.occupants[room31]["bob31"])
        assert bob_item["role"] == "moderator"
        assert (await alice.next_subject(room31))["subject"] == "ircv3 topic"

        bob.say("#story31", "hello from IRCv3")
        msg = await alice.next_groupchat(room31, "bob31")
        assert msg["body"] == "hello from IRCv3"
        # A live message carries no delay, although the server stamped it (server-time).
        assert msg.xml.find("{urn:xmpp:delay}delay") is None

        alice.send_groupchat(room31, "/me answers")
        assert await bob.heard(nick, "#story31") == "\x01ACTION answers\x01"

        bob.send(f"MODE #story31 +v {nick}")
        voiced = await alice.next_occupant(room31, nick)
        assert muc_status(voiced)[1]["affiliation"] == "member"
    finally:
        await bob.close()
    assert gateway.proc.poll() is None
