"""The IRC wire protocol without I/O: the line codec and message splitting.

`parse_line` validates a received line once, at the edge, and turns it into a `Message`;
`serialize` refuses to put anything on the wire that could smuggle a second command;
`split_message` cuts outgoing text into PRIVMSG/NOTICE-sized chunks. The per-connection
state machine that consumes messages lives in `connection.py`. The errors form one
small tree that separates the two sides' faults::

    IrcError
    ├── IrcProtocolError (ValueError)    the server sent a line that is not a message
    └── LocalProtocolError (ValueError)  we were about to send an invalid line: a bug,
                                         or hostile input that must not reach the wire
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field

LINE_MAX = 512  # bytes, CR LF included, message tags excluded (RFC 1459, IRCv3)
TAGS_MAX = 8191  # bytes for the tag section, '@' and trailing space included (IRCv3)
DEFAULT_CAPS = frozenset(
    "account-notify account-tag away-notify batch cap-notify chathistory draft/chathistory"
    " echo-message extended-join message-tags multi-prefix server-time userhost-in-names".split()
)


class IrcError(Exception):
    """Base of the IRC plugin's protocol errors."""


class IrcProtocolError(IrcError, ValueError):
    """The remote side sent something that is not an IRC message."""


class LocalProtocolError(IrcError, ValueError):
    """We were about to send something invalid; nothing was sent."""


@dataclass(frozen=True, slots=True)
class Message:
    """One IRC message. `command` is upper case; only the last param may hold spaces."""

    command: str
    params: tuple[str, ...] = ()
    source: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict, hash=False)

    @classmethod
    def of(cls, command: str, *params: str) -> Message:
        return cls(command.upper(), params)


# --- parsing -------------------------------------------------------------------------

_TAG_UNESCAPE = {":": ";", "s": " ", "\\": "\\", "r": "\r", "n": "\n"}
_TAG_ESCAPE = {v: "\\" + k for k, v in _TAG_UNESCAPE.items()}


