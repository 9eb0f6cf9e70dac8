"""Neutral styled text, the hub every network's markup goes through, and XEP-0393.

Each network parses its own markup (mIRC codes, Matrix HTML, e-mail HTML) into a
`StyledText` and renders from one, so n networks need n parsers and n renderers instead
of n² converters. A `StyledText` is a flat tuple of `Span`s, each a run of text with one
`Style`; there is no tree and no block structure (a quote or code block is just lines of
styled text). Colours are indices in the 99-colour mIRC palette (0-98), the lingua franca
of chat colours: other networks map to and from it. XMPP's side is XEP-0393 Message
Styling: `from_xep0393` parses a body by the spec's rules and `to_xep0393` emits markers
only where a conforming client will read them back as the same style. XEP-0393 has no
escape mechanism, so marker characters already present in the text are sent as they are
and a client may style them; underline and colours have no XEP-0393 form and are dropped.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

__all__ = [
    "PLAIN",
    "Span",
    "Style",
    "StyledText",
    "from_xep0393",
    "is_whitespace",
    "to_plain",
    "to_xep0393",
]


@dataclass(frozen=True, slots=True)
class Style:
    """How a run of text looks. `fg`/`bg` are mIRC palette indices 0-98, or None."""

    bold: bool = False
    italic: bool = False
    underline: bool = False
    strike: bool = False
    monospace: bool = False
    fg: int | None = None
    bg: int | None = None


PLAIN = Style()


@dataclass(frozen=True, slots=True)
class Span:
    """A run of text in one style."""

    text: str
    style: Style = PLAIN


@dataclass(frozen=True, slots=True)
class StyledText:
    """Text as a tuple of spans. Build it with `of()` to get the canonical form (no
    empty spans, neighbours with equal styles merged) so that equal texts compare equal."""

    spans: tuple[Span, ...] = ()

    @classmethod
    def of(cls, spans: Iterable[Span]) -> StyledText:
        merged: list[Span] = []
        for span in spans:
            if not span.text:
                continue
            if merged and merged[-1].style == span.style:
                merged[-1] = Span(merged[-1].text + span.text, span.style)
            else:
                merged.append(span)
        return cls(tuple(merged))

    @classmethod
    def plain(cls, text: str) -> StyledText:
        return cls.of([Span(text)])


def to_plain(styled: StyledText) -> str:
    """The text without any styling."""
    return "".join(span.text for span in styled.spans)


def is_whitespace(char: str) -> bool:
    """XEP-0393's whitespace: Unicode White_Space or general category Z."""
    return char.isspace() or unicodedata.category(char).startswith("Z")


# --- XEP-0393 -> StyledText ----------------------------------------------------------

_MARKERS = {"*": "bold", "_": "italic", "~": "strike", "`": "monospace"}
_FENCE = "```"
_MONO = Style(monospace=True)

# One parsed input line: its spans and, for lines inside a top-level preformatted block,
# the block's number (the newline between two lines of one block is monospace too).
# None stands for a fence line, which is dropped.
_Line = tuple[list[Span], int | None] | None


def from_xep0393(body: str) -> StyledText:
    """Parse a message body. Span markers are removed and become styles; the text of
    quotation lines is kept as it is (`> ` included) with spans parsed inside; the fence
    lines of a ``` block are dropped and its lines become monospace."""
    kept = [line for line in _parse_blocks(body.split("\n"), [0]) if line is not None]
    out: list[Span] = []
    for n, (spans, block) in enumerate(kept):
        if n:
            same_block = block is not None and block == kept[n - 1][1]
            out.append(Span("\n", _MONO if same_block else PLAIN))
        out.extend(spans)
    return StyledText.of(out)


def _parse_blocks(lines: Sequence[str], counter: list[int]) -> list[_Line]:
    """One entry per input line, so that quotation prefixes stay aligned."""
    out: list[_Line] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith(_FENCE):
            end = i + 1
            while end < len(lines) and lines[end] != _FENCE:
                end += 1
            if end == i + 1:  # nothing inside: keep the fences as text
                out.extend(_plain_line(text) for text in lines[i : min(end + 1, len(lines))])
            else:
                counter[0] += 1
                out.append(None)
                out.extend(([Span(text, _MONO)], counter[0]) for text in lines[i + 1 : end])
                if end < len(lines):
                    out.append(None)
            i = end + 1
        elif line.startswith(">"):
            end = i
            while end < len(lines) and lines[end].startswith(">"):
                end += 1
            quoted = lines[i:end]
            # The spec trims the '>' and the first whitespace character after it.
            cut = [2 if len(q) > 1 and is_whitespace(q[1]) else 1 for q in quoted]
            children = _parse_blocks([q[n:] for q, n in zip(quoted, cut, strict=True)], counter)
            for q, n, child in zip(quoted, cut, children, strict=True):
                if child is not None:
                    out.append(([Span(q[:n]), *child[0]], None))
            i = end
        else:
            out.append(_plain_line(line))
            i += 1
    return out


def _plain_line(line: str) -> _Line:
    spans: list[Span] = []
    _parse_spans(line, PLAIN, None, spans)
    return spans, None


