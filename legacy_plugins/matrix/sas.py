"""The short authentication string (SAS) of one Matrix key verification, sans I/O.

`Sas` builds the contents of the ``start``, ``accept``, ``key`` and ``mac`` steps and
checks the other side's, as the Matrix spec's "Short Authentication String (SAS)
verification" section says; vodozemac does the key agreement, the HKDF and the HMACs.
It is not matrix-nio's `Sas`: nio 0.26 sends the commitment as hex instead of unpadded
base64, derives the emoji from vodozemac's emoji *indices* as if they were raw bytes, and
computes the fixed-base64 MAC while announcing the legacy ``hkdf-hmac-sha256`` method —
nio against nio agrees, nio against any other client (Element) does not. Only nio's
table of the 64 emoji (the spec's) is used.

Methods: key agreement ``curve25519-hkdf-sha256`` (or the old ``curve25519``), hash
``sha256``, MAC ``hkdf-hmac-sha256.v2`` (or ``org.matrix.msc3783.hkdf-hmac-sha256``, the
same, or the legacy ``hkdf-hmac-sha256`` with its wrong base64, for old clients), emoji
and decimal strings. A step that does not fit raises `SasError` with the spec's cancel
code.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from .client import nio  # for the emoji table; imported on first use

__all__ = ["KEY_AGREEMENTS", "MACS", "Sas", "SasError", "canonical_json", "sha256_b64"]

METHOD = "m.sas.v1"
KEY_AGREEMENTS = ("curve25519-hkdf-sha256", "curve25519")
"""Best first."""
HASH = "sha256"
MACS = ("hkdf-hmac-sha256.v2", "org.matrix.msc3783.hkdf-hmac-sha256", "hkdf-hmac-sha256")
"""Best first; the last one is libolm's MAC with its wrong base64 (old clients)."""
STRINGS = ("emoji", "decimal")


class SasError(Exception):
    """The verification cannot go on: ``code`` is the cancel code to send."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def canonical_json(value: object) -> str:
    """The spec's canonical JSON (sorted keys, no spaces, UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def sha256_b64(text: str) -> str:
    """SHA-256 of ``text`` (UTF-8) in unpadded base64, as commitments are."""
    digest = hashlib.sha256(text.encode()).digest()
    return base64.b64encode(digest).decode().rstrip("=")


def _vodozemac() -> Any:
    """vodozemac, loaded with nio at the first login rather than when the process starts."""
    import vodozemac

    return vodozemac


def _choose(offered: object, ours: Sequence[str]) -> str | None:
    """Our best method among those offered (a JSON list), or None."""
    if not isinstance(offered, list):
        return None
    return next((m for m in ours if m in offered), None)


