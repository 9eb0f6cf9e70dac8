"""The pure parts of device verification: commands, messages, events (verification.py)
and the SAS computations (sas.py)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.matrix.ids import UserId
from legacy_plugins.matrix.sas import (
    KEY_AGREEMENTS,
    MACS,
    Sas,
    SasError,
    canonical_json,
    sha256_b64,
)
from legacy_plugins.matrix.verification import (
    Answer,
    ListPending,
    StartVerify,
    VerificationError,
    cancel_text,
    format_sas,
    is_verification,
    parse_verify,
)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), ListPending()),
        (("list",), ListPending()),
        (("STATUS",), ListPending()),
        (("", " "), ListPending()),
        (("yes",), Answer(True)),
        (("Yes",), Answer(True)),
        (("ok",), Answer(True)),
        (("no",), Answer(False)),
        (("cancel",), Answer(False)),
        (("mismatch",), Answer(False)),
        (("yes", "ABCDEF"), Answer(True, "ABCDEF")),
        (("no", "ABCDEF"), Answer(False, "ABCDEF")),
        (("@bob:example.org", "ABCDEF"), StartVerify(UserId("@bob:example.org"), "ABCDEF")),
        (("@bob:example.org", "", "ABCDEF"), StartVerify(UserId("@bob:example.org"), "ABCDEF")),
        (("@b:h.org:8448", "D"), StartVerify(UserId("@b:h.org:8448"), "D")),
    ],
)
def test_parse_verify(args: tuple[str, ...], expected: object) -> None:
    assert parse_verify(args) == expected


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (("bob",), "I do not understand 'bob'"),
        (("yes", "A", "B"), "I do not understand 'yes A B'"),
        (("@bob",), "'@bob' is not a Matrix ID"),
        (("@bob", "DEVICE"), "'@bob' is not a Matrix ID"),
        (("@bob:example.org",), "Which device of @bob:example.org?"),
        (("@bob:example.org", "A", "B"), "Which device of @bob:example.org?"),
        (("list", "all"), "I do not understand 'list all'"),
    ],
)
def test_parse_verify_refuses_with_the_usage(args: tuple[str, ...], error: str) -> None:
    with pytest.raises(VerificationError) as caught:
        parse_verify(args)
    assert error in str(caught.value)
    assert "verify @bob:example.org DEVICEID" in str(caught.value)


@given(st.lists(st.text(max_size=30), max_size=5))
def test_parse_verify_never_raises_anything_else(args: list[str]) -> None:
    try:
        parse_verify(args)
    except VerificationError:
        pass


def test_format_sas_shows_emoji_in_order_and_the_numbers() -> None:
    emoji = [("🐶", "Dog"), ("🐱", "Cat"), ("🐶", "Dog"), ("🔒", "Lock")]
    text = format_sas("@bob:example.org", "ABCDEF", emoji, (1234, 5678, 1000))
    assert text.splitlines() == [
        "🔐 Verifying the device ABCDEF of @bob:example.org. Check that it shows the same "
        "emoji, in the same order:",
        "🐶 Dog  🐱 Cat  🐶 Dog  🔒 Lock",
        "(or the numbers 1234 5678 1000)",
        "Same? Answer 'verify yes'. Different? Answer 'verify no'.",
    ]


@pytest.mark.parametrize(
    ("code", "reason", "expected"),
    [
        ("m.user", "Canceled by user", "cancelled by the user"),
        ("m.timeout", "Timed out", "it timed out"),
        ("m.mismatched_sas", "", "the emoji or numbers did not match"),
        (
            "m.key_mismatch",
            "",
            "the keys did not match (a different device, or someone in between)",
        ),
        ("m.unknown_method", "", "no verification method in common (only emoji/numbers work here)"),
        ("m.accepted", "", "another device of that user answered"),
        ("org.example.custom", "Went away", "Went away (org.example.custom)"),
        ("", "", "no reason given (no code)"),
    ],
)
def test_cancel_text(code: str, reason: str, expected: str) -> None:
    assert cancel_text(code, reason) == expected


@pytest.mark.parametrize(
    ("event", "expected"),
    [
        ({"type": "m.key.verification.request"}, True),
        ({"type": "m.key.verification.start"}, True),
        ({"type": "m.key.verification.done"}, True),
        ({"type": "m.room.encrypted"}, False),
        ({"type": "m.room_key_request"}, False),
        ({"type": 5}, False),
        ({}, False),
    ],
)
def test_is_verification(event: dict[str, object], expected: bool) -> None:
    assert is_verification(event) is expected


# --- the SAS itself (sas.py) ------------------------------------------------------------


def test_commitment_hash_and_canonical_json() -> None:
    assert sha256_b64("abc") == "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0"
    assert canonical_json({"b": [1, {"d": "é", "c": None}], "a": "x"}) == (
        '{"a":"x","b":[1,{"c":null,"d":"é"}]}'
    )


ALICE = ("@alice:a.org", "ALICE", "alice-ed25519")
BOB = ("@bob:b.org", "BOB", "bob-ed25519")
OFFER = {
    "from_device": "BOB",
    "method": "m.sas.v1",
    "transaction_id": "t1",
    "key_agreement_protocols": ["curve25519", "curve25519-hkdf-sha256"],
    "hashes": ["sha256"],
    "message_authentication_codes": ["hkdf-hmac-sha256", "hkdf-hmac-sha256.v2"],
    "short_authentication_string": ["decimal", "emoji"],
}


@pytest.mark.parametrize(
    ("change", "chosen"),
    [
        ({}, ("curve25519-hkdf-sha256", "hkdf-hmac-sha256.v2", ["emoji", "decimal"])),
        (
            {"key_agreement_protocols": ["curve25519"]},
            ("curve25519", "hkdf-hmac-sha256.v2", ["emoji", "decimal"]),
        ),
        (
            {"message_authentication_codes": ["hkdf-hmac-sha256"]},
            ("curve25519-hkdf-sha256", "hkdf-hmac-sha256", ["emoji", "decimal"]),
        ),
        (
            {"message_authentication_codes": ["org.matrix.msc3783.hkdf-hmac-sha256"]},
            ("curve25519-hkdf-sha256", "org.matrix.msc3783.hkdf-hmac-sha256", ["emoji", "decimal"]),
        ),
        (
            {"short_authentication_string": ["decimal"]},
            ("curve25519-hkdf-sha256", "hkdf-hmac-sha256.v2", ["decimal"]),
        ),
    ],
)
def test_an_offer_is_answered_with_our_best_methods(
    change: dict[str, object], chosen: tuple[str, str, list[str]]
) -> None:
    sas = Sas.from_start(ALICE, BOB, {**OFFER, **change})
    accept = sas.accept_content()
    got = (
        accept["key_agreement_protocol"],
        accept["message_authentication_code"],
        accept["short_authentication_string"],
    )
    assert got == chosen
    assert accept["hash"] == "sha256" and accept["transaction_id"] == "t1"
    assert accept["commitment"] == sha256_b64(sas.pubkey + canonical_json({**OFFER, **change}))


@pytest.mark.parametrize(
    "change",
    [
        {"method": "m.reciprocate.v1"},
        {"key_agreement_protocols": ["curve448"]},
        {"hashes": ["sha512"]},
        {"message_authentication_codes": ["hmac-sha1"]},
        {"short_authentication_string": ["words"]},
        {"short_authentication_string": "emoji"},
        {"hashes": None},
    ],
)
def test_an_offer_with_nothing_in_common_is_refused(change: dict[str, object]) -> None:
    with pytest.raises(SasError) as caught:
        Sas.from_start(ALICE, BOB, {**OFFER, **change})
    assert caught.value.code == "m.unknown_method"


@pytest.mark.parametrize("mac", MACS)
@pytest.mark.parametrize("agreement", KEY_AGREEMENTS)
def test_two_ends_agree_on_emoji_numbers_and_macs(mac: str, agreement: str) -> None:
    """Both ends of one SAS, for each key agreement and MAC: the same emoji and numbers,
    each accepts the other's MAC, a forged one is a key mismatch."""
    bob = Sas(BOB, ALICE, "t1")
    start = bob.start_content()
    start["key_agreement_protocols"] = [agreement]
    start["message_authentication_codes"] = [mac]
    bob._start = start
    alice = Sas.from_start(ALICE, BOB, start)
    bob.on_accept(alice.accept_content())
    alice.on_key(bob.key_content())
    bob.on_key(alice.key_content())
    assert alice.emoji() == bob.emoji() and len(alice.emoji()) == 7
    assert alice.decimals() == bob.decimals()
    assert all(1000 <= n <= 9191 for n in alice.decimals())
    good = bob.mac_content()
    forged = {key_id: "A" * len(mac) for key_id, mac in good["mac"].items()}
    with pytest.raises(SasError, match="Key mismatch"):
        alice.on_mac({**good, "mac": forged})
    alice.on_mac(good)
    bob.on_mac(alice.mac_content())
    assert alice.their_mac_ok and bob.their_mac_ok


def test_a_key_that_does_not_match_the_commitment_is_refused() -> None:
    bob = Sas(BOB, ALICE, "t1")
    alice = Sas.from_start(ALICE, BOB, bob.start_content())
    bob.on_accept(alice.accept_content())
    other = Sas.from_start(ALICE, BOB, bob.start_content())
    with pytest.raises(SasError) as caught:
        bob.on_key(other.key_content())  # a key swapped in by someone in between
    assert caught.value.code == "m.mismatched_commitment"
