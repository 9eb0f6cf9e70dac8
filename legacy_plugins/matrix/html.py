"""Matrix HTML (``org.matrix.custom.html``) to and from the neutral `StyledText`.

The spoke of the formatting hub (:mod:`gateway.formatting`) for Matrix. Incoming HTML is
read for its text and a few styles only: bold, italic, underline, strike-through, code,
preformatted blocks, quotes, lists and line breaks. Nothing of the markup survives as
markup, so hostile HTML (scripts, event handlers, ``javascript:`` links, invisible
elements) can only ever become plain text: script and style contents, and the reply
fallback (``<mx-reply>``), are dropped; links keep their text and, if it differs, the
address in parentheses; images keep their ``alt`` text. Outgoing HTML is built from
escaped text and a fixed set of tags.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, replace
from html.parser import HTMLParser

from gateway.formatting import PLAIN, Span, Style, StyledText, to_plain

__all__ = ["html_to_styled", "styled_to_html"]

_BLOCKS = frozenset(
    {"p", "div", "pre", "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6"}
    | {"table", "tr", "hr", "details", "summary"}
)
_SKIPPED = frozenset({"script", "style", "mx-reply", "head", "title", "template", "noscript"})
_VOID = frozenset({"br", "img", "hr", "input", "meta", "link", "area", "base", "col", "wbr"})
_STYLE_TAGS: dict[str, str] = {
    "b": "bold",
    "strong": "bold",
    "h1": "bold",
    "h2": "bold",
    "h3": "bold",
    "h4": "bold",
    "h5": "bold",
    "h6": "bold",
    "i": "italic",
    "em": "italic",
    "u": "underline",
    "ins": "underline",
    "del": "strike",
    "s": "strike",
    "strike": "strike",
    "code": "monospace",
    "pre": "monospace",
    "tt": "monospace",
}
_WHITESPACE = re.compile(r"[ \t\n\r\f]+")
_MATRIX_TO = "https://matrix.to/#/"
_MAX_DEPTH = 100


@dataclass
class _Frame:
    tag: str
    style: Style
    href: str | None = None
    first_span: int = 0
    list_counter: int | None = None


class _Reader(HTMLParser):
    """Collects spans; all state is per instance, so one parse cannot leak into the next."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.spans: list[Span] = []
        self.stack: list[_Frame] = []
        self.skip_depth = 0
        self.quote_depth = 0
        self.at_line_start = True
        self.pending_space = False

    # -- helpers ------------------------------------------------------------------

    @property
    def style(self) -> Style:
        return self.stack[-1].style if self.stack else PLAIN

    @property
    def preformatted(self) -> bool:
        return any(frame.tag == "pre" for frame in self.stack)

    def _emit(self, text: str, style: Style | None = None) -> None:
        if not text:
            return
        if self.at_line_start and self.quote_depth:
            self.spans.append(Span("> " * self.quote_depth))
        self.spans.append(Span(text, self.style if style is None else style))
        self.at_line_start = False

    def _newline(self, style: Style = PLAIN) -> None:
        self.pending_space = False
        self.spans.append(Span("\n", style))
        self.at_line_start = True

    def _break_block(self) -> None:
        if not self.at_line_start:
            self._newline()

    # -- HTMLParser hooks ---------------------------------------------------------

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.skip_depth or tag in _SKIPPED:
            self.skip_depth += tag in _SKIPPED
            return
        attributes = {k: v or "" for k, v in attrs}
        if tag in _VOID:
            self._void(tag, attributes)
            return
        if len(self.stack) >= _MAX_DEPTH:
            return
        if tag in _BLOCKS:
            self._break_block()
        style = self.style
        if attribute := _STYLE_TAGS.get(tag):
            style = replace(style, **{attribute: True})
        frame = _Frame(tag, style, first_span=len(self.spans))
        if tag == "a":
            frame.href = attributes.get("href")
        elif tag == "ol":
            start = attributes.get("start", "1")
            frame.list_counter = int(start) if start.isdigit() and len(start) < 9 else 1
        elif tag == "ul":
            frame.list_counter = -1
        elif tag == "blockquote":
            self.quote_depth += 1
        self.stack.append(frame)
        if tag == "li":
            self._emit(self._bullet(), PLAIN)

    def _void(self, tag: str, attributes: dict[str, str]) -> None:
        if tag == "br":
            self._newline()
        elif tag == "img":
            self._text(attributes.get("alt") or attributes.get("title") or "")
        elif tag == "hr":
            self._break_block()

    def _bullet(self) -> str:
        for frame in reversed(self.stack[:-1]):
            if frame.list_counter is None:
                continue
            if frame.list_counter < 0:
                return "• "
            number = frame.list_counter
            frame.list_counter += 1
            return f"{number}. "
        return "• "

    def handle_endtag(self, tag: str) -> None:
        if self.skip_depth:
            if tag in _SKIPPED:
                self.skip_depth -= 1
            return
        if tag in _VOID or not any(frame.tag == tag for frame in self.stack):
            return
        while self.stack:
            frame = self.stack.pop()
            self._close(frame)
            if frame.tag == tag:
                break

    def _close(self, frame: _Frame) -> None:
        if frame.tag == "a" and frame.href:
            self._close_link(frame)
        if frame.tag == "blockquote":
            self.quote_depth -= 1
        if frame.tag in _BLOCKS:
            self._break_block()

    def _close_link(self, frame: _Frame) -> None:
        href = frame.href or ""
        text = "".join(span.text for span in self.spans[frame.first_span :])
        if href.startswith(_MATRIX_TO) or not href.startswith(("http://", "https://", "mailto:")):
            return  # a mention pill, or a scheme we don't pass on: the text is enough
        shown = href.removeprefix("mailto:")
        if text.strip() in (href, shown):
            return
        self._emit(f" ({href})", PLAIN)

    def handle_data(self, data: str) -> None:
        if not self.skip_depth:
            self._text(data)

    def _text(self, data: str) -> None:
        if self.preformatted:
            lines = data.split("\n")
            for n, line in enumerate(lines):
                if n:
                    self._newline(self.style)
                self._emit(line)
            return
        for n, word in enumerate(_WHITESPACE.split(data)):
            if n:
                self.pending_space = True
            if not word:
                continue
            if self.pending_space and not self.at_line_start:
                self._emit(" ")
            self.pending_space = False
            self._emit(word)

    def close(self) -> None:
        super().close()
        while self.stack:
            self._close(self.stack.pop())


