"""One registered user's Matrix session: sync events in, the user's actions out.

`login` restores the stored device, reads ``m.direct`` and does one full-state sync from
the stored position, which rebuilds every room's state (names, members, which rooms are
direct chats). Once slidge has filled the roster and bookmarks, `_run` delivers what that
first sync brought (what was sent while the gateway was down), then syncs forever. The
position is stored after each batch has been delivered, so a restart neither loses nor
repeats messages.

Each Matrix room is shown either as the 1:1 contact of the other person (direct chats,
see :mod:`.rooms`) or as a MUC. Events the gateway sent itself come back from sync with
their transaction ID and are skipped; what the user does from another Matrix client is
shown as their own (carbons in 1:1, the user's occupant in MUCs). A bad event is logged
and skipped, never allowed to end the session.

Two parts of the session live in modules of their own: end-to-end encryption
(:mod:`.e2ee`, on the device of :mod:`.crypto`) and names, avatars and presence
(:mod:`.profiles`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import time
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from slidge import BaseSession
from slidge.util.types import (
    LegacyAttachment,
    MessageReference,
    XMPPMessage,
)
from slixmpp import JID

from gateway.backoff import Backoff
from gateway.formatting import to_xep0393
from gateway.mentions import mention_uri
from gateway.runtime import network_config
from gateway.slidge_fixes import push_to_roster

from .client import Credentials, MatrixClient, load_nio
from .config import Config
from .contact import Contact
from .contents import edit_content, media_content, reaction_content, text_content
from .crypto import decrypt_file, encrypt_file
from .e2ee import SessionE2EE
from .errors import (
    HomeserverTimeout,
    HomeserverUnreachable,
    LoginRefused,
    MatrixError,
    RateLimited,
    RequestFailed,
    as_xmpp_error,
)
from .events import (
    Encrypted,
    InvitedRoom,
    JoinedRoom,
    Membership,
    Message,
    Reaction,
    Receipt,
    Redaction,
    StateChange,
    SyncBatch,
    TimelineEvent,
    Typing,
    only_echoes,
)
from .gossip import SessionGossip
from .ids import EventId, RoomId, UserId
from .mentions import MentionSpan, mention_spans
from .net import fetch_url
from .outbox import Outbox
from .profiles import SessionProfiles, show_avatar
from .recovery import SessionRecovery
from .rooms import Member, ReactionBook, RoomState, RoomTracker, typing_changes

if TYPE_CHECKING:
    from .group import MUC, Participant

Chat: TypeAlias = "Contact | MUC"
Speaker: TypeAlias = "Contact | Participant"

log = logging.getLogger(__name__)

_LIVE_WINDOW_S = 30.0
"""Messages older than this get a delay timestamp (XEP-0203)."""
_SENDERS_KEPT = 20_000
_XMPP_QUEUED = 50
"""Stanzas waiting to be sent to XMPP before a sync batch lets them out."""
TRANSIENT = (HomeserverUnreachable, HomeserverTimeout, RateLimited)
"""Errors after which the gateway keeps trying (the homeserver may come back)."""
RETRY = Backoff(initial=2.0, cap=300.0)
SYNC_PACE = 0.25
"""Seconds the next sync may wait after one that brought only the echoes of what the
user is sending (while more is being sent): see `Session._on_batch`."""
SAVE_DELAY = 2.0
"""Seconds before the position after such a sync is stored (a newer one replaces it)."""


class Session(SessionE2EE, SessionRecovery, SessionGossip, SessionProfiles, BaseSession[Contact]):
    matrix: MatrixClient
    rooms: RoomTracker

    def __init__(self, user: Any) -> None:
        super().__init__(user)
        self.reactions = ReactionBook()
        self._typing: dict[RoomId, frozenset[UserId]] = {}
        self._my_typing: set[RoomId] = set()
        self._senders: OrderedDict[EventId, UserId] = OrderedDict()
        self._friends: set[UserId] = set()
        self._init_e2ee()
        self.outbox = Outbox(self.create_task)
        self._position_due: asyncio.TimerHandle | None = None
        self._pending_position: str | None = None
        self._arrivals: dict[RoomId, asyncio.Event] = {}
        self.invites: dict[RoomId, InvitedRoom] = {}
        """Invitations waiting for the user (``auto_accept_invites = false``)."""
        self.rooms = RoomTracker(UserId(""))  # replaced at login, once we know who we are

    @property
    def cfg(self) -> Config:
        return network_config(Config)

    @property
    def me(self) -> UserId:
        return self.rooms.me

    # -- lifecycle ----------------------------------------------------------------------

    async def login(self) -> str:
        await load_nio()
        creds = Credentials.from_stored(self.user.legacy_module_data)
        self.matrix = MatrixClient(creds, self.cfg)
        self.rooms = RoomTracker(creds.user_id)
        self.contacts.user_legacy_id = creds.user_id
        stored = self.user.legacy_module_data.get("sync_token")
        since = stored if isinstance(stored, str) and stored else None
        try:
            first: SyncBatch | None = await self._first_sync(since)
        except TRANSIENT as e:
            # The homeserver may come back: keep trying in the background.
            log.warning("Matrix homeserver of %s unavailable at start: %s", self.user_jid, e)
            first, status = None, f"Waiting for the homeserver: {e}"
        except MatrixError:
            await self.matrix.close()
            raise
        else:
            status = f"Connected as {creds.user_id}"
        self.create_task(self._run(first, since), name="matrix sync")
        return status

    async def _first_sync(self, since: str | None) -> SyncBatch:
        """Read ``m.direct``, the profile and every room's full state (and what happened
        since ``since``); the rooms' state is applied, their timelines are not."""
        self.rooms.set_direct(await self.matrix.get_direct())
        await self._open_e2ee()
        first = await self.matrix.sync(since, full_state=True)
        name, _avatar = await self.matrix.profile(self.me)
        for room in first.joined:
            self._apply_state(room)
        if name:
            self.bookmarks.user_nick = name
        return first

    async def logout(self) -> None:
        """Gateway shutdown: stop syncing; the Matrix device stays logged in."""
        self.cancel_all_tasks()
        if self._pending_position is not None:
            self._save_position(self._pending_position)
        self._close_e2ee()
        if hasattr(self, "matrix"):
            await self.matrix.close()

    async def unregister(self) -> None:
        """The user unregistered: end the Matrix device's session too."""
        self.cancel_all_tasks()
        if not hasattr(self, "matrix"):
            return
        try:
            await self.matrix.logout()
        except MatrixError as e:
            log.warning("Could not log %s out of Matrix: %s", self.user_jid, e)
        finally:
            await self.matrix.close()
            self._close_e2ee()
            # The device is gone: its keys can never be used again.
            shutil.rmtree(self._e2ee_dir(), ignore_errors=True)

    async def _run(self, first: SyncBatch | None, since: str | None) -> None:
        try:
            for future in (self.ready, self.contacts.ready, self.bookmarks.ready):
                await asyncio.shield(future)
            if first is None:
                first = await self._retry_first_sync(since)
                await self.bookmarks.fill()
            for partner in set(self.rooms.dm_partners().values()):
                await self._guard(self._befriend(partner))
            if since is not None:
                await self._on_batch(first, state_done=True)
            else:  # a login without a position: what the first sync shows is history
                await self._e2ee_sync(first)
                for invite in first.invited:
                    await self._guard(self._invited(invite))
                self._save_position(first.next_batch)
            await self.matrix.sync_forever(first.next_batch, self._on_batch, self._on_status)
        except LoginRefused as e:
            log.warning("Matrix session of %s ended: %s", self.user_jid, e)
            self.send_gateway_message(f"Matrix ended this session: {e}")
            self.send_gateway_status("Logged out by the homeserver: register again", show="dnd")
        except Exception:
            # slidge ends the whole process when a task dies: keep the others running.
            log.exception("The Matrix sync of %s stopped", self.user_jid)
            self.send_gateway_status("Sync stopped after an error; restart the gateway", show="dnd")

    async def _retry_first_sync(self, since: str | None) -> SyncBatch:
        failures = 0
        while True:
            try:
                first = await self._first_sync(since)
            except TRANSIENT as e:
                failures += 1
                delay = RETRY.delay(failures, random.random())  # noqa: S311
                self._on_status(f"{e}; retrying in {delay:.0f} s")
                await asyncio.sleep(delay)
                continue
            self._on_status(None)
            return first

    def _on_status(self, problem: str | None) -> None:
        if problem is None:
            self.send_gateway_status(f"Connected as {self.me}", show="chat")
        else:
            self.send_gateway_status(problem, show="dnd")

    def _save_position(self, token: str) -> None:
        self._pending_position = None
        if self._position_due is not None:
            self._position_due.cancel()
            self._position_due = None
        if self.user.legacy_module_data.get("sync_token") != token:
            self.legacy_module_data_update({"sync_token": token})

    def _save_position_soon(self, token: str) -> None:
        """Store `token` within `SAVE_DELAY` seconds (the latest of those given by then),
        unless a position is stored before. Only for a batch that showed the user
        nothing: should the process die first, the next run reads those events again
        and skips them again."""
        self._pending_position = token
        if self._position_due is None:
            self._position_due = self.xmpp.loop.call_later(SAVE_DELAY, self._save_pending)

    def _save_pending(self) -> None:
        self._position_due = None
        if self._pending_position is not None:
            self._save_position(self._pending_position)

    async def _guard(self, work: Awaitable[object]) -> None:
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("Could not handle a Matrix event for %s", self.user_jid)

    # -- incoming -------------------------------------------------------------------------

    def _apply_state(self, room: JoinedRoom) -> RoomState:
        state = self.rooms.room(room.room_id)
        for event in room.state:
            state.apply(event)
            if isinstance(event, Membership):
                self._members.pop(room.room_id, None)
        if self.me not in state.members:
            # A room in the sync's "join" part is joined, though with lazy-loaded members
            # Synapse leaves the user's own membership out of the full state of a sync
            # from a position (at each start): without this, joining its MUC again after
            # a restart waited for a join that never came, and failed after a minute.
            state.members[self.me] = Member("join")
        state.apply_summary(room.joined_count, room.invited_count, room.heroes)
        return state

    async def _on_batch(self, batch: SyncBatch, *, state_done: bool = False) -> None:
        if await self._on_echoes(batch):
            return
        arrived = await self._e2ee_sync(batch)
        if batch.direct is not None:
            self.rooms.set_direct(batch.direct)
        for room_id in batch.left:
            await self._guard(self._left(room_id))
        for invite in batch.invited:
            await self._guard(self._invited(invite))
        for room in batch.joined:
            new = room.room_id not in self.rooms.rooms
            if state_done and not new:
                state = self.rooms.room(room.room_id)
            else:
                state = self._apply_state(room)
            timeline = await self._arrive(state, room) if new else room.timeline
            for event in timeline:
                await self._guard(self._on_event(state, event))
                await self._let_stanzas_out()
            for ephemeral in room.ephemeral:
                await self._guard(self._on_ephemeral(ephemeral))
            arrival = self._arrivals.pop(room.room_id, None)
            if arrival is not None:
                arrival.set()
        await self._e2ee_after_batch(arrived)
        for presence in batch.presence:
            await self._guard(self._on_presence(presence))
        self._save_position(batch.next_batch)

    async def _on_echoes(self, batch: SyncBatch) -> bool:
        """A batch of nothing but what the user is sending, back from the homeserver:
        nothing to show, the position stored a little later. Each message of a burst
        would end a sync on its own, and the homeserver answer as many syncs as sends
        (most of its work for a burst, on a small machine what slows the sends down):
        while sends are under way, the next sync waits a little (`SYNC_PACE` at most)
        and brings several. False (nothing done) for any other batch."""
        if not only_echoes(batch) or any(r.room_id not in self.rooms.rooms for r in batch.joined):
            return False
        for room in batch.joined:
            for event in room.timeline:
                self._note(event)
        self._save_position_soon(batch.next_batch)
        await self.outbox.wait_idle(SYNC_PACE)
        return True

    async def _let_stanzas_out(self) -> None:
        """Handling events never pauses the event loop, so the stanzas of a large batch
        (a gap filled from ``/messages``) would all leave at its end: past
        `_XMPP_QUEUED` waiting in slixmpp's send queue, let it empty (for a second at
        most). Without this, a 1,000-message backlog reached the user all at once, after 11 s."""
        queue = self.xmpp.waiting_queue
        if queue.qsize() > _XMPP_QUEUED:
            try:
                async with asyncio.timeout(1.0):
                    await queue.join()
            except TimeoutError:
                log.debug("%d stanzas still wait in the XMPP send queue", queue.qsize())

    async def _arrive(self, state: RoomState, room: JoinedRoom) -> tuple[TimelineEvent, ...]:
        """A room we just joined: its history counts for state only; a group room goes
        into the bookmarks, an encrypted one says how it is encrypted. Returns the events
        from our arrival on."""
        history, timeline = _split_at_arrival(room.timeline, self.me)
        for event in history:
            if isinstance(event, Membership | StateChange):
                state.apply(event)
        if self.rooms.dm_partner(room.room_id) is None:
            await self._guard(self._show_room(room.room_id))
        if state.encrypted:
            await self._guard(self._warn_encrypted(room.room_id))
        return timeline

    async def _on_event(self, state: RoomState, event: TimelineEvent) -> None:
        if isinstance(event, Encrypted) and not event.own_device:
            clear = self._decrypt(event)
            if clear is None:
                return  # decrypted into something of no interest
            event = clear
        if isinstance(event, Membership | StateChange):
            state.apply(event)
            if isinstance(event, Membership):
                self._members.pop(state.room_id, None)
            await self._on_state(state, event)
            return
        self._note(event)
        if getattr(event, "own_device", False):
            return  # sent by this gateway: already shown
        chat = await self._chat(event.room_id)
        speaker = await self._speaker(chat, event.sender)
        if speaker is None:
            return
        carbon = event.sender == self.me and isinstance(chat, Contact)
        if isinstance(event, Message):
            await self._deliver_message(chat, speaker, event, carbon)
        elif isinstance(event, Reaction):
            keys = self.reactions.add(event.target, event.sender, event.key, event.event_id)
            speaker.react(event.target, keys, carbon=carbon)
        elif isinstance(event, Redaction):
            await self._deliver_redaction(chat, speaker, event, carbon)
        elif isinstance(event, Encrypted):
            speaker.send_text(self.unreadable(event), legacy_msg_id=event.event_id, carbon=carbon)

    def _note(self, event: TimelineEvent) -> None:
        """What a message, reaction or redaction tells for later events (who sent it,
        our own reactions), shown or not."""
        if isinstance(event, Membership | StateChange):
            return
        self._remember_sender(event.event_id, event.sender)
        if isinstance(event, Reaction) and event.own_device:
            self.reactions.add(event.target, event.sender, event.key, event.event_id)

    async def _deliver_message(
        self, chat: Chat, speaker: Speaker, msg: Message, carbon: bool
    ) -> None:
        text = to_xep0393(msg.text)
        if msg.kind == "emote":
            text = "/me " + text
        if msg.replaces == msg.event_id:  # decrypted late: replaces the notice
            speaker.correct(msg.event_id, text, carbon=carbon)
            return
        if msg.replaces is not None:
            # An edit decrypted late: its notice holds its ID (and is retracted, see
            # e2ee._decrypt_late); the correction must not take that ID too.
            own = None if msg.event_id in self._late_edits else msg.event_id
            speaker.correct(msg.replaces, text, correction_event_id=own, carbon=carbon)
            return
        age = time.time() - msg.ts / 1000
        when = datetime.fromtimestamp(msg.ts / 1000, UTC) if age > _LIVE_WINDOW_S else None
        reply = await self._reference(chat, msg.reply_to) if msg.reply_to else None
        if msg.media is None:
            extra: dict[str, Any] = {}
            if mentions := await self._mentions(chat, text, msg.mentions):
                extra["mentions"] = mentions  # gateway.mentions.MentionsOnMessages
            speaker.send_text(
                text, legacy_msg_id=msg.event_id, when=when, reply_to=reply, carbon=carbon, **extra
            )
            return
        try:
            data, content_type = await self.matrix.download(msg.media.url)
            if msg.media.file is not None:
                data, content_type = decrypt_file(data, msg.media.file), None
        except MatrixError as e:
            log.warning("Could not download %s: %s", msg.media.url, e)
            speaker.send_text(
                f"[{msg.media.name}: the file could not be fetched: {e}]",
                legacy_msg_id=msg.event_id,
                carbon=carbon,
            )
            return
        attachment = LegacyAttachment(
            data=data,
            name=msg.media.name,
            content_type=msg.media.mimetype or content_type,
            legacy_file_id=msg.media.url,
        )
        await speaker.send_files(
            [attachment],
            legacy_msg_id=msg.event_id,
            body=text or None,
            when=when,
            reply_to=reply,
            carbon=carbon,
        )

    async def _mentions(
        self, chat: Chat, text: str, users: tuple[UserId, ...]
    ) -> tuple[tuple[MentionSpan, str], ...]:
        """XEP-0372 references for the room members (the user included) that a message
        mentions, where their nicknames stand in its text, each with the occupant's
        ``xmpp:ROOM/NICK``; none in a direct chat, nor for someone not in the room."""
        if not users or isinstance(chat, Contact):
            return ()
        members = self.rooms.room(chat.room_id).members
        names: dict[UserId, str] = {}
        for user in users:
            if user == self.me:
                names[user] = chat.user_nick
            elif (member := members.get(user)) is not None and member.membership == "join":
                part = await self._speaker(chat, user)
                if nick := getattr(part, "nickname", None):
                    names[user] = nick
        room = str(chat.jid.bare)
        return tuple(
            (span, mention_uri(room, names[span.user])) for span in mention_spans(text, names)
        )

    async def _deliver_redaction(
        self, chat: Chat, speaker: Speaker, event: Redaction, carbon: bool
    ) -> None:
        removed = self.reactions.remove(event.target)
        if removed is not None:
            target, reactor, keys = removed
            who = speaker if reactor == event.sender else await self._speaker(chat, reactor)
            if who is not None:
                who.react(target, keys, carbon=reactor == self.me and isinstance(chat, Contact))
            return
        author = self._senders.get(event.target)
        if author is not None and author != event.sender and not isinstance(speaker, Contact):
            speaker.moderate(event.target, event.reason)
            return
        speaker.retract(event.target, carbon=carbon)

    async def _on_state(self, state: RoomState, event: Membership | StateChange) -> None:
        partner = self.rooms.dm_partner(state.room_id)
        if isinstance(event, StateChange) and event.type == "m.room.encryption":
            await self._warn_encrypted(state.room_id)
        elif partner is not None:
            if isinstance(event, Membership) and event.user == partner:
                await self._partner_changed(partner, event)
        elif isinstance(event, StateChange):
            await self._on_room_state(state, event)
        elif event.user != self.me:
            await self._on_member(state, event)

    async def _on_room_state(self, state: RoomState, event: StateChange) -> None:
        if event.type not in (
            "m.room.name",
            "m.room.topic",
            "m.room.canonical_alias",
            "m.room.power_levels",
            "m.room.avatar",
        ):
            return
        muc = await self._muc(state.room_id)
        if event.type == "m.room.avatar":
            await show_avatar(self.matrix, muc, state.avatar_url)
        elif event.type == "m.room.power_levels":
            if muc.participants_filled:
                for member, info in list(state.members.items()):
                    if info.membership == "join" and member != self.me:
                        muc.set_power(await muc.get_participant_by_legacy_id(member))
        elif event.type == "m.room.topic":
            muc.subject = state.topic or ""
        else:
            muc.name = state.display_name(self.me)

    async def _on_member(self, state: RoomState, event: Membership) -> None:
        muc = await self._muc(state.room_id)
        muc.forget_speaker(event.user)  # joined, left, renamed, new avatar: read again
        if not muc.participants_filled:
            return  # the member list is read when someone joins the MUC
        participant = await muc.get_participant_by_legacy_id(event.user)
        if event.membership == "join":
            participant.online()
        elif event.membership == "leave" and event.sender != event.user:
            participant.kick(event.reason)
        elif event.membership == "ban":
            participant.ban(event.reason)
        elif event.membership == "leave":
            participant.leave()

    async def _on_ephemeral(self, event: Typing | Receipt) -> None:
        if isinstance(event, Typing):
            before = self._typing.get(event.room_id, frozenset())
            self._typing[event.room_id] = event.users
            started, stopped = typing_changes(before, event.users, self.me)
            if not started and not stopped:
                return
            chat = await self._chat(event.room_id)
            for user, typing in [(u, True) for u in started] + [(u, False) for u in stopped]:
                speaker = await self._speaker(chat, user)
                if speaker is not None:
                    speaker.composing() if typing else speaker.paused()
            return
        if event.private and event.user != self.me:
            return
        chat = await self._chat(event.room_id)
        if event.user == self.me and not isinstance(chat, Contact):
            return  # XEP-0490 sync for groups is slidge's to do; nothing to show
        speaker = await self._speaker(chat, event.user)
        if speaker is not None:
            speaker.displayed(event.event_id, carbon=event.user == self.me)

    async def _invited(self, invite: InvitedRoom) -> None:
        if not (invite.is_direct or self.cfg.auto_accept_invites):
            await self._offer(invite)
            return
        room_id = await self.matrix.join(invite.room_id)
        log.info("%s joined %s (invited by %s)", self.me, room_id, invite.inviter)
        if invite.is_direct and invite.inviter is not None:
            content = self.rooms.add_direct(invite.inviter, room_id)
            if content is not None:
                await self.matrix.set_direct(content)

    async def _offer(self, invite: InvitedRoom) -> None:
        """An invitation the user decides on: a XEP-0249 invitation from the inviter
        (or the gateway); joining the MUC joins the Matrix room."""
        first = invite.room_id not in self.invites
        self.invites[invite.room_id] = invite
        if not first:
            return
        muc = await self._muc(invite.room_id)
        reason = f"{invite.inviter or 'Someone'} invites you to this Matrix room"
        if invite.inviter is not None:
            (await self._befriend(invite.inviter)).invite_to(muc, reason)
        else:
            self.send_gateway_invite(muc, reason)
        log.info("%s is invited to %s by %s", self.me, invite.room_id, invite.inviter)

    async def join_room(self, room_id: RoomId) -> None:
        """Join a room on Matrix and wait until sync has shown it, so that its state is
        known and its history is not taken for news."""
        if self.is_joined(room_id):
            return
        joined = await self.matrix.join(room_id)
        log.info("%s joined %s from XMPP", self.me, joined)
        await self._arrival(joined)
        self.invites.pop(room_id, None)

    async def _arrival(self, room_id: RoomId) -> None:
        """Wait until sync has shown a room we just joined or created."""
        arrival = self._arrivals.setdefault(room_id, asyncio.Event())
        if self.is_joined(room_id):  # no await since the join: sync cannot have run since
            self._arrivals.pop(room_id, None)
            return
        async with asyncio.timeout(self.cfg.sync_timeout + self.cfg.request_timeout):
            await arrival.wait()

    def is_joined(self, room_id: RoomId) -> bool:
        state = self.rooms.rooms.get(room_id)
        member = state.members.get(self.me) if state is not None else None
        return member is not None and member.membership == "join"

    def delivered(self, event_id: str) -> bool:
        """Whether this run has already shown the event (live)."""
        return EventId(event_id) in self._senders

    def room_addresses(self) -> dict[str, str]:
        """Rooms the user joined by alias: room ID → the JID local part they used."""
        stored = self.user.legacy_module_data.get("room_addresses")
        if not isinstance(stored, dict):
            return {}
        return {str(k): str(v) for k, v in stored.items()}

    def remember_room_address(self, room_id: RoomId, local_part: str) -> None:
        self.legacy_module_data_update(
            {"room_addresses": {**self.room_addresses(), room_id: local_part}}
        )

    async def on_create_group(self, name: str, contacts: list[Contact]) -> str:
        """slidge's *Create a group* command: a new private Matrix room, the chosen
        contacts invited."""
        try:
            room_id = await self.matrix.create_room(name, [UserId(c.legacy_id) for c in contacts])
        except MatrixError as e:
            raise as_xmpp_error(e) from e
        await self._arrival(room_id)
        return room_id

    async def _left(self, room_id: RoomId) -> None:
        partner = self.rooms.dm_partner(room_id)
        self.invites.pop(room_id, None)
        self.rooms.forget(room_id)
        if partner is not None:
            return
        local = await self.bookmarks.legacy_id_to_jid_local_part(room_id)
        muc = self.bookmarks.by_jid_only_if_exists(JID(f"{local}@{self.xmpp.boundjid.bare}"))
        if muc is not None:
            await self.bookmarks.remove(muc, "You left this room (or were removed) on Matrix.")

    async def _show_room(self, room_id: RoomId) -> None:
        """A room we just joined: into the user's bookmarks, to be joined by clients."""
        muc = await self.bookmarks.by_legacy_id(room_id, create=False)
        if muc is None:
            return  # being joined from XMPP right now: the join adds it
        await muc.add_to_bookmarks(auto_join=True)

    # -- who is who ---------------------------------------------------------------------

    async def _chat(self, room_id: RoomId) -> Chat:
        partner = self.rooms.dm_partner(room_id)
        if partner is not None:
            return await self._befriend(partner)
        return await self._muc(room_id)

    async def _muc(self, room_id: RoomId) -> MUC:
        return cast("MUC", await self.bookmarks.by_legacy_id(room_id))

    async def _speaker(self, chat: Chat, user: UserId) -> Speaker | None:
        if isinstance(chat, Contact):
            return chat if user in (self.me, chat.legacy_id) else None
        part = chat.speaker(user)
        if part is None:
            part = await chat.get_participant_by_legacy_id(user)
            chat.keep(user, part)
        return part

    async def _befriend(self, user: UserId) -> Contact:
        contact = cast(Contact, await self.contacts.by_legacy_id(user))
        if user not in self._friends:
            self._friends.add(user)
            await push_to_roster(contact)
            await self._guard(show_avatar(self.matrix, contact, await self._avatar_of(user)))
        return contact

    def _remember_sender(self, event_id: EventId, sender: UserId) -> None:
        self._senders[event_id] = sender
        if len(self._senders) > _SENDERS_KEPT:
            self._senders.popitem(last=False)

    async def _reference(self, chat: Chat, event_id: EventId) -> MessageReference:
        author = self._senders.get(event_id)
        if author is None:
            return MessageReference(event_id)
        if author == self.me:
            return MessageReference(event_id, "user")
        if isinstance(chat, Contact):
            return MessageReference(event_id, chat)
        return MessageReference(event_id, await chat.get_participant_by_legacy_id(author))

    # -- outgoing (called by Contact and MUC) ------------------------------------------

    async def dm_room(self, user: UserId) -> RoomId:
        """The direct chat with ``user``, created (and recorded in ``m.direct``) if none."""
        async with self.lock(("dm", user)):
            room_id = self.rooms.dm_room(user)
            if room_id is not None:
                return room_id
            room_id = await self.matrix.create_dm(user)
            log.info("%s started a direct chat with %s: %s", self.me, user, room_id)
            state = self.rooms.room(room_id)
            state.apply(Membership(room_id, self.me, self.me, "join"))
            state.apply(Membership(room_id, self.me, user, "invite"))
            content = self.rooms.add_direct(user, room_id)
            if content is not None:
                await self.matrix.set_direct(content)
            return room_id

    async def send_message(self, room_id: RoomId, message: XMPPMessage) -> str | None:
        """Send what the XMPP user wrote; returns the Matrix event ID (slidge maps it).

        One message at a time per room, in the order the user wrote them: the homeserver
        orders concurrent requests as they reach it (a 1,000-message burst from XMPP
        arrived with 583 out of order without this, see ``bench/matrix.py``). The event's
        content is made before the message joins the room's queue (:mod:`.outbox`), so
        that the request goes out the moment the one before it is answered."""
        self._check_writable(room_id)
        content = _message_content(message)
        attachments = [(a.url, a.content_type) for a in message.attachments]

        async def job() -> str | None:
            await self._stop_typing(room_id)
            last: EventId | None = None
            for url, content_type in attachments:
                last = await self._send_attachment(room_id, url, content_type)
            if content is None:
                return last
            return await self._send(room_id, "m.room.message", content)

        return await self.outbox.run(("send", room_id), job)

    async def _send_attachment(
        self, room_id: RoomId, url: str, content_type: str | None
    ) -> EventId:
        data, fetched_type, name = await self._fetch_xmpp_file(url)
        mimetype = content_type or fetched_type or "application/octet-stream"
        if self._encrypted(room_id):
            ciphertext, keys = encrypt_file(data)
            mxc = await self.matrix.upload(ciphertext, "application/octet-stream", name)
            content = media_content(mxc, name, mimetype, len(data), file=keys)
        else:
            mxc = await self.matrix.upload(data, mimetype, name)
            content = media_content(mxc, name, mimetype, len(data))
        return await self._send(room_id, "m.room.message", content)

    async def _fetch_xmpp_file(self, url: str) -> tuple[bytes, str | None, str]:
        """Download an attachment the user sent (an HTTP upload URL), within the size
        limit and the address policy."""
        return await fetch_url(self.cfg, url)

    async def react(self, room_id: RoomId, target: EventId, emojis: list[str]) -> None:
        self._check_writable(room_id)
        mine = self.reactions.keys(target, self.me)
        for key in emojis:
            if key not in mine:
                event_id = await self._send(room_id, "m.reaction", reaction_content(target, key))
                self.reactions.add(target, self.me, key, event_id)
        for key, event_id in mine.items():
            if key not in emojis:
                await self.matrix.redact(room_id, event_id)
                self.reactions.remove(event_id)

    async def retract(self, room_id: RoomId, target: EventId, reason: str | None = None) -> None:
        await self.matrix.redact(room_id, target, reason)

    async def chat_state(self, room_id: RoomId, state: str) -> None:
        if state == "composing":
            self._my_typing.add(room_id)
            await self.matrix.typing(room_id, True)
        else:
            await self._stop_typing(room_id)

    async def _stop_typing(self, room_id: RoomId) -> None:
        if room_id in self._my_typing:
            self._my_typing.discard(room_id)
            try:
                await self.matrix.typing(room_id, False)
            except RequestFailed as e:
                log.debug("Could not stop typing in %s: %s", room_id, e)

    async def displayed(self, room_id: RoomId, event_id: str) -> None:
        if event_id.startswith("$"):
            await self.matrix.read(room_id, EventId(event_id))


def _message_content(message: XMPPMessage) -> dict[str, Any] | None:
    """The ``m.room.message`` content of what the XMPP user wrote (None: no text)."""
    body = message.body or ""
    if not body.strip():
        return None
    if message.replace:
        return edit_content(EventId(message.replace), body)
    reply = EventId(message.reply.msg_id) if message.reply else None
    mentions = [UserId(m.contact.legacy_id) for m in message.mentions]
    return text_content(body, reply_to=reply, mentions=mentions)


def _split_at_arrival(
    timeline: tuple[TimelineEvent, ...], me: UserId
) -> tuple[tuple[TimelineEvent, ...], tuple[TimelineEvent, ...]]:
    """In a room we just joined: the history before our invitation (or our join), whose
    state events still count but whose messages are not news, and the rest."""
    for wanted in ("invite", "join"):
        for n, event in enumerate(timeline):
            if isinstance(event, Membership) and event.user == me and event.membership == wanted:
                return timeline[:n], timeline[n:]
    return timeline, ()


__all__ = ["Session"]
