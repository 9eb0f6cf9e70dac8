"""One link: an existing MUC room and an IRC channel, held together as one conversation.

A `Link` owns two ordered pipelines. IRC → XMPP: the relay connection's channel events
are queued and handled one at a time — an IRC user who speaks gets a puppet occupant
(joined on their first line, renamed with them, gone when they leave), so their lines
appear in the room under their own nick. XMPP → IRC: the listener occupant's room
messages are queued and handled one at a time — each XMPP occupant who speaks gets an
IRC connection of their own (or the relay bot speaks for them). Handling one item at a
time keeps each direction in order; when consecutive lines go out on two different IRC
connections, a PING barrier on the first keeps the second from overtaking it.

The link also keeps its occupants in the room: the listener joins only a room that
exists (a join that creates one is undone and reported to the admins), re-joins after a
kick or a lost connection, and checks its membership with XEP-0410 self-pings when the
room is quiet.

Nothing said while the link was away is lost, where the servers keep it: each side's
position (the room's stanza-id, the channel line's msgid and server-time) is saved as
messages are handled. On every join of the room, the room's MAM archive is read after
the saved stanza-id (the newest `CATCH_UP_MAX` messages at most, in order), while live
messages wait, then those live messages not already read go on. On every join of the
channel, lines of the IRC server's history on join (InspIRCd's chanhistory) after the
saved line are relayed. Our own occupants' and puppets' messages are recognised in
both (signed origin-ids; our puppets' nick shape) and never relayed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from gateway.backoff import Backoff
from gateway.config import LinkConfig
from gateway.errors import RemoteError
from legacy_plugins.irc import events as ev
from legacy_plugins.irc.client import IrcClient, JoinRefused, QueueFull
from legacy_plugins.irc.events import Channel, Member
from legacy_plugins.irc.protocol import LocalProtocolError
from legacy_plugins.irc.translate import irc_to_xmpp, notice_text, xmpp_to_irc

from .bridge import (
    OutgoingText,
    Recent,
    Reply,
    channel_localpart,
    is_own_occupant,
    looks_like_puppet,
    muc_nick_candidates,
    outgoing_text,
    relay_text,
    replay_after,
    strip_fallback,
)
from .component import (
    MAM_NS,
    ArchiveError,
    ArchivePage,
    LinkComponent,
    MucPresence,
    RoomMessage,
)
from .ircside import IrcServer
from .occupants import IrcOccupants
from .store import Position

__all__ = ["Link", "LinkState"]

log = logging.getLogger(__name__)

QUEUE_MAX = int(os.environ.get("PASSERELLE_LINK_QUEUE_MAX", "") or 1000)
"""Items waiting in each direction, e.g. while the other side is down (the environment
variable is for tests)."""
SELF_PING_EVERY = float(os.environ.get("PASSERELLE_LINK_SELF_PING_EVERY", "") or 300.0)
"""Seconds of quiet before checking that the room still has us (the environment variable
is for tests and troubleshooting)."""
CATCH_UP_MAX = 100  # archived room messages relayed after the link was away, at most
CATCH_UP_PAGES = 10  # archive queries for them, at most (Prosody answers 50 at a time)
ROOM_RETRY = Backoff(initial=10.0, cap=600.0)
HISTORY = 500  # recent room messages kept for corrections and reply quotes

LinkState = Literal["starting", "joining", "linked", "room missing", "refused", "stopped"]


@dataclass(frozen=True, slots=True)
class Say:
    """An XMPP occupant's message, ready for IRC."""

    nick: str
    text: OutgoingText
    stanza_id: str | None = None
    """The room's id of the message: the position, saved before the line goes out."""


@dataclass(frozen=True, slots=True)
class OccupantLeft:
    nick: str


@dataclass(frozen=True, slots=True)
class OccupantRenamed:
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class SubjectChanged:
    nick: str
    subject: str


@dataclass(frozen=True, slots=True)
class Seen:
    """A room message was handled (relayed or not): its stanza-id is the new position."""

    stanza_id: str


@dataclass(frozen=True, slots=True)
class Notice:
    """A line from the relay to the channel, about the link itself."""

    text: str


@dataclass(frozen=True, slots=True)
class IrcSeen:
    """A channel line of our own was seen: the new IRC position."""

    msgid: str | None
    time: datetime | None


