"""Pure mappings between IRC values and their XMPP-side counterparts.

Two mappings live here. Channel member modes become MUC roles and affiliations the way
Biboumi does it, so users moving from Biboumi see the same thing. And IRC entities get
Biboumi-compatible JID localparts: `#chan%irc.example.net` for a channel,
`nick%irc.example.net` for a user, `irc.example.net` for the server itself; with a
`fixed_server`, just `#chan` and `nick`. Localparts are XEP-0106-escaped where a JID
cannot hold a character (`&local` becomes `\\26local`). XMPP servers case-fold
localparts, so the mapping is case-safe: names are folded with the IRC server's
CASEMAPPING (IRC names are case-insensitive, so the folded name reaches the same
channel or user), hosts are lower-cased, and a name that would still hold an upper-case
letter after folding (non-ASCII on an rfc1459 or ascii server) is refused rather than
silently mapped to another channel. Message text is converted here too: mIRC codes to
XEP-0393 and back (through the neutral styled text), CTCP ACTION to `/me`, and an XMPP
correction to a short IRC line. No I/O, no globals: every rule is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from gateway.formatting import from_xep0393, to_xep0393

from .events import Channel, ISupport, Nick, Prefix, casefold
from .formatting import parse_mirc, render_mirc

__all__ = [
    "Address",
    "AddressError",
    "AddressMapping",
    "Affiliation",
    "ChannelAddress",
    "OutgoingText",
    "Role",
    "ServerAddress",
    "UserAddress",
    "correction_text",
    "escape_localpart",
    "irc_to_xmpp",
    "irc_username",
    "mask_matches",
    "muc_role_affiliation",
    "nick_problem",
    "notice_text",
    "unescape_localpart",
    "xmpp_to_irc",
]

Role = Literal["moderator", "participant", "visitor", "none"]
Affiliation = Literal["owner", "admin", "member", "outcast", "none"]

# Highest first. Biboumi's convention: ~q owner, &a and @o admin, %h member, all
# moderators; +v member and participant; no mode: participant without affiliation.
_MUC: dict[str, tuple[Role, Affiliation]] = {
    "q": ("moderator", "owner"),
    "a": ("moderator", "admin"),
    "o": ("moderator", "admin"),
    "h": ("moderator", "member"),
    "v": ("participant", "member"),
}
_NO_MODE: tuple[Role, Affiliation] = ("participant", "none")
_DEFAULT_SYMBOLS = {"~": "q", "&": "a", "@": "o", "%": "h", "+": "v"}


def muc_role_affiliation(
    prefixes: str, isupport: ISupport | None = None
) -> tuple[Role, Affiliation]:
    """The MUC (role, affiliation) for a member's prefix symbols (`@+`) or mode letters
    (`ov`); the highest mode wins. Symbols are looked up in the server's PREFIX first."""
    letters = set()
    for char in prefixes:
        mode = isupport.mode_of_symbol(char) if isupport else None
        letters.add(mode or _DEFAULT_SYMBOLS.get(char, char))
    return next((_MUC[mode] for mode in _MUC if mode in letters), _NO_MODE)


_EXTBAN_RE = re.compile(r"\$|~?[A-Za-z]:")


def mask_matches(mask: str, who: Prefix, casemapping: str = "rfc1459") -> bool:
    """Whether the ban mask `mask` (`nick!user@host` with `*` and `?` globs; `nick` or
    `user@host` alone are completed with `*`) matches `who`, compared under the server's
    case mapping. A part of `who` that is not known (None) matches only `*`. Extended
    bans (`$a:account`, `~q:mask`...) match nothing: their meaning is the server's."""
    if not mask or _EXTBAN_RE.match(mask):
        return False
    if "!" not in mask and "@" not in mask:
        mask += "!*@*"
    elif "!" not in mask:
        mask = "*!" + mask
    elif "@" not in mask:
        mask += "@*"
    nick_glob, _, rest = mask.partition("!")
    user_glob, _, host_glob = rest.rpartition("@")
    parts = ((nick_glob, who.nick), (user_glob, who.user), (host_glob, who.host))
    for glob, value in parts:
        if value is None:
            if glob.strip("*"):
                return False
        elif not _glob_re(casefold(glob, casemapping)).fullmatch(casefold(value, casemapping)):
            return False
    return True


def _glob_re(glob: str) -> re.Pattern[str]:
    pattern = (".*" if c == "*" else "." if c == "?" else re.escape(c) for c in glob)
    return re.compile("".join(pattern))


