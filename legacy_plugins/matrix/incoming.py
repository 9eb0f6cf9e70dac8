"""Sync batches turned into slidge calls: the Matrix → XMPP half of a session.

`SessionIncoming` is a part of `Session` (a base class of it, not used alone). Its
`_on_batch` is what the sync loop awaits for each batch, in order: the encryption keys
first (:mod:`.e2ee`), then the rooms left and the invitations (:mod:`.joins`), then
each room's state, timeline and ephemeral events, then presence. A message becomes
``send_text`` or ``send_files`` (a correction for an edit, with XEP-0372 references for
the room members it mentions), a reaction ``react``, a redaction a retraction (or a
moderation, by someone else than the author), typing chat states and read receipts
markers; state events update the room (:mod:`.rooms`) and its MUC's name, subject,
avatar and occupants. A room just joined counts its history as state only. Events this
gateway sent come back with their transaction ID and are only noted; a batch of nothing
but those paces the next sync while the user's messages go out. A bad event is logged
and skipped (`Session._guard`). Sending to Matrix is :mod:`.outgoing`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from slidge.util.types import LegacyAttachment, MessageReference

from gateway.formatting import to_xep0393
from gateway.mentions import mention_uri

from .contact import Contact
from .crypto import decrypt_file
from .errors import MatrixError
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
    UserPresence,
    only_echoes,
)
from .ids import EventId, RoomId, UserId
from .mentions import MentionSpan, mention_spans
from .profiles import show_avatar
from .rooms import Member, RoomState, typing_changes

if TYPE_CHECKING:
    from .client import MatrixClient
    from .group import MUC
    from .outbox import Outbox
    from .rooms import ReactionBook, RoomTracker
    from .session import Chat, Speaker

__all__ = ["SessionIncoming"]

log = logging.getLogger(__name__)

_LIVE_WINDOW_S = 30.0
"""Messages older than this get a delay timestamp (XEP-0203)."""
_XMPP_QUEUED = 50
"""Stanzas waiting to be sent to XMPP before a sync batch lets them out."""
SYNC_PACE = 0.25
"""Seconds the next sync may wait after one that brought only the echoes of what the
user is sending (while more is being sent): see `SessionIncoming._on_echoes`."""


class SessionIncoming:
    """Matrix events for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session, its other parts and slidge's BaseSession
        matrix: MatrixClient
        rooms: RoomTracker
        reactions: ReactionBook
        outbox: Outbox
        xmpp: Any
        _typing: dict[RoomId, frozenset[UserId]]
        _senders: OrderedDict[EventId, UserId]
        _arrivals: dict[RoomId, asyncio.Event]
        _members: dict[RoomId, frozenset[UserId]]
        _late_edits: set[EventId]

        @property
        def me(self) -> UserId: ...
        async def _guard(self, work: Awaitable[object]) -> None: ...
        def _save_position(self, token: str) -> None: ...
        def _save_position_soon(self, token: str) -> None: ...
        async def _chat(self, room_id: RoomId) -> Chat: ...
        async def _muc(self, room_id: RoomId) -> MUC: ...
        async def _speaker(self, chat: Chat, user: UserId) -> Speaker | None: ...
        def _remember_sender(self, event_id: EventId, sender: UserId) -> None: ...
        async def _reference(self, chat: Chat, event_id: EventId) -> MessageReference: ...
        async def _invited(self, invite: InvitedRoom) -> None: ...
        async def _left(self, room_id: RoomId) -> None: ...
        async def _show_room(self, room_id: RoomId) -> None: ...
        async def _e2ee_sync(self, batch: SyncBatch) -> set[str]: ...
        async def _e2ee_after_batch(self, arrived: set[str]) -> None: ...
        def _decrypt(self, event: Encrypted) -> TimelineEvent | None: ...
        def unreadable(self, event: Encrypted) -> str: ...
        async def _warn_encrypted(self, room_id: RoomId) -> None: ...
        async def _partner_changed(self, partner: UserId, event: Membership) -> None: ...
        async def _on_presence(self, presence: UserPresence) -> None: ...

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

    def delivered(self, event_id: str) -> bool:
        """Whether this run has already shown the event (live)."""
        return EventId(event_id) in self._senders


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
