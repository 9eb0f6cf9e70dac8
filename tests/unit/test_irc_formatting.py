"""mIRC formatting codes <-> StyledText."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.formatting import Span, Style, StyledText, to_plain
from legacy_plugins.irc.formatting import parse_mirc, render_mirc


def S(text: str, **style: Any) -> Span:
    return Span(text, Style(**style))


def T(*spans: Span) -> StyledText:
    return StyledText.of(spans)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("plain", T(S("plain"))),
        ("\x02bold\x02 not", T(S("bold", bold=True), S(" not"))),
        ("\x1ditalic\x1d", T(S("italic", italic=True))),
        ("\x1funder\x1f", T(S("under", underline=True))),
        ("\x1estrike\x1e", T(S("strike", strike=True))),
        ("\x11mono\x11", T(S("mono", monospace=True))),
        ("\x02\x1dboth\x0f none", T(S("both", bold=True, italic=True), S(" none"))),
        ("\x034red", T(S("red", fg=4))),
        ("\x0304red", T(S("red", fg=4))),
        ("\x03041", T(S("1", fg=4))),
        ("\x034,12on blue", T(S("on blue", fg=4, bg=12))),
        ("\x0304,1212", T(S("12", fg=4, bg=12))),
        ("\x034,x", T(S(",x", fg=4))),
        ("\x03,4x", T(S(",4x"))),
        ("\x03\u0663x", T(S("\u0663x"))),
        ("\x034,2a\x035b", T(S("a", fg=4, bg=2), S("b", fg=5, bg=2))),
        ("\x034a\x03b", T(S("a", fg=4), S("b"))),
        ("\x0399,99default", T(S("default"))),
        ("\x04ff0000hex\x04", T(S("hex"))),
        ("\x04ff0000,00ff00hex", T(S("hex"))),
        ("\x16reverse\x16", T(S("reverse"))),
        ("bell\x07 ctcp\x01 nul\x00", T(S("bell ctcp nul"))),
        ("tab\tand\nnewline", T(S("tab\tand\nnewline"))),
        ("\x02", T()),
        ("\x03", T()),
        ("", T()),
    ],
)
def test_parse_mirc(text: str, expected: StyledText) -> None:
    assert parse_mirc(text) == expected


@pytest.mark.parametrize(
    ("styled", "expected"),
    [
        (T(S("plain")), "plain"),
        (T(S("bold", bold=True), S(" not")), "\x02bold\x0f not"),
        (T(S("a", bold=True), S("b", bold=True, italic=True)), "\x02a\x1db"),
        (T(S("red", fg=4)), "\x0304red"),
        (T(S("1st", fg=4)), "\x03041st"),
        (T(S(",comma", fg=4)), "\x0304,99,comma"),
        (T(S("a", fg=4, bg=2), S("b", fg=5)), "\x0304,02a\x0305,99b"),
        (T(S("a", fg=4), S("1")), "\x0304a\x0f1"),
        (T(S("bg only", bg=3)), "\x0399,03bg only"),
        (T(S("out of palette", fg=120)), "out of palette"),
        (T(S("ctcp\x01 bell\x07")), "ctcp bell"),
        (T(), ""),
    ],
)
def test_render_mirc(styled: StyledText, expected: str) -> None:
    assert render_mirc(styled) == expected


@given(st.text())
def test_parse_never_raises_and_leaves_no_control_characters(text: str) -> None:
    plain = to_plain(parse_mirc(text))
    assert all(char >= " " or char in "\t\n" for char in plain)


_COLOR = st.none() | st.integers(0, 98)
_STYLES = st.builds(
    Style,
    bold=st.booleans(),
    italic=st.booleans(),
    underline=st.booleans(),
    strike=st.booleans(),
    monospace=st.booleans(),
    fg=_COLOR,
    bg=_COLOR,
)
_TEXT = st.text(st.characters(min_codepoint=0x20, exclude_categories=["Cs"]))


@given(st.lists(st.builds(Span, _TEXT, _STYLES)).map(StyledText.of))
def test_render_then_parse_round_trips(styled: StyledText) -> None:
    assert parse_mirc(render_mirc(styled)) == styled
