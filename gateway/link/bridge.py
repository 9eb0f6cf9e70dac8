"""The pure rules of a channel ↔ room link: names, addresses, echoes and message text.

Everything the link decides without I/O lives here, so it is tested as tables: the IRC
nick an XMPP occupant gets (``{nick}[x]``, reduced to what IRC allows and to the server's
NICKLEN), the MUC nick an IRC user gets and the suffixes tried after a 409 conflict, the
JIDs of our occupants (``alice%irc.example.net@link.example.org``), whether a room message
is one of our own (by occupant JID domain, by nick, by origin-id), what an XMPP message
becomes on IRC (``/me``, corrections, replies, attachments) and what a relay bot writes
(``<bob> text``), and what a XEP-0410 self-ping answer means. No clock, no sockets.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import re
import unicodedata
from collections.abc import Callable, Container, Iterator, Set
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Literal, TypeVar

from legacy_plugins.irc.events import Channel, Nick, casefold
from legacy_plugins.irc.translate import (
    NICK_MAX,
    AddressError,
    AddressMapping,
    ChannelAddress,
    OutgoingText,
    UserAddress,
    correction_text,
    escape_localpart,
    xmpp_to_irc,
)

__all__ = [
    "PUPPET_SUFFIX",
    "OriginIds",
    "OutgoingText",
    "Recent",
    "SelfPing",
    "channel_localpart",
    "irc_nick",
    "is_own_occupant",
    "link_id",
    "looks_like_puppet",
    "muc_nick",
    "muc_nick_candidates",
    "outgoing_text",
    "puppet_localpart",
    "relay_text",
    "replay_after",
    "self_ping_verdict",
    "strip_fallback",
]

PUPPET_SUFFIX = "[irc]"
"""Added to an IRC user's MUC nick when an XMPP occupant already holds it (409)."""
_NICK_TRIES = 10
_NOT_IN_IRC_NICK = re.compile(r"[^A-Za-z0-9\[\]\\`_^{|}-]")
_BAD_FIRST = "0123456789-"
QUOTE_MAX = 40  # characters of the quoted message in an IRC reply


def link_id(muc: str, host: str, port: int, tls: bool, channel: str) -> str:
    """The one name of a link, as admins see and type it: ``room ↔ ircs://host:port/#chan``."""
    scheme = "ircs" if tls else "irc"
    return f"{muc} ↔ {scheme}://{host}:{port}/{channel}"


# --- nicks -------------------------------------------------------------------------------