class Sas:
    """One SAS between this device (``own_*``) and another (``their_*``; ``their_key``
    is its ed25519 key as this device knows it). Create it to start (`start_content`),
    or with `Sas.from_start` when the other device started."""

    def __init__(
        self,
        own: tuple[str, str, str],
        their: tuple[str, str, str],
        txid: str,
    ) -> None:
        self.own_user, self.own_device, self.own_key = own
        self.their_user, self.their_device, self.their_key = their
        self.txid = txid
        self.we_started = True
        self._sas = _vodozemac().Sas()
        self._established: Any = None
        self._their_pubkey = ""
        self._start: dict[str, Any] = {}
        self.key_agreement = ""
        self.mac_method = ""
        self.strings: list[str] = []
        self.commitment = ""
        self.their_mac_ok = False
        """The other device's key MAC was checked (it confirmed)."""

    @property
    def pubkey(self) -> str:
        return str(self._sas.public_key.to_base64())

    @property
    def established(self) -> bool:
        return self._established is not None

    # -- the starter ----------------------------------------------------------------------

    def start_content(self) -> dict[str, Any]:
        self._start = {
            "from_device": self.own_device,
            "method": METHOD,
            "transaction_id": self.txid,
            "key_agreement_protocols": list(KEY_AGREEMENTS),
            "hashes": [HASH],
            "message_authentication_codes": list(MACS),
            "short_authentication_string": list(STRINGS),
        }
        return dict(self._start)

    def on_accept(self, content: Mapping[str, Any]) -> None:
        """The other device accepted our start (and committed to its key)."""
        if not self.we_started or self.commitment:
            raise SasError("m.unexpected_message", "Unexpected accept")
        agreement = content.get("key_agreement_protocol")
        mac = content.get("message_authentication_code")
        strings = content.get("short_authentication_string")
        commitment = content.get("commitment")
        if (
            agreement not in KEY_AGREEMENTS
            or content.get("hash") != HASH
            or mac not in MACS
            or not isinstance(strings, list)
            or not {"emoji", "decimal"} & set(strings)
            or not isinstance(commitment, str)
        ):
            raise SasError("m.unknown_method", "Unknown method")
        self.key_agreement, self.mac_method = str(agreement), str(mac)
        self.strings = [s for s in STRINGS if s in strings]
        self.commitment = commitment

    # -- the accepter -----------------------------------------------------------------

    @classmethod
    def from_start(
        cls, own: tuple[str, str, str], their: tuple[str, str, str], content: Mapping[str, Any]
    ) -> Sas:
        """Answer the other device's start; `SasError` if nothing fits."""
        sas = cls(own, their, str(content.get("transaction_id", "")))
        sas.we_started = False
        sas._start = dict(content)
        agreement = _choose(content.get("key_agreement_protocols"), KEY_AGREEMENTS)
        mac = _choose(content.get("message_authentication_codes"), MACS)
        hashes = content.get("hashes")
        strings = content.get("short_authentication_string")
        if (
            content.get("method") != METHOD
            or agreement is None
            or mac is None
            or not isinstance(hashes, list)
            or HASH not in hashes
            or not isinstance(strings, list)
            or not {"emoji", "decimal"} & set(strings)
        ):
            raise SasError("m.unknown_method", "Unknown method")
        sas.key_agreement, sas.mac_method = agreement, mac
        sas.strings = [s for s in STRINGS if s in strings]
        return sas

    def accept_content(self) -> dict[str, Any]:
        return {
            "transaction_id": self.txid,
            "key_agreement_protocol": self.key_agreement,
            "hash": HASH,
            "message_authentication_code": self.mac_method,
            "short_authentication_string": self.strings,
            "commitment": sha256_b64(self.pubkey + canonical_json(self._start)),
        }

    # -- both -------------------------------------------------------------------------

    def key_content(self) -> dict[str, Any]:
        return {"transaction_id": self.txid, "key": self.pubkey}

    def on_key(self, content: Mapping[str, Any]) -> None:
        """The other device's ephemeral key: the SAS can be shown after this."""
        key = content.get("key")
        if self.established or not self.key_agreement or not isinstance(key, str):
            raise SasError("m.unexpected_message", "Unexpected key")
        if self.we_started and sha256_b64(key + canonical_json(self._start)) != self.commitment:
            raise SasError("m.mismatched_commitment", "Mismatched commitment")
        vodozemac = _vodozemac()
        try:
            public = vodozemac.Curve25519PublicKey.from_base64(key)
            self._established = self._sas.diffie_hellman(public)
        except (ValueError, vodozemac.KeyException, vodozemac.SasException) as e:
            raise SasError("m.invalid_message", f"Invalid key ({e})") from e
        self._their_pubkey = key

    def _sas_info(self) -> str:
        own = (self.own_user, self.own_device, self.pubkey)
        their = (self.their_user, self.their_device, self._their_pubkey)
        first, second = (own, their) if self.we_started else (their, own)
        if self.key_agreement == "curve25519":
            return (
                f"MATRIX_KEY_VERIFICATION_SAS{''.join(first[:2])}{''.join(second[:2])}{self.txid}"
            )
        return "|".join(("MATRIX_KEY_VERIFICATION_SAS", *first, *second, self.txid))

    def emoji(self) -> list[tuple[str, str]]:
        """The seven emoji (symbol, name) both devices show."""
        indices = self._established.bytes(self._sas_info()).emoji_indices
        table: Sequence[tuple[str, str]] = nio.crypto.Sas.emoji
        return [table[i] for i in indices]

    def decimals(self) -> tuple[int, int, int]:
        """The three numbers both devices show."""
        return tuple(self._established.bytes(self._sas_info()).decimals)

    def _mac(self, value: str, info: str) -> str:
        if self.mac_method == "hkdf-hmac-sha256":
            return str(self._established.calculate_mac_invalid_base64(value, info))
        return str(self._established.calculate_mac(value, info))

    def mac_content(self) -> dict[str, Any]:
        """Our MAC of this device's key: send once the user said the SAS match."""
        info = (
            f"MATRIX_KEY_VERIFICATION_MAC{self.own_user}{self.own_device}"
            f"{self.their_user}{self.their_device}{self.txid}"
        )
        key_id = f"ed25519:{self.own_device}"
        return {
            "transaction_id": self.txid,
            "mac": {key_id: self._mac(self.own_key, info + key_id)},
            "keys": self._mac(key_id, info + "KEY_IDS"),
        }

    def on_mac(self, content: Mapping[str, Any]) -> None:
        """Check the other device's MAC: its key must be the one this device knows.
        Other keys it covers (a cross-signing master key) are checked in the key list
        but not trusted: Passerelle has no cross-signing."""
        if not self.established or self.their_mac_ok:
            raise SasError("m.unexpected_message", "Unexpected MAC")
        macs, keys = content.get("mac"), content.get("keys")
        if not isinstance(macs, Mapping) or not isinstance(keys, str):
            raise SasError("m.invalid_message", "Invalid MAC")
        info = (
            f"MATRIX_KEY_VERIFICATION_MAC{self.their_user}{self.their_device}"
            f"{self.own_user}{self.own_device}{self.txid}"
        )
        key_id = f"ed25519:{self.their_device}"
        if keys != self._mac(",".join(sorted(macs)), info + "KEY_IDS"):
            raise SasError("m.key_mismatch", "Key mismatch")
        if macs.get(key_id) != self._mac(self.their_key, info + key_id):
            raise SasError("m.key_mismatch", "Key mismatch")
        self.their_mac_ok = True
