"""A Matrix account set up the way Element sets up recovery, through Synapse's endpoints.

Written for the tests from the spec, independently of :mod:`legacy_plugins.matrix.secrets`
and :mod:`legacy_plugins.matrix.backup` (HKDF, AES-CTR and HMAC from `cryptography`, the
backup's Curve25519 encryption from vodozemac):

- `encrypt_secret`: a secret as ``m.secret_storage.v1.aes-hmac-sha2`` stores it;
- `ElementRecovery.set_up`: a secret storage key (its description with ``iv``/``mac``,
  the default key), a key backup version whose private key is the secret
  ``m.megolm_backup.v1``; `back_up` puts Megolm sessions a nio client holds into it;
  `set_up_cross_signing`: the three cross-signing keys, published and in the storage;
- `read_backup`: the backup's keys read back and decrypted, as another device would.
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import vodozemac
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.hmac import HMAC
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    from tests.e2e.matrix_helpers import MatrixPeer

SSSS = "m.secret_storage.v1.aes-hmac-sha2"
BACKUP = "m.megolm_backup.v1.curve25519-aes-sha2"
RECOVERY_KEY = "EsTc LW2K PGiF wKEA 3As5 g5c4 BXwk qeeJ ZJV8 Q9fu gUMN UE4d"
"""A recovery key published in matrix-js-sdk's tests, and the 32 bytes it stands for."""
RECOVERY_KEY_BYTES = base64.b64decode("dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=")
OTHER_RECOVERY_KEY = "EsTj 3yST y93F SLpB jJsz eAXc 2XzA ygD3 w69H fGaN TKBj jXEd"
"""Another valid recovery key (matrix-rust-sdk's tests): not alice's."""


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def encrypt_secret(key: bytes, name: str, secret: str, iv: bytes | None = None) -> dict[str, str]:
    """``secret`` as secret storage keeps it under ``name`` (spec: client-server API,
    "m.secret_storage.v1.aes-hmac-sha2")."""
    keys = HKDF(hashes.SHA256(), 64, salt=bytes(32), info=name.encode()).derive(key)
    counter = bytearray(iv if iv is not None else os.urandom(16))
    counter[8] &= 0x7F
    encryptor = Cipher(algorithms.AES(keys[:32]), modes.CTR(bytes(counter))).encryptor()
    ciphertext = encryptor.update(secret.encode()) + encryptor.finalize()
    mac = HMAC(keys[32:], hashes.SHA256())
    mac.update(ciphertext)
    return {"iv": b64(bytes(counter)), "ciphertext": b64(ciphertext), "mac": b64(mac.finalize())}


async def put_account_data(peer: MatrixPeer, event_type: str, content: dict[str, Any]) -> None:
    path = f"/user/{quote(peer.user_id, safe='')}/account_data/{quote(event_type, safe='')}"
    await peer.call("PUT", path, content)


