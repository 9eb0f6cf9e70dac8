"""The IRC plugin's shared vocabulary: ids, value types and the events of the protocol.

`protocol.IrcConnectionState` turns wire messages into these small frozen events (in the
manner of h11's `_events.py`); the slidge session and a future channel linker consume
them without touching the wire. Names compare under the server's CASEMAPPING, so the
folding function and the ISUPPORT record that says which mapping applies live here too.
Nothing in this module does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NewType

Nick = NewType("Nick", str)
Channel = NewType("Channel", str)

MessageKind = Literal["privmsg", "notice", "action"]
ModeKind = Literal["member", "list", "param", "flag"]

_RFC1459 = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\~", "abcdefghijklmnopqrstuvwxyz{}|^")
_STRICT = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ[]\\", "abcdefghijklmnopqrstuvwxyz{}|")
_ASCII = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def casefold(name: str, casemapping: str = "rfc1459") -> str:
    """Fold a nick or channel name the way the server compares them. rfc1459 (the
    default) also folds []\\~ to {}|^, strict-rfc1459 leaves ~ and ^ apart, ascii folds
    A-Z only; Unicode mappings (rfc7613, rfc8265, precis) fold with `str.lower`.
    An unknown mapping is treated as rfc1459, the protocol's default."""
    mapping = casemapping.lower()
    if mapping == "ascii":
        return name.translate(_ASCII)
    if mapping == "strict-rfc1459":
        return name.translate(_STRICT)
    if mapping in {"rfc7613", "rfc8265", "precis"}:
        return name.translate(_RFC1459).lower()
    return name.translate(_RFC1459)


@dataclass(frozen=True, slots=True)
class Prefix:
    """A message source: `nick!user@host`, or a server name (then `user`/`host` are None)."""

    nick: str
    user: str | None = None
    host: str | None = None

    @classmethod
    def parse(cls, source: str) -> Prefix:
        nick, _, host = source.partition("@")
        nick, _, user = nick.partition("!")
        return cls(nick, user or None, host or None)

    @property
    def is_server(self) -> bool:
        return self.user is None and self.host is None and "." in self.nick

    def __str__(self) -> str:
        user = f"!{self.user}" if self.user is not None else ""
        host = f"@{self.host}" if self.host is not None else ""
        return f"{self.nick}{user}{host}"


_PREFIX_RE = re.compile(r"\(([A-Za-z]*)\)(\S*)")
_ESCAPE_RE = re.compile(r"\\x([0-9A-Fa-f]{2})")