# --- XEP-0106 ------------------------------------------------------------------------

_ESCAPES = {char: f"\\{ord(char):02x}" for char in " \"&'/:<>@"}
_SEQUENCE_RE = re.compile(r"\\(20|22|26|27|2f|3a|3c|3e|40|5c)")


_TO_ESCAPE_RE = re.compile(r"[ \"&'/:<>@\\]")
"""A character `escape_localpart` may change: without one, the text is its own escape
(most JIDs: the per-character pass was ~1 % of an IRC line's CPU)."""


def escape_localpart(text: str) -> str:
    """XEP-0106 escaping. A backslash is escaped only where it would otherwise start an
    escape sequence (`c:\\5commas` becomes `c\\3a\\5c5commas`)."""
    if _TO_ESCAPE_RE.search(text) is None:
        return text
    return "".join(
        "\\5c" if char == "\\" and _SEQUENCE_RE.match(text, i) else _ESCAPES.get(char, char)
        for i, char in enumerate(text)
    )


def unescape_localpart(text: str) -> str:
    return _SEQUENCE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)


# --- addresses -----------------------------------------------------------------------


class AddressError(ValueError):
    """A JID localpart that names no IRC entity, or an entity no JID can name."""


@dataclass(frozen=True, slots=True)
class ServerAddress:
    server: str


@dataclass(frozen=True, slots=True)
class ChannelAddress:
    server: str
    channel: Channel


@dataclass(frozen=True, slots=True)
class UserAddress:
    server: str
    nick: Nick


Address = ServerAddress | ChannelAddress | UserAddress

_SERVER_RE = re.compile(r"[a-z0-9_.:\[\]-]+", re.ASCII)
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f,]")  # never in a nick or channel name
_NOT_IN_NICK = set("!@*?.%")


@dataclass(frozen=True, slots=True)
class AddressMapping:
    """JID localpart <-> IRC address rules. `chantypes` and `casemapping` come from the
    server's ISUPPORT (the defaults are the protocol's); keep them stable for a server,
    or the same channel gets a second JID."""

    fixed_server: str | None = None
    chantypes: str = "#&"
    casemapping: str = "rfc1459"

    def parse(self, localpart: str) -> Address:
        local = unescape_localpart(localpart)
        if self.fixed_server is not None:
            server, name = self.server(self.fixed_server), local
        else:
            name, percent, server = local.rpartition("%")
            if not percent:
                return ServerAddress(self.server(local))
            server = self.server(server)
        if name[:1] and name[0] in self.chantypes:
            return ChannelAddress(server, self.channel(name))
        return UserAddress(server, self.nick(name))

    def parse_contact(self, localpart: str) -> UserAddress:
        """A 1:1 contact; refuses channels and servers (they share the JID namespace)."""
        address = self.parse(localpart)
        if not isinstance(address, UserAddress):
            raise AddressError(f"{localpart!r} is not an IRC user (nick%server)")
        return address

    def parse_room(self, localpart: str) -> ChannelAddress:
        address = self.parse(localpart)
        if not isinstance(address, ChannelAddress):
            raise AddressError(f"{localpart!r} is not an IRC channel (#channel%server)")
        return address

    def render(self, address: Address) -> str:
        if isinstance(address, ServerAddress):
            if self.fixed_server is not None:
                raise AddressError("with a fixed IRC server, the server has no address")
            return escape_localpart(self.server(address.server))
        name: str
        if isinstance(address, ChannelAddress):
            name = self.channel(address.channel)
        else:
            name = self.nick(address.nick)
        server = self.server(address.server)
        if self.fixed_server is None:
            return escape_localpart(f"{name}%{server}")
        if server != self.server(self.fixed_server):
            raise AddressError(f"IRC server {server!r} is not the fixed server")
        return escape_localpart(name)

    # Each check returns the canonical (folded) form or raises AddressError.

    def server(self, host: str) -> str:
        folded = host.lower()
        if not _SERVER_RE.fullmatch(folded):
            raise AddressError(f"invalid IRC server name {host!r}")
        return folded

    def channel(self, name: str) -> Channel:
        if not name[:1] or name[0] not in self.chantypes or _CONTROL_RE.search(name):
            raise AddressError(f"invalid IRC channel name {name!r}")
        return Channel(self._folded(name))

    def nick(self, name: str) -> Nick:
        if name[:1] and name[0] in self.chantypes:
            raise AddressError(f"{name!r} is a channel name, not a nick")
        if not name or name[0] in ":$" or _CONTROL_RE.search(name) or _NOT_IN_NICK & set(name):
            raise AddressError(f"invalid IRC nick {name!r}")
        return Nick(self._folded(name))

    def _folded(self, name: str) -> str:
        folded = casefold(name, self.casemapping)
        if folded != folded.lower():
            raise AddressError(f"{name!r} has upper-case letters a JID cannot keep")
        return folded


