"""The user's Matrix secret storage (SSSS), opened with their recovery key: pure code.

Element keeps a user's secrets — the key of their server-side key backup, their
cross-signing keys — in account data, each encrypted (``m.secret_storage.v1.aes-hmac-sha2``)
with a *secret storage key* that the user holds as a **recovery key** ("Security Key"):
48 base58 characters in groups of four, or derived from a passphrase. This module turns
what the user typed into that key, checks it against the key's description (its ``iv``
and ``mac``: the MAC of 32 zero bytes encrypted under the empty name), and decrypts a
secret. No I/O, no clock; the key lives only as long as its caller keeps it.

- `decode_recovery_key`: base58 (Bitcoin's alphabet, whitespace ignored) of ``0x8B 0x01``,
  the 32 key bytes and a parity byte (the XOR of all the bytes before it).
- `passphrase_key`: PBKDF2-SHA-512 with the description's salt and iterations.
- `unlock`: either of the two, checked; `decrypt_secret`: HKDF-SHA-256 (32 zero bytes of
  salt, the secret's name as info) gives the AES-CTR and HMAC-SHA-256 keys.

Errors are `SecretStorageError`, whose text is meant for the user; `WrongKey` when the
key does not match. Neither ever carries the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.errors import PasserelleError

__all__ = [
    "SSSS_ALGORITHM",
    "KeyDescription",
    "SecretStorageError",
    "WrongKey",
    "decode_recovery_key",
    "decrypt_secret",
    "parse_key_description",
    "passphrase_key",
    "unb64",
    "unlock",
]

SSSS_ALGORITHM = "m.secret_storage.v1.aes-hmac-sha2"
_PREFIX = b"\x8b\x01"
_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_KEY_LEN = 32
_MAX_ITERATIONS = 10_000_000
"""PBKDF2 rounds accepted from account data (Element uses 500,000): a bound on the work
a hostile description could make the gateway do."""


class SecretStorageError(PasserelleError):
    """The secret storage cannot be opened or read; the text says why, for the user."""


class WrongKey(SecretStorageError):
    """The recovery key (or passphrase) is not the one of the secret storage."""


@dataclass(frozen=True, slots=True)
class KeyDescription:
    """``m.secret_storage.key.<id>``: how to check a key, and how to derive it from a
    passphrase (if the user set one)."""

    key_id: str
    iv: bytes | None
    mac: bytes | None
    salt: str | None = None
    iterations: int = 0
    bits: int = 256


def unb64(value: object, what: str) -> bytes:
    """Matrix base64 (padded or not, standard alphabet) as bytes."""
    if not isinstance(value, str):
        raise SecretStorageError(f"{what} is missing or not a string")
    try:
        return base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError) as e:
        raise SecretStorageError(f"{what} is not base64") from e


def decode_recovery_key(text: str) -> bytes:
    """The 32-byte key a recovery key stands for; `SecretStorageError` saying what is
    wrong with it (never repeating it)."""
    chars = "".join(text.split())
    if not chars:
        raise SecretStorageError("the recovery key is empty")
    number = 0
    for char in chars:
        digit = _ALPHABET.find(char)
        if digit < 0:
            raise SecretStorageError(
                "that is not a recovery key: it has characters a recovery key never has"
            )
        number = number * 58 + digit
    raw = number.to_bytes((number.bit_length() + 7) // 8, "big")
    raw = b"\0" * (len(chars) - len(chars.lstrip("1"))) + raw
    if len(raw) != len(_PREFIX) + _KEY_LEN + 1:
        raise SecretStorageError("that is not a recovery key: it is too short or too long")
    if raw[:2] != _PREFIX:
        raise SecretStorageError("that is not a recovery key: it does not start as one does")
    parity = 0
    for byte in raw[:-1]:
        parity ^= byte
    if parity != raw[-1]:
        raise SecretStorageError("the recovery key has a typo (its check digit does not match)")
    return raw[2:-1]


def parse_key_description(key_id: str, content: object) -> KeyDescription:
    """The description of the secret storage key ``key_id`` from its account data."""
    if not isinstance(content, Mapping):
        raise SecretStorageError(f"the description of the secret storage key {key_id} is invalid")
    algorithm = content.get("algorithm")
    if algorithm != SSSS_ALGORITHM:
        raise SecretStorageError(
            f"the secret storage key {key_id} uses {algorithm!r}, which Passerelle does "
            f"not know (only {SSSS_ALGORITHM})"
        )
    iv = mac = None
    if content.get("iv") is not None or content.get("mac") is not None:
        iv = unb64(content.get("iv"), "the secret storage key's iv")
        mac = unb64(content.get("mac"), "the secret storage key's mac")
        if len(iv) != 16 or len(mac) != 32:
            raise SecretStorageError("the secret storage key's iv or mac has the wrong length")
    passphrase = content.get("passphrase")
    if isinstance(passphrase, Mapping) and passphrase.get("algorithm") == "m.pbkdf2":
        salt, iterations = passphrase.get("salt"), passphrase.get("iterations")
        bits = passphrase.get("bits", 256)
        if (
            isinstance(salt, str)
            and isinstance(iterations, int)
            and 0 < iterations <= _MAX_ITERATIONS
            and bits == 256
        ):
            return KeyDescription(key_id, iv, mac, salt, iterations, bits)
    return KeyDescription(key_id, iv, mac)


def passphrase_key(passphrase: str, description: KeyDescription) -> bytes:
    """The key a passphrase stands for (PBKDF2-SHA-512), if the key has one."""
    if description.salt is None:
        raise SecretStorageError(
            "that is not a recovery key, and your secret storage has no passphrase"
        )
    return hashlib.pbkdf2_hmac(
        "sha512",
        passphrase.encode(),
        description.salt.encode(),
        description.iterations,
        description.bits // 8,
    )


def unlock(text: str, description: KeyDescription) -> bytes:
    """The secret storage key from what the user typed (a recovery key, or the
    passphrase), checked against ``description``: `WrongKey` if it is not that key."""
    try:
        key = decode_recovery_key(text)
    except SecretStorageError:
        if description.salt is None:
            raise
        key = passphrase_key(text.strip(), description)
    if description.mac is not None and description.iv is not None:
        _aes, mac_key = _derive(key, "")
        check = _aes_ctr(_aes, description.iv, bytes(32))
        if not hmac.compare_digest(_mac(mac_key, check), description.mac):
            raise WrongKey(
                "that recovery key (or passphrase) does not open your secret storage (not the "
                "current one: Element shows it when you set up or reset recovery)"
            )
    return key


def decrypt_secret(key: bytes, name: str, encrypted: object) -> str:
    """The secret ``name`` from its account data's ``encrypted`` entry for this key."""
    if not isinstance(encrypted, Mapping):
        raise SecretStorageError(f"the secret {name} is not stored for this key")
    iv = unb64(encrypted.get("iv"), f"the iv of {name}")
    ciphertext = unb64(encrypted.get("ciphertext"), f"the ciphertext of {name}")
    mac = unb64(encrypted.get("mac"), f"the mac of {name}")
    aes_key, mac_key = _derive(key, name)
    if len(iv) != 16 or not hmac.compare_digest(_mac(mac_key, ciphertext), mac):
        raise SecretStorageError(f"the secret {name} is damaged (its MAC does not match)")
    try:
        return _aes_ctr(aes_key, iv, ciphertext).decode()
    except UnicodeDecodeError as e:
        raise SecretStorageError(f"the secret {name} is damaged (not text)") from e


def _derive(key: bytes, name: str) -> tuple[bytes, bytes]:
    """HKDF-SHA-256 (RFC 5869) with 32 zero bytes of salt and ``name`` as info: the AES
    key and the MAC key."""
    prk = hmac.digest(bytes(32), key, "sha256")
    okm, block = b"", b""
    for counter in (1, 2):
        block = hmac.digest(prk, block + name.encode() + bytes([counter]), "sha256")
        okm += block
    return okm[:32], okm[32:]


def _mac(key: bytes, data: bytes) -> bytes:
    return hmac.digest(key, data, "sha256")


def _aes_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    cipher = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
    return cipher.update(data) + cipher.finalize()
