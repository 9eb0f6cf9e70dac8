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
silently mapped to another channel. No I/O, no globals: every rule is passed in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from .events import Channel, ISupport, Nick, casefold

__all__ = [
    "Address",
    "AddressError",
    "AddressMapping",
    "Affiliation",
    "ChannelAddress",
    "Role",
    "ServerAddress",
    "UserAddress",
    "escape_localpart",
    "muc_role_affiliation",
    "unescape_localpart",
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


# --- XEP-0106 ------------------------------------------------------------------------

_ESCAPES = {char: f"\\{ord(char):02x}" for char in " \"&'/:<>@"}
_SEQUENCE_RE = re.compile(r"\\(20|22|26|27|2f|3a|3c|3e|40|5c)")


def escape_localpart(text: str) -> str:
    """XEP-0106 escaping. A backslash is escaped only where it would otherwise start an
    escape sequence (`c:\\5commas` becomes `c\\3a\\5c5commas`)."""
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