def _parse_spans(text: str, style: Style, parent: str | None, out: list[Span]) -> None:
    """Spans are matched left to right and lazily: an opening marker must start the
    text (inside a parent span, only if it differs from the parent's marker) or follow
    whitespace, and be followed by non-whitespace; the first same marker not preceded
    by whitespace closes it, and the span must not be empty."""
    i = plain_start = 0
    while i < len(text):
        marker = text[i]
        close = _closing(text, i, parent) if marker in _MARKERS else None
        if close is None:
            i += 1
            continue
        out.append(Span(text[plain_start:i], style))
        inner = replace(style, **{_MARKERS[marker]: True})
        if marker == "`":  # preformatted: the content is not parsed
            out.append(Span(text[i + 1 : close], inner))
        else:
            _parse_spans(text[i + 1 : close], inner, marker, out)
        i = plain_start = close + 1
    out.append(Span(text[plain_start:], style))


def _closing(text: str, i: int, parent: str | None) -> int | None:
    marker = text[i]
    if i == 0:
        if marker == parent:
            return None
    elif not is_whitespace(text[i - 1]):
        return None
    if i + 1 >= len(text) or is_whitespace(text[i + 1]):
        return None
    for j in range(i + 1, len(text)):
        if text[j] == marker and not is_whitespace(text[j - 1]):
            return j if j > i + 1 else None
    return None


# --- StyledText -> XEP-0393 ----------------------------------------------------------

# Outermost first: a preformatted span cannot contain other spans, so it is innermost.
_ORDER = (("strike", "~"), ("bold", "*"), ("italic", "_"), ("monospace", "`"))


def to_xep0393(styled: StyledText) -> str:
    """Render with XEP-0393 markers. A styled run gets markers only if a conforming
    parser will read them back: the run is trimmed of surrounding whitespace, must not
    contain its own marker, must start a line, follow whitespace or open right after an
    enclosing marker, and nests inside the enclosing runs. Otherwise the style is
    dropped. Whole lines of monospace spanning several lines become a ``` block."""
    text = to_plain(styled)
    styles = [span.style for span in styled.spans for _ in span.text]
    starts = [0]
    starts.extend(i + 1 for i, char in enumerate(text) if char == "\n")
    bounds = [
        (s, (starts[n + 1] - 1) if n + 1 < len(starts) else len(text)) for n, s in enumerate(starts)
    ]
    out: list[str] = []
    n = 0
    while n < len(bounds):
        last = _block_end(text, styles, bounds, n)
        if last is not None:
            out.append(_FENCE)
            out.extend(text[s:e] for s, e in bounds[n : last + 1])
            out.append(_FENCE)
            n = last + 1
            continue
        start, end = bounds[n]
        out.append(_render_line(text[start:end], styles[start:end]))
        n += 1
    return "\n".join(out)


def _block_end(text: str, styles: list[Style], bounds: list[tuple[int, int]], n: int) -> int | None:
    """Index of the last line of a ``` block starting at line n, or None."""
    start, end = bounds[n]
    if not text[start:end].strip() or not all(s.monospace for s in styles[start:end]):
        return None
    last = n
    while last + 1 < len(bounds):
        end = bounds[last + 1][1]
        if not all(st.monospace for st in styles[bounds[last][1] : end]):  # newline included
            break
        last += 1
    while last > n and bounds[last][0] == bounds[last][1]:
        last -= 1
    lines = [text[s:e] for s, e in bounds[n : last + 1]]
    if any(line == _FENCE for line in lines):
        return None
    first = lines[0]
    inline_ok = "`" not in first and not is_whitespace(first[0]) and not is_whitespace(first[-1])
    return last if last > n or not inline_ok else None


def _render_line(line: str, styles: list[Style]) -> str:
    opens: list[list[str]] = [[] for _ in range(len(line) + 1)]
    closes: list[list[str]] = [[] for _ in range(len(line) + 1)]
    emitted: list[tuple[int, int]] = []  # runs of enclosing styles, already validated
    for attribute, marker in _ORDER:
        cuts = {edge for run in emitted for edge in run}
        run_start: int | None = None
        found: list[tuple[int, int]] = []
        valid: list[tuple[int, int]] = []
        for i in range(len(line) + 1):
            on = i < len(line) and bool(getattr(styles[i], attribute))
            if run_start is not None and (not on or i in cuts):
                found.append((run_start, i))
                run_start = None
            if on and run_start is None:
                run_start = i
        for a, b in (_trim(line, *run) for run in found):
            if a == b or marker in line[a:b]:
                continue
            if a > 0 and not is_whitespace(line[a - 1]) and all(r[0] != a for r in emitted):
                continue
            opens[a].append(marker)
            closes[b].insert(0, marker)  # inner runs close before outer ones
            valid.append((a, b))
        emitted.extend(valid)
    parts: list[str] = []
    for i in range(len(line) + 1):
        parts.extend(closes[i])
        parts.extend(opens[i])
        if i < len(line):
            parts.append(line[i])
    return "".join(parts)


def _trim(line: str, a: int, b: int) -> tuple[int, int]:
    while a < b and is_whitespace(line[a]):
        a += 1
    while b > a and is_whitespace(line[b - 1]):
        b -= 1
    return a, b