@dataclass(frozen=True, slots=True)
class ISupport:
    """What the server said in RPL_ISUPPORT (005), with the protocol's defaults until
    it does. `prefix` pairs channel member modes with their symbols, highest first;
    `chanmodes` are the A (list), B (always a parameter), C (parameter when set) and D
    (flag) mode groups."""

    chantypes: str = "#&"
    prefix: tuple[tuple[str, str], ...] = (("o", "@"), ("v", "+"))
    chanmodes: tuple[str, str, str, str] = ("b", "k", "l", "imnpst")
    casemapping: str = "rfc1459"
    nicklen: int | None = None
    network: str | None = None
    statusmsg: str = ""
    raw: Mapping[str, str] = field(default_factory=dict, hash=False)

    def updated(self, tokens: Iterable[str]) -> ISupport:
        """A copy with 005 tokens applied (`KEY=VALUE`, `KEY`, `-KEY` to unset)."""
        raw = dict(self.raw)
        for token in tokens:
            if token.startswith("-"):
                raw.pop(token[1:].upper(), None)
            elif token:
                key, _, value = token.partition("=")
                raw[key.upper()] = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), value)
        return ISupport.from_raw(raw)

    @classmethod
    def from_raw(cls, raw: Mapping[str, str]) -> ISupport:
        default = cls()
        prefix = default.prefix
        match = _PREFIX_RE.fullmatch(raw.get("PREFIX", ""))
        if match and len(match.group(1)) == len(match.group(2)):
            prefix = tuple(zip(match.group(1), match.group(2), strict=True))
        chanmodes = default.chanmodes
        if "CHANMODES" in raw:
            groups = [*raw["CHANMODES"].split(",")[:4], "", "", "", ""]
            chanmodes = (groups[0], groups[1], groups[2], groups[3])
        nicklen = raw.get("NICKLEN", "")
        return cls(
            chantypes=raw.get("CHANTYPES", default.chantypes),
            prefix=prefix,
            chanmodes=chanmodes,
            casemapping=raw.get("CASEMAPPING", default.casemapping).lower() or "rfc1459",
            nicklen=int(nicklen) if nicklen.isdecimal() else None,
            network=raw.get("NETWORK") or None,
            statusmsg=raw.get("STATUSMSG", ""),
            raw=dict(raw),
        )

    def casefold(self, name: str) -> str:
        return casefold(name, self.casemapping)

    def is_channel(self, name: str) -> bool:
        return bool(name) and name[0] in self.chantypes

    def mode_of_symbol(self, symbol: str) -> str | None:
        return next((mode for mode, sym in self.prefix if sym == symbol), None)

    def parse_modes(self, modes: str, args: Sequence[str]) -> tuple[ModeChange, ...]:
        """Pair a MODE string with its arguments: member (PREFIX) and A/B modes always
        take one, C modes only when set, D and unknown modes never."""
        member = {mode for mode, _ in self.prefix}
        lists, always, when_set, _ = self.chanmodes
        changes: list[ModeChange] = []
        remaining = list(args)
        adding = True
        for letter in modes:
            if letter in "+-":
                adding = letter == "+"
                continue
            kind: ModeKind = "flag"
            if letter in member:
                kind = "member"
            elif letter in lists:
                kind = "list"
            elif letter in always or (adding and letter in when_set):
                kind = "param"
            arg = remaining.pop(0) if kind != "flag" and remaining else None
            changes.append(ModeChange(adding, letter, arg, kind))
        return tuple(changes)

    def split_member(self, entry: str) -> Member:
        """Split a NAMES entry (`@+nick`, or `@nick!user@host` with userhost-in-names)."""
        symbols = {sym for _, sym in self.prefix}
        i = 0
        while i < len(entry) and entry[i] in symbols:
            i += 1
        return Member(Nick(entry[i:].partition("!")[0]), entry[:i])


@dataclass(frozen=True, slots=True)
class Member:
    """A channel member and its prefix symbols, highest first (`@+` with multi-prefix)."""

    nick: Nick
    prefixes: str = ""


@dataclass(frozen=True, slots=True)
class ModeChange:
    """One mode letter of a MODE line. `kind` is "member" for prefix modes (+o nick),
    "list" for A modes (+b mask), "param" for B/C modes (+k key), "flag" for D modes."""

    adding: bool
    mode: str
    arg: str | None = None
    kind: ModeKind = "flag"


# --- events --------------------------------------------------------------------------
# `own` is True when the event is about us (our JOIN, our nick change, our echo).


@dataclass(frozen=True, slots=True)
class Registered:
    """RPL_WELCOME: we are in, under `nick` (which may differ from the one we asked for)."""

    nick: Nick
    server: str
    message: str


@dataclass(frozen=True, slots=True)
class NickRetry:
    """The server refused our nick during registration; we asked for `retry` instead."""

    rejected: Nick
    retry: Nick
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class RegistrationFailed:
    reason: str


@dataclass(frozen=True, slots=True)
class CapsChanged:
    """The set of enabled capabilities, after negotiation or CAP ACK/NEW/DEL."""

    enabled: frozenset[str]


@dataclass(frozen=True, slots=True)
class SaslResult:
    success: bool
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class ISupportChanged:
    isupport: ISupport


@dataclass(frozen=True, slots=True)
class MessageReceived:
    """PRIVMSG, NOTICE or CTCP ACTION. `channel` is set when sent to a channel."""

    sender: Prefix
    target: str
    text: str
    kind: MessageKind
    channel: Channel | None
    own: bool = False
    time: datetime | None = None
    msgid: str | None = None
    account: str | None = None
    history: bool = False
    """Part of a history batch (IRCv3 `chathistory`, InspIRCd's history on join): an
    old message, whatever its age."""