@dataclass
class ElementRecovery:
    """What Element's "Set up recovery" leaves in an account (``peer`` is that account)."""

    peer: MatrixPeer
    key_id: str = "passerelletestkey"
    self_signing: Any = None
    backup_key: Any = field(
        default_factory=lambda: vodozemac.Curve25519SecretKey.from_bytes(os.urandom(32))
    )
    version: str = ""

    @property
    def public_key(self) -> str:
        return str(self.backup_key.public_key().to_base64())

    async def set_up_storage(self) -> None:
        """The secret storage key (recovery key `RECOVERY_KEY`), as the default key."""
        check = encrypt_secret(RECOVERY_KEY_BYTES, "", "\0" * 32)
        description = {"algorithm": SSSS, "iv": check["iv"], "mac": check["mac"]}
        await put_account_data(self.peer, f"m.secret_storage.key.{self.key_id}", description)
        await put_account_data(self.peer, "m.secret_storage.default_key", {"key": self.key_id})

    async def create_backup(self) -> None:
        answer = await self.peer.call(
            "POST",
            "/room_keys/version",
            {"algorithm": BACKUP, "auth_data": {"public_key": self.public_key}},
        )
        self.version = str(answer["version"])

    async def store_secret(self, name: str, secret: str) -> None:
        encrypted = encrypt_secret(RECOVERY_KEY_BYTES, name, secret)
        await put_account_data(self.peer, name, {"encrypted": {self.key_id: encrypted}})

    async def store_backup_key(self) -> None:
        await self.store_secret("m.megolm_backup.v1", b64(self.backup_key.to_bytes()))

    async def set_up(self) -> None:
        await self.set_up_storage()
        await self.create_backup()
        await self.store_backup_key()

    async def set_up_cross_signing(self, password: str) -> str:
        """Master, self-signing and user-signing keys, uploaded (Synapse checks the
        master key's signatures) and kept in the secret storage, as Element does; the
        public self-signing key."""
        me = self.peer.user_id
        master, *others = (Ed25519PrivateKey.generate() for _ in range(3))
        objects: dict[str, dict[str, Any]] = {}
        for usage, private in zip(
            ("master", "self_signing", "user_signing"), (master, *others), strict=True
        ):
            public = b64(private.public_key().public_bytes_raw())
            objects[usage] = {
                "user_id": me,
                "usage": [usage],
                "keys": {f"ed25519:{public}": public},
            }
            if usage != "master":
                canonical = json.dumps(objects[usage], sort_keys=True, separators=(",", ":"))
                master_id = next(iter(objects["master"]["keys"]))
                signature = b64(master.sign(canonical.encode()))
                objects[usage]["signatures"] = {me: {master_id: signature}}
            await self.store_secret(f"m.cross_signing.{usage}", b64(private.private_bytes_raw()))
        auth = {
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": me},
            "password": password,
        }
        body = {
            "master_key": objects["master"],
            "self_signing_key": objects["self_signing"],
            "user_signing_key": objects["user_signing"],
            "auth": auth,
        }
        await self.peer.call("POST", "/keys/device_signing/upload", body)
        self.self_signing = others[0]
        return str(next(iter(objects["self_signing"]["keys"].values())))

    async def sign_device(self, device_id: str) -> None:
        """Sign one of the account's devices with the self-signing key, as Element does
        for a session it verified (after `set_up_cross_signing`)."""
        me = self.peer.user_id
        query = await self.peer.call("POST", "/keys/query", {"device_keys": {me: []}})
        device = query["device_keys"][me][device_id]
        unsigned = {k: v for k, v in device.items() if k not in ("signatures", "unsigned")}
        canonical = json.dumps(unsigned, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        public = b64(self.self_signing.public_key().public_bytes_raw())
        signature = b64(self.self_signing.sign(canonical.encode()))
        signed = {**unsigned, "signatures": {me: {f"ed25519:{public}": signature}}}
        answer = await self.peer.call("POST", "/keys/signatures/upload", {me: {device_id: signed}})
        assert not answer.get("failures"), answer

    async def back_up(self, room_id: str, sessions: Iterable[Any]) -> int:
        """Put nio inbound group sessions of ``room_id`` into the backup, from their start."""
        entries = {}
        encryption = vodozemac.PkEncryption.from_key(self.backup_key.public_key())
        for session in sessions:
            first = session.first_known_index
            clear = {
                "algorithm": "m.megolm.v1.aes-sha2",
                "sender_key": session.sender_key,
                "sender_claimed_keys": {"ed25519": session.ed25519},
                "session_key": session.export_session(first),
                "forwarding_curve25519_key_chain": [],
            }
            sealed = encryption.encrypt(json.dumps(clear).encode())
            entries[session.id] = {
                "first_message_index": first,
                "forwarded_count": 0,
                "is_verified": True,
                "session_data": {
                    "ciphertext": b64(sealed.ciphertext),
                    "mac": b64(sealed.mac),
                    "ephemeral": b64(sealed.ephemeral_key),
                },
            }
        body = {"rooms": {room_id: {"sessions": entries}}}
        answer = await self.peer.call("PUT", f"/room_keys/keys?version={self.version}", body)
        return int(answer["count"])

    async def read_backup(self, room_id: str) -> dict[str, dict[str, Any]]:
        """The backup's sessions of ``room_id``, decrypted: session ID → its content."""
        answer = await self.peer.call("GET", f"/room_keys/keys?version={self.version}")
        decryption = vodozemac.PkDecryption.from_key(self.backup_key)
        found = {}
        for session_id, data in answer["rooms"].get(room_id, {}).get("sessions", {}).items():
            sealed = data["session_data"]
            message = vodozemac.Message.from_base64(
                sealed["ciphertext"], sealed["mac"], sealed["ephemeral"]
            )
            found[session_id] = {**json.loads(decryption.decrypt(message)), "entry": data}
        return found


def megolm_decrypt(session_key: str, ciphertext: str) -> Any:
    """An ``m.room.encrypted`` event's Megolm ciphertext, with an exported session key."""
    session = vodozemac.InboundGroupSession.import_session(
        vodozemac.ExportedSessionKey(session_key)
    )
    return json.loads(session.decrypt(vodozemac.MegolmMessage.from_base64(ciphertext)).plaintext)