def _ascii_nick_chars(text: str) -> str:
    """`text` reduced to the characters IRC allows in a nick (accents dropped, spaces
    become underscores)."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return _NOT_IN_IRC_NICK.sub("", plain.replace(" ", "_"))


def irc_nick(template: str, muc_nick: str, nicklen: int | None = None) -> Nick:
    """The IRC nick of the XMPP occupant `muc_nick`: the template applied to the nick
    reduced to IRC's characters, cut to the server's NICKLEN by shortening the occupant's
    part (so the template's marker, e.g. ``[x]``, stays visible)."""
    limit = min(nicklen or NICK_MAX, NICK_MAX)
    base = _ascii_nick_chars(muc_nick) or "xmpp"
    while True:
        nick = _ascii_nick_chars(template.format(nick=base))
        if not nick or nick[0] in _BAD_FIRST:
            nick = "x" + nick
        if len(nick) <= limit or len(base) <= 1:
            return Nick(nick[:limit])
        base = base[: max(1, len(base) - (len(nick) - limit))]


def muc_nick(template: str, nick: str) -> str:
    """The MUC nick of the IRC user `nick`."""
    return template.format(nick=nick).strip() or nick


def muc_nick_candidates(nick: str) -> Iterator[str]:
    """MUC nicks to try for an IRC user, after each 409 conflict: ``alice``,
    ``alice[irc]``, ``alice[irc]2``… (ten at most)."""
    yield nick
    yield nick + PUPPET_SUFFIX
    for n in range(2, _NICK_TRIES):
        yield f"{nick}{PUPPET_SUFFIX}{n}"


# --- addresses ---------------------------------------------------------------------------


def _hashed(name: str) -> str:
    return "~" + hashlib.sha256(name.encode()).hexdigest()[:12]


def puppet_localpart(server: str, nick: str, casemapping: str = "rfc1459") -> str:
    """The JID localpart of IRC user `nick` on `server`: ``alice%irc.example.net``
    (Biboumi's form, case-folded with the server's CASEMAPPING). A nick no JID can hold
    as-is gets a stable hash instead."""
    mapping = AddressMapping(casemapping=casemapping)
    try:
        return mapping.render(UserAddress(server, Nick(nick)))
    except AddressError:
        return escape_localpart(f"{_hashed(casefold(nick, casemapping))}%{server.lower()}")


def channel_localpart(server: str, channel: str, casemapping: str = "rfc1459") -> str:
    """The JID localpart of the listener occupant that reads a room for `channel`:
    ``#lounge%irc.example.net``."""
    mapping = AddressMapping(casemapping=casemapping)
    try:
        return mapping.render(ChannelAddress(server, Channel(channel)))
    except AddressError:
        return escape_localpart(f"{_hashed(casefold(channel, casemapping))}%{server.lower()}")


# --- echoes ------------------------------------------------------------------------------

_K = TypeVar("_K")
_V = TypeVar("_V")


class Recent(Generic[_K, _V]):
    """A bounded mapping that forgets the oldest entries: ids we sent, bodies of recent
    messages (for corrections and reply quotes)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: collections.OrderedDict[_K, _V] = collections.OrderedDict()

    def put(self, key: _K, value: _V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)

    def get(self, key: _K) -> _V | None:
        return self._items.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[_K, _V]]:
        """Oldest first."""
        return list(self._items.items())


class OriginIds:
    """The origin-ids our occupants put on their messages, signed with a key only this
    component knows (derived from its secret): ``pl-<nonce>-<mac>``. An id is recognised
    as ours from the id alone — in the room's MAM archive after a restart too, when no
    memory of what was sent is left. Anyone can copy an id they saw, but that only
    keeps their own message from reaching IRC."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"passerelle link origin-id\0" + secret.encode()).digest()

    def _mac(self, nonce: str) -> str:
        return hmac.new(self._key, nonce.encode(), hashlib.sha256).hexdigest()[:16]

    def make(self, nonce: str) -> str:
        """The origin-id for a message with a fresh random `nonce` (hex)."""
        return f"pl-{nonce}-{self._mac(nonce)}"

    def __contains__(self, origin_id: object) -> bool:
        if not isinstance(origin_id, str) or not origin_id.startswith("pl-"):
            return False
        nonce, _, mac = origin_id[3:].rpartition("-")
        return bool(nonce) and hmac.compare_digest(mac, self._mac(nonce))


def looks_like_puppet(template: str, nick: str, fold: Callable[[str], str]) -> bool:
    """Whether IRC nick `nick` has the shape `template` gives our XMPP users' puppets
    (``dave[x]`` for ``{nick}[x]``). A template with no marker around ``{nick}`` fits
    every nick, so nothing is recognised that way."""
    before, _, after = template.partition("{nick}")
    before, after = fold(_ascii_nick_chars(before)), fold(_ascii_nick_chars(after))
    if not before and not after:
        return False
    folded = fold(nick)
    return (
        len(folded) > len(before) + len(after)
        and folded.startswith(before)
        and folded.endswith(after)
    )


def replay_after(
    *,
    mark_msgid: str | None,
    mark_time: datetime | None,
    msgid: str | None,
    time: datetime | None,
    passed: bool,
) -> tuple[bool, bool]:
    """Whether a line of the IRC server's history on join is new to the link, and whether
    the link's mark has now been passed (the lines after it in this replay are new).

    The mark is the last channel line the link handled. The replay is in order: the mark
    itself (same msgid) is passed and not new; without it in the replay (it scrolled
    out, or lines carry no msgid), a line is new when its server-time is later than the
    mark's. History times may be cut to the second (InspIRCd 3), so a line said in the
    same second as the mark but not found by msgid is taken as old: a line may be lost
    rather than said twice. With no mark at all, nothing in the history is new."""
    if passed:
        return True, True
    if mark_msgid is not None and msgid == mark_msgid:
        return False, True
    if mark_time is not None and time is not None and time > mark_time:
        return True, True
    return False, False


def is_own_occupant(
    *,
    nick: str,
    real_jid: str | None,
    origin_id: str | None,
    our_domain: str,
    our_nicks: Set[str],
    our_ids: Container[str],
) -> bool:
    """Whether a room message (or presence) comes from one of our own occupants — an
    IRC user's puppet or a listener — and must not be relayed back. Any one sign is
    enough: the occupant's real JID is on our domain (visible in non-anonymous rooms or
    to moderators), the nick is one our occupants hold, or the origin-id is one we
    sent (which also catches a puppet left over from before a restart)."""
    if real_jid is not None:
        domain = real_jid.partition("/")[0].rpartition("@")[2]
        if domain.lower() == our_domain:
            return True
    if nick in our_nicks:
        return True
    return origin_id is not None and origin_id in our_ids


# --- text --------------------------------------------------------------------------------


def strip_fallback(body: str, ranges: list[tuple[int, int]]) -> str:
    """`body` without the fallback text of a reply (XEP-0428 ranges, in code points)."""
    keep = [True] * len(body)
    for start, end in ranges:
        for i in range(max(0, start), min(len(body), end)):
            keep[i] = False
    return "".join(char for char, kept in zip(body, keep, strict=True) if kept).strip()


@dataclass(frozen=True, slots=True)
class Reply:
    """What an XMPP reply points at, as far as the link knows it."""

    nick: str
    """How the replied-to person is called on IRC."""
    quote: str | None = None
    """The start of the replied-to message, if the link saw it."""


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= QUOTE_MAX else line[: QUOTE_MAX - 1].rstrip() + "…"


def outgoing_text(
    body: str,
    *,
    corrected: str | None = None,
    reply: Reply | None = None,
    attachment: str | None = None,
) -> OutgoingText | None:
    """What an XMPP message becomes on IRC, or None if nothing is left to send.

    `corrected` is the text of the message a correction (XEP-0308) replaces: IRC gets a
    short correction line (``s/old/new/``). A `reply` is prefixed with the replied-to
    nick and a short quote. An `attachment` URL the body lacks is appended."""
    text = body.strip()
    if attachment and attachment not in text:
        text = f"{text} {attachment}".strip()
    if not text:
        return None
    if corrected is not None:
        return OutgoingText(correction_text(corrected, text))
    out = xmpp_to_irc(text)
    if reply is not None and not out.action:
        quote = f"«{_short(reply.quote)}» " if reply.quote else ""
        out = OutgoingText(f"{reply.nick}: {quote}{out.text}")
    return out


def relay_text(nick: str, out: OutgoingText) -> str:
    """What the relay bot writes for `nick`: ``<bob> text`` per line, ``* bob text`` for
    an action. Line breaks stay: the splitter sends each line as its own PRIVMSG."""
    lines = [line for line in out.text.splitlines() if line.strip()]
    if out.action:
        return "\n".join(f"* {nick} {line}" for line in lines)
    return "\n".join(f"<{nick}> {line}" for line in lines)


# --- XEP-0410 ----------------------------------------------------------------------------

SelfPing = Literal["joined", "rejoin", "unknown"]
_STILL_JOINED = frozenset({"service-unavailable", "feature-not-implemented"})
_ASK_LATER = frozenset({"remote-server-not-found", "remote-server-timeout", "timeout"})


def self_ping_verdict(error: str | None) -> SelfPing:
    """XEP-0410: what the answer to a ping to our own occupant JID means. A result, or an
    error from the occupant (our component) that it cannot answer pings, means we are
    joined; a timeout or an unreachable server tells nothing; any other error (the room's
    ``not-acceptable``: you are not an occupant) means the room forgot us."""
    if error is None or error in _STILL_JOINED:
        return "joined"
    if error in _ASK_LATER:
        return "unknown"
    return "rejoin"