def html_to_styled(formatted_body: str) -> StyledText:
    """Read Matrix HTML as styled text (see the module docstring for what is kept)."""
    reader = _Reader()
    reader.feed(formatted_body)
    reader.close()
    styled = StyledText.of(reader.spans)
    # Blocks leave line breaks at the ends; trailing spaces before a break are noise.
    text = to_plain(styled)
    start = len(text) - len(text.lstrip("\n"))
    end = len(text.rstrip("\n \t"))
    return _slice(styled, start, end)


def _slice(styled: StyledText, start: int, end: int) -> StyledText:
    out: list[Span] = []
    pos = 0
    for span in styled.spans:
        a, b = max(start, pos), min(end, pos + len(span.text))
        if a < b:
            out.append(Span(span.text[a - pos : b - pos], span.style))
        pos += len(span.text)
    return StyledText.of(out)


_TAGS = (
    ("bold", "strong"),
    ("italic", "em"),
    ("underline", "u"),
    ("strike", "del"),
    ("monospace", "code"),
)


def styled_to_html(styled: StyledText) -> str | None:
    """Matrix HTML for styled text, or None when it has no style (send the body only).

    Lines that begin with ``>`` become a ``<blockquote>``, as in Matrix clients."""
    if not any(span.style != PLAIN for span in styled.spans) and not any(
        line.startswith(">") for line in to_plain(styled).split("\n")
    ):
        return None
    lines = _lines(styled)
    out: list[str] = []
    n = 0
    while n < len(lines):
        if _is_code_line(lines[n]) and n + 1 < len(lines) and _is_code_line(lines[n + 1]):
            block: list[str] = []
            while n < len(lines) and _is_code_line(lines[n]):
                block.append(html.escape(to_plain(StyledText(lines[n])), quote=False))
                n += 1
            out.append("<pre><code>" + "\n".join(block) + "</code></pre>")
            continue
        if to_plain(StyledText(lines[n])).startswith(">"):
            quoted: list[tuple[Span, ...]] = []
            while n < len(lines) and to_plain(StyledText(lines[n])).startswith(">"):
                quoted.append(_strip_quote_marker(lines[n]))
                n += 1
            out.append("<blockquote>" + "<br>".join(map(_line_html, quoted)) + "</blockquote>")
            continue
        out.append(_line_html(lines[n]))
        n += 1
    return _join_lines(out)


_BLOCK_HTML = ("</blockquote>", "</pre>")


def _join_lines(parts: list[str]) -> str:
    html_text = ""
    for n, part in enumerate(parts):
        if (
            n
            and not html_text.endswith(_BLOCK_HTML)
            and not part.startswith(("<blockquote>", "<pre>"))
        ):
            html_text += "<br>"
        html_text += part
    return html_text


def _is_code_line(line: tuple[Span, ...]) -> bool:
    return bool(line) and all(span.style.monospace for span in line)


def _lines(styled: StyledText) -> list[tuple[Span, ...]]:
    lines: list[list[Span]] = [[]]
    for span in styled.spans:
        for n, piece in enumerate(span.text.split("\n")):
            if n:
                lines.append([])
            if piece:
                lines[-1].append(Span(piece, span.style))
    return [tuple(line) for line in lines]


def _strip_quote_marker(line: tuple[Span, ...]) -> tuple[Span, ...]:
    text = to_plain(StyledText(line))
    cut = 2 if text.startswith("> ") else 1
    return _slice(StyledText(line), cut, len(text)).spans


def _line_html(line: tuple[Span, ...]) -> str:
    out: list[str] = []
    for span in line:
        text = html.escape(span.text, quote=False)
        opened = [tag for attribute, tag in _TAGS if getattr(span.style, attribute)]
        out.append("".join(f"<{tag}>" for tag in opened))
        out.append(text)
        out.append("".join(f"</{tag}>" for tag in reversed(opened)))
    return "".join(out)
