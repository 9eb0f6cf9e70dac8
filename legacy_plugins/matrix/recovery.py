"""The user's recovery key, the session's side: the command, and backing up what is sent.

`SessionRecovery` is a part of `Session`. `use_recovery_key` (the ad-hoc command *Matrix
recovery key*) opens the user's secret storage once with the key they give, then does
what the secrets it finds allow: restore the key backup (:mod:`.backup`; the keys that
arrive correct the notices of what they open, through the session's late-key path),
cross-sign the gateway's device and trust the user's devices their self-signing key
signed (:mod:`.crosssign`). It answers with what it did and what it could not; it fails
only when nothing could be done. Nothing of the keys is kept but the backup's version
and public key, with which `_back_up` puts each Megolm session the device creates into
the backup, once, before the first message that uses it is sent, and
`_back_up_received` the room keys others' devices send it, after each sync.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .backup import (
    MEGOLM_BACKUP_V1,
    open_storage,
    read_secret,
    restore,
    upload_session,
    upload_sessions,
)
from .crosssign import SELF_SIGNING, cross_sign_device, trust_devices
from .errors import MatrixError, RequestFailed
from .secrets import SecretStorageError

if TYPE_CHECKING:
    from slidge.db.meta import JSONSerializable

    from .client import MatrixClient
    from .crypto import E2EE

__all__ = ["SessionRecovery"]

log = logging.getLogger(__name__)

RESTORED = (
    "🔑 Restored {taken} room keys from your key backup (version {version}): the messages "
    "they open are shown now.{already}{failed} From now on Passerelle also puts the keys "
    "of what you send into this backup, for your other Matrix devices."
)
NO_BACKUP_KEY = (
    "your secret storage holds no key for a key backup (turn key backup on in Element: "
    "Settings → Encryption)"
)
NO_SIGNING_KEY = (
    "your secret storage holds no cross-signing keys (set up cross-signing in Element: "
    "Settings → Encryption)"
)
CROSS_SIGNED = (
    "✅ Your Matrix device {device} here is now signed with your cross-signing key: your "
    "other Matrix sessions show it as verified (it may take them a moment)."
)
TRUSTED = (
    "✅ Your Matrix devices {devices}, signed by your cross-signing key, are verified here "
    "now: they get the keys they ask Passerelle for, and the keys they forward are taken."
)
BACKUP_GONE = (
    "🔑 Your Matrix key backup changed (a new version, or it was deleted): Passerelle no "
    "longer backs up the keys of what you send. Give your recovery key again (ad-hoc "
    "command 'Matrix recovery key') to use the new one."
)


class SessionRecovery:
    """The recovery key for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session, SessionE2EE and slidge's BaseSession
        matrix: MatrixClient
        e2ee: E2EE | None
        e2ee_problem: str
        user: Any

        def legacy_module_data_update(self, data: JSONSerializable) -> None: ...
        def send_gateway_message(self, text: str, **msg_kwargs: Any) -> None: ...
        async def _e2ee_after_batch(self, arrived: set[str]) -> None: ...

    _backed_up: set[str] | None = None
    """Megolm sessions of this device already put in the backup (in this run)."""

    def _backup_target(self) -> tuple[str, str] | None:
        stored = self.user.legacy_module_data.get("key_backup")
        if isinstance(stored, Mapping):
            version, public_key = stored.get("version"), stored.get("public_key")
            if isinstance(version, str) and isinstance(public_key, str):
                return version, public_key
        return None

    async def use_recovery_key(self, recovery: str) -> str:
        """The recovery key command: open the secret storage, restore every key of the
        backup (and correct what they open; what the user sends is backed up from then
        on), and cross-sign the gateway's device. What could not be done is said; if
        nothing could, `SecretStorageError` says why (the errors of :mod:`.errors` for
        the homeserver's)."""
        if self.e2ee is None:
            raise SecretStorageError(
                f"end-to-end encryption does not work here: {self.e2ee_problem}"
            )
        key_id, key = await open_storage(self.matrix, recovery)
        del recovery
        backup_key = await read_secret(self.matrix, key_id, key, MEGOLM_BACKUP_V1)
        seed = await read_secret(self.matrix, key_id, key, SELF_SIGNING)
        del key
        done: list[str] = []
        not_done: list[str] = []
        if backup_key is None:
            not_done.append(NO_BACKUP_KEY)
        else:
            try:
                done.append(await self._restore(backup_key))
            except SecretStorageError as e:
                not_done.append(str(e))
        if seed is None:
            not_done.append(NO_SIGNING_KEY)
        else:
            try:
                done.extend(await self._cross_sign(seed))
            except SecretStorageError as e:
                not_done.append(str(e))
        del backup_key, seed
        if not done:
            raise SecretStorageError("; ".join(not_done))
        done.extend(f"Not done: {why}." for why in not_done)
        done.append("Your recovery key was not kept.")
        return "\n".join(done)

    async def _cross_sign(self, seed: str) -> list[str]:
        """Sign the gateway's device with the self-signing key ``seed`` (if it is the
        account's current one: `SecretStorageError` otherwise) and trust the user's
        devices it signed; what was done, for the user."""
        assert self.e2ee is not None
        _mine, others = await cross_sign_device(self.matrix, self.e2ee.device_id, seed)
        return [CROSS_SIGNED.format(device=self.e2ee.device_id), *await self._trust_signed(others)]

    async def _trust_signed(self, signed: dict[str, str]) -> list[str]:
        """Your devices your self-signing key signed: verified here (and asked again for
        the keys the gateway lacks, see `KeyForwarding.key_traffic`)."""
        assert self.e2ee is not None
        await self.e2ee.devices(self.matrix.me)  # this device's view of them, fresh
        trusted = trust_devices(self.e2ee._olm, self.matrix.me, signed)
        if not trusted:
            return []
        await self._e2ee_after_batch(set())
        return [TRUSTED.format(devices=", ".join(trusted))]

    async def _restore(self, backup_key: str) -> str:
        assert self.e2ee is not None
        info, restored = await restore(self.matrix, self.e2ee._olm, backup_key)
        log.info(
            "Restored %d room keys of %s from key backup version %s (%d held, %d unreadable)",
            len(restored.taken),
            self.matrix.me,
            restored.version,
            restored.already,
            restored.failed,
        )
        self.legacy_module_data_update(
            {"key_backup": {"version": info.version, "public_key": info.public_key}}
        )
        self._backed_up = set()
        await self._e2ee_after_batch(set(restored.taken))
        already = f" {restored.already} were held already." if restored.already else ""
        failed = (
            f" {restored.failed} could not be read and were skipped." if restored.failed else ""
        )
        return RESTORED.format(
            taken=len(restored.taken), version=info.version, already=already, failed=failed
        )

    async def _back_up(self, room_id: str, encrypted: dict[str, Any]) -> None:
        """After encrypting for ``room_id``: put the Megolm session used, if new, in the
        user's backup (if they gave their recovery key). Never fails the send."""
        target = self._backup_target()
        session_id = encrypted.get("session_id")
        if target is None or self.e2ee is None or not isinstance(session_id, str):
            return
        if self._backed_up is None:
            self._backed_up = set()
        if session_id in self._backed_up:
            return
        version, public_key = target
        try:
            done = await upload_session(
                self.matrix,
                self.e2ee._olm,
                room_id,
                session_id,
                version=version,
                public_key=public_key,
            )
        except MatrixError as e:
            self._upload_failed(e)
            return
        if done:
            self._backed_up.add(session_id)
            log.info("Backed up the room key %s of %s (version %s)", session_id, room_id, version)

    async def _back_up_received(self, arrived: set[str]) -> None:
        """After a sync: the room keys that just arrived (others' Megolm sessions) go
        into the backup too, as Element does, so that the user's other devices can read
        what the gateway's device alone was given the keys of. Never fails the sync."""
        if not arrived or self.e2ee is None:
            return
        target = self._backup_target()
        if target is None:
            return
        if self._backed_up is None:
            self._backed_up = set()
        new = arrived - self._backed_up
        sessions = [s for s in self.e2ee._olm.inbound_group_store if s.id in new]
        if not sessions:
            return
        version, public_key = target
        try:
            count = await upload_sessions(
                self.matrix, sessions, version=version, public_key=public_key, verified=False
            )
        except MatrixError as e:
            self._upload_failed(e)
            return
        self._backed_up.update(s.id for s in sessions)
        log.info(
            "Backed up %d room keys of %s received (version %s)", count, self.matrix.me, version
        )

    def _upload_failed(self, e: MatrixError) -> None:
        """A backup upload failed: a replaced or deleted backup is forgotten (and the user
        told); anything else is tried again with the next key."""
        if isinstance(e, RequestFailed) and e.errcode in {
            "M_WRONG_ROOM_KEYS_VERSION",
            "M_NOT_FOUND",
        }:
            log.warning("Key backup of %s gone (%s): no longer backing up", self.matrix.me, e)
            self.legacy_module_data_update({"key_backup": None})
            self.send_gateway_message(BACKUP_GONE)
        else:
            log.warning("Room keys of %s not backed up (tried again later): %s", self.matrix.me, e)
