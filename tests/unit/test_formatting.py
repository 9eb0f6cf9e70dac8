"""The neutral styled text and its XEP-0393 spoke: tables, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.formatting import (
    PLAIN,
    Span,
    Style,
    StyledText,
    from_xep0393,
    to_plain,
    to_xep0393,
)

_FLAGS = {"b": "bold", "i": "italic", "u": "underline", "s": "strike", "m": "monospace"}


def S(text: str, flags: str = "") -> Span:
    """A span: flags are letters of b(old) i(talic) u(nderline) s(trike) m(onospace)."""
    return Span(text, Style(**{_FLAGS[f]: True for f in flags}))


def T(*spans: Span) -> StyledText:
    return StyledText.of(spans)


def char_styles(styled: StyledText) -> list[Style]:
    return [span.style for span in styled.spans for _ in span.text]


def test_of_merges_neighbours_and_drops_empty_spans() -> None:
    assert StyledText.of([S("a", "b"), S(""), S("b", "b"), S("c")]) == T(S("ab", "b"), S("c"))
    assert StyledText.plain("") == StyledText()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("plain", T(S("plain"))),
        ("*strong*", T(S("strong", "b"))),
        ("plain *strong* plain", T(S("plain "), S("strong", "b"), S(" plain"))),
        ("*strong* plain *strong*", T(S("strong", "b"), S(" plain "), S("strong", "b"))),
        ("*strong*plain*", T(S("strong", "b"), S("plain*"))),
        ("* plain *strong*", T(S("* plain "), S("strong", "b"))),
        ("not strong*", T(S("not strong*"))),
        ("*not strong", T(S("*not strong"))),
        ("*not \n strong*", T(S("*not \n strong*"))),
        ("*not *strong", T(S("*not *strong"))),
        ("**", T(S("**"))),
        ("****", T(S("****"))),
        ("a*b*c", T(S("a*b*c"))),
        (
            "_emph_ ~strike~ `mono`",
            T(S("emph", "i"), S(" "), S("strike", "s"), S(" "), S("mono", "m")),
        ),
        ("_emph *both*_", T(S("emph ", "i"), S("both", "ib"))),
        ("*`mono and bold`*", T(S("mono and bold", "bm"))),
        ("`*not bold*`", T(S("*not bold*", "m"))),
        ("Everyone ~dis~likes cake.", T(S("Everyone "), S("dis", "s"), S("likes cake."))),
        ("```\ncode *x*\n  indented\n```\nafter", T(S("code *x*\n  indented", "m"), S("\nafter"))),
        ("```python\nunclosed", T(S("unclosed", "m"))),
        ("```\n```", T(S("```\n```"))),
        ("> quoted *b*\nnext", T(S("> quoted "), S("b", "b"), S("\nnext"))),
        (">*b*", T(S(">"), S("b", "b"))),
        (">> nested\n> one", T(S(">> nested\n> one"))),
        ("> ```\n> code\nplain", T(S("> "), S("code", "m"), S("\nplain"))),
        ("", T()),
    ],
)
def test_from_xep0393(body: str, expected: StyledText) -> None:
    assert from_xep0393(body) == expected


@pytest.mark.parametrize(
    ("styled", "expected"),
    [
        (T(S("plain")), "plain"),
        (T(S("bold", "b")), "*bold*"),
        (T(S("a "), S("b", "b"), S(" c")), "a *b* c"),
        (T(S(" padded ", "b")), " *padded* "),
        (T(S("   ", "b")), "   "),
        (T(S("word"), S("inside", "b")), "wordinside"),
        (T(S("a*b", "b")), "a*b"),
        (T(S("x", "bism")), "~*_`x`_*~"),
        (T(S("bold ", "b"), S("both", "bi")), "*bold _both_*"),
        (T(S("underline", "u")), "underline"),
        (T(S("one\ntwo", "b")), "*one*\n*two*"),
        (T(S("x = 1\ny = 2", "m")), "```\nx = 1\ny = 2\n```"),
        (T(S("  indented", "m")), "```\n  indented\n```"),
        (T(S("a`b", "m")), "```\na`b\n```"),
        (T(S("code", "m")), "`code`"),
        (T(S("say "), S("x = 1\ny", "m")), "say `x = 1`\n`y`"),
        (T(S("> quote "), S("b", "b")), "> quote *b*"),
        (T(), ""),
    ],
)
def test_to_xep0393(styled: StyledText, expected: str) -> None:
    assert to_xep0393(styled) == expected


_NO_MARKERS = st.text(st.characters(exclude_characters="*_~`", exclude_categories=["Cs"]))


@given(st.text())
def test_from_xep0393_never_raises_and_only_removes(body: str) -> None:
    assert len(to_plain(from_xep0393(body))) <= len(body)


@given(_NO_MARKERS)
def test_plain_text_round_trips(body: str) -> None:
    assert to_plain(from_xep0393(body)) == body
    assert to_xep0393(StyledText.plain(body)) == body


_STYLES = st.builds(
    Style,
    bold=st.booleans(),
    italic=st.booleans(),
    underline=st.booleans(),
    strike=st.booleans(),
    monospace=st.booleans(),
)
_STYLED = st.lists(st.builds(Span, _NO_MARKERS, _STYLES)).map(StyledText.of)


@given(_STYLED)
def test_emitted_markers_are_read_back_and_never_add_style(styled: StyledText) -> None:
    back = from_xep0393(to_xep0393(styled))
    assert to_plain(back) == to_plain(styled)  # every marker was consumed as a marker
    for got, sent in zip(char_styles(back), char_styles(styled), strict=True):
        for attribute in ("bold", "italic", "strike", "monospace"):
            assert not getattr(got, attribute) or getattr(sent, attribute)


@given(st.lists(st.sampled_from(["word", "other", "x"]), min_size=1), st.sampled_from("bism"))
def test_styled_words_keep_their_style(words: list[str], flag: str) -> None:
    spans = [S(word, flag if n % 2 else "") for n, word in enumerate(words)]
    styled = StyledText.of(
        s for n, span in enumerate(spans) for s in (S(" ") if n else S(""), span)
    )
    assert from_xep0393(to_xep0393(styled)) == styled


def test_plain_style_is_the_default() -> None:
    assert Span("x").style == PLAIN == Style()