@dataclass(frozen=True, slots=True)
class CtcpRequest:
    """A CTCP request other than ACTION; `answered` when we already queued the reply."""

    sender: Prefix
    target: str
    command: str
    args: str
    answered: bool


@dataclass(frozen=True, slots=True)
class CtcpReply:
    sender: Prefix
    command: str
    args: str


@dataclass(frozen=True, slots=True)
class Joined:
    """JOIN; `account`/`realname` come from extended-join or the account tag."""

    channel: Channel
    nick: Nick
    mask: Prefix
    account: str | None = None
    realname: str | None = None
    own: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Parted:
    channel: Channel
    nick: Nick
    reason: str
    own: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Quit:
    nick: Nick
    reason: str
    own: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Kicked:
    """`nick` was kicked by `by`; `own` when we were the one kicked."""

    channel: Channel
    nick: Nick
    by: Nick
    reason: str
    own: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class NickChanged:
    old: Nick
    new: Nick
    own: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class Topic:
    """A topic: `live` for a TOPIC change, otherwise RPL_TOPIC (332) on join."""

    channel: Channel
    text: str
    by: str | None = None
    live: bool = False
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class TopicSetBy:
    """RPL_TOPICWHOTIME (333): who set the current topic and when."""

    channel: Channel
    by: str
    set_at: datetime | None


@dataclass(frozen=True, slots=True)
class ChannelMembers:
    """The complete NAMES list (all 353 lines up to 366). `masks`: the `nick!user@host`
    of the members listed that way (userhost-in-names)."""

    channel: Channel
    members: tuple[Member, ...]
    masks: tuple[Prefix, ...] = ()


@dataclass(frozen=True, slots=True)
class ChannelModeChanged:
    channel: Channel
    by: str | None
    changes: tuple[ModeChange, ...]
    time: datetime | None = None


@dataclass(frozen=True, slots=True)
class UserModeChanged:
    nick: Nick
    modes: str


@dataclass(frozen=True, slots=True)
class Invited:
    channel: Channel
    by: Nick
    nick: Nick


@dataclass(frozen=True, slots=True)
class AwayChanged:
    """AWAY (away-notify): `nick` went away with `message`, or came back (None)."""

    nick: Nick
    message: str | None
    own: bool = False


@dataclass(frozen=True, slots=True)
class WhoEntry:
    """RPL_WHOREPLY (352), or the WHOX reply (354) to the client's own query: a member
    of `channel` (or `*`), its mask and away flag; with WHOX also its services account
    (`account`: "" when logged out, None when the reply does not say)."""

    channel: str
    mask: Prefix
    away: bool
    realname: str = ""
    account: str | None = None


@dataclass(frozen=True, slots=True)
class ServerError:
    """ERROR: the server is closing the connection."""

    message: str


@dataclass(frozen=True, slots=True)
class PongReceived:
    token: str


@dataclass(frozen=True, slots=True)
class ServerReply:
    """Any numeric not handled above. `params` excludes our own nick (the first one)."""

    code: str
    params: tuple[str, ...]
    source: str | None = None

    @property
    def text(self) -> str:
        return self.params[-1] if self.params else ""


@dataclass(frozen=True, slots=True)
class Unhandled:
    """A command this state machine does not interpret (ACCOUNT, CHGHOST, BATCH...)."""

    command: str
    params: tuple[str, ...]
    source: str | None = None


Event = (
    Registered
    | NickRetry
    | RegistrationFailed
    | CapsChanged
    | SaslResult
    | ISupportChanged
    | MessageReceived
    | CtcpRequest
    | CtcpReply
    | Joined
    | Parted
    | Quit
    | Kicked
    | NickChanged
    | Topic
    | TopicSetBy
    | ChannelMembers
    | ChannelModeChanged
    | UserModeChanged
    | Invited
    | AwayChanged
    | WhoEntry
    | ServerError
    | PongReceived
    | ServerReply
    | Unhandled
)
