"""End-to-end encryption (Olm and Megolm) for one user's Matrix device, on matrix-nio.

The gateway's device is an encryption endpoint, as an Element session is: it holds an
Olm account (identity and one-time keys) and the rooms' Megolm sessions in a SQLite store
in the network's data directory (``e2ee/<JID>/``), pickled with a key kept in the user's
registration data. Besides :mod:`.client`, this is the only module that imports nio: its
``Olm`` machine does the cryptography (on vodozemac); requests go through `MatrixClient`.

- Opening uploads the device's identity and one-time keys, once. A device that already
  has keys from another client (an access token copied from Element) is refused, since
  overwriting them would break that client: `NotSupported` says why and what to do.
- Each sync brings to-device events (room keys, Olm-encrypted for this device), the
  people whose devices changed, and how many one-time keys are left (topped up).
- `E2EE.decrypt` reads an ``m.room.encrypted`` event with the room keys received so far;
  `Undecryptable` says why not (a key may arrive later: the session then retries).
- The store's SQLite connection (~230 KiB of C memory each: lookaside, page cache,
  statements) is closed once the store has not been used for :data:`IDLE_CLOSE` seconds
  (peewee opens it again at the next query), so idle users do not each keep one.
- `E2EE.encrypt` Megolm-encrypts an event for a room: it fetches the members' devices,
  opens Olm sessions (claiming one-time keys) with those that lack one, and shares the
  room's Megolm session with every device that does not have it yet. A new Megolm
  session replaces it when a member leaves, a new device appears, or it gets old.
- Keys this device lacks are asked for: `decrypt` notes each Megolm session it has no
  key for; key requests that reach this device are kept away from nio (whose queue of
  them only its own client empties) and answered by :mod:`.forwarding`, which also sends
  this device's requests and decides which forwarded keys nio may take (rules in
  :mod:`.keyshare`).

Trust: room keys go to every device of the room's members (except blacklisted ones),
verified or not, and a device keeps the identity key first seen for it (nio ignores a
changed one): trust on first use. Verification (:mod:`.verification`) matters for keys
forwarded to and from the user's own devices only. The ``device`` command shows the user
this device's ID and key, to compare in their other clients, and other people's devices.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .client import MatrixClient, nio  # imported on first use, see client.py
from .errors import NotSupported, RequestFailed, Undecryptable
from .events import Encrypted, SyncBatch
from .forwarding import KeyForwarding
from .ids import RoomId, UserId
from .inbox import trim_soon
from .keyshare import KEY_REQUEST, SessionRef, parse_key_request

__all__ = ["E2EE", "DeviceInfo", "decrypt_file", "encrypt_file", "fingerprint"]

log = logging.getLogger(__name__)

ENCRYPTED = "m.room.encrypted"
IDLE_CLOSE = 2.0
"""Seconds without use after which the key store's SQLite connection is closed (opening
it again costs well under a millisecond)."""


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """A device of someone, as the ``device`` command shows it."""

    user_id: UserId
    device_id: str
    name: str
    ed25519: str
    trust: str
    """``verified``, ``blacklisted`` or ``unverified``."""


def fingerprint(key: str) -> str:
    """An ed25519 key as Matrix clients show a session key: groups of four characters."""
    return " ".join(key[n : n + 4] for n in range(0, len(key), 4))


def decrypt_file(data: bytes, file: Mapping[str, Any]) -> bytes:
    """The clear bytes of an encrypted attachment (``file``: the event's ``file`` object);
    `Undecryptable` if its keys are missing or its hash does not match."""
    try:
        key = file["key"]["k"]
        sha256 = file["hashes"]["sha256"]
        iv = file["iv"]
        return bytes(nio.crypto.decrypt_attachment(data, key, sha256, iv))
    except (KeyError, TypeError, ValueError, nio.EncryptionError) as e:
        raise Undecryptable(f"the encrypted file cannot be decrypted ({e})") from e


def encrypt_file(data: bytes) -> tuple[bytes, dict[str, Any]]:
    """Encrypt an attachment: the bytes to upload and the ``file`` object (without its
    ``url``) that lets the recipients decrypt them."""
    ciphertext, keys = nio.crypto.encrypt_attachment(data)
    return bytes(ciphertext), dict(keys)


class E2EE(KeyForwarding):
    """One device's encryption state. Open with `E2EE.open`; `close` when done."""

    def __init__(self, matrix: MatrixClient, olm: Any, store: Any) -> None:
        self.matrix = matrix
        self._olm = olm
        self._store = store
        self._locks: dict[RoomId, asyncio.Lock] = {}
        self._last_use = 0.0
        self._idle: asyncio.TimerHandle | None = None
        self._init_forwarding()

    @classmethod
    async def open(cls, matrix: MatrixClient, store_dir: Path, pickle_key: str) -> E2EE:
        """Load (or create) the device's keys and publish them if they are new.

        `NotSupported` if encryption cannot work for this device (the text says why);
        the errors of :mod:`.errors` for network trouble."""
        me, device = matrix.me, matrix.creds.device_id
        if not device:
            raise NotSupported("this Matrix login has no device ID, which encryption needs")
        olm, store = _open_store(me, device, store_dir, pickle_key)
        e2ee = cls(matrix, olm, store)
        e2ee._used()
        try:
            if not olm.account.shared:
                await e2ee._publish_device()
        except BaseException:
            e2ee.close()
            raise
        return e2ee

    def close(self) -> None:
        if self._idle is not None:
            self._idle.cancel()
            self._idle = None
        self._store.database.close()

    def _used(self) -> None:
        """The store is in use: close its connection once idle (see the module doc)."""
        loop = asyncio.get_running_loop()
        self._last_use = loop.time()
        if self._idle is None:
            self._idle = loop.call_later(IDLE_CLOSE, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle = None
        database = self._store.database
        if database.is_closed():
            return
        loop = asyncio.get_running_loop()
        wait = self._last_use + IDLE_CLOSE - loop.time()
        if wait > 0 or database.in_transaction():
            self._idle = loop.call_later(max(wait, 0.5), self._close_if_idle)
            return
        database.close()
        trim_soon()

    @property
    def device_id(self) -> str:
        return str(self._olm.device_id)

    @property
    def ed25519(self) -> str:
        return str(self._olm.account.identity_keys["ed25519"])

    async def _publish_device(self) -> None:
        me, device = self.matrix.me, self.device_id
        answer = await self.matrix.keys_query([me])
        published = _dig(answer, "device_keys", me, device)
        if published:
            if _dig(published, "keys", f"ed25519:{device}") == self.ed25519:
                self._olm.account.shared = True  # uploaded before a crash: ours
                self._olm.save_account()
                return
            raise NotSupported(
                f"the Matrix device {device} already has the encryption keys of another "
                "client (an access token copied from another app?); register with your "
                "password so that Passerelle gets a device of its own"
            )
        await self._upload_keys()
        log.info("Published the encryption keys of %s's device %s", me, device)

    async def _upload_keys(self) -> None:
        answer = await self.matrix.keys_upload(self._olm.share_keys())
        response = nio.KeysUploadResponse.from_dict(answer)
        if isinstance(response, nio.ErrorResponse):
            raise RequestFailed("uploading encryption keys: the homeserver's answer is invalid")
        self._olm.handle_response(response)

    # -- incoming -----------------------------------------------------------------------

    async def on_sync(self, batch: SyncBatch) -> set[str]:
        """Take a sync's keys and device changes; returns the Megolm sessions whose keys
        just arrived (events waiting for them can now be decrypted)."""
        self._used()
        olm = self._olm
        if batch.device_lists_changed:
            olm.add_changed_users(set(batch.device_lists_changed))
        arrived: set[str] = set()
        requests = []
        for raw in batch.to_device:
            if raw.get("type") == KEY_REQUEST:
                request = parse_key_request(raw)
                if request is None:
                    log.debug("Skipped a malformed key request from %s", raw.get("sender"))
                else:
                    requests.append(request)
                continue
            event = nio.ToDeviceEvent.parse_event(dict(raw))
            if event is None or isinstance(event, nio.BadEvent | nio.UnknownBadEvent):
                log.debug("Skipped a malformed to-device event from %s", raw.get("sender"))
                continue
            try:
                result = olm.handle_to_device_event(event)
            except (nio.EncryptionError, KeyError, ValueError) as e:
                log.warning("Could not read a to-device event from %s: %s", event.sender, e)
                continue
            if isinstance(result, nio.RoomKeyEvent | nio.ForwardedRoomKeyEvent):
                log.debug("Room key %s from %s", result.session_id, result.sender)
                arrived.add(result.session_id)
        if batch.one_time_keys is not None:
            olm.uploaded_key_count = batch.one_time_keys
        if olm.should_upload_keys:
            await self._upload_keys()
        # nio cancels a request when it takes a forwarded key; key_traffic does that
        # for every key that arrives, so nio's copy is dropped.
        olm.outgoing_to_device_messages = [
            m for m in olm.outgoing_to_device_messages if m.type != KEY_REQUEST
        ]
        for message in list(olm.outgoing_to_device_messages):
            await self.matrix.send_to_device(message.type, message.as_dict()["messages"])
            olm.handle_response(nio.ToDeviceResponse(message))
        for request in requests:
            await self._on_request(request)
        return arrived

    def decrypt(self, event: Encrypted) -> dict[str, Any]:
        """The clear event (as the homeserver would have sent it unencrypted), or
        `Undecryptable` with the reason."""
        self._used()
        parsed = nio.Event.parse_encrypted_event(dict(event.raw))
        if not isinstance(parsed, nio.MegolmEvent):
            raise Undecryptable("it is not Megolm-encrypted, the only kind Matrix rooms use")
        session = self._olm.inbound_group_store.get(
            event.room_id, parsed.sender_key, parsed.session_id
        )
        ref = SessionRef(event.room_id, parsed.session_id, parsed.sender_key)
        if session is None:
            self.want(ref, event.ts)
            raise Undecryptable("the sender's device has not sent its key to Passerelle (yet)")
        try:
            clear = self._olm.decrypt_megolm_event(parsed, event.room_id)
        except nio.EncryptionError as e:
            # A session held from a later message on (the sender shared it with this
            # device only after it came, as Element does): a copy from its start, which
            # nio puts in place of this one, may come from the user's devices.
            if session.first_known_index > 0:
                self.want(ref, event.ts)
            raise Undecryptable(str(e)) from e
        if isinstance(clear, nio.BadEvent | nio.UnknownBadEvent):
            raise Undecryptable("its decrypted content is malformed")
        return dict(clear.source)

    # -- outgoing -----------------------------------------------------------------------

    async def encrypt(
        self,
        room_id: RoomId,
        members: Iterable[UserId],
        event_type: str,
        content: Mapping[str, Any],
    ) -> dict[str, Any]:
        """The content of the ``m.room.encrypted`` event that carries ``event_type`` with
        ``content`` to ``members`` (joined and invited) of ``room_id``."""
        self._used()
        users = set(members)
        olm = self._olm
        async with self._locks.setdefault(room_id, asyncio.Lock()):
            query = (users - olm.tracked_users) | olm.users_for_key_query
            if query:
                await self._query(query)
            missing = olm.get_missing_sessions(list(users))
            if missing:
                await self._claim(missing)
            if self._must_share(room_id, users):
                await self._share(room_id, users)
            encrypted: dict[str, Any] = olm.group_encrypt(
                room_id, {"type": event_type, "content": dict(content)}
            )
        relation = content.get("m.relates_to")
        if isinstance(relation, Mapping) and "rel_type" in relation:
            encrypted["m.relates_to"] = dict(relation)  # servers aggregate edits, reactions
        return encrypted

    async def _query(self, users: Iterable[str]) -> None:
        response = nio.KeysQueryResponse.from_dict(await self.matrix.keys_query(users))
        if isinstance(response, nio.ErrorResponse):
            raise RequestFailed("reading device keys: the homeserver's answer is invalid")
        self._olm.handle_response(response)

    async def _claim(self, devices: Mapping[str, list[str]]) -> None:
        response = nio.KeysClaimResponse.from_dict(await self.matrix.keys_claim(devices))
        if isinstance(response, nio.ErrorResponse):
            raise RequestFailed("claiming one-time keys: the homeserver's answer is invalid")
        self._olm.handle_response(response)
        for user, ids in devices.items():
            lacking = [d for d in ids if d not in response.one_time_keys.get(user, {})]
            if lacking:
                log.warning(
                    "No one-time key left for %s's devices %s: they cannot read what "
                    "Passerelle sends until they upload more",
                    user,
                    ", ".join(lacking),
                )

    def _must_share(self, room_id: RoomId, users: set[UserId]) -> bool:
        """Whether the room needs a new Megolm session: none yet, an old one, one shared
        with someone who left, or a device that can be reached does not have it."""
        olm = self._olm
        session = olm.outbound_group_sessions.get(room_id)
        if session is None or session.expired or not session.shared:
            return True
        if {user for user, _device in session.users_shared_with} - users:
            return True
        known = session.users_shared_with | session.users_ignored
        for user in users:
            for device in olm.device_store.active_user_devices(user):
                if (user, device.id) in known or device.id == olm.device_id:
                    continue
                if not olm.is_device_blacklisted(device) and olm.session_store.get(
                    device.curve25519
                ):
                    return True
        return False

    async def _share(self, room_id: RoomId, users: set[UserId]) -> None:
        olm = self._olm
        shares = olm.share_group_session_parallel(
            room_id, sorted(users), ignore_unverified_devices=True
        )
        for sharing_with, to_device in shares:
            await self.matrix.send_to_device(ENCRYPTED, to_device["messages"])
            olm.outbound_group_sessions[room_id].users_shared_with.update(sharing_with)
        session = olm.outbound_group_sessions[room_id]
        session.shared = True
        shared = len(session.users_shared_with)
        log.debug("Shared a room key for %s with %d devices", room_id, shared)

    # -- devices ------------------------------------------------------------------------

    async def devices(self, user: UserId) -> list[DeviceInfo]:
        """``user``'s devices, as this device knows them (fetched if never seen)."""
        self._used()
        olm = self._olm
        if user not in olm.tracked_users or user in olm.users_for_key_query:
            await self._query([user])
        found = []
        for device in olm.device_store.active_user_devices(user):
            trust = self._trust(device)
            found.append(
                DeviceInfo(user, device.id, device.display_name or "", device.ed25519, trust)
            )
        return sorted(found, key=lambda d: d.device_id)


def keep_earliest(olm: Any) -> None:
    """Make nio's Olm machine keep, of two copies of a room's Megolm session (a forwarded
    key, a re-shared one), the one that starts at the earlier message, in memory and in
    its store: nio takes the newer whatever its start, so a forwarded copy starting
    later would make the messages in between undecryptable again."""
    sessions = olm.inbound_group_store
    entries, save = sessions._entries, olm.save_inbound_group_session

    def add(session: Any) -> bool:
        held = sessions.get(session.room_id, session.sender_key, session.id)
        if held is not None and held.first_known_index <= session.first_known_index:
            return False
        entries[session.room_id][session.sender_key][session.id] = session
        return True

    def save_if_kept(session: Any) -> None:
        if sessions.get(session.room_id, session.sender_key, session.id) is session:
            save(session)

    sessions.add = add
    olm.save_inbound_group_session = save_if_kept


def _open_store(me: str, device: str, store_dir: Path, pickle_key: str) -> tuple[Any, Any]:
    """nio's Olm machine on the SQLite store in ``store_dir`` (created if needed)."""
    try:
        store_dir.mkdir(parents=True, exist_ok=True)
        store_dir.chmod(0o700)
        store = nio.store.SqliteStore(me, device, str(store_dir), pickle_key)
        olm = nio.crypto.Olm(me, device, store)
        keep_earliest(olm)
        return olm, store
    except Exception as e:  # peewee, vodozemac and nio each raise their own errors
        raise NotSupported(
            f"the encryption store in {store_dir} cannot be opened ({e}); "
            "register again to start with a new device"
        ) from e


def _dig(value: object, *keys: str) -> Any:
    """``value[k1][k2]…`` through JSON objects, or None where one is missing."""
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value
