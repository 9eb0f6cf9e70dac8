"""The IRC wire protocol without I/O: the line codec, message splitting and registration.

`parse_line` validates a received line once, at the edge, and turns it into a `Message`;
`serialize` refuses to put anything on the wire that could smuggle a second command;
`split_message` cuts outgoing text into PRIVMSG/NOTICE-sized chunks; and
`IrcConnectionState` is fed parsed messages and answers with neutral events plus the
lines to send, in the manner of h11's `Connection` (the caller owns the socket and the
clock). The errors form one small tree that separates the two sides' faults::

    IrcError
    ├── IrcProtocolError (ValueError)    the server sent a line that is not a message
    └── LocalProtocolError (ValueError)  we were about to send an invalid line: a bug,
                                         or hostile input that must not reach the wire
"""

from __future__ import annotations

import base64
import re
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from . import events as ev
from .events import Channel, Event, ISupport, Member, MessageKind, Nick, Prefix

LINE_MAX = 512  # bytes, CR LF included, message tags excluded (RFC 1459, IRCv3)
TAGS_MAX = 8191  # bytes for the tag section, '@' and trailing space included (IRCv3)
DEFAULT_CAPS = frozenset(
    "account-tag cap-notify extended-join message-tags multi-prefix server-time"
    " userhost-in-names".split()
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


# --- registration and the event stream -----------------------------------------------

_NICK_ERRORS = {"432": "erroneous", "433": "in use", "436": "collision", "437": "unavailable"}
_NICK_ATTEMPTS = 11  # nick_, nick__, then nick1 ... nick9
_SASL_CHUNK = 400
_CTCP_MAX = 300  # bytes of a CTCP PING token we echo back
Phase = Literal["cap-ls", "cap-req", "sasl", "registering", "registered", "closed"]
_Handler = Callable[["IrcConnectionState", Message, Prefix], list[Event]]


def nick_candidate(nick: str, attempt: int) -> str:
    """The nick to try after `attempt` refusals (1-based): nick_, nick__, nick1..."""
    return nick + "_" * attempt if attempt <= 2 else f"{nick}{attempt - 2}"


def message_time(tags: Mapping[str, str]) -> datetime | None:
    """The IRCv3 `server-time` tag as an aware datetime, or None."""
    try:
        value = datetime.fromisoformat(tags["time"])
    except (KeyError, ValueError):
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


class IrcConnectionState:
    """Registration, CAP negotiation, SASL PLAIN and the stream of neutral events for
    one IRC connection, without I/O. Send `initial_lines()` once connected, then feed
    every parsed message to `receive()` and send what `data_to_send()` returns."""

    def __init__(
        self,
        nick: str,
        username: str,
        realname: str,
        *,
        password: str | None = None,
        sasl_plain: tuple[str, str] | None = None,
        wanted_caps: frozenset[str] = DEFAULT_CAPS,
        version: str = "Passerelle",
    ) -> None:
        self.nick = Nick(nick)
        self.isupport = ISupport()
        self.available_caps: dict[str, str] = {}
        self.enabled_caps: set[str] = set()
        self.phase: Phase = "cap-ls"
        self.server_name = ""
        self._wanted_nick, self._username, self._realname = nick, username, realname
        self._password, self._sasl, self._wanted_caps = password, sasl_plain, wanted_caps
        self._version = version
        self._pending_reqs = 0
        self._nick_attempts = 0
        self._names: dict[str, tuple[Channel, list[Member]]] = {}
        self._outbox: list[bytes] = []

    @property
    def registered(self) -> bool:
        return self.phase == "registered"

    def initial_lines(self) -> list[bytes]:
        """CAP LS 302, PASS, NICK and USER; raises LocalProtocolError on bad settings."""
        lines = [Message.of("CAP", "LS", "302")]
        if self._password is not None:
            lines.append(Message.of("PASS", self._password))
        lines.append(Message.of("NICK", self.nick))
        lines.append(Message.of("USER", self._username, "0", "*", self._realname))
        return [serialize(line) for line in lines]

    def data_to_send(self) -> list[bytes]:
        """Lines queued by `receive()`, oldest first; the queue is emptied."""
        out, self._outbox = self._outbox, []
        return out

    def casefold(self, name: str) -> str:
        return self.isupport.casefold(name)

    def is_own(self, nick: str) -> bool:
        return self.casefold(nick) == self.casefold(self.nick)

    def receive(self, msg: Message) -> list[Event]:
        """Interpret one message from the server. Never raises: a message a handler
        cannot use (too few params) becomes `Unhandled`."""
        sender = Prefix.parse(msg.source or self.server_name)
        if msg.command.isdigit():
            handler = _NUMERICS.get(msg.command, IrcConnectionState._on_numeric)
        else:
            handler = _COMMANDS.get(msg.command, IrcConnectionState._on_unknown)
        if len(msg.params) < _MIN_PARAMS.get(msg.command, 0):
            handler = IrcConnectionState._on_unknown
        return handler(self, msg, sender)

    def _send(self, command: str, *params: str) -> bool:
        try:
            self._outbox.append(serialize(Message.of(command, *params)))
        except LocalProtocolError:
            return False
        return True

    # registration

    def _on_cap(self, msg: Message, sender: Prefix) -> list[Event]:
        sub, events = msg.params[1].upper(), list[Event]()
        caps = msg.params[-1].split() if len(msg.params) > 2 else []
        if sub in {"LS", "NEW"}:
            for cap in caps:
                name, _, value = cap.partition("=")
                self.available_caps[name] = value
            more = len(msg.params) > 3 and msg.params[2] == "*"
            if sub == "LS" and not more and self.phase == "cap-ls":
                self._request_caps(events)
            elif sub == "NEW" and self.registered:
                self._req(sorted((self._wanted_caps & set(caps)) - self.enabled_caps))
        elif sub in {"ACK", "NAK", "DEL"}:
            for cap in caps:
                if sub == "DEL":
                    self.available_caps.pop(cap, None)
                if sub == "DEL" or cap.startswith("-"):
                    self.enabled_caps.discard(cap.removeprefix("-"))
                elif sub == "ACK":
                    self.enabled_caps.add(cap)
            if sub != "DEL" and self.phase == "cap-req":
                self._pending_reqs -= 1
                if self._pending_reqs <= 0:
                    self._after_caps(events)
            else:
                events.append(ev.CapsChanged(frozenset(self.enabled_caps)))
        return events

    def _request_caps(self, events: list[Event]) -> None:
        wanted = set(self._wanted_caps & self.available_caps.keys())
        mechanisms = self.available_caps.get("sasl")
        if self._sasl and mechanisms is not None:
            if not mechanisms or "PLAIN" in mechanisms.upper().split(","):
                wanted.add("sasl")
        self._pending_reqs = self._req(sorted(wanted))
        if self._pending_reqs:
            self.phase = "cap-req"
        else:
            self._after_caps(events)

    def _req(self, caps: Sequence[str]) -> int:
        """Send CAP REQ lines of at most ~400 bytes; return how many were sent."""
        lines: list[list[str]] = []
        for cap in caps:
            if not lines or len(" ".join([*lines[-1], cap])) > 400:
                lines.append([])
            lines[-1].append(cap)
        return sum(self._send("CAP", "REQ", " ".join(line)) for line in lines)

    def _after_caps(self, events: list[Event]) -> None:
        if self._sasl and "sasl" in self.enabled_caps:
            self.phase = "sasl"
            self._send("AUTHENTICATE", "PLAIN")
            return
        if self._sasl:
            events.append(ev.SaslResult(False, "", "the server offers no SASL PLAIN"))
        self._end_caps(events)

    def _end_caps(self, events: list[Event]) -> None:
        if self.phase in {"cap-ls", "cap-req", "sasl"}:
            self._send("CAP", "END")
            self.phase = "registering"
            events.append(ev.CapsChanged(frozenset(self.enabled_caps)))

    def _on_authenticate(self, msg: Message, sender: Prefix) -> list[Event]:
        if msg.params[0] != "+" or self.phase != "sasl" or self._sasl is None:
            return []
        user, password = self._sasl
        payload = base64.b64encode(f"{user}\0{user}\0{password}".encode()).decode()
        for start in range(0, len(payload), _SASL_CHUNK):
            self._send("AUTHENTICATE", payload[start : start + _SASL_CHUNK])
        if len(payload) % _SASL_CHUNK == 0:  # tells the server the payload is complete
            self._send("AUTHENTICATE", "+")
        return []

    def _on_sasl_done(self, msg: Message, sender: Prefix) -> list[Event]:
        events: list[Event] = []
        if self.phase == "sasl":
            ok = msg.command in {"903", "907"}
            events.append(ev.SaslResult(ok, msg.command, msg.params[-1]))
            self._end_caps(events)
        return events

    def _on_welcome(self, msg: Message, sender: Prefix) -> list[Event]:
        events: list[Event] = []
        if self._sasl and self.phase in {"cap-ls", "cap-req", "sasl"}:  # CAP ignored
            events.append(ev.SaslResult(False, "", "registered without CAP negotiation"))
        self.phase = "registered"
        self.nick = Nick(msg.params[0])
        self.server_name = sender.nick
        return [*events, ev.Registered(self.nick, self.server_name, msg.params[-1])]

    def _on_isupport(self, msg: Message, sender: Prefix) -> list[Event]:
        self.isupport = self.isupport.updated(msg.params[1:-1])
        return [ev.ISupportChanged(self.isupport)]

    def _on_nick_error(self, msg: Message, sender: Prefix) -> list[Event]:
        if self.registered:
            return self._on_numeric(msg, sender)
        rejected = Nick(msg.params[1] if len(msg.params) > 2 else self.nick)
        self._nick_attempts += 1
        if self._nick_attempts > _NICK_ATTEMPTS:
            return [ev.RegistrationFailed(f"nick {self._wanted_nick!r} and its variants refused")]
        retry = Nick(nick_candidate(self._wanted_nick, self._nick_attempts))
        self.nick = retry
        self._send("NICK", retry)
        return [ev.NickRetry(rejected, retry, msg.command, _NICK_ERRORS[msg.command])]

    # the event stream

    def _on_ping(self, msg: Message, sender: Prefix) -> list[Event]:
        self._send("PONG", *msg.params)
        return []

    def _on_pong(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.PongReceived(msg.params[-1] if msg.params else "")]

    def _on_error(self, msg: Message, sender: Prefix) -> list[Event]:
        self.phase = "closed"
        return [ev.ServerError(msg.params[-1] if msg.params else "")]

    def _channel(self, target: str) -> Channel | None:
        """The channel a message went to, also when sent to its ops only (`@#chan`)."""
        if not self.isupport.is_channel(target):
            target = target.lstrip(self.isupport.statusmsg)
        return Channel(target) if self.isupport.is_channel(target) else None

    def _on_text(self, msg: Message, sender: Prefix) -> list[Event]:
        target, text = msg.params[0], msg.params[1]
        notice = msg.command == "NOTICE"
        kind: MessageKind = "notice" if notice else "privmsg"
        if text.startswith("\x01"):
            command, _, args = text[1:].removesuffix("\x01").partition(" ")
            if command.upper() != "ACTION":
                return self._ctcp(sender, target, command.upper(), args, notice)
            kind, text = "action", args
        own, tags = self.is_own(sender.nick), msg.tags
        channel, time = self._channel(target), message_time(tags)
        msgid, account = tags.get("msgid"), tags.get("account")
        return [ev.MessageReceived(sender, target, text, kind, channel, own, time, msgid, account)]

    def _ctcp(
        self, sender: Prefix, target: str, command: str, args: str, notice: bool
    ) -> list[Event]:
        if notice:
            return [ev.CtcpReply(sender, command, args)]
        answer = {"VERSION": self._version, "PING": args}.get(command)
        answered = False
        if answer is not None and sender.user is not None and not self.is_own(sender.nick):
            answer = answer.encode(errors="ignore")[:_CTCP_MAX].decode(errors="ignore")
            answered = self._send("NOTICE", sender.nick, f"\x01{command} {answer}\x01")
        return [ev.CtcpRequest(sender, target, command, args, answered)]

    def _on_join(self, msg: Message, sender: Prefix) -> list[Event]:
        extended = len(msg.params) >= 3
        account = msg.params[1] if extended else msg.tags.get("account", "*")
        return [
            ev.Joined(
                Channel(channel),
                Nick(sender.nick),
                sender,
                account=None if account == "*" else account,
                realname=msg.params[2] if extended else None,
                own=self.is_own(sender.nick),
                time=message_time(msg.tags),
            )
            for channel in msg.params[0].split(",")
            if channel
        ]

    def _on_part(self, msg: Message, sender: Prefix) -> list[Event]:
        reason = msg.params[1] if len(msg.params) > 1 else ""
        own, time = self.is_own(sender.nick), message_time(msg.tags)
        return [
            ev.Parted(Channel(channel), Nick(sender.nick), reason, own, time)
            for channel in msg.params[0].split(",")
            if channel
        ]

    def _on_quit(self, msg: Message, sender: Prefix) -> list[Event]:
        reason = msg.params[0] if msg.params else ""
        return [
            ev.Quit(Nick(sender.nick), reason, self.is_own(sender.nick), message_time(msg.tags))
        ]

    def _on_kick(self, msg: Message, sender: Prefix) -> list[Event]:
        channel, victim = Channel(msg.params[0]), Nick(msg.params[1])
        reason = msg.params[2] if len(msg.params) > 2 else ""
        time = message_time(msg.tags)
        return [ev.Kicked(channel, victim, Nick(sender.nick), reason, self.is_own(victim), time)]

    def _on_nick(self, msg: Message, sender: Prefix) -> list[Event]:
        own = self.is_own(sender.nick)
        new = Nick(msg.params[0])
        if own:
            self.nick = new
        return [ev.NickChanged(Nick(sender.nick), new, own, message_time(msg.tags))]

    def _on_topic(self, msg: Message, sender: Prefix) -> list[Event]:
        text, time = msg.params[1], message_time(msg.tags)
        return [ev.Topic(Channel(msg.params[0]), text, sender.nick, live=True, time=time)]

    def _on_rpl_topic(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Topic(Channel(msg.params[1]), msg.params[2])]

    def _on_topic_who_time(self, msg: Message, sender: Prefix) -> list[Event]:
        set_at = None
        if len(msg.params) > 3 and msg.params[3].isdecimal() and len(msg.params[3]) < 12:
            set_at = datetime.fromtimestamp(int(msg.params[3]), UTC)
        by = Prefix.parse(msg.params[2]).nick
        return [ev.TopicSetBy(Channel(msg.params[1]), by, set_at)]

    def _on_names(self, msg: Message, sender: Prefix) -> list[Event]:
        channel = msg.params[-2]
        _, members = self._names.setdefault(self.casefold(channel), (Channel(channel), []))
        members.extend(self.isupport.split_member(entry) for entry in msg.params[-1].split())
        return []

    def _on_end_of_names(self, msg: Message, sender: Prefix) -> list[Event]:
        key = self.casefold(msg.params[1])
        channel, members = self._names.pop(key, (Channel(msg.params[1]), []))
        return [ev.ChannelMembers(channel, tuple(members))]

    def _on_mode(self, msg: Message, sender: Prefix) -> list[Event]:
        target = msg.params[0]
        modes = msg.params[1] if len(msg.params) > 1 else ""
        if not self.isupport.is_channel(target):
            return [ev.UserModeChanged(Nick(target), modes)]
        changes = self.isupport.parse_modes(modes, msg.params[2:])
        by = sender.nick or None
        return [ev.ChannelModeChanged(Channel(target), by, changes, message_time(msg.tags))]

    def _on_invite(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Invited(Channel(msg.params[1]), Nick(sender.nick), Nick(msg.params[0]))]

    def _on_numeric(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.ServerReply(msg.command, msg.params[1:], msg.source)]

    def _on_unknown(self, msg: Message, sender: Prefix) -> list[Event]:
        return [ev.Unhandled(msg.command, msg.params, msg.source)]


_S = IrcConnectionState
_COMMANDS: dict[str, _Handler] = {
    "CAP": _S._on_cap,
    "AUTHENTICATE": _S._on_authenticate,
    "PING": _S._on_ping,
    "PONG": _S._on_pong,
    "ERROR": _S._on_error,
    "PRIVMSG": _S._on_text,
    "NOTICE": _S._on_text,
    "JOIN": _S._on_join,
    "PART": _S._on_part,
    "QUIT": _S._on_quit,
    "KICK": _S._on_kick,
    "NICK": _S._on_nick,
    "TOPIC": _S._on_topic,
    "MODE": _S._on_mode,
    "INVITE": _S._on_invite,
}
_NUMERICS: dict[str, _Handler] = {
    "001": _S._on_welcome,
    "005": _S._on_isupport,
    "332": _S._on_rpl_topic,
    "333": _S._on_topic_who_time,
    "353": _S._on_names,
    "366": _S._on_end_of_names,
    **dict.fromkeys(_NICK_ERRORS, _S._on_nick_error),
    **dict.fromkeys(("903", "904", "905", "906", "907"), _S._on_sasl_done),
}
# Fewer params than this and the handler cannot make sense of the message.
_MIN_PARAMS = {
    "CAP": 2, "AUTHENTICATE": 1, "PRIVMSG": 2, "NOTICE": 2, "JOIN": 1, "PART": 1,
    "KICK": 2, "NICK": 1, "TOPIC": 2, "MODE": 1, "INVITE": 2, "001": 1, "332": 3,
    "333": 3, "353": 3, "366": 2, "432": 1, "433": 1, "436": 1, "437": 1, "903": 1,
    "904": 1, "905": 1, "906": 1, "907": 1,
}  # fmt: skip
