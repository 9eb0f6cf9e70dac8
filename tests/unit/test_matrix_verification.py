"""The pure parts of device verification (verification.py): commands, messages, events."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.matrix.ids import UserId
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
