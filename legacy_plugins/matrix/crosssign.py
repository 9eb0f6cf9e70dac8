"""Cross-signing the gateway's device with the user's self-signing key.

A Matrix account that set up cross-signing (Element does at first login) has three
ed25519 keys: the master key, which signs the self-signing and user-signing keys; the
self-signing key signs the user's own devices. Element shows a device as verified when
its keys carry the self-signing key's signature. The private keys are secrets in the
user's secret storage (:mod:`.secrets`, ``m.cross_signing.self_signing``: base64 of the
32-byte seed), so the recovery key command can sign the gateway's device with it:

- `cross_sign_device` reads the account's published keys (``/keys/query``), checks that
  the seed's public key is the published self-signing key, signs the gateway's device
  keys as the homeserver holds them (canonical JSON without ``signatures`` and
  ``unsigned``), and uploads the signature (``/keys/signatures/upload``); the homeserver
  checks it before publishing it.
- `signed_devices` / `trust_devices`: the user's other devices that key has signed (the
  signature checked here) are marked verified in the device's store, as if verified
  with emoji: they get the keys they ask for, and their forwarded keys are taken.

The seed lives as long as the call; nothing of it is stored. Signing is `cryptography`'s
ed25519; `canonical_json` is the spec's (sorted keys, no spaces, UTF-8).
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .secrets import SecretStorageError, unb64

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from .client import MatrixClient

__all__ = [
    "SELF_SIGNING",
    "canonical_json",
    "cross_sign_device",
    "public_key",
    "sign_json",
    "signed_devices",
    "signing_key",
    "trust_devices",
    "verify_json",
]

log = logging.getLogger(__name__)

SELF_SIGNING = "m.cross_signing.self_signing"


def canonical_json(value: object) -> bytes:
    """The spec's canonical JSON: keys sorted, no insignificant whitespace, UTF-8."""
    return json.dumps(
        value, ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False
    ).encode()


def signing_key(seed: str) -> Ed25519PrivateKey:
    """The ed25519 private key a secret's seed (base64 of 32 bytes) stands for."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    raw = unb64(seed.strip(), "the self-signing key")
    if len(raw) != 32:
        raise SecretStorageError("the self-signing key in your secret storage is damaged")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_key(private: Ed25519PrivateKey) -> str:
    """Its public key as Matrix writes it (unpadded base64)."""
    from cryptography.hazmat.primitives import serialization

    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return base64.b64encode(raw).decode().rstrip("=")


def sign_json(private: Ed25519PrivateKey, value: Mapping[str, Any]) -> str:
    """The signature of a JSON object as Matrix signs one (without its ``signatures``
    and ``unsigned``), unpadded base64."""
    signed = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    return base64.b64encode(private.sign(canonical_json(signed))).decode().rstrip("=")


def _published_self_signing(answer: object, me: str) -> set[str]:
    """The public self-signing keys ``/keys/query`` lists for ``me``."""
    keys = answer.get("self_signing_keys") if isinstance(answer, Mapping) else None
    mine = keys.get(me) if isinstance(keys, Mapping) else None
    found = mine.get("keys") if isinstance(mine, Mapping) else None
    return {str(k) for k in found.values()} if isinstance(found, Mapping) else set()


def verify_json(public: str, value: Mapping[str, Any], signature: object) -> bool:
    """Whether ``signature`` is ``public``'s (an ed25519 key) on the JSON object."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    signed = {k: v for k, v in value.items() if k not in ("signatures", "unsigned")}
    try:
        key = Ed25519PublicKey.from_public_bytes(unb64(public, "a public key"))
        key.verify(unb64(signature, "a signature"), canonical_json(signed))
    except (InvalidSignature, SecretStorageError, ValueError):
        return False
    return True


def signed_devices(answer: object, me: str, self_signing: str) -> dict[str, str]:
    """The devices of ``me`` that ``/keys/query`` shows signed by the self-signing key
    (checked here): device ID → its ed25519 key."""
    devices = answer.get("device_keys") if isinstance(answer, Mapping) else None
    mine = devices.get(me) if isinstance(devices, Mapping) else None
    found: dict[str, str] = {}
    for device_id, keys in (mine or {}).items():
        if not isinstance(keys, Mapping) or keys.get("user_id") != me:
            continue
        signatures = keys.get("signatures")
        by_me = signatures.get(me) if isinstance(signatures, Mapping) else None
        signature = by_me.get(f"ed25519:{self_signing}") if isinstance(by_me, Mapping) else None
        ed25519 = (keys.get("keys") or {}).get(f"ed25519:{device_id}")
        if (
            keys.get("device_id") == device_id
            and isinstance(ed25519, str)
            and verify_json(self_signing, keys, signature)
        ):
            found[str(device_id)] = ed25519
    return found


def trust_devices(olm: Any, me: str, signed: Mapping[str, str]) -> list[str]:
    """Mark as verified in nio's store the devices of ``me`` in ``signed`` (device ID →
    ed25519 key) whose key is the one the store holds for them; the IDs newly verified."""
    trusted = []
    for device_id, ed25519 in sorted(signed.items()):
        device = olm.device_store[me].get(device_id)
        if device is None or device.ed25519 != ed25519 or device_id == olm.device_id:
            continue
        if not olm.is_device_verified(device):
            olm.verify_device(device)
            trusted.append(device_id)
    return trusted


async def cross_sign_device(
    matrix: MatrixClient, device_id: str, seed: str
) -> tuple[str, dict[str, str]]:
    """Sign the device ``device_id`` of the user with the self-signing key ``seed`` and
    upload the signature; returns the public self-signing key and the user's other
    devices it has signed (`signed_devices`). `SecretStorageError` says why not (a key
    that is not the account's, a device the homeserver does not list, a signature it
    refused)."""
    me = matrix.me
    private = signing_key(seed)
    mine = public_key(private)
    answer = await matrix.keys_query([me])
    published = _published_self_signing(answer, me)
    if not published:
        raise SecretStorageError(
            "your account has no cross-signing keys on the homeserver (set them up in "
            "Element: Settings → Encryption)"
        )
    if mine not in published:
        raise SecretStorageError(
            "the self-signing key in your secret storage is not your account's current "
            "one (cross-signing was reset without updating the secret storage): reset "
            "your identity in Element"
        )
    device = answer.get("device_keys", {}).get(me, {}).get(device_id)
    if not isinstance(device, Mapping):
        raise SecretStorageError(f"the homeserver does not list the keys of the device {device_id}")
    signatures = dict(device.get("signatures") or {})
    signatures[me] = {
        **dict(signatures.get(me) or {}),
        f"ed25519:{mine}": sign_json(private, device),
    }
    signed = {k: v for k, v in device.items() if k != "unsigned"}
    signed["signatures"] = signatures
    result = await matrix.upload_signatures({me: {device_id: signed}})
    failures = result.get("failures") if isinstance(result, Mapping) else None
    failure = (failures or {}).get(me, {}).get(device_id) if isinstance(failures, Mapping) else None
    if failure:
        reason = failure.get("error") if isinstance(failure, Mapping) else failure
        raise SecretStorageError(f"the homeserver refused the device's signature: {reason}")
    log.info("Cross-signed %s's device %s with the self-signing key %s", me, device_id, mine)
    others = signed_devices(answer, me, mine)
    others.pop(device_id, None)
    return mine, others
