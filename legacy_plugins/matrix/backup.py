"""Server-side key backup (``m.megolm_backup.v1.curve25519-aes-sha2``): restore and upload.

Element keeps the user's room keys on their homeserver, each Megolm session encrypted to
the backup's Curve25519 public key; the private key is the secret ``m.megolm_backup.v1``
in the user's secret storage (:mod:`.secrets`), opened with their recovery key.

- `open_storage` and `read_secret`: the user's default secret storage key from their
  recovery key (checked against its description), and a secret from account data.
- `restore`: with the backup secret, opens the current backup version (its public key
  must be the one the secret gives), fetches every key (``/room_keys/keys``), decrypts
  them and gives them to the device's store. Of two copies of a session the one from
  the earlier message is kept (:func:`.crypto.keep_earliest`).
- `upload_session` puts one of the gateway's own Megolm sessions into the backup,
  encrypted to its public key (no secret needed), for the user's other devices;
  `upload_sessions` any sessions the device holds (the room keys others send it).

The session's side (the command, the uploads) is :mod:`.recovery`.

Pure parts (parsing, decrypting, encrypting a session) are separate from the requests,
which go through `MatrixClient`'s JSON requests. Errors the user should read are
`SecretStorageError`; the homeserver's are those of :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .client import nio  # imported on first use, see client.py
from .errors import RequestFailed
from .secrets import (
    SecretStorageError,
    decrypt_secret,
    parse_key_description,
    unb64,
    unlock,
)

if TYPE_CHECKING:
    from .client import MatrixClient

__all__ = [
    "BACKUP_ALGORITHM",
    "BackedUpSession",
    "BackupInfo",
    "Restored",
    "decrypt_backup",
    "encrypt_session",
    "open_backup",
    "parse_backup_info",
    "restore",
    "upload_session",
    "upload_sessions",
]

log = logging.getLogger(__name__)

BACKUP_ALGORITHM = "m.megolm_backup.v1.curve25519-aes-sha2"
MEGOLM_BACKUP_V1 = "m.megolm_backup.v1"
MEGOLM = "m.megolm.v1.aes-sha2"
MAX_RESTORED = 100_000
"""Sessions taken from one backup at most (a bound on memory and store writes)."""
_CHUNK = 100


@dataclass(frozen=True, slots=True)
class BackupInfo:
    """The homeserver's current backup version (``GET /room_keys/version``)."""

    version: str
    public_key: str
    count: int


