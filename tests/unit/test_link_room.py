"""One link's logic against a fake component and a fake IRC server: who joins, who
speaks, in which order, what is never relayed back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
from slixmpp import JID

from gateway.config import LinkConfig
from gateway.link import room as room_mod
from gateway.link.bridge import Recent, SelfPing, irc_nick
from gateway.link.component import (
    MAM_NS,
    ArchiveError,
    ArchivePage,
    JoinResult,
    MucPresence,
    RoomMessage,
)
from gateway.link.room import Link
from gateway.link.store import Position
from legacy_plugins.irc import events as ev
from legacy_plugins.irc.events import Channel, ISupport, Nick, Prefix, casefold

ROOM = "lounge@conference.example.org"
CHANNEL = Channel("#lounge")
LISTENER = "#lounge%irc.example.net@link.example.org/link"
DAVE = "dave%irc.example.net@link.example.org/irc"


class FakeComponent:
    def __init__(self) -> None:
        self.boundjid = JID("link.example.org")
        self.online = asyncio.Event()
        self.online.set()
        self.sent_ids: Recent[str, bool] = Recent(100)
        self.features: frozenset[str] | None = frozenset({"muc_open"})
        self.answers: dict[str, list[JoinResult]] = {}
        self.joins: list[tuple[str, str, bool]] = []
        self.said: list[tuple[str, str | None, str | None]] = []
        self.left: list[tuple[str, str]] = []
        self.private: list[tuple[str, str]] = []
        self.destroyed: list[str] = []
        self.notified: list[str] = []
        self.verdict: SelfPing = "joined"
        self.pings = 0
        self.links: list[Any] = []
        self.pages: list[ArchivePage] = []
        self.queries: list[tuple[str | None, int, str | None]] = []
        self.archive_open = asyncio.Event()
        self.archive_open.set()

    def attach(self, link: Any) -> None:
        self.links.append(link)

    def detach(self, link: Any) -> None:
        self.links.remove(link)

    def our_nicks(self, room: str) -> set[str]:
        return set().union(*(link.nicks() for link in self.links))

    async def join(self, room: str, nick: str, jid: str, *, new: bool = True) -> JoinResult:
        self.joins.append((nick, jid, new))
        script = self.answers.get(jid)
        if script:
            answer = script.pop(0)
            return JoinResult(nick, created=True) if answer.created else answer
        return JoinResult(nick)

    def leave(self, room: str, nick: str, jid: str, status: str = "") -> None:
        self.left.append((nick, jid))

    def send_groupchat(
        self, room: str, jid: str, body: str | None = None, *, subject: str | None = None
    ) -> str:
        self.said.append((jid, body, subject))
        return "id"

    def send_private(self, room: str, nick: str, jid: str, body: str) -> None:
        self.private.append((nick, body))

    async def self_ping(self, room: str, nick: str, jid: str) -> SelfPing:
        self.pings += 1
        return self.verdict

    async def room_features(self, room: str) -> frozenset[str] | None:
        return self.features

    async def archive(
        self, room: str, jid: str, after: str | None, limit: int, before: str | None = None
    ) -> ArchivePage:
        self.queries.append((after, limit, before))
        await self.archive_open.wait()
        return self.pages.pop(0) if self.pages else ArchivePage((), True, None)

    async def destroy(self, room: str, jid: str, reason: str) -> None:
        self.destroyed.append(room)

    def notify_admins(self, text: str) -> None:
        self.notified.append(text)


class FakeClient:
    def __init__(self, nick: str, log: list[tuple[str, ...]]) -> None:
        self.nick, self.log, self.ready = nick, log, True
        self.state = SimpleNamespace(isupport=ISupport())

    def send_text(self, target: str, text: str, *, action: bool = False) -> int:
        self.log.append(("say", self.nick, f"ACTION {text}" if action else text))
        return 1

    def send(self, command: str, *params: str) -> None:
        self.log.append((command, self.nick, *params))


class FakeServer:
    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []
        self.relay = FakeClient("passerelle", self.log)
        self.settings = SimpleNamespace(max_irc_connections=50)
        self.clients: dict[str, FakeClient] = {}
        self.closed: list[tuple[str, str]] = []
        self.renamed: list[tuple[str, str]] = []
        self.refuse = False

    def fold(self, name: str) -> str:
        return casefold(name)

    def is_own(self, nick: str) -> bool:
        return nick == "passerelle" or any(c.nick == nick for c in self.clients.values())

    def attach(self, link: Any) -> None:
        pass

    async def detach(self, link: Any, reason: str) -> None:
        pass

    async def join_relay(self, channel: str) -> None:
        pass

    async def puppet_for(self, link: Any, occupant: str, template: str) -> FakeClient | None:
        if self.refuse:
            return None
        return self.clients.setdefault(occupant, FakeClient(irc_nick(template, occupant), self.log))

    async def release_puppet(self, key: tuple[str, str], reason: str) -> None:
        self.closed.append(key)

    def rename_puppet(self, link: Any, old: str, new: str, template: str) -> None:
        self.renamed.append((old, new))

    async def barrier(self, client: FakeClient) -> None:
        self.log.append(("barrier", client.nick))

    def puppets_of(self, link: Any) -> int:
        return len(self.clients)

    def own_nick_of(self, link: Any, occupant: str) -> str | None:
        client = self.clients.get(occupant)
        return client.nick if client else None


async def until(condition: Callable[[], object], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - polling the fakes keeps them plain
            await asyncio.sleep(0.005)


class Rig:
    def __init__(self, position: Position | None = None, **options: Any) -> None:
        self.component = FakeComponent()
        self.server = FakeServer()
        self.positions: list[Position] = []
        spec = LinkConfig(muc=ROOM, irc="ircs://irc.example.net/#lounge", **options)
        self.link = Link(
            "the link",
            spec,
            self.component,  # type: ignore[arg-type]
            self.server,  # type: ignore[arg-type]
            allow_puppets=True,
            position=position,
            save_position=self.positions.append,
        )
        self.task: asyncio.Task[None] | None = None

    async def start(self, wait: bool = True) -> None:
        self.task = asyncio.create_task(self.link.run())
        if wait:
            await until(lambda: self.link.state == "linked")

    async def stop(self) -> None:
        assert self.task is not None
        self.task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await self.task

    def irc_says(self, nick: str, text: str, kind: ev.MessageKind = "privmsg") -> None:
        self.link.irc_event(
            ev.MessageReceived(Prefix(nick, nick, "host"), CHANNEL, text, kind, CHANNEL)
        )

    def room_says(self, nick: str, body: str, **fields: Any) -> None:
        self.link.on_message(RoomMessage(ROOM, nick, LISTENER, body, **fields))


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    rig = Rig()
    yield rig
    if rig.task is not None and not rig.task.done():
        await rig.stop()


# --- the room ----------------------------------------------------------------------------


async def test_the_listener_joins_and_leaves(rig: Rig) -> None:
    await rig.start()
    assert rig.component.joins == [("#lounge", LISTENER, True)]
    assert rig.link.owns(LISTENER) and rig.link.nicks() == {"#lounge"}
    await rig.stop()
    assert rig.component.left == [("#lounge", LISTENER)]
    assert rig.component.links == []


async def test_a_missing_room_is_reported_not_joined(rig: Rig) -> None:
    rig.component.features = None
    await rig.start(wait=False)
    await until(lambda: rig.link.state == "room missing")
    assert rig.component.joins == []
    assert "does not exist" in rig.component.notified[0]


async def test_a_join_that_creates_the_room_is_undone(rig: Rig) -> None:
    rig.component.answers[LISTENER] = [JoinResult(created=True)]
    await rig.start(wait=False)
    await until(lambda: rig.link.state == "room missing")
    assert rig.component.destroyed == [ROOM]
    assert "destroyed again" in rig.component.notified[0]


async def test_the_listener_takes_another_nick_on_conflict(rig: Rig) -> None:
    rig.component.answers[LISTENER] = [JoinResult(error="conflict")]
    await rig.start()
    assert [nick for nick, _, _ in rig.component.joins] == ["#lounge", "#lounge[irc]"]
    assert rig.link.listener_nick == "#lounge[irc]"


async def test_a_quiet_room_is_self_pinged_and_rejoined_when_it_forgot_us(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(room_mod, "SELF_PING_EVERY", 0.05)
    rig.component.verdict = "joined"
    await rig.start()
    await until(lambda: rig.component.pings >= 2)
    assert len(rig.component.joins) == 1
    rig.component.verdict = "rejoin"
    await until(lambda: len(rig.component.joins) >= 2)
    assert rig.component.joins[1] == ("#lounge", LISTENER, True)


async def test_a_kicked_listener_joins_again(rig: Rig) -> None:
    await rig.start()
    rig.link.on_presence(
        MucPresence(ROOM, "#lounge", LISTENER, "unavailable", frozenset({110, 307}), is_muc=True)
    )
    await until(lambda: len(rig.component.joins) >= 2)


# --- IRC → room --------------------------------------------------------------------------


async def test_irc_people_speak_as_their_own_occupants(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")
    rig.irc_says("dave", "\x02bold\x02 move")
    rig.irc_says("dave", "waves", "action")
    rig.irc_says("dave", "psst", "notice")
    await until(lambda: len(rig.component.said) == 4)
    assert rig.component.joins[1:] == [("dave", DAVE, True)]  # joined once, lazily
    assert rig.component.said == [
        (DAVE, "hi", None),
        (DAVE, "*bold* move", None),
        (DAVE, "/me waves", None),
        (DAVE, "[notice] psst", None),
    ]
    assert "dave" in rig.link.nicks() and rig.link.owns(DAVE)


async def test_a_taken_nick_gets_a_suffix_and_a_refused_one_the_listener(rig: Rig) -> None:
    erin = DAVE.replace("dave", "erin")
    rig.component.answers[DAVE] = [JoinResult(error="conflict")]
    rig.component.answers[erin] = [JoinResult(error="forbidden")]
    await rig.start()
    rig.irc_says("dave", "hi")
    rig.irc_says("erin", "hello")
    await until(lambda: len(rig.component.said) == 2)
    assert rig.component.said == [(DAVE, "hi", None), (LISTENER, "<erin> hello", None)]
    assert rig.link.nicks() == {"#lounge", "dave[irc]"}


async def test_irc_nick_changes_and_departures(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")
    rig.link.irc_event(ev.NickChanged(Nick("dave"), Nick("david")))
    rig.irc_says("david", "renamed")
    await until(lambda: len(rig.component.said) == 2)
    assert rig.component.joins[-1] == ("david", DAVE, False)  # a nick change, same JID
    assert rig.component.said[-1] == (DAVE, "renamed", None)
    rig.link.irc_event(ev.Quit(Nick("david"), "bye"))
    await until(lambda: rig.component.left)
    assert rig.component.left == [("david", DAVE)]
    assert not rig.link.owns(DAVE)


async def test_reconnected_relay_drops_people_who_are_gone(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")
    rig.irc_says("erin", "hello")
    await until(lambda: len(rig.component.said) == 2)
    rig.link.irc_event(ev.ChannelMembers(CHANNEL, (ev.Member(Nick("erin")),)))
    await until(lambda: rig.component.left)
    assert rig.component.left == [("dave", DAVE)]


async def test_all_present_irc_people_join_when_asked() -> None:
    rig = Rig(relay_joins_parts=True)
    await rig.start()
    members = (ev.Member(Nick("dave")), ev.Member(Nick("passerelle")), ev.Member(Nick("erin"), "@"))
    rig.link.irc_event(ev.ChannelMembers(CHANNEL, members))
    await until(lambda: len(rig.component.joins) == 3)
    assert [nick for nick, _, _ in rig.component.joins[1:]] == ["dave", "erin"]
    await rig.stop()
    assert {nick for nick, _ in rig.component.left} == {"dave", "erin", "#lounge"}


async def test_irc_topic_becomes_the_subject(rig: Rig) -> None:
    await rig.start()
    rig.link.irc_event(ev.Topic(CHANNEL, "linking", "dave", live=True))
    rig.link.irc_event(ev.Topic(CHANNEL, "linking", "dave", live=True))  # unchanged
    await until(lambda: rig.component.said)
    await asyncio.sleep(0.05)
    assert rig.component.said == [(DAVE, None, "linking")]


# --- room → IRC --------------------------------------------------------------------------


async def test_xmpp_people_speak_on_their_own_connections_in_order(rig: Rig) -> None:
    await rig.start()
    rig.room_says("alice", "one")
    rig.room_says("bob", "two")
    rig.room_says("alice", "/me three")
    await until(lambda: len(rig.server.log) == 5)
    assert rig.server.log == [
        ("say", "alice[x]", "one"),
        ("barrier", "alice[x]"),  # the server handled "one" before bob's line goes out
        ("say", "bob[x]", "two"),
        ("barrier", "bob[x]"),
        ("say", "alice[x]", "ACTION three"),
    ]


async def test_our_own_occupants_are_never_relayed_back(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")
    await until(lambda: rig.component.said)
    rig.room_says("dave", "hi")  # dave's puppet, by nick
    rig.room_says("#lounge", "<erin> x")  # the listener
    rig.component.sent_ids.put("ours", True)
    rig.room_says("someone", "hi", origin_id="ours")  # an echo of what we sent
    rig.room_says("", "room notice")  # the room itself
    rig.room_says("alice", "old", delayed=True)  # history
    rig.room_says("alice", "real")
    await until(lambda: rig.server.log)
    await asyncio.sleep(0.05)
    assert rig.server.log == [("say", "alice[x]", "real")]


def archived(nick: str, body: str, stanza_id: str, **fields: Any) -> RoomMessage:
    return RoomMessage(ROOM, nick, LISTENER, body, stanza_id=stanza_id, delayed=True, **fields)


async def test_after_a_join_the_archive_is_relayed_first_then_live_lines_once() -> None:
    rig = Rig(Position(room_id="s1"))
    rig.component.features = frozenset({"muc_open", MAM_NS})
    rig.component.archive_open.clear()
    rig.component.sent_ids.put("ours", True)
    rig.component.pages = [
        ArchivePage(
            (
                archived("bob", "said while away", "s2"),
                archived("dave", "our puppet's line", "s3", origin_id="ours"),
                archived("carol", "/me too", "s4"),
            ),
            complete=True,
            last="s4",
        )
    ]
    await rig.start()
    # Live lines arrive while the archive is read: one the archive has too, one new.
    rig.room_says("carol", "/me too", stanza_id="s4")
    rig.room_says("alice", "live", stanza_id="s5")
    rig.component.archive_open.set()
    await until(lambda: len([e for e in rig.server.log if e[0] == "say"]) == 3)
    await until(lambda: rig.positions and rig.positions[-1].room_id == "s5")
    await asyncio.sleep(0.05)
    assert [e for e in rig.server.log if e[0] == "say"] == [
        ("say", "bob[x]", "said while away"),
        ("say", "carol[x]", "ACTION too"),
        ("say", "alice[x]", "live"),
    ]
    assert rig.component.queries == [("s1", room_mod.CATCH_UP_MAX, None)]
    assert [p.room_id for p in rig.positions] == ["s2", "s3", "s4", "s5"]
    await rig.stop()


async def test_a_first_join_relays_nothing_old_and_starts_from_the_newest() -> None:
    rig = Rig()
    rig.component.features = frozenset({"muc_open", MAM_NS})
    rig.component.pages = [ArchivePage((archived("bob", "old", "s9"),), False, "s9")]
    await rig.start()
    await until(lambda: rig.positions)
    assert rig.component.queries == [(None, 1, None)]
    assert rig.positions == [Position(room_id="s9")] and rig.server.log == []
    await rig.stop()


async def test_the_archive_is_read_page_by_page_from_the_newest() -> None:
    rig = Rig(Position(room_id="s1"))
    rig.component.features = frozenset({"muc_open", MAM_NS})
    rig.component.pages = [  # the server answers two at a time
        ArchivePage((archived("b", "3", "s4"), archived("c", "4", "s5")), False, "s5", "s4"),
        ArchivePage((archived("a", "1", "s2"), archived("b", "2", "s3")), True, "s3", "s2"),
    ]
    await rig.start()
    await until(lambda: len(rig.server.log) >= 4)
    await asyncio.sleep(0.05)
    assert [e[2] for e in rig.server.log if e[0] == "say"] == ["1", "2", "3", "4"]
    assert rig.component.queries == [
        ("s1", room_mod.CATCH_UP_MAX, None),
        ("s1", room_mod.CATCH_UP_MAX - 2, "s4"),
    ]
    assert not any(e[0] == "NOTICE" for e in rig.server.log)
    await rig.stop()


async def test_more_than_the_catch_up_bound_is_said_on_irc() -> None:
    rig = Rig(Position(room_id="s1"))
    rig.component.features = frozenset({"muc_open", MAM_NS})
    rig.component.pages = [ArchivePage((archived("bob", "the newest", "s200"),), False, "s200")]
    await rig.start()
    await until(lambda: len(rig.server.log) == 2)
    notice, said = rig.server.log
    assert notice[:3] == ("NOTICE", "passerelle", "#lounge") and "not relayed" in notice[3]
    assert said == ("say", "bob[x]", "the newest")
    await rig.stop()


async def test_a_room_without_archive_says_so_and_relays_live_lines() -> None:
    rig = Rig(Position(room_id="s1"))
    await rig.start()  # features: no MAM
    rig.room_says("alice", "live", stanza_id="s2")
    await until(lambda: rig.server.log)
    assert rig.component.queries == [] and "no archive" in rig.link.archive_note
    assert "keeps no archive" in " ".join(await rig.link.check())
    await rig.stop()


async def test_private_messages_go_through_the_persons_own_connection(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")  # dave's occupant joins
    await until(lambda: rig.component.said)
    rig.link.on_private(DAVE, "alice", "just for you")
    await until(lambda: rig.server.log)
    assert rig.server.log == [("say", "alice[x]", "just for you")]
    # To the listener: an answer, nothing relayed.
    rig.link.on_private(LISTENER, "alice", "hello?")
    assert rig.component.private[-1][0] == "alice" and "not relayed" in rig.component.private[-1][1]
    # From IRC to alice[x]: a private message in the room from dave's occupant.
    event = ev.MessageReceived(Prefix("dave", "dave", "h"), "alice[x]", "psst", "privmsg", None)
    rig.link.irc_private("alice", event)
    await until(lambda: rig.component.private[-1] == ("alice", "psst"))
    await rig.stop()


async def test_history_lines_after_the_saved_line_are_relayed_once() -> None:
    mark = datetime(2026, 11, 21, 12, 0, 0, 718000, tzinfo=UTC)
    later = datetime(2026, 11, 21, 12, 0, 5, tzinfo=UTC)
    rig = Rig(Position(irc_msgid="m2", irc_time=mark))
    await rig.start()

    def history(nick: str, text: str, msgid: str) -> None:
        rig.link.irc_event(
            ev.MessageReceived(
                Prefix(nick, nick, "host"),
                CHANNEL,
                text,
                "privmsg",
                CHANNEL,
                time=later if msgid > "m2" else mark,
                msgid=msgid,
                history=True,
            )
        )

    rig.link.irc_event(ev.ChannelMembers(CHANNEL, ()))
    history("dave", "already relayed", "m1")
    history("erin", "the saved line", "m2")
    history("dave", "said while away", "m3")
    history("bob[x]", "our puppet, before the crash", "m4")
    history("erin", "me too", "m5")
    await until(lambda: len(rig.component.said) == 2)
    await asyncio.sleep(0.05)
    assert [body for _, body, _ in rig.component.said] == ["said while away", "me too"]
    assert rig.positions[-1] == Position(irc_msgid="m5", irc_time=later)
    await rig.stop()


async def test_a_first_replay_relays_nothing_and_starts_from_its_last_line(rig: Rig) -> None:
    when = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)
    await rig.start()
    rig.link.irc_event(ev.ChannelMembers(CHANNEL, ()))
    for msgid in ("m1", "m2"):
        rig.link.irc_event(
            ev.MessageReceived(
                Prefix("dave", "dave", "h"), CHANNEL, "old", "privmsg", CHANNEL,
                time=when, msgid=msgid, history=True,
            )
        )  # fmt: skip
    await until(lambda: rig.positions and rig.positions[-1].irc_msgid == "m2")
    assert rig.component.said == []
    await rig.stop()


async def test_a_message_the_room_refuses_is_not_lost_silently(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "hi")
    await until(lambda: rig.component.said)
    rig.link.on_error(DAVE, "forbidden", "You are not currently allowed to speak")
    assert rig.server.log[-1][:3] == ("NOTICE", "passerelle", "dave")
    assert "not currently allowed to speak" in rig.server.log[-1][3]
    assert "dave" in " ".join(await rig.link.check())  # the admin's check lists him
    await rig.stop()


async def test_a_position_the_archive_forgot_starts_from_its_newest_message() -> None:
    rig = Rig(Position(room_id="gone"))
    rig.component.features = frozenset({"muc_open", MAM_NS})
    calls = 0
    original = rig.component.archive

    async def archive(
        room: str, jid: str, after: str | None, limit: int, before: str | None = None
    ) -> ArchivePage:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ArchiveError("item-not-found")
        return await original(room, jid, after, limit, before)

    rig.component.archive = archive  # type: ignore[method-assign]
    rig.component.pages = [ArchivePage((archived("bob", "newest", "s9"),), False, "s9")]
    await rig.start()
    await until(lambda: rig.positions)
    assert rig.positions[-1].room_id == "s9" and rig.server.log == []
    assert rig.component.queries == [(None, 1, None)]
    await rig.stop()


async def test_the_relay_bot_speaks_when_there_is_no_puppet(rig: Rig) -> None:
    rig.server.refuse = True
    await rig.start()
    rig.room_says("alice", "hi\nthere")
    rig.room_says("bob", "/me nods")
    await until(lambda: len(rig.server.log) == 2)
    assert rig.server.log == [
        ("say", "passerelle", "<alice> hi\n<alice> there"),
        ("say", "passerelle", "* bob nods"),
    ]


async def test_corrections_and_replies(rig: Rig) -> None:
    await rig.start()
    rig.irc_says("dave", "which version?")
    await until(lambda: rig.component.said)
    rig.link.on_message(
        RoomMessage(ROOM, "dave", LISTENER, "which version?", stanza_id="s1", origin_id="x")
    )
    rig.room_says("alice", "it is 0.11", id="m1")
    rig.room_says("alice", "it is 0.12", id="m2", replace_id="m1")
    rig.room_says(
        "alice", "> which version?\nthis one", reply_to="dave", reply_id="s1", fallback=((0, 17),)
    )
    await until(lambda: len(rig.server.log) == 3)
    assert [line[2] for line in rig.server.log] == [
        "it is 0.11",
        "s/0.11/0.12/",
        "dave: «which version?» this one",
    ]


async def test_people_leaving_and_renaming_in_the_room(rig: Rig) -> None:
    await rig.start()
    rig.link.on_presence(
        MucPresence(
            ROOM, "bob", LISTENER, "unavailable", frozenset({303}), new_nick="rob", is_muc=True
        )
    )
    rig.link.on_presence(MucPresence(ROOM, "alice", LISTENER, "unavailable", is_muc=True))
    rig.link.on_presence(MucPresence(ROOM, "#lounge", LISTENER, "unavailable", is_muc=True))  # ours
    await until(lambda: rig.server.closed)
    assert rig.server.renamed == [("bob", "rob")]
    assert rig.server.closed == [("the link", "alice")]


async def test_a_room_subject_change_becomes_the_topic(rig: Rig) -> None:
    await rig.start()
    rig.room_says("alice", "", subject="old")  # the subject sent on join
    rig.room_says("alice", "", subject="new\nsubject")
    await until(lambda: rig.server.log)
    assert rig.server.log == [("TOPIC", "passerelle", "#lounge", "new subject")]


async def test_a_full_queue_tells_the_sender(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    await rig.start()
    rig.link._to_irc = asyncio.Queue(1)
    rig.room_says("alice", "one")
    rig.room_says("alice", "two")
    assert rig.component.private and rig.component.private[0][0] == "alice"


async def test_a_busy_room_is_not_pinged(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(room_mod, "SELF_PING_EVERY", 0.2)
    await rig.start()
    for _ in range(8):
        rig.room_says("alice", "still here")
        await asyncio.sleep(0.05)
    assert rig.component.pings == 0
    await until(lambda: rig.component.pings == 1)


# --- full queues -------------------------------------------------------------------------


async def test_a_full_queue_to_irc_is_reported_once_and_nothing_slips_past_the_notice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(room_mod, "QUEUE_MAX", 3)
    rig = Rig()
    channel_open = asyncio.Event()

    async def join_relay(channel: str) -> None:  # the IRC server is away
        await channel_open.wait()

    rig.server.join_relay = join_relay  # type: ignore[method-assign]
    await rig.start(wait=False)
    await until(lambda: rig.link.listener_nick is not None and rig.link._held is None)
    for i in range(1, 7):
        rig.room_says("bob", f"m{i}")
        await asyncio.sleep(0)  # the pump takes the first and waits for the channel
    assert len(rig.component.private) == 1
    assert rig.component.private[0][0] == "bob"
    assert "this is the only notice" in rig.component.private[0][1]
    channel_open.set()
    await until(lambda: rig.link.state == "linked")
    rig.room_says("bob", "back")
    await until(lambda: ("say", "bob[x]", "back") in rig.server.log)
    # The one the pump held, the 3 queued, then nothing until IRC was back.
    said = [line[2] for line in rig.server.log if line[0] == "say"]
    assert said == ["m1", "m2", "m3", "m4", "back"]
    assert len(rig.component.private) == 1
    await rig.stop()


async def test_a_full_queue_to_the_room_is_reported_once_to_the_irc_sender(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(room_mod, "QUEUE_MAX", 3)
    rig = Rig()
    rig.component.online.clear()  # the XMPP server is away
    await rig.start(wait=False)
    await until(rig.link._channel_ready.is_set)
    for i in range(1, 7):
        rig.irc_says("dave", f"d{i}")
        await asyncio.sleep(0)
    notices = [line for line in rig.server.log if line[0] == "NOTICE"]
    assert len(notices) == 1 and notices[0][2] == "dave"
    assert "this is the only notice" in notices[0][3]
    rig.component.online.set()
    await until(lambda: rig.link.state == "linked")
    rig.irc_says("dave", "back")
    await until(lambda: (DAVE, "back", None) in rig.component.said)
    assert [body for _, body, _ in rig.component.said] == ["d1", "d2", "d3", "d4", "back"]
    assert len([line for line in rig.server.log if line[0] == "NOTICE"]) == 1
    await rig.stop()
