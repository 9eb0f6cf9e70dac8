"""Matrix end-to-end encryption (crypto.py): attachments, key display, the key store's
connection closed when idle (a real nio store in a temporary directory)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from legacy_plugins.matrix import crypto
from legacy_plugins.matrix.client import load_nio, nio
from legacy_plugins.matrix.crypto import decrypt_file, encrypt_file, fingerprint
from legacy_plugins.matrix.errors import Undecryptable


def test_fingerprint_groups_of_four() -> None:
    assert fingerprint("abcdefghij") == "abcd efgh ij"
    assert fingerprint("") == ""


def test_an_encrypted_file_round_trips() -> None:
    data = b"\x89PNG a picture" * 100
    ciphertext, keys = encrypt_file(data)
    assert ciphertext != data and len(ciphertext) == len(data)
    assert set(keys) >= {"key", "iv", "hashes", "v"} and "url" not in keys
    assert decrypt_file(ciphertext, keys) == data


@pytest.mark.parametrize(
    "spoil",
    [
        lambda c, k: (c[:-1] + bytes([c[-1] ^ 1]), k),  # altered bytes: hash mismatch
        lambda c, k: (c, {**k, "key": {}}),  # no key
        lambda c, k: (c, {**k, "hashes": {"sha256": "AAAA"}}),  # wrong hash
        lambda c, k: (c, "not an object"),
    ],
)
def test_a_spoiled_file_is_undecryptable(spoil: object) -> None:
    ciphertext, keys = encrypt_file(b"some bytes")
    data, file = spoil(ciphertext, keys)  # type: ignore[operator]
    with pytest.raises(Undecryptable):
        decrypt_file(data, file)


async def test_the_key_store_connection_closes_when_idle_and_reopens_on_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A real nio key store on disk: its SQLite connection is ~230 KiB of C memory that
    # an idle user should not keep; the next use opens it again, keys intact.
    await load_nio()
    monkeypatch.setattr(crypto, "IDLE_CLOSE", 0.05)
    olm, store = crypto._open_store("@alice:localhost", "DEVICE", tmp_path, "pickle key")
    e2ee = crypto.E2EE(cast(Any, None), olm, store)
    key = e2ee.ed25519
    e2ee._used()
    assert not store.database.is_closed()
    async with asyncio.timeout(5):
        while not store.database.is_closed():  # noqa: ASYNC110 (nothing to wait on)
            await asyncio.sleep(0.02)
    assert store.load_account().identity_keys["ed25519"] == key  # reopened by the query
    assert not store.database.is_closed()
    e2ee.close()
    assert store.database.is_closed()


@pytest.mark.parametrize(
    ("held_from", "offered_from", "kept_from"),
    [
        (0, 2, 0),  # a copy starting later would lose messages 0-1: the held one stays
        (2, 0, 0),  # a copy from an earlier message (a forwarded key) replaces it
        (1, 1, 1),  # the same start: nothing changes
    ],
)
async def test_of_two_copies_of_a_megolm_session_the_earlier_is_kept_and_stored(
    tmp_path: Path, held_from: int, offered_from: int, kept_from: int
) -> None:
    await load_nio()
    olm, _store = crypto._open_store("@alice:localhost", "DEVICE", tmp_path, "pickle key")
    origin = nio.crypto.InboundGroupSession(
        nio.crypto.OutboundGroupSession().session_key, "ed25519", "curve25519", "!r:x"
    )

    def copy(start: int) -> Any:
        exported = origin.export_session(start)
        return nio.crypto.InboundGroupSession.import_session(
            exported, "ed25519", "curve25519", "!r:x"
        )

    for session in (copy(held_from), copy(offered_from)):
        if olm.inbound_group_store.add(session):  # as nio's own callers do
            olm.save_inbound_group_session(session)
    held = olm.inbound_group_store.get("!r:x", "curve25519", origin.id)
    assert held.first_known_index == kept_from
    olm.store.database.close()
    reopened, _ = crypto._open_store("@alice:localhost", "DEVICE", tmp_path, "pickle key")
    stored = reopened.inbound_group_store.get("!r:x", "curve25519", origin.id)
    assert stored.first_known_index == kept_from
