"""The same stories against the IRCv3 servers, InspIRCd and Ergo (CAP 302, server-time,
msgid, multi-prefix, extended-join...): what works on ngIRCd must work there too, and
what IRCv3 adds: delivery confirmed by echo-message (both servers), history on join with
its time, away-notify (InspIRCd)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from slixmpp.stanza import Message

from gateway.localservers import Ergo, InspIRCd
from gateway.localservers.inspircd import IRCV3_MODULES
from tests.e2e.conftest import PasserelleProcess
from tests.e2e.irc_helpers import IrcPerson, NewClient, registered, room, start_with_irc
from tests.e2e.xmpp_client import muc_status

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture(params=["inspircd", "ergo"])
def ircv3(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[InspIRCd | Ergo]:
    """Each IRCv3 server: InspIRCd 3 (Debian bookworm) and Ergo (Debian trixie's)."""
    server = (
        InspIRCd(tmp_path / "inspircd") if request.param == "inspircd" else Ergo(tmp_path / "ergo")
    )
    with server:
        yield server


async def test_talk_topic_and_modes_on_an_ircv3_server(
    ircv3: InspIRCd | Ergo,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    gateway = await start_with_irc(start_passerelle, ircv3.port)
    alice, nick = await registered(new_client, "alice")
    bob = await IrcPerson.connect(ircv3.port, "bob31")
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


def stanza_id(msg: Message) -> str | None:
    sid = msg.xml.find("{urn:xmpp:sid:0}stanza-id")
    return None if sid is None else sid.get("id")


async def test_echo_message_confirms_delivery_with_the_servers_msgid(
    ircv3: InspIRCd | Ergo,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    await start_with_irc(start_passerelle, ircv3.port)
    alice, nick = await registered(new_client, "alice")
    bob = await IrcPerson.connect(ircv3.port, "bob32", caps=("message-tags",))
    try:
        await bob.join("#story32")
        room32 = room("#story32")
        await alice.join_muc(room32, nick)
        await bob.expect(rf"^(@\S+ )?:{nick}!\S+ JOIN :?#story32")

        # alice's message reaches bob with the server's msgid; her client shows it once,
        # when the server has relayed it, with that msgid as its stanza id.
        alice.send_groupchat(room32, "confirmed by the server")
        text, tags = await bob.heard_tagged(nick, "#story32")
        assert text == "confirmed by the server" and tags.get("msgid")
        echo = await alice.next_groupchat(room32, nick)
        assert echo["body"] == "confirmed by the server"
        assert stanza_id(echo) == tags["msgid"]
        bob.say("#story32", "got it")
        after = await alice.next_groupchat(room32)
        assert (after["from"].resource, after["body"]) == ("bob32", "got it")  # no 2nd echo

        # In a moderated channel the server refuses her line: she gets an error, no echo.
        bob.send("MODE #story32 +m")
        await alice.next_groupchat(room32)  # "bob32 sets mode +m"
        alice.send_groupchat(room32, "can anyone hear me?")
        refused = await alice.next_groupchat(room32)
        assert refused["type"] == "error", refused
        assert refused["error"]["condition"] == "forbidden"
        assert "+m" in refused["error"]["text"] and "(404)" in refused["error"]["text"]
        bob.send(f"MODE #story32 +v {nick}")
        await alice.next_occupant(room32, nick)
        alice.send_groupchat(room32, "now I can talk")
        assert await bob.heard(nick, "#story32") == "now I can talk"
        assert (await alice.next_groupchat(room32, nick))["body"] == "now I can talk"
        assert not bob.saw("can anyone hear me")
    finally:
        await bob.close()


async def test_history_on_join_keeps_its_time_and_away_shows_on_occupants(
    tmp_path: Path,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    # InspIRCd's chanhistory plays the channel's last lines (+H) to whoever joins, in a
    # `chathistory` batch with their original server-time.
    with InspIRCd(tmp_path / "history", modules=(*IRCV3_MODULES, "chanhistory")) as server:
        await start_with_irc(start_passerelle, server.port)
        alice, nick = await registered(new_client, "alice")
        bob = await IrcPerson.connect(server.port, "bob33")
        carol = await IrcPerson.connect(server.port, "carol33")
        try:
            await bob.join("#story33")
            await carol.join("#story33")
            bob.send("MODE #story33 +H 10:1d")
            bob.say("#story33", "said before alice came")
            carol.send("AWAY :out for lunch")
            await carol.expect(" 306 carol33 ")
            await asyncio.sleep(1.5)  # server-time has whole seconds here
            joined_at = datetime.now(UTC)

            room33 = room("#story33")
            pres = await alice.join_muc(room33, nick, history=10)
            assert pres["type"] != "error", pres
            # carol was away before alice came: her occupant says so (WHO on join).
            assert alice.occupants[room33]["carol33"]["show"] == "away"
            old = await alice.next_groupchat(room33, "bob33")
            assert old["body"] == "said before alice came"
            stamp = old.xml.find("{urn:xmpp:delay}delay")
            assert stamp is not None
            assert datetime.fromisoformat(stamp.get("stamp", "")) < joined_at
            bob.say("#story33", "live now")
            live = await alice.next_groupchat(room33, "bob33")
            assert live["body"] == "live now"  # the history came once, not twice

            # away-notify: bob goes away and comes back; his occupant follows.
            bob.send("AWAY :brb")
            away = await alice.next_occupant(room33, "bob33", "away")  # slixmpp: type = show
            assert away["status"] == "brb"
            bob.send("AWAY")
            back = await alice.next_occupant(room33, "bob33")
            assert back["show"] == ""
        finally:
            await bob.close()
            await carol.close()
