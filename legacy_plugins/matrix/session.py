"""One registered user's Matrix session: its life, and who is who in its chats.

`login` restores the stored device, reads ``m.direct`` and does one full-state sync from
the stored position, which rebuilds every room's state (names, members, which rooms are
direct chats). Once slidge has filled the roster and bookmarks, `_run` delivers what that
first sync brought (what was sent while the gateway was down), then syncs forever. The
position is stored after each batch has been delivered, so a restart neither loses nor
repeats messages. A homeserver that cannot be reached is retried with backoff, the
gateway's presence saying why; a login the homeserver ended ends the session.

Each Matrix room is shown either as the 1:1 contact of the other person (direct chats,
see :mod:`.rooms`) or as a MUC; `_chat` and `_speaker` find the slidge objects for a
room and a Matrix user. A bad event is logged and skipped (`_guard`), never allowed to
end the session.

The rest of the session lives in its parts, each a base class of `Session`: sync
events shown on XMPP (:mod:`.incoming`), what the user sends (:mod:`.outgoing`),
invitations, joins, leaves and direct chats (:mod:`.joins`), end-to-end encryption
(:mod:`.e2ee`, on the device of :mod:`.crypto`, with :mod:`.recovery` and
:mod:`.gossip`) and names, avatars and presence (:mod:`.profiles`).
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
from collections import OrderedDict
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from slidge import BaseSession
from slidge.util.types import MessageReference

from gateway.backoff import Backoff
from gateway.runtime import network_config
from gateway.slidge_fixes import push_to_roster

from .client import OWN_DEVICE, Credentials, MatrixClient, load_nio
from .config import Config
from .contact import Contact
from .e2ee import SessionE2EE
from .errors import (
    HomeserverTimeout,
    HomeserverUnreachable,
    LoginRefused,
    MatrixError,
    RateLimited,
)
from .events import InvitedRoom, Membership, SyncBatch
from .gossip import SessionGossip
from .ids import EventId, RoomId, UserId
from .incoming import SessionIncoming
from .joins import SessionJoins
from .outbox import Outbox
from .outgoing import SessionOutgoing
from .profiles import SessionProfiles, show_avatar
from .recovery import SessionRecovery
from .rooms import ReactionBook, RoomTracker

if TYPE_CHECKING:
    from .group import MUC, Participant

Chat: TypeAlias = "Contact | MUC"
Speaker: TypeAlias = "Contact | Participant"

log = logging.getLogger(__name__)

_SENDERS_KEPT = 20_000
TRANSIENT = (HomeserverUnreachable, HomeserverTimeout, RateLimited)
"""Errors after which the gateway keeps trying (the homeserver may come back)."""
RETRY = Backoff(initial=2.0, cap=300.0)
SAVE_DELAY = 2.0
"""Seconds before the position after a sync of nothing but echoes is stored (a newer one
replaces it): see `SessionIncoming._on_echoes`."""


class Session(
    SessionIncoming,
    SessionOutgoing,
    SessionJoins,
    SessionE2EE,
    SessionRecovery,
    SessionGossip,
    SessionProfiles,
    BaseSession[Contact],
):
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
        """The user unregistered: end the Matrix device's session too, if the gateway
        made the device (not another app's, whose access token she gave; registrations
        from before the flag was stored are taken as the gateway's, as they were)."""
        self.cancel_all_tasks()
        if not hasattr(self, "matrix"):
            return
        try:
            if self.user.legacy_module_data.get(OWN_DEVICE) is False:
                log.info(
                    "%s unregistered: the Matrix device was given, left logged in", self.user_jid
                )
            else:
                await self.matrix.logout()
                log.info("%s unregistered: the Matrix device is logged out", self.user_jid)
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


__all__ = ["Session"]