@dataclass(frozen=True, slots=True)
class PrivateSay:
    """A private message from XMPP occupant `nick` to IRC user `to`."""

    nick: str
    to: str
    text: OutgoingText


@dataclass(frozen=True, slots=True)
class IrcPrivate:
    """IRC user `event.sender` wrote privately to the puppet of XMPP occupant `to`."""

    to: str
    event: ev.MessageReceived


ToIrc = Say | OccupantLeft | OccupantRenamed | SubjectChanged | Seen | Notice | PrivateSay


class Link:
    """A room ↔ channel link. `run()` until cancelled; it leaves both sides on the way out."""

    def __init__(
        self,
        link_id: str,
        spec: LinkConfig,
        component: LinkComponent,
        server: IrcServer,
        *,
        allow_puppets: bool,
        position: Position | None = None,
        save_position: Callable[[Position], None] | None = None,
    ) -> None:
        self.id = link_id
        self.spec = spec
        self.room = spec.muc
        url = spec.channel
        self.channel = Channel(url.channel)
        self._component = component
        self._server = server
        self._allow_puppets = allow_puppets and spec.double_puppet
        domain = component.boundjid.domain
        self.listener_jid = f"{channel_localpart(url.host, url.channel)}@{domain}/link"
        self.listener_nick: str | None = None
        self.state: LinkState = "starting"
        self.problem = ""
        self._rejoin = asyncio.Event()
        self._occupants = IrcOccupants(
            component,
            self.room,
            url.host,
            spec.xmpp_nick_template,
            fold=server.fold,
            casemapping=lambda: server.relay.state.isupport.casemapping,
            reserved=lambda: self.listener_nick,
            room_lost=self._rejoin.set,
        )
        self._to_irc: asyncio.Queue[ToIrc] = asyncio.Queue(QUEUE_MAX)
        self._to_xmpp: asyncio.Queue[ev.Event | IrcSeen | IrcPrivate] = asyncio.Queue(QUEUE_MAX)
        self._room_ready = asyncio.Event()
        self._channel_ready = asyncio.Event()
        self._history: Recent[str, tuple[str, str]] = Recent(HISTORY)
        self._subject: str | None = None
        self._last_client: IrcClient | None = None
        self._reported = ""
        self._heard = 0.0
        """When the listener last received something from the room (loop time)."""
        self._position = position or Position()
        self._save_position = save_position or (lambda _position: None)
        self._held: list[RoomMessage] | None = None
        """Live room messages that wait while the archive is read after a join."""
        self._replay_passed = False
        """In the IRC server's current history replay, the saved line was passed."""
        self._replay_fresh = False
        """The current history replay came with no saved line: none of it is relayed."""
        self._features: frozenset[str] = frozenset()
        self.archive_note = ""
        """Why lines said in the room while the link is away would be lost, if they would."""
        self._told_xmpp: set[str] = set()
        self._told_irc: set[str] = set()
        """Senders on each side told that their messages are not relayed (the link's
        queue is full): told once, and nothing more of theirs is queued, until a message
        of theirs went through or the queue is empty again — so the notice holds true."""
        self._told_conn: set[str] = set()
        """XMPP senders told that their IRC connection keeps no more lines."""

    def __repr__(self) -> str:
        return f"<Link {self.id}>"

    # --- what the component and the IRC server see ---------------------------------------

    def owns(self, jid: str) -> bool:
        return jid == self.listener_jid or self._occupants.owns(jid)

    def nicks(self) -> set[str]:
        nicks = self._occupants.nicks()
        if self.listener_nick is not None:
            nicks.add(self.listener_nick)
        return nicks

    @property
    def xmpp_puppets(self) -> int:
        return self._occupants.joined

    @property
    def irc_puppets(self) -> int:
        return self._server.puppets_of(self)

    async def check(self) -> list[str]:
        """What the room's owner must grant for this link, from the room's
        configuration and from what the room refused so far, in words for an admin."""
        try:
            features = await self._component.room_features(self.room)
        except RemoteError as exc:
            return [f"cannot check the room: {exc}"]
        if features is None:
            return [f"the room {self.room} does not exist: create it (persistent)"]
        domain = self._component.boundjid.domain
        listener = self.listener_jid.partition("/")[0]
        refused = self._occupants.refused.items()
        lines = [f"problem: {self.problem}"] if self.problem else []
        if "muc_membersonly" in features:
            lines.append(
                f"the room is members-only: make {listener} (the link's listener) a member, "
                f"and each IRC user's JID (nick%server@{domain}) who should speak as "
                "themselves; the others are relayed by the listener as <nick> text"
            )
        if "muc_moderated" in features:
            lines.append(
                "the room is moderated: give voice to the link's occupants (or make them "
                "members), or IRC users cannot speak"
            )
        if refused:
            lines.append(
                "refused so far: "
                + ", ".join(f"{jid} (IRC {nick}: {why})" for jid, (nick, why) in refused)
            )
        if "muc_passwordprotected" in features:
            lines.append("the room has a password, which the link does not support: remove it")
        if MAM_NS not in features:
            lines.append(
                "the room keeps no archive (MAM): what is said in it while the link is "
                "away is not relayed"
            )
        return lines or ["nothing to grant: the room lets the link in"]

    def irc_event(self, event: ev.Event) -> None:
        if isinstance(event, ev.MessageReceived) and self._was_told(event.sender.nick):
            return  # told that nothing more of theirs is relayed until the room is back
        try:
            self._to_xmpp.put_nowait(event)
        except asyncio.QueueFull:
            log.warning("%s: %d IRC events wait for the room; dropping %r", self, QUEUE_MAX, event)
            if isinstance(event, ev.MessageReceived):
                self._tell_irc_dropped(event.sender.nick)

    def _was_told(self, nick: str) -> bool:
        return self._server.fold(nick) in self._told_irc

    def _tell_irc_dropped(self, nick: str) -> None:
        """An IRC user's line was dropped: tell them once, not once per line."""
        folded = self._server.fold(nick)
        if folded in self._told_irc:
            return
        self._told_irc.add(folded)
        self._notice(
            nick,
            f"Not relayed to {self.room}: it is unreachable and {QUEUE_MAX} lines already "
            "wait for it. What you say before it is back is not relayed either; this is "
            "the only notice.",
        )

    def irc_own_line(self, event: ev.MessageReceived) -> None:
        """A line of one of our own connections in the channel: it moves the position."""
        if event.history or (event.msgid is None and event.time is None):
            return
        with contextlib.suppress(asyncio.QueueFull):
            self._to_xmpp.put_nowait(IrcSeen(event.msgid, event.time))

    def irc_private(self, occupant: str, event: ev.MessageReceived) -> None:
        if self._was_told(event.sender.nick):
            return
        try:
            self._to_xmpp.put_nowait(IrcPrivate(occupant, event))
        except asyncio.QueueFull:
            self._tell_irc_dropped(event.sender.nick)

    def _notice(self, nick: str, text: str) -> None:
        with contextlib.suppress(QueueFull, LocalProtocolError):
            self._server.relay.send("NOTICE", nick, text)

    def irc_connected(self) -> None:
        log.info("%s: relay connected to IRC", self)

    def xmpp_down(self) -> None:
        """The component lost its XMPP connection: every occupant must join again."""
        self._room_ready.clear()
        self._rejoin.set()
        self._occupants.unjoined()

    # --- running -------------------------------------------------------------------------

    async def run(self) -> None:
        self._component.attach(self)
        self._server.attach(self)
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._keep_room(), name=f"room {self.room}")
                tasks.create_task(self._keep_channel(), name=f"channel {self.channel}")
                tasks.create_task(self._pump_to_xmpp(), name=f"to-xmpp {self.room}")
                tasks.create_task(self._pump_to_irc(), name=f"to-irc {self.room}")
        finally:
            self.state = "stopped"
            self._leave_room("the link was stopped")
            self._component.detach(self)
            await self._server.detach(self, "the link was stopped")

    def _leave_room(self, status: str) -> None:
        if not self._component.online.is_set():
            return
        self._occupants.leave_all(status)
        if self.listener_nick is not None and self._room_ready.is_set():
            self._component.leave(self.room, self.listener_nick, self.listener_jid, status)
        self._room_ready.clear()

    def _report(self, state: LinkState, problem: str) -> None:
        self.state, self.problem = state, problem
        if problem != self._reported:
            self._reported = problem
            self._component.notify_admins(f"Link {self.id}: {problem}")

    def _maybe_linked(self) -> None:
        if self._room_ready.is_set() and self._channel_ready.is_set():
            self.state, self.problem, self._reported = "linked", "", ""
            log.info("linked %s ↔ %s as %s", self.room, self.channel, self.listener_nick)

    async def _keep_room(self) -> None:
        failures = 0
        while True:
            await self._component.online.wait()
            self.state = "joining"
            self._held = []
            if not await self._join_listener():
                self._held = None
                failures += 1
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(ROOM_RETRY.delay(failures, random.random())):  # noqa: S311
                        await self._rejoin.wait()
                self._rejoin.clear()
                continue
            failures = 0
            self._rejoin.clear()
            self._room_ready.set()
            self._maybe_linked()
            await self._catch_up()
            await self._stay_in_room()
            self._room_ready.clear()
            self._occupants.unjoined()

    async def _stay_in_room(self) -> None:
        """Return when the listener must join again: kicked, disconnected, or forgotten
        by the room (XEP-0410: a self-ping after `SELF_PING_EVERY` seconds without a
        stanza from the room)."""
        loop = asyncio.get_running_loop()
        self._heard = loop.time()
        while True:
            wake = max(self._heard + SELF_PING_EVERY, loop.time() + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(wake):
                    await self._rejoin.wait()
            if self._rejoin.is_set() or not self._component.online.is_set():
                log.info("%s: joining %s again", self, self.room)
                return
            if loop.time() - self._heard < SELF_PING_EVERY:
                continue  # the room spoke meanwhile: it still has us
            assert self.listener_nick is not None
            verdict = await self._component.self_ping(
                self.room, self.listener_nick, self.listener_jid
            )
            self._heard = loop.time()
            if verdict == "rejoin":
                log.warning(
                    "%s: the room %s no longer has us (self-ping); rejoining", self, self.room
                )
                return

    async def _room_problem(self) -> tuple[LinkState, str] | None:
        """Why the listener must not join the room now, if it must not."""
        try:
            features = await self._component.room_features(self.room)
        except RemoteError as exc:
            return "refused", f"cannot check the room: {exc}"
        if features is None:
            return "room missing", (
                f"the room {self.room} does not exist; Passerelle only links existing "
                "rooms. Create it (persistent), then pause and resume the link."
            )
        if "muc_passwordprotected" in features:
            return "refused", f"the room {self.room} has a password; remove it"
        self._features = features
        return None

    async def _catch_up(self) -> None:
        """Read the room's archive after the saved position, then let the live messages
        that waited meanwhile go on (those the archive had are skipped)."""
        seen: set[str] = set()
        try:
            seen = await self._read_archive()
        finally:
            held, self._held = self._held or [], None
            for message in held:
                if message.stanza_id is None or message.stanza_id not in seen:
                    self._handle(message, archived=False)

    async def _read_archive(self) -> set[str]:
        if MAM_NS not in self._features:
            self.archive_note = (
                f"the room {self.room} keeps no archive (MAM): what is said in it while "
                "the link is away is not relayed"
            )
            log.warning("%s: %s", self, self.archive_note)
            return set()
        self.archive_note = ""
        after = self._position.room_id
        try:
            page = await self._newest_after(after) if after else await self._newest_after(None, 1)
        except ArchiveError as exc:
            if after is None or exc.condition != "item-not-found":
                log.warning("%s: cannot read the archive of %s: %s", self, self.room, exc)
                return set()
            log.warning(
                "%s: the archive of %s no longer has message %s; what was said in the "
                "room while the link was away is not relayed", self, self.room, after,
            )  # fmt: skip
            after = None
            try:
                page = await self._newest_after(None, 1)
            except ArchiveError as again:
                log.warning("%s: cannot read the archive of %s: %s", self, self.room, again)
                return set()
        if after is None:  # nothing to catch up: start from the newest archived message
            if page.last is not None:
                self._queue(Seen(page.last))
            return set()
        if page.messages:
            log.info(
                "%s: %d messages were said in the room while the link was away; relaying them",
                self, len(page.messages),
            )  # fmt: skip
        if not page.complete:
            self._queue(
                Notice(
                    f"Older messages said in {self.room} while the link was away are not "
                    f"relayed (only the last {len(page.messages)} are)."
                )
            )
        for message in page.messages:
            self._handle(message, archived=True)
        return {m.stanza_id for m in page.messages if m.stanza_id}

    async def _newest_after(self, after: str | None, limit: int = CATCH_UP_MAX) -> ArchivePage:
        """The newest `limit` archived messages after `after`, oldest first, asked page
        by page from the newest back (the server may answer fewer than asked)."""
        messages: list[RoomMessage] = []
        newest: str | None = None
        before: str | None = None
        for _ in range(CATCH_UP_PAGES):
            page = await self._component.archive(
                self.room, self.listener_jid, after, limit - len(messages), before
            )
            newest = newest or page.last
            messages[:0] = page.messages
            if page.complete or not page.messages or page.first is None:
                return ArchivePage(tuple(messages), page.complete, newest)
            if len(messages) >= limit:
                break
            before = page.first
        return ArchivePage(tuple(messages), False, newest)

    async def _join_listener(self) -> bool:
        problem = await self._room_problem()
        if problem is not None:
            self._report(*problem)
            return False
        self._subject = None
        for nick in muc_nick_candidates(self.channel):
            result = await self._component.join(self.room, nick, self.listener_jid)
            if result.ok and result.created:
                await self._component.destroy(
                    self.room, self.listener_jid, "Created by mistake by the IRC link"
                )
                problem = (
                    "room missing",
                    (
                        f"the room {self.room} did not exist and joining it created it; it "
                        "was destroyed again. Create it yourself, then pause and resume the link."
                    ),
                )
                break
            if result.ok:
                self.listener_nick = result.nick
                return True
            if result.error != "conflict":
                hint = ""
                if result.error == "registration-required":
                    hint = f" (members-only: make {self._component.boundjid.domain} members)"
                text = f"the room {self.room} refused the link: {result.error} {result.text}"
                problem = "refused", text.strip() + hint
                break
        self._report(*(problem or ("refused", f"every nick for the link in {self.room} is taken")))
        return False

    async def _keep_channel(self) -> None:
        try:
            await self._server.join_relay(self.channel)
        except JoinRefused as exc:
            self._report("refused", str(exc))
            return
        self._channel_ready.set()
        self._maybe_linked()

    # --- IRC → XMPP ----------------------------------------------------------------------

    async def _pump_to_xmpp(self) -> None:
        while True:
            event = await self._to_xmpp.get()
            if self._to_xmpp.empty():
                self._told_irc.clear()  # nothing waits: everyone's lines are queued again
            if isinstance(event, IrcSeen):
                self._irc_position(event.msgid, event.time)
                continue
            await self._room_ready.wait()
            try:
                await self._to_room(event)
            except Exception:
                log.exception("%s: could not relay %r", self, event)

    async def _to_room(self, event: ev.Event | IrcPrivate) -> None:
        if isinstance(event, IrcPrivate):
            await self._private_to_room(event.to, event.event)
        elif isinstance(event, ev.MessageReceived):
            await self._say_in_room(event)
        elif isinstance(event, ev.NickChanged):
            await self._occupants.rename(event.old, event.new)
        elif isinstance(event, ev.Parted | ev.Kicked):
            self._occupants.leave(event.nick, event.reason or "left IRC")
        elif isinstance(event, ev.Quit):
            self._occupants.leave(event.nick, event.reason or "quit IRC")
        elif isinstance(event, ev.Joined):
            if self.spec.relay_joins_parts:
                await self._occupants.occupant(event.nick)
        elif isinstance(event, ev.ChannelMembers):
            # (Re)joined: the server's history comes next. With no saved line yet, all of
            # it is old: the link starts from its last line.
            self._replay_passed = False
            self._replay_fresh = (
                self._position.irc_msgid is None and self._position.irc_time is None
            )
            await self._members(event.members)
        elif isinstance(event, ev.Topic):
            await self._topic(event)

    def _room_position(self, stanza_id: str) -> None:
        self._position = replace(self._position, room_id=stanza_id)
        self._save_position(self._position)

    def _irc_position(self, msgid: str | None, time: datetime | None) -> None:
        if msgid is None and time is None:
            return  # the server tags nothing (ngIRCd): there is no position to keep
        self._position = replace(self._position, irc_msgid=msgid, irc_time=time)
        self._save_position(self._position)

    def _new_in_history(self, event: ev.MessageReceived) -> bool:
        """Whether a line of the server's history on join was said while the link was
        away (after the saved position) by someone other than our own puppets."""
        new, self._replay_passed = replay_after(
            mark_msgid=self._position.irc_msgid,
            mark_time=self._position.irc_time,
            msgid=event.msgid,
            time=event.time,
            passed=self._replay_passed,
        )
        if new and looks_like_puppet(
            self.spec.irc_nick_template, event.sender.nick, self._server.fold
        ):
            return False
        return new

    async def _say_in_room(self, event: ev.MessageReceived) -> None:
        if event.history and (self._replay_fresh or not self._new_in_history(event)):
            if self._replay_passed or self._replay_fresh:
                self._irc_position(event.msgid, event.time)
            return
        text = irc_to_xmpp(event.text, action=event.kind == "action")
        if event.kind == "notice":
            text = notice_text(text)
        puppet = await self._occupants.occupant(event.sender.nick)
        while puppet is None and not self._room_ready.is_set():
            # The XMPP connection dropped meanwhile: say it once the room has us again.
            await self._room_ready.wait()
            puppet = await self._occupants.occupant(event.sender.nick)
        self._irc_position(event.msgid, event.time)  # first: the line must never go twice
        self._told_irc.discard(self._server.fold(event.sender.nick))
        if puppet is not None:
            self._component.send_groupchat(self.room, puppet.jid, text)
        else:  # the room refused the puppet: the listener speaks for them
            self._component.send_groupchat(
                self.room, self.listener_jid, f"<{event.sender.nick}> {text}"
            )

    async def _private_to_room(self, to: str, event: ev.MessageReceived) -> None:
        """An IRC user's private message to an XMPP person's puppet: a private message
        in the room, from the IRC user's occupant to that person (XEP-0045 §7.5)."""
        puppet = await self._occupants.occupant(event.sender.nick)
        if puppet is None or puppet.nick is None:
            self._notice(
                event.sender.nick, f"Not relayed to {to}: the room {self.room} refused you"
            )
            return
        text = irc_to_xmpp(event.text, action=event.kind == "action")
        self._component.send_private(self.room, to, puppet.jid, text)

    async def _members(self, members: tuple[Member, ...]) -> None:
        """The channel's member list (the relay joined, maybe again after a
        reconnection): puppets of people no longer there leave."""
        self._occupants.keep_only({self._server.fold(member.nick) for member in members})
        if self.spec.relay_joins_parts:
            for member in members:
                if not self._server.is_own(member.nick):
                    await self._occupants.occupant(member.nick)

    async def _topic(self, event: ev.Topic) -> None:
        subject = irc_to_xmpp(event.text)
        if subject == self._subject:
            return
        self._subject = subject
        by = event.by or ""
        puppet = await self._occupants.occupant(by) if by and "." not in by else None
        jid = puppet.jid if puppet is not None else self.listener_jid
        self._component.send_groupchat(self.room, jid, subject=subject)

    # --- XMPP → IRC ----------------------------------------------------------------------

    def on_presence(self, presence: MucPresence) -> None:
        self._heard = asyncio.get_running_loop().time()
        if presence.to != self.listener_jid:
            self._occupants.on_presence(presence)
            return
        if presence.is_self:
            if not presence.available and 303 not in presence.codes:
                if presence.destroyed or 301 in presence.codes:
                    why = "destroyed" if presence.destroyed else "banned the link"
                    self._report("refused", f"the room {self.room} was {why}")
                log.warning("%s: removed from %s (%s)", self, self.room, sorted(presence.codes))
                self._rejoin.set()
            return
        if presence.type != "unavailable" or self._is_ours(presence.nick, presence.real_jid):
            return
        if 303 in presence.codes and presence.new_nick:
            self._queue(OccupantRenamed(presence.nick, presence.new_nick))
        else:
            self._queue(OccupantLeft(presence.nick))

    def on_message(self, message: RoomMessage) -> None:
        self._heard = asyncio.get_running_loop().time()
        if self._held is not None:  # the archive is being read: after it
            if len(self._held) < QUEUE_MAX:
                self._held.append(message)
            else:
                log.warning("%s: too many room messages during a join; dropping one", self)
                if message.body and message.nick and not self._is_ours(message.nick, None):
                    self._tell_xmpp_dropped(
                        message.nick,
                        f"{QUEUE_MAX} messages already wait for the IRC channel",
                        self._told_xmpp,
                    )
            return
        self._handle(message, archived=False)

    def _handle(self, message: RoomMessage, *, archived: bool) -> None:
        """A room message, live or from the archive, in the room's order."""
        if message.delayed and not archived:
            return  # history sent on join (we ask for none)
        if not self._relay(message) and message.stanza_id:
            self._queue(Seen(message.stanza_id))

    def _relay(self, message: RoomMessage) -> bool:
        """Queue what IRC gets of `message`; False if it gets nothing."""
        body = (
            strip_fallback(message.body, list(message.fallback))
            if message.fallback
            else message.body
        )
        previous = self._history.get(message.replace_id) if message.replace_id else None
        for key in (message.stanza_id, message.id, message.origin_id):
            if key and body:
                self._history.put(key, (message.nick, body))
        if message.replace_id and body:
            self._history.put(message.replace_id, (message.nick, body))
        if not message.nick or self._is_ours(message.nick, message.real_jid, message.origin_id):
            return False
        if message.subject is not None and not message.body:
            self._subject_changed(message.nick, message.subject)
            return False
        corrected = None
        if message.replace_id:
            corrected = previous[1] if previous is not None and previous[0] == message.nick else ""
        reply = None
        if message.reply_to:
            quoted = self._history.get(message.reply_id) if message.reply_id else None
            reply = Reply(self._irc_name(message.reply_to), quoted[1] if quoted else None)
        text = outgoing_text(body, corrected=corrected, reply=reply, attachment=message.attachment)
        if text is None:
            return False
        self._queue(Say(message.nick, text, message.stanza_id))
        return True

    def on_error(self, jid: str, condition: str, text: str) -> None:
        log.warning("%s: the room refused a message from %s: %s %s", self, jid, condition, text)
        puppet = self._occupants.by_jid(jid)
        if puppet is not None and condition == "item-not-found":  # a private message
            self._notice(puppet.irc_nick, f"Not relayed: {text or 'that person left the room'}")
            return
        if puppet is not None and condition == "forbidden":  # e.g. no voice when moderated
            why = text or "you may not speak there"
            self._notice(
                puppet.irc_nick, f"Not relayed to {self.room}: the room refused it ({why})"
            )
        self._occupants.on_error(jid, condition)

    def on_private(self, jid: str, nick: str, body: str) -> None:
        """An XMPP occupant wrote privately to one of our occupants."""
        self._heard = asyncio.get_running_loop().time()
        if self._is_ours(nick, None):
            return
        puppet = self._occupants.by_jid(jid)
        if puppet is None:  # the listener
            self._component.send_private(
                self.room, nick, jid,
                f"I read this room for the IRC channel {self.channel}; private messages "
                "to me are not relayed. Write to an IRC user's nick instead.",
            )  # fmt: skip
            return
        text = outgoing_text(body)
        if text is not None:
            self._queue(PrivateSay(nick, puppet.irc_nick, text))

    def _is_ours(self, nick: str, real_jid: str | None, origin_id: str | None = None) -> bool:
        return is_own_occupant(
            nick=nick,
            real_jid=real_jid,
            origin_id=origin_id,
            our_domain=self._component.boundjid.domain,
            our_nicks=self._component.our_nicks(self.room),
            our_ids=self._component.sent_ids,
        )

    def _irc_name(self, muc_nick: str) -> str:
        """How IRC people know the room occupant `muc_nick`."""
        return (
            self._occupants.irc_nick_of(muc_nick)
            or self._server.own_nick_of(self, muc_nick)
            or muc_nick
        )

    def _subject_changed(self, nick: str, subject: str) -> None:
        if self._subject is None:  # the subject the room sends on join
            self._subject = subject
            return
        if subject != self._subject:
            self._subject = subject
            self._queue(SubjectChanged(nick, subject))

    def _queue(self, item: ToIrc) -> None:
        if isinstance(item, Say | PrivateSay) and item.nick in self._told_xmpp:
            return  # told that nothing more of theirs is relayed until IRC is back
        try:
            self._to_irc.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("%s: %d messages wait for IRC; dropping one", self, QUEUE_MAX)
            if isinstance(item, Say | PrivateSay):
                self._tell_xmpp_dropped(
                    item.nick,
                    f"{QUEUE_MAX} messages already wait for the IRC channel",
                    self._told_xmpp,
                )

    def _tell_xmpp_dropped(
        self, nick: str, why: str, told: set[str], sender: str | None = None
    ) -> None:
        """An XMPP occupant's message was not relayed: tell them once (privately, from
        the listener or `sender`), not once per message, until one of theirs goes out."""
        if nick in told or self.listener_nick is None:
            return
        told.add(nick)
        self._component.send_private(
            self.room, nick, sender or self.listener_jid,
            f"Not relayed to IRC: {why}. What you say before it is back is not relayed "
            "either; this is the only notice.",
        )  # fmt: skip

    async def _pump_to_irc(self) -> None:
        while True:
            item = await self._to_irc.get()
            if self._to_irc.empty():
                self._told_xmpp.clear()  # nothing waits: everyone's messages are queued again
            if isinstance(item, Seen):
                self._room_position(item.stanza_id)
                continue
            await self._channel_ready.wait()
            try:
                await self._to_channel(item)
            except Exception:
                log.exception("%s: could not relay %r", self, item)

    async def _to_channel(self, item: ToIrc) -> None:
        server = self._server
        if isinstance(item, OccupantLeft):
            await server.release_puppet((self.id, item.nick), "left the room")
            return
        if isinstance(item, OccupantRenamed):
            server.rename_puppet(self, item.old, item.new, self.spec.irc_nick_template)
            return
        if isinstance(item, Seen):
            return  # handled by the pump
        if isinstance(item, Notice):
            self._notice(self.channel, item.text)
            return
        if isinstance(item, PrivateSay):
            await self._private_to_irc(item)
            return
        if isinstance(item, SubjectChanged):
            topic = " ".join(xmpp_to_irc(item.subject).text.split())
            with contextlib.suppress(QueueFull, LocalProtocolError):
                server.relay.send("TOPIC", self.channel, topic)
            return
        client = None
        if self._allow_puppets and server.settings.max_irc_connections > 0:
            client = await server.puppet_for(self, item.nick, self.spec.irc_nick_template)
        try:
            await self._switch_to(client or server.relay)
            if item.stanza_id:  # saved first: once the line is out, it must never go again
                self._room_position(item.stanza_id)
            if client is not None:
                client.send_text(self.channel, item.text.text, action=item.text.action)
            else:
                server.relay.send_text(self.channel, relay_text(item.nick, item.text))
            self._told_xmpp.discard(item.nick)
            self._told_conn.discard(item.nick)
        except QueueFull as exc:
            self._tell_xmpp_dropped(item.nick, str(exc).partition(";")[0], self._told_conn)
        except LocalProtocolError as exc:
            log.warning("%s: not sending a line IRC cannot carry: %s", self, exc)

    async def _private_to_irc(self, item: PrivateSay) -> None:
        """Through the XMPP person's own IRC connection, which opens for it; without
        one, the private message cannot be sent as them and they are told so."""
        client = None
        if self._allow_puppets and self._server.settings.max_irc_connections > 0:
            client = await self._server.puppet_for(self, item.nick, self.spec.irc_nick_template)
        puppet = self._occupants.by_nick(item.to)
        if client is None or puppet is None or puppet.nick is None:
            if puppet is not None and puppet.nick is not None:
                self._component.send_private(
                    self.room, item.nick, puppet.jid,
                    "Not relayed: private messages to IRC need an IRC connection of your "
                    "own, which this link cannot open now.",
                )  # fmt: skip
            return
        try:
            await self._switch_to(client)
            client.send_text(item.to, item.text.text, action=item.text.action)
            self._told_xmpp.discard(item.nick)
            self._told_conn.discard(item.nick)
        except QueueFull as exc:
            why = str(exc).partition(";")[0]
            self._tell_xmpp_dropped(item.nick, why, self._told_conn, puppet.jid)
        except LocalProtocolError as exc:
            log.warning("%s: not sending a line IRC cannot carry: %s", self, exc)

    async def _switch_to(self, client: IrcClient) -> None:
        """Keep order across connections: before the first line on `client`, wait until
        the server has handled what the previous connection sent."""
        last, self._last_client = self._last_client, client
        if last is not None and last is not client:
            await self._server.barrier(last)