def parse_line(raw: bytes, fallback_encoding: str = "latin-1") -> Message:
    """Parse one received line (CR LF optional). Invalid UTF-8 is decoded with
    `fallback_encoding` rather than dropped: many IRC users still send Latin-1. Raises
    only `IrcProtocolError`, for lines that cannot be a message."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        line = raw.decode(fallback_encoding, errors="replace")
    line = line.rstrip("\r\n")
    tags: dict[str, str] = {}
    if line.startswith("@"):
        tag_text, _, line = line[1:].partition(" ")
        for item in tag_text.split(";"):
            key, _, value = item.partition("=")
            if key:
                tags[key] = _unescape_tag(value)
    line = line.lstrip(" ")
    source: str | None = None
    if line.startswith(":"):
        source, _, line = line[1:].partition(" ")
        if not source:
            raise IrcProtocolError(f"empty source in IRC line {raw[:80]!r}")
        line = line.lstrip(" ")
    command, _, rest = line.partition(" ")
    if not command:
        raise IrcProtocolError(f"no command in IRC line {raw[:80]!r}")
    params: list[str] = []
    while rest := rest.lstrip(" "):
        if rest.startswith(":"):
            params.append(rest[1:])
            break
        param, _, rest = rest.partition(" ")
        params.append(param)
    return Message(command.upper(), tuple(params), source, tags)


def _unescape_tag(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for char in chars:
        if char == "\\":
            escaped = next(chars, "")  # a lone trailing backslash is dropped
            out.append(_TAG_UNESCAPE.get(escaped, escaped))
        else:
            out.append(char)
    return "".join(out)


# --- serializing ---------------------------------------------------------------------

_COMMAND_RE = re.compile(r"[A-Za-z]+|[0-9]{3}")
_FORBIDDEN = ("\r", "\n", "\0")


def serialize(msg: Message, *, max_tags_bytes: int = TAGS_MAX) -> bytes:
    """Encode a message as UTF-8 with CR LF. Raises `LocalProtocolError` if a part
    contains CR, LF or NUL (an injection attempt), if a middle param is empty, holds a
    space or starts with ':', or if the line (tags excluded) exceeds 512 bytes."""
    if not _COMMAND_RE.fullmatch(msg.command):
        raise LocalProtocolError(f"invalid IRC command {msg.command!r}")
    parts = [msg.command]
    if msg.source is not None:
        parts.insert(0, ":" + _token(msg.source, "source"))
    for n, param in enumerate(msg.params):
        if any(char in param for char in _FORBIDDEN):
            raise LocalProtocolError(f"IRC param {n} of {msg.command} holds CR, LF or NUL")
        needs_colon = not param or " " in param or param.startswith(":")
        if needs_colon and n < len(msg.params) - 1:
            raise LocalProtocolError(f"IRC param {n} of {msg.command} is empty or has a space")
        parts.append(":" + param if needs_colon else param)
    body = _encode(" ".join(parts) + "\r\n")
    if len(body) > LINE_MAX:
        raise LocalProtocolError(f"IRC {msg.command} line is {len(body)} bytes, over 512")
    if not msg.tags:
        return body
    tags = _encode_tags(msg.tags)
    if len(tags) > max_tags_bytes:
        raise LocalProtocolError(f"IRC tags are {len(tags)} bytes, over {max_tags_bytes}")
    return tags + body


def _encode_tags(tags: Mapping[str, str]) -> bytes:
    items: list[str] = []
    for key, value in tags.items():
        if not key or any(char in key for char in "=; \r\n\0"):
            raise LocalProtocolError(f"invalid IRC tag key {key!r}")
        escaped = "".join(_TAG_ESCAPE.get(char, char) for char in value)
        items.append(f"{key}={escaped}" if value else key)
    return _encode("@" + ";".join(items) + " ")


def _token(value: str, what: str) -> str:
    if not value or value.startswith(":") or any(c in value for c in (*_FORBIDDEN, " ")):
        raise LocalProtocolError(f"invalid IRC {what} {value!r}")
    return value


def _encode(text: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates
        raise LocalProtocolError("IRC line is not valid Unicode") from exc


_SECRET_COMMANDS = frozenset({"PASS", "AUTHENTICATE", "OPER"})
_SECRET_WORDS = ("IDENTIFY", "REGISTER", "GHOST", "RECOVER", "SETPASS")


def loggable(line: bytes) -> str:
    """A sent or received line as it may appear in a debug log: the parameters of
    PASS, AUTHENTICATE and OPER, and NickServ IDENTIFY-style messages, are redacted."""
    text = line.decode("utf-8", "replace").rstrip("\r\n")
    words = text.split(" ")
    lead = words[:1] if words[0].startswith("@") else []  # tags, then the source
    if len(words) > len(lead) and words[len(lead)].startswith(":"):
        lead = words[: len(lead) + 1]  # (not a first parameter like `PASS :two words`)
    rest = words[len(lead) :]
    command = rest[0].upper() if rest else ""
    if command in _SECRET_COMMANDS and rest[1:] not in (["+"], ["*"], ["PLAIN"]):
        return " ".join([*lead, rest[0], "[redacted]"])
    if command in {"PRIVMSG", "NOTICE"} and len(rest) > 2:
        if " ".join(rest[2:]).lstrip(":").upper().startswith(_SECRET_WORDS):
            return " ".join([*lead, rest[0], rest[1], ":[redacted]"])
    return text


# --- splitting -----------------------------------------------------------------------

_BREAK_RE = re.compile("\r\n|[\r\n\u0085\u2028\u2029]")
# C0 controls to drop: all but the mIRC codes \x02 \x03 \x04 \x0f \x11 \x16 \x1d-\x1f
# (\x01 would let text smuggle a CTCP; tabs become spaces first).
_DROP_RE = re.compile("[\x00\x01\x05-\x09\x0b\x0c\x0e\x10\x12-\x15\x17-\x1c\ud800-\udfff]")
_CODE_RE = re.compile(r"\x03[0-9]{0,2}(?:,[0-9]{1,2})?|\x04[0-9a-fA-F]{0,6}(?:,[0-9a-fA-F]{6})?")
_MIN_BUDGET = 4  # room for at least one code point


def split_message(
    target: str, text: str, *, command: str = "PRIVMSG", prefix_len: int, action: bool = False
) -> list[str]:
    """Cut `text` into chunks that each fit `:<prefix> <command> <target> :<chunk>\\r\\n`
    in 512 bytes, where `prefix_len` is the byte length of our `nick!user@host` as the
    server will relay it. Lines become separate messages (blank ones are dropped), C0
    controls other than mIRC codes are removed, long lines break at the last space that
    fits, else between graphemes (never inside a UTF-8 character or a colour code).
    With `action`, each chunk is wrapped as a CTCP ACTION."""
    if not _COMMAND_RE.fullmatch(command):
        raise LocalProtocolError(f"invalid IRC command {command!r}")
    overhead = prefix_len + len(_encode(f": {command} {_token(target, 'target')} :\r\n"))
    budget = LINE_MAX - overhead - (len("\x01ACTION \x01") if action else 0)
    if budget < _MIN_BUDGET:
        raise LocalProtocolError(f"no room for text to IRC target {target!r}")
    chunks: list[str] = []
    for line in _BREAK_RE.split(_DROP_RE.sub("", text.replace("\t", " "))):
        if line.strip():
            chunks.extend(_split_line(line, budget))
    return [f"\x01ACTION {chunk}\x01" for chunk in chunks] if action else chunks


def _split_line(line: str, budget: int) -> list[str]:
    out: list[str] = []
    rest = line
    while len(rest.encode()) > budget:
        fit = _fitting(rest, budget)
        space = rest.rfind(" ", 0, fit + 1)
        head = rest[:space].rstrip(" ") if space > 0 else ""
        if head:
            out.append(head)
            rest = rest[space + 1 :].lstrip(" ")
        else:
            cut = _cut_point(rest, fit)
            out.append(rest[:cut])
            rest = rest[cut:]
    if rest.strip():
        out.append(rest)
    return out


def _fitting(text: str, budget: int) -> int:
    """How many leading code points of `text` fit in `budget` UTF-8 bytes."""
    total = 0
    for i, char in enumerate(text):
        code = ord(char)
        total += 1 if code < 0x80 else 2 if code < 0x800 else 3 if code < 0x10000 else 4
        if total > budget:
            return i
    return len(text)


def _cut_point(text: str, fit: int) -> int:
    """The last grapheme boundary at or before `fit` that is not inside a colour
    code; `fit` itself (a code point boundary) if there is none."""
    inside = {i for m in _CODE_RE.finditer(text, 0, fit + 8) for i in range(m.start() + 1, m.end())}
    for cut in range(fit, 0, -1):
        if cut not in inside and _grapheme_boundary(text, cut):
            return cut
    return fit


def _is_regional(char: str) -> bool:
    return "\U0001f1e6" <= char <= "\U0001f1ff"


def _grapheme_boundary(text: str, i: int) -> bool:
    """A conservative subset of UAX #29: no break before combining marks, variation
    selectors, emoji modifiers and tags, around ZWJ, or inside a regional-indicator pair."""
    before, after = text[i - 1], text[i]
    if "\u200d" in (before, after) or unicodedata.category(after) in {"Mn", "Mc", "Me"}:
        return False
    if "\ufe00" <= after <= "\ufe0f" or "\U000e0000" <= after <= "\U000e01ef":
        return False
    if "\U0001f3fb" <= after <= "\U0001f3ff":
        return False
    if _is_regional(before) and _is_regional(after):
        run = 0
        while run < i and _is_regional(text[i - 1 - run]):
            run += 1
        return run % 2 == 0
    return True