@dataclass(frozen=True, slots=True)
class BackedUpSession:
    """One Megolm session as a backup (or a key export) holds it."""

    room_id: str
    session_id: str
    sender_key: str
    signing_key: str
    session_key: str
    forwarding_chain: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore` did: the backup version, the sessions the device took (new, or
    from an earlier message than the copy it held), those it already had as good, and
    those that could not be read."""

    version: str
    taken: frozenset[str]
    already: int
    failed: int


def parse_backup_info(data: object) -> BackupInfo:
    """The backup version from ``/room_keys/version``; `SecretStorageError` if it is
    not one Passerelle can use."""
    if not isinstance(data, Mapping) or not isinstance(data.get("version"), str):
        raise SecretStorageError("the homeserver's key backup description is invalid")
    algorithm = data.get("algorithm")
    if algorithm != BACKUP_ALGORITHM:
        raise SecretStorageError(
            f"your key backup uses {algorithm!r}, which Passerelle does not know "
            f"(only {BACKUP_ALGORITHM})"
        )
    auth = data.get("auth_data")
    public_key = auth.get("public_key") if isinstance(auth, Mapping) else None
    if not isinstance(public_key, str):
        raise SecretStorageError("the homeserver's key backup has no public key")
    count = data.get("count")
    return BackupInfo(data["version"], public_key, count if isinstance(count, int) else 0)


def open_backup(private_key: str, info: BackupInfo) -> Any:
    """A decryptor for ``info``'s keys from the backup secret (base64 of the private
    key); `SecretStorageError` if that key is not the backup's."""
    import vodozemac

    raw = unb64(private_key.strip(), "the key backup secret")
    if len(raw) != 32:
        raise SecretStorageError("the key backup secret in your secret storage is damaged")
    decryption = vodozemac.PkDecryption.from_key(vodozemac.Curve25519SecretKey.from_bytes(raw))
    if unb64(decryption.public_key.to_base64(), "") != unb64(info.public_key, "public key"):
        raise SecretStorageError(
            f"the backup key in your secret storage does not open the current key backup "
            f"(version {info.version}): it was made anew without updating the secret "
            "storage; reset recovery in Element"
        )
    return decryption


def decrypt_session(
    decryption: Any, room_id: str, session_id: str, data: object
) -> BackedUpSession:
    """One backed-up session (``KeyBackupData``); `SecretStorageError` if unreadable."""
    import vodozemac

    try:
        sealed = data["session_data"]  # type: ignore[index]
        message = vodozemac.Message.from_base64(
            sealed["ciphertext"].rstrip("="), sealed["mac"].rstrip("="), sealed["ephemeral"]
        )
        clear = json.loads(decryption.decrypt(message))
        chain = clear.get("forwarding_curve25519_key_chain") or []
        session = BackedUpSession(
            room_id,
            session_id,
            clear["sender_key"],
            clear["sender_claimed_keys"]["ed25519"],
            clear["session_key"],
            tuple(str(k) for k in chain),
        )
        algorithm = clear.get("algorithm", MEGOLM)
    except (KeyError, TypeError, AttributeError, ValueError, vodozemac.PkDecodeException) as e:
        raise SecretStorageError(f"the backed-up key {session_id} cannot be read ({e})") from e
    if algorithm != MEGOLM or not all(
        isinstance(v, str) for v in (session.sender_key, session.signing_key, session.session_key)
    ):
        raise SecretStorageError(f"the backed-up key {session_id} is not a Megolm session")
    return session


def decrypt_backup(decryption: Any, keys: object) -> tuple[list[BackedUpSession], int]:
    """Every session of ``/room_keys/keys``'s answer, and how many could not be read."""
    rooms = keys.get("rooms") if isinstance(keys, Mapping) else None
    if not isinstance(rooms, Mapping):
        raise SecretStorageError("the homeserver's key backup answer is invalid")
    found: list[BackedUpSession] = []
    failed = 0
    for room_id, room in rooms.items():
        sessions = room.get("sessions") if isinstance(room, Mapping) else None
        for session_id, data in (sessions or {}).items():
            if len(found) >= MAX_RESTORED:
                log.warning("More than %d keys in the backup: the rest is skipped", MAX_RESTORED)
                return found, failed
            try:
                found.append(decrypt_session(decryption, str(room_id), str(session_id), data))
            except SecretStorageError as e:
                log.warning("Skipped a backed-up key: %s", e)
                failed += 1
    return found, failed


def encrypt_session(
    public_key: str, session: BackedUpSession, first_index: int, verified: bool
) -> dict[str, Any]:
    """``session`` as a backup holds it (``KeyBackupData``), encrypted to the backup's
    ``public_key``."""
    import vodozemac

    clear = {
        "algorithm": MEGOLM,
        "sender_key": session.sender_key,
        "sender_claimed_keys": {"ed25519": session.signing_key},
        "session_key": session.session_key,
        "forwarding_curve25519_key_chain": list(session.forwarding_chain),
    }
    encryption = vodozemac.PkEncryption.from_key(
        vodozemac.Curve25519PublicKey.from_base64(public_key)
    )
    sealed = encryption.encrypt(json.dumps(clear).encode())
    # Message.to_base64 does not return its parts in the order its documentation says.
    parts = {"ciphertext": sealed.ciphertext, "mac": sealed.mac, "ephemeral": sealed.ephemeral_key}
    return {
        "first_message_index": first_index,
        "forwarded_count": len(session.forwarding_chain),
        "is_verified": verified,
        "session_data": {k: base64.b64encode(v).decode().rstrip("=") for k, v in parts.items()},
    }


# -- requests ---------------------------------------------------------------------------


async def account_data(matrix: MatrixClient, event_type: str) -> Any:
    """The user's account data ``event_type``, or None if they have none."""
    try:
        return await matrix.account_data(event_type)
    except RequestFailed as e:
        if e.errcode == "M_NOT_FOUND" or e.status == 404:
            return None
        raise


async def backup_info(matrix: MatrixClient) -> BackupInfo | None:
    """The current backup version, or None if the user has no backup."""
    try:
        data = await matrix.key_backup_version()
    except RequestFailed as e:
        if e.errcode == "M_NOT_FOUND" or e.status == 404:
            return None
        raise
    return parse_backup_info(data)


async def open_storage(matrix: MatrixClient, recovery: str) -> tuple[str, bytes]:
    """The user's default secret storage key, from ``recovery`` (checked): its ID and
    the key. `SecretStorageError` if there is none, or that is not it."""
    default = await account_data(matrix, "m.secret_storage.default_key")
    key_id = default.get("key") if isinstance(default, Mapping) else None
    if not isinstance(key_id, str):
        raise SecretStorageError(
            "your Matrix account has no secret storage (no recovery key was set up): set up "
            "recovery in Element (Settings → Encryption → Recovery), then try again"
        )
    content = await account_data(matrix, f"m.secret_storage.key.{key_id}")
    if content is None:
        raise SecretStorageError(f"your secret storage's key {key_id} has no description")
    return key_id, unlock(recovery, parse_key_description(key_id, content))


async def read_secret(matrix: MatrixClient, key_id: str, key: bytes, name: str) -> str | None:
    """The secret ``name`` from the secret storage, or None if it holds none for the key."""
    stored = await account_data(matrix, name)
    encrypted = stored.get("encrypted") if isinstance(stored, Mapping) else None
    if not isinstance(encrypted, Mapping) or key_id not in encrypted:
        return None
    return decrypt_secret(key, name, encrypted[key_id])


async def restore(matrix: MatrixClient, olm: Any, secret: str) -> tuple[BackupInfo, Restored]:
    """Open the user's key backup with its private key ``secret`` and give every key in
    it to ``olm`` (nio's machine, patched by `keep_earliest`)."""
    info = await backup_info(matrix)
    if info is None:
        raise SecretStorageError(
            "your Matrix account has no key backup on the homeserver: turn key backup on "
            "in Element (Settings → Encryption), then try again"
        )
    decryption = open_backup(secret, info)
    keys = await matrix.key_backup_keys(info.version)
    sessions, failed = decrypt_backup(decryption, keys)
    taken: set[str] = set()
    already = 0
    for start in range(0, len(sessions), _CHUNK):
        took, held, bad = import_sessions(olm, sessions[start : start + _CHUNK])
        taken |= took
        already += held
        failed += bad
        await asyncio.sleep(0)  # each one is a write to the store: let others run
    return info, Restored(info.version, frozenset(taken), already, failed)


def import_sessions(olm: Any, sessions: Iterable[BackedUpSession]) -> tuple[set[str], int, int]:
    """Give ``sessions`` to nio's store: the IDs it took, how many it held as good
    already, how many it could not read."""
    taken: set[str] = set()
    already = bad = 0
    for s in sessions:
        session = nio.crypto.Olm._import_group_session(
            s.session_key, s.signing_key, s.sender_key, s.room_id, list(s.forwarding_chain)
        )
        if session is None or session.id != s.session_id:
            bad += 1
            continue
        if olm.inbound_group_store.add(session):
            olm.save_inbound_group_session(session)
            taken.add(session.id)
        else:
            already += 1
    return taken, already, bad


async def upload_session(
    matrix: MatrixClient,
    olm: Any,
    room_id: str,
    session_id: str,
    *,
    version: str,
    public_key: str,
) -> bool:
    """Put this device's own Megolm session ``session_id`` of ``room_id`` in the backup;
    False if the device does not hold it. `RequestFailed` with ``M_WRONG_ROOM_KEYS_VERSION``
    when the backup has been replaced."""
    mine = olm.account.identity_keys
    held = olm.inbound_group_store.get(room_id, mine["curve25519"], session_id)
    if held is None:
        return False
    await upload_sessions(matrix, [held], version=version, public_key=public_key, verified=True)
    return True


async def upload_sessions(
    matrix: MatrixClient,
    sessions: Iterable[Any],
    *,
    version: str,
    public_key: str,
    verified: bool,
) -> int:
    """Put nio's inbound Megolm ``sessions`` in the backup, each from the earliest
    message the device can decrypt, in one request; how many."""
    rooms: dict[str, dict[str, dict[str, Any]]] = {}
    for held in sessions:
        first = held.first_known_index
        session = BackedUpSession(
            held.room_id,
            held.id,
            held.sender_key,
            held.ed25519,
            held.export_session(first),
            tuple(held.forwarding_chain),
        )
        entry = encrypt_session(public_key, session, first, verified)
        rooms.setdefault(held.room_id, {"sessions": {}})["sessions"][held.id] = entry
    if rooms:
        await matrix.put_key_backup_keys(version, rooms)
    return sum(len(r["sessions"]) for r in rooms.values())
