"""mIRC formatting codes to and from the neutral `StyledText` (the IRC spoke of the hub).

IRC styles text in-band with control characters that toggle an attribute until toggled
again or reset: \\x02 bold, \\x1d italic, \\x1f underline, \\x1e strike-through, \\x11
monospace, \\x03 colour (1-2 digit foreground, optional comma and 1-2 digit background;
a bare \\x03 resets colours) and \\x0f reset. \\x04 (hex colour) and \\x16 (reverse) have
no neutral form and are stripped. Other C0 controls are removed too: XML cannot carry
them. `parse_mirc` never raises; `render_mirc` writes codes that `parse_mirc` (and
common clients) read back as the same styles.
"""

from __future__ import annotations

import re
from dataclasses import replace

from gateway.formatting import PLAIN, Span, Style, StyledText

__all__ = ["parse_mirc", "render_mirc"]

BOLD, COLOR, HEX_COLOR, RESET, MONOSPACE = "\x02", "\x03", "\x04", "\x0f", "\x11"
REVERSE, STRIKE, ITALIC, UNDERLINE = "\x16", "\x1e", "\x1d", "\x1f"

_TOGGLES = {
    BOLD: "bold",
    ITALIC: "italic",
    UNDERLINE: "underline",
    STRIKE: "strike",
    MONOSPACE: "monospace",
}
_COLOR_RE = re.compile(r"\x03(?:([0-9]{1,2})(?:,([0-9]{1,2}))?)?")
_HEX_RE = re.compile(r"\x04(?:[0-9a-fA-F]{6}(?:,[0-9a-fA-F]{6})?)?")
_CONTROLS_RE = re.compile(r"[\x00-\x08\x0b-\x1f]")  # C0 controls but \t and \n
_DEFAULT_COLOR = 99  # "default colour" in the mIRC palette: the same as no colour


def _color(digits: str | None) -> int | None:
    if digits is None:
        return None
    value = int(digits)
    return None if value == _DEFAULT_COLOR else value


def parse_mirc(text: str) -> StyledText:
    """Parse mIRC-formatted text. Never raises."""
    spans: list[Span] = []
    style = PLAIN
    start = i = 0
    while i < len(text):
        char = text[i]
        if char >= " " or char in "\t\n":
            i += 1
            continue
        spans.append(Span(text[start:i], style))
        end = i + 1
        if char in _TOGGLES:
            attribute = _TOGGLES[char]
            style = replace(style, **{attribute: not getattr(style, attribute)})
        elif char == RESET:
            style = PLAIN
        elif char == COLOR:
            match = _COLOR_RE.match(text, i)
            assert match is not None  # the pattern matches a bare \x03
            end = match.end()
            fg, bg = match.group(1), match.group(2)
            if fg is None:
                style = replace(style, fg=None, bg=None)
            elif bg is None:
                style = replace(style, fg=_color(fg))
            else:
                style = replace(style, fg=_color(fg), bg=_color(bg))
        elif char == HEX_COLOR:
            match = _HEX_RE.match(text, i)
            assert match is not None
            end = match.end()
        # anything else (\x16 reverse, other C0 controls) is dropped
        start = i = end
    spans.append(Span(text[start:], style))
    return StyledText.of(spans)


def render_mirc(styled: StyledText) -> str:
    """Render as mIRC codes; C0 controls in the text are removed. Turning any attribute
    off resets (\\x0f) and re-applies what stays on; colours are always written with two
    digits, so text that starts with a digit or a comma is never read as part of a code."""
    out: list[str] = []
    current = PLAIN
    for span in styled.spans:
        text = _CONTROLS_RE.sub("", span.text)
        if not text:
            continue
        wanted = _palette(span.style)
        if wanted != current:
            turned_off = any(
                getattr(current, attribute) and not getattr(wanted, attribute)
                for attribute in _TOGGLES.values()
            )
            uncolored = wanted.fg is None and wanted.bg is None
            if turned_off or (uncolored and (current.fg, current.bg) != (None, None)):
                out.append(RESET)
                current = PLAIN
            out.extend(
                code
                for code, attribute in _TOGGLES.items()
                if getattr(wanted, attribute) and not getattr(current, attribute)
            )
            if (wanted.fg, wanted.bg) != (current.fg, current.bg):
                out.append(_color_code(wanted, current, text))
            current = wanted
        out.append(text)
    return "".join(out)


def _color_code(style: Style, current: Style, following: str) -> str:
    """A \\x03 code that sets exactly this fg/bg pair (99 stands for "default")."""
    fg = _DEFAULT_COLOR if style.fg is None else style.fg
    code = f"{COLOR}{fg:02d}"
    if style.bg is not None:
        code += f",{style.bg:02d}"
    elif current.bg is not None or following.startswith(","):
        code += f",{_DEFAULT_COLOR}"
    return code


def _palette(style: Style) -> Style:
    """The style with out-of-palette colours dropped."""
    fg = style.fg if style.fg is not None and 0 <= style.fg < _DEFAULT_COLOR else None
    bg = style.bg if style.bg is not None and 0 <= style.bg < _DEFAULT_COLOR else None
    return style if (fg, bg) == (style.fg, style.bg) else replace(style, fg=fg, bg=bg)
