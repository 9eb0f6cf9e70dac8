"""The Matrix session's side of end-to-end encryption (:mod:`.crypto` holds the device).

`SessionE2EE` is a part of `Session`: it loads the device's keys before the first sync
(creating the pickle key the store is locked with, kept in the user's registration data),
hands each batch's keys and device changes to the device before the rooms' events,
decrypts encrypted events as they come, and those of a room's back-fill (an
undecryptable one is shown or archived as a notice and kept: when its key arrives, a text
corrects that notice, anything else is delivered;
after each batch the device asks the user's other devices for the missing keys and
answers theirs, see :mod:`.keyshare`),
says once per chat how it is encrypted, and encrypts what goes to an encrypted room for
its joined and invited members. A chat that must be encrypted while the device could not
be loaded refuses to send, saying why. Key verification steps among the to-device events
go to :mod:`.verification`, which talks with the user through gateway messages.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from collections.abc import Awaitable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from slidge import global_config
from slidge.db.meta import JSONSerializable
from slixmpp import JID

from .contact import Contact
from .crypto import E2EE
from .errors import MatrixError, NotSupported, RequestFailed, Undecryptable
from .events import Encrypted, Membership, Message, Reaction, StateChange, SyncBatch, TimelineEvent
from .ids import EventId, RoomId, UserId
from .pending import Undecrypted
from .translate import UNREADABLE, parse_event, what_it_is
from .verification import Verifications, is_verification

if TYPE_CHECKING:
    from .client import MatrixClient
    from .group import MUC
    from .rooms import RoomState, RoomTracker

__all__ = ["UNREADABLE", "SessionE2EE", "what_it_is"]

log = logging.getLogger(__name__)

ENCRYPTED_NOTICE = (
    "🔒 This chat is end-to-end encrypted on Matrix. Passerelle decrypts and encrypts it "
    "as your Matrix device {device}. It sends its keys to every device of the people "
    "here, verified or not, and trusts the key it first sees for each. Send 'device' to "
    "the gateway to see this device's key and other people's devices, 'verify' to "
    "verify one with emoji."
)
ENCRYPTED_UNAVAILABLE = (
    "🔒 This chat is end-to-end encrypted on Matrix, and Passerelle cannot decrypt it: "
    "{problem}. Read and answer it in a Matrix client (Element, …)."
)
_UNDECRYPTED_KEPT = 1000
"""Undecryptable events kept for the day their key arrives."""


class SessionE2EE:
    """End-to-end encryption for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session and slidge's BaseSession
        matrix: MatrixClient
        rooms: RoomTracker
        user: Any

        @property
        def me(self) -> UserId: ...
        @property
        def user_jid(self) -> JID: ...
        def legacy_module_data_update(self, data: JSONSerializable) -> None: ...
        def send_gateway_message(self, text: str, **msg_kwargs: Any) -> None: ...
        async def _chat(self, room_id: RoomId) -> Contact | MUC: ...
        async def _guard(self, work: Awaitable[object]) -> None: ...
        async def _on_event(self, state: RoomState, event: TimelineEvent) -> None: ...
        async def _speaker(self, chat: Contact | MUC, user: UserId) -> Any: ...
        def create_task(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> Any: ...
        async def _back_up(self, room_id: str, encrypted: dict[str, Any]) -> None: ...
        async def _back_up_received(self, arrived: set[str]) -> None: ...
        def _open_gossip(self) -> None: ...
        def _secret_events(self, batch: SyncBatch) -> tuple[SyncBatch, list[Any]]: ...
        async def _device_verified(self) -> None: ...
        async def _take_secrets(self, clear: Any = ()) -> None: ...

    def _init_e2ee(self) -> None:
        self.e2ee: E2EE | None = None
        self.verifications: Verifications | None = None
        """Interactive verifications of devices (``verify``), once ``e2ee`` is open."""
        self.e2ee_problem = "its encryption keys are not loaded yet"
        """Why ``e2ee`` is None: said in encrypted chats."""
        self._warned_encrypted: set[RoomId] = set()
        self._undecrypted = Undecrypted(limit=_UNDECRYPTED_KEPT)
        """Events waiting for their keys (those of the last run too, once loaded)."""
        self._late_edits: set[EventId] = set()
        """Edits being delivered late, whose notices hold their event IDs."""
        self._requests_due: asyncio.TimerHandle | None = None
        """When the next key request waiting for its delay is due."""
        self._members: dict[RoomId, frozenset[UserId]] = {}
        """Joined and invited members of encrypted rooms, to encrypt for."""

    async def _open_e2ee(self) -> None:
        """Load the device's encryption keys; if encryption cannot work, remember why
        (network trouble is raised: the first sync is retried)."""
        if self.e2ee is not None:
            return
        key = self.user.legacy_module_data.get("e2ee_pickle_key")
        if not isinstance(key, str) or not key:
            key = secrets.token_urlsafe(32)
            self.legacy_module_data_update({"e2ee_pickle_key": key})
        try:
            self.e2ee = await E2EE.open(self.matrix, self._e2ee_dir(), key)
        except (NotSupported, RequestFailed) as e:
            self.e2ee_problem = str(e)
            log.warning("No end-to-end encryption for %s: %s", self.user_jid, e)
            return
        self._undecrypted = Undecrypted(self.e2ee.pending.events(), limit=_UNDECRYPTED_KEPT)
        if self._undecrypted:
            log.info("%d encrypted events wait for their keys", len(self._undecrypted))
        self.verifications = Verifications(
            self.e2ee,
            self.matrix,
            self.send_gateway_message,
            on_verified=self._device_verified,  # then secrets asked for (gossip.py)
        )
        self._open_gossip()

    def _e2ee_dir(self) -> Path:
        bare = quote(str(self.user_jid.bare).lower(), safe="@")
        return Path(global_config.HOME_DIR) / "e2ee" / bare

    def _close_e2ee(self) -> None:
        self.verifications = None
        if self._requests_due is not None:
            self._requests_due.cancel()
            self._requests_due = None
        if self.e2ee is not None:
            self.e2ee.close()
            self.e2ee = None

    async def _e2ee_sync(self, batch: SyncBatch) -> set[str]:
        """Keys and device changes of a sync; the Megolm sessions whose keys arrived."""
        if self.e2ee is None:
            return set()
        batch, clear_secrets = self._secret_events(batch)  # gossip.py
        steps = [e for e in batch.to_device if is_verification(e)]
        if steps:
            rest = tuple(e for e in batch.to_device if not is_verification(e))
            batch = dataclasses.replace(batch, to_device=rest)
        try:
            arrived = await self.e2ee.on_sync(batch)
        except MatrixError as e:  # key uploads are tried again at the next sync
            log.warning("Encryption keys of %s not updated: %s", self.user_jid, e)
            arrived = set()
        if self.verifications is not None:
            await self._guard(self.verifications.on_events(steps))
        self._say_e2ee_notices()
        await self._guard(self._take_secrets(clear_secrets))  # secrets shared (gossip.py)
        await self._back_up_received(arrived)  # the user's key backup (recovery.py)
        return arrived

    async def _e2ee_after_batch(self, arrived: set[str]) -> None:
        """After a sync batch's events: those whose keys ``arrived`` are decrypted, then
        keys this device lacks are asked for (and requests that got keys cancelled)."""
        if arrived:
            await self._decrypt_late(arrived)
        if self.e2ee is not None:
            self._undecrypted.flush(self.e2ee.pending)
            try:
                await self.e2ee.key_traffic(arrived)
            except MatrixError as e:  # asked again when a device of the user is verified
                log.warning("Key requests of %s not all sent: %s", self.user_jid, e)
            self._say_e2ee_notices()
            self._come_back_for_requests()

    def _come_back_for_requests(self) -> None:
        """Key requests wait (their delay, the rate limit): send them when due, even if
        no sync batch comes by then."""
        due = None if self.e2ee is None else self.e2ee.requests.next_due()
        if due is None:
            return
        if self._requests_due is not None:
            if self._requests_due.when() <= due:
                return
            self._requests_due.cancel()
        loop = asyncio.get_running_loop()
        self._requests_due = loop.call_at(max(due, loop.time()) + 0.05, self._requests_come_due)

    def _requests_come_due(self) -> None:
        self._requests_due = None
        self.create_task(self._guard(self._e2ee_after_batch(set())), name="key requests")

    def _say_e2ee_notices(self) -> None:
        if self.e2ee is not None:
            while self.e2ee.notices:
                self.send_gateway_message(self.e2ee.notices.pop(0))

    def _decrypt(self, event: Encrypted) -> TimelineEvent | None:
        """The event ``event`` holds; ``event`` itself, with the reason, if it cannot be
        decrypted (kept for when its key arrives); None if it holds nothing to show."""
        if self.e2ee is None:
            return event
        try:
            clear = self.e2ee.decrypt(event)
        except Undecryptable as e:
            log.info("Cannot decrypt %s in %s yet: %s", event.event_id, event.room_id, e)
            self._undecrypted.keep(event)
            return dataclasses.replace(event, reason=str(e))
        parsed = parse_event(event.room_id, clear)
        if isinstance(parsed, Membership | StateChange | Encrypted):
            return None  # never encrypted by honest clients
        return parsed

    def decrypt_history(self, event: Encrypted) -> TimelineEvent | None:
        """`_decrypt` for a room's back-fill: one that cannot be decrypted is kept as a
        live one is, so that its key is asked for and, when it arrives, the notice
        archived in its place (under its event ID) is corrected as a live one would be."""
        return self._decrypt(event)

    def unreadable(self, event: Encrypted) -> str:
        """The notice shown, or archived, in place of ``event`` (not decrypted)."""
        reason = self.e2ee_problem if self.e2ee is None else event.reason
        return UNREADABLE.format(what=what_it_is(event), reason=reason)

    async def ask_for_keys(self) -> None:
        """Ask the user's devices now for the keys found missing outside a sync (in a
        back-fill), rather than after the next sync batch."""
        await self._e2ee_after_batch(set())

    async def _decrypt_late(self, sessions: set[str]) -> None:
        """Events that could not be decrypted, now that their keys have arrived: a text
        corrects the notice shown (or archived) in its place; an edit or a reaction is
        applied to its message and its notice retracted (in Matrix neither is a message
        of its own, and the notice would go on saying it cannot be read); anything else
        is delivered."""
        for event in self._undecrypted.take(sessions):
            log.info("Decrypting %s now that its key has arrived", event.event_id)
            state = self.rooms.rooms.get(event.room_id)
            clear = self._decrypt(event)
            if state is None or isinstance(clear, Encrypted):
                continue
            if clear is None or isinstance(clear, Reaction) or _is_edit(clear):
                if clear is not None:
                    self._late_edits.add(event.event_id)
                    try:
                        await self._guard(self._on_event(state, clear))
                    finally:
                        self._late_edits.discard(event.event_id)
                await self._guard(self._withdraw_notice(event))
                continue
            if isinstance(clear, Message) and clear.media is None and clear.replaces is None:
                clear = dataclasses.replace(clear, replaces=clear.event_id)
            await self._guard(self._on_event(state, clear))

    async def _withdraw_notice(self, event: Encrypted) -> None:
        """Retract the notice shown in place of ``event``: it was not a message."""
        chat = await self._chat(event.room_id)
        speaker = await self._speaker(chat, event.sender)
        if speaker is not None:
            carbon = event.sender == self.me and isinstance(chat, Contact)
            speaker.retract(event.event_id, carbon=carbon)

    async def _warn_encrypted(self, room_id: RoomId) -> None:
        if room_id in self._warned_encrypted:
            return
        self._warned_encrypted.add(room_id)
        chat = await self._chat(room_id)
        if self.e2ee is None:
            text = ENCRYPTED_UNAVAILABLE.format(problem=self.e2ee_problem)
        else:
            text = ENCRYPTED_NOTICE.format(device=self.e2ee.device_id)
        if isinstance(chat, Contact):
            chat.send_text(text)
        else:
            chat.get_system_participant().send_text(text)

    def _encrypted(self, room_id: RoomId) -> bool:
        """Whether events to ``room_id`` must be encrypted (`NotSupported` if they must
        and cannot be)."""
        state = self.rooms.rooms.get(room_id)
        if state is None or not state.encrypted:
            return False
        if self.e2ee is None:
            raise NotSupported(
                "this Matrix chat is end-to-end encrypted and Passerelle cannot encrypt: "
                f"{self.e2ee_problem}; answer from a Matrix client"
            )
        return True

    def _check_writable(self, room_id: RoomId) -> None:
        self._encrypted(room_id)

    async def _send(self, room_id: RoomId, event_type: str, content: dict[str, Any]) -> EventId:
        """Send an event, encrypted for the room's members if the room is encrypted."""
        if self._encrypted(room_id) and self.e2ee is not None:
            members = self._members.get(room_id)
            if members is None:
                everyone = await self.matrix.room_members(room_id)
                members = frozenset(m.user for m in everyone if m.membership in ("join", "invite"))
                self._members[room_id] = members
            content = await self.e2ee.encrypt(room_id, members, event_type, content)
            event_type = "m.room.encrypted"
            await self._back_up(room_id, content)  # its Megolm session, once (recovery.py)
        return await self.matrix.send(room_id, event_type, content)


def _is_edit(event: TimelineEvent) -> bool:
    """Whether ``event`` is an edit of another message (``m.replace``)."""
    return isinstance(event, Message) and event.replaces not in (None, event.event_id)
