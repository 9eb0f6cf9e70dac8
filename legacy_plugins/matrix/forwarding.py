"""Room keys asked for, forwarded and given away: the I/O side of :mod:`.keyshare`.

`KeyForwarding` is a part of `.crypto.E2EE` (a base class of it; not used alone). After
each sync batch, `key_traffic` cancels the requests whose keys arrived, asks a device the
user has just verified again (and answers the requests it made while unverified), and
sends the requests that are due, to ``*`` of the user. `_on_request` answers another
device's request as `judge_request` says, forwarding the Megolm session over Olm (a
one-time key is claimed if there is no Olm session yet). nio's Olm machine decrypts
forwarded keys; `_accept_forward` replaces its acceptance rule with `judge_forward`.
What the user should know (a request sent, a forward refused, a device waiting for
verification) is queued in ``notices``, once per device, for the session to send. The
requests, both ways, are kept across restarts (:mod:`.pending`); a request waits until
`Config.key_request_delay` seconds have passed since its event was sent (the session
comes back for it, see `KeyRequests.next_due`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from .client import nio  # imported on first use, see client.py
from .keyshare import (
    KEY_REQUEST,
    MAX_HELD,
    MEGOLM,
    IncomingRequest,
    KeyRequests,
    SessionRef,
    Trust,
    cancellation_content,
    judge_forward,
    judge_request,
    request_content,
)
from .pending import PendingStore

if TYPE_CHECKING:
    from .client import MatrixClient

__all__ = ["KeyForwarding"]

log = logging.getLogger(__name__)

MAX_ASK_AGAIN = 100
"""Requests sent again (the newest) to an own device the user has just verified."""
ASKED = (
    "🔑 Passerelle cannot decrypt some messages (sent before its Matrix device {device} "
    "existed, or whose sender's device never sent it the key) and asked your other "
    "Matrix devices for their keys. They send keys only to a device they have verified: "
    "verify {device} from one of them (in Element: Settings → Sessions), and the "
    "messages appear here."
)
HELD = (
    "🔑 Your Matrix device {device} asks Passerelle for the keys of encrypted messages. "
    "It is not verified, so it gets nothing. If it is yours, verify it ('verify {me} "
    "{device}'): it then gets them."
)
REFUSED = "🔑 Passerelle refused room keys sent by {sender}'s device {device}: {why}."


class KeyForwarding:
    """Key requests and forwarded keys for `E2EE` (see the module doc)."""

    if TYPE_CHECKING:  # provided by E2EE
        matrix: MatrixClient
        _olm: Any
        _store: Any

        @property
        def device_id(self) -> str: ...
        def _used(self) -> None: ...
        async def _query(self, users: Iterable[str]) -> None: ...
        async def _claim(self, devices: Mapping[str, list[str]]) -> None: ...

    def _init_forwarding(self) -> None:
        self.pending = PendingStore(self._store.database)
        """What waits for keys, kept across restarts (see :mod:`.pending`)."""
        self.requests = KeyRequests(lambda: secrets.token_hex(12))
        """The keys this device asks the user's other devices for."""
        self.requests.restore(*self.pending.requests())
        self._held: OrderedDict[str, IncomingRequest] = OrderedDict(
            (r.request_id, r) for r in self.pending.held()
        )
        """Requests of the user's unverified devices, by request ID, until verified."""
        self._held_changed = False
        self._traffic = asyncio.Lock()
        self._verified_own: set[str] | None = None
        self._told: set[str] = set()
        self.notices: list[str] = []
        """Things to tell the user (taken and sent by the session)."""
        # nio's rule would take a forward for a session asked for under its own request
        # bookkeeping; ours decides (see keyshare.judge_forward).
        self._olm._should_accept_forward = self._accept_forward

    def want(self, ref: SessionRef, sent_at: int) -> None:
        """Ask for the key of ``ref``, the session of an event sent at ``sent_at`` (ms)
        that cannot be decrypted, once `Config.key_request_delay` has passed since it
        was sent (at once for an older event; never later than the delay from now,
        whatever the clocks say): the sender's key is often merely late."""
        delay = self.matrix.cfg.key_request_delay
        wait = min(max(sent_at / 1000 + delay - time.time(), 0.0), delay)
        self.requests.want(ref, asyncio.get_running_loop().time() + wait)

    async def key_traffic(self, arrived: Iterable[str]) -> None:
        """After a sync batch: cancel the requests whose keys ``arrived``, ask a device
        the user has just verified again (and answer its held requests), send the
        requests that are due, and store what changed."""
        async with self._traffic:
            try:
                await self._key_traffic(arrived)
            finally:
                self.pending.save_requests(self.requests.take_changes())
                if self._held_changed:
                    self._held_changed = not self.pending.save_held(self._held.values())

    async def _key_traffic(self, arrived: Iterable[str]) -> None:
        self._used()
        me, olm = self.matrix.me, self._olm
        for request in self.requests.arrived(arrived):
            log.info("Room key %s arrived: request cancelled", request.session.session_id)
            content = cancellation_content(request.request_id, self.device_id)
            await self.matrix.send_to_device(KEY_REQUEST, {me: {"*": content}})
        if self.requests.waiting() or self.requests.queued or self._held:
            if me not in olm.tracked_users or me in olm.users_for_key_query:
                await self._query([me])
            verified = {
                d.id
                for d in olm.device_store.active_user_devices(me)
                if olm.is_device_verified(d) and d.id != self.device_id
            }
            known, self._verified_own = self._verified_own, verified
            for device_id in sorted(verified - known) if known is not None else ():
                await self._newly_verified(device_id)
        due = self.requests.due(asyncio.get_running_loop().time())
        if due and "asked" not in self._told:
            self._told.add("asked")
            self.notices.append(ASKED.format(device=self.device_id))
        for request in due:
            log.info(
                "Asking %s's devices for the room key %s (room %s)",
                me,
                request.session.session_id,
                request.session.room_id,
            )
            content = request_content(request, self.device_id)
            await self.matrix.send_to_device(KEY_REQUEST, {me: {"*": content}})

    async def _newly_verified(self, device_id: str) -> None:
        me = self.matrix.me
        waiting = self.requests.waiting()[-MAX_ASK_AGAIN:]
        if waiting:
            log.info("Asking %s's newly verified device %s again", me, device_id)
        for request in waiting:
            content = request_content(request, self.device_id)
            await self.matrix.send_to_device(KEY_REQUEST, {me: {device_id: content}})
        for held in [r for r in self._held.values() if r.device_id == device_id]:
            del self._held[held.request_id]
            self._held_changed = True
            await self._on_request(held)

    def _trust(self, device: Any) -> Trust:
        if device is None:
            return "unknown"
        if self._olm.is_device_verified(device):
            return "verified"
        if self._olm.is_device_blacklisted(device):
            return "blacklisted"
        return "unverified"

    def _group_session(self, ref: SessionRef) -> Any:
        """The inbound Megolm session ``ref`` names, if this device has it."""
        store = self._olm.inbound_group_store
        if ref.sender_key:
            return store.get(ref.room_id, ref.sender_key, ref.session_id)
        for sessions in store[ref.room_id].values():  # no sender key: spec v1.3 requests
            if ref.session_id in sessions:
                return sessions[ref.session_id]
        return None

    async def _on_request(self, request: IncomingRequest) -> None:
        """Another device's key request (or cancellation): see `judge_request`."""
        me, olm = self.matrix.me, self._olm
        if request.session is None:
            self._held_changed |= self._held.pop(request.request_id, None) is not None
            return
        device = session = None
        if request.user_id == me and request.device_id != self.device_id:
            # Only then: nio's session store makes an entry for every room and key it is
            # asked about, and anyone may send this device requests.
            if me not in olm.tracked_users or me in olm.users_for_key_query:
                await self._query([me])
            device = olm.device_store[me].get(request.device_id)
            session = self._group_session(request.session)
        verdict, why = judge_request(
            request, me, self.device_id, self._trust(device), session is not None
        )
        log.info(
            "Key request %s from %s's device %s for %s: %s (%s)",
            request.request_id,
            request.user_id,
            request.device_id,
            request.session.session_id,
            verdict,
            why,
        )
        if verdict == "hold":
            self._held[request.request_id] = request
            self._held_changed = True
            while len(self._held) > MAX_HELD:
                self._held.popitem(last=False)
            if f"held {request.device_id}" not in self._told:
                self._told.add(f"held {request.device_id}")
                self.notices.append(HELD.format(device=request.device_id, me=me))
        elif verdict == "share":
            await self._forward(request.session.room_id, session, device)

    async def _forward(self, room_id: str, group_session: Any, device: Any) -> None:
        """Send ``group_session``'s key to the user's ``device`` (Olm-encrypted)."""
        olm = self._olm
        session = olm.session_store.get(device.curve25519)
        if session is None:
            await self._claim({device.user_id: [device.id]})
            session = olm.session_store.get(device.curve25519)
            if session is None:
                log.warning("No Olm session with %s: its key request stays unanswered", device.id)
                return
        message = olm._encrypt_forwarding_key(room_id, group_session, session, device)
        await self.matrix.send_to_device(message.type, message.as_dict()["messages"])
        log.info("Forwarded the room key %s to the device %s", group_session.id, device.id)

    def _accept_forward(self, sender: str, sender_key: str, event: Any) -> bool:
        """nio asks whether to take a forwarded room key (see `judge_forward`)."""
        olm, me = self._olm, self.matrix.me
        device = olm.device_store.device_from_sender_key(event.sender, sender_key)
        asked = self.requests.asked(event.session_id)
        why = judge_forward(
            sender=event.sender,
            me=me,
            device_id=None if device is None else device.id,
            trust=self._trust(device),
            asked=asked,
            algorithm=event.algorithm,
            room_id=event.room_id,
        )
        if why is not None or asked is None:
            shown = "?" if device is None else device.id
            log.warning("Refused a forwarded room key from %s's device %s: %s", sender, shown, why)
            if sender == me and f"refused {shown}" not in self._told:
                self._told.add(f"refused {shown}")
                self.notices.append(REFUSED.format(sender=sender, device=shown, why=why))
            return False
        # nio takes its own record of the request off when it imports the key.
        olm.outgoing_key_requests[event.session_id] = nio.crypto.OutgoingKeyRequest(
            asked.request_id, event.session_id, event.room_id, MEGOLM
        )
        return True