# --- message text --------------------------------------------------------------------

ME = "/me "


@dataclass(frozen=True, slots=True)
class OutgoingText:
    """What an XMPP message body becomes on IRC: mIRC-formatted text, maybe an ACTION."""

    text: str
    action: bool = False


_MIRC_CODES = re.compile(r"[\x00-\x08\x0b-\x1f]")
"""What makes a line more than plain text to `parse_mirc`: a code, or a control it drops."""
_STYLED_XMPP = re.compile(r"[\x00-\x08\x0b-\x1f*_~`]")
"""What `from_xep0393` and `render_mirc` may change: span markers, fences, controls (a
quotation line keeps its `>` and its text)."""


def irc_to_xmpp(text: str, action: bool = False) -> str:
    """A PRIVMSG/NOTICE text (mIRC codes) as an XMPP body with XEP-0393 styling;
    a CTCP ACTION becomes `/me ...`. A line without codes or controls is its own body
    (most lines: the styled-text round trip gives them back as they are)."""
    body = text if _MIRC_CODES.search(text) is None else to_xep0393(parse_mirc(text))
    return ME + body if action else body


NOTICE_PREFIX = "[notice] "


def notice_text(body: str) -> str:
    """An IRC NOTICE from a person, set apart from their ordinary messages (Biboumi's
    way, so switching users see the same thing)."""
    return NOTICE_PREFIX + body


def xmpp_to_irc(body: str) -> OutgoingText:
    """An XMPP body as IRC text: `/me ...` becomes an ACTION, XEP-0393 styling becomes
    mIRC codes. Line breaks stay (the splitter turns each line into its own message)."""
    action = body.startswith(ME)
    if action:
        body = body[len(ME) :]
    if _STYLED_XMPP.search(body) is None:  # nothing to style or strip: as it is
        return OutgoingText(body, action)
    return OutgoingText(render_mirc(from_xep0393(body)), action)


def correction_text(old: str, new: str) -> str:
    """A short IRC line for an XMPP correction (XEP-0308): the changed words as
    `s/old/new/`, or the new text with a `*` when it shares nothing with the old."""
    old_words, new_words = old.split(), new.split()
    start = 0
    while start < min(len(old_words), len(new_words)) and old_words[start] == new_words[start]:
        start += 1
    end = 0
    while (
        end < min(len(old_words), len(new_words)) - start
        and old_words[-1 - end] == new_words[-1 - end]
    ):
        end += 1
    removed = old_words[start : len(old_words) - end]
    added = new_words[start : len(new_words) - end]
    if not removed and not added:
        return new
    if not removed:  # an insertion: anchor it on the word before it
        anchor = old_words[start - 1 : start] or old_words[len(old_words) - end :][:1]
        if start > 0:
            removed, added = anchor, anchor + added
        else:
            removed, added = anchor, added + anchor
    if (start == 0 and end == 0) or len(" ".join(added)) > max(len(new) * 0.8, 40):
        return f"{new} *"
    return f"s/{' '.join(removed)}/{' '.join(added)}/"


_NICK_RE = re.compile(r"[A-Za-z\[\]\\`_^{|}][A-Za-z0-9\[\]\\`_^{|}-]*")
NICK_MAX = 30


def nick_problem(nick: str) -> str | None:
    """Why `nick` cannot be an IRC nick (RFC 2812 characters, at most 30), or None."""
    if not nick:
        return "the nick is empty"
    if len(nick) > NICK_MAX:
        return f"the nick is longer than {NICK_MAX} characters"
    if not _NICK_RE.fullmatch(nick):
        return (
            "an IRC nick is made of letters, digits and []\\`_^{|}- and does not start "
            "with a digit or '-'"
        )
    return None


def irc_username(jid_localpart: str) -> str:
    """The IRC user name (the `user` in `nick!user@host`) for an XMPP account: its local
    part reduced to lower-case ASCII letters and digits, at most 10, or `xmpp`. Never
    derived from the nick, which may hold characters servers refuse here."""
    safe = "".join(c for c in jid_localpart.lower() if c.isascii() and c.isalnum())[:10]
    return safe or "xmpp"
