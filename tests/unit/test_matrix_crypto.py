"""The pure parts of Matrix end-to-end encryption (crypto.py): attachments, key display."""

from __future__ import annotations

import pytest

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
