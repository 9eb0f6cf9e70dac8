"""The ``[networks.irc]`` section: which IRC servers users may reach, and how.

Admins name servers in ``[networks.irc.servers.NAME]`` (``host``, ``port``, ``tls``,
optional ``password`` and ``ca_file``); users then write ``#chan%NAME@irc.example.org``.
A name that is not defined is taken as a host name on :data:`DEFAULT_PORT` with TLS, if
the policy allows it: it must match ``allowed_servers`` and no ``denied_servers`` glob,
and every address it resolves to must be public unless ``allow_private_addresses`` is
set (admin-defined servers are always allowed: the admin chose them). With
``fixed_server``, every JID is on that one server (``#chan@…``, ``nick@…``).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

from gateway.runtime import NetworkSettings, Secret

from .flood import DEFAULT_BURST, DEFAULT_RATE_PER_S
from .translate import AddressMapping

if TYPE_CHECKING:
    from gateway.config import NetworkConfig

__all__ = [
    "DEFAULT_PORT",
    "Config",
    "ServerConfig",
    "ServerTarget",
    "UserServerSettings",
    "check_addresses",
]

DEFAULT_PORT = 6697
"""The port of a server that is not defined by the admin: IRC over TLS."""

_SERVER_NAME_RE = re.compile(r"[a-z0-9_.:\[\]-]+", re.ASCII)
_ENCODING_CHECK = b"caf\xe9"


def _check_server_name(name: str) -> str:
    folded = name.lower()
    if not _SERVER_NAME_RE.fullmatch(folded):
        raise ValueError(
            f"{name!r} cannot be an IRC server name in a JID; use letters, digits and "
            "'.-_:[]' only, e.g. 'libera'"
        )
    return folded


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """One admin-defined IRC server: ``[networks.irc.servers.NAME]``."""

    host: str
    """Host name or IP address to connect to."""
    port: int = DEFAULT_PORT
    """TCP port; 6697 is IRC over TLS, 6667 plain text."""
    tls: bool = True
    """Connect with TLS. Certificates are verified against the system's CAs (or `ca_file`)."""
    verify_certificate: bool = True
    """Check the server's TLS certificate; turn off only for a test server."""
    ca_file: Path | None = None
    """PEM file (which must exist) of the certificate authorities to trust for this server
    instead of the system's (a private network's own CA). The host name is still checked."""
    password: Secret | None = None
    """Server password (``PASS``), if the server wants one."""
    encoding: str = "latin-1"
    """How to decode lines that are not valid UTF-8."""


def _check_host(host: str) -> str:
    host = host.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise ValueError(f"{host!r} is not a host name or IP address")
    return host


def _check_encoding(encoding: str) -> str:
    try:
        _ENCODING_CHECK.decode(encoding)
    except LookupError:
        raise ValueError(f"unknown encoding {encoding!r}; try 'latin-1' or 'cp1252'") from None
    return encoding


@dataclass(frozen=True, slots=True)
class ServerTarget:
    """Where a server name in a JID leads: resolved against the admin's servers."""

    name: str
    """The name as it appears in JIDs (lower case)."""
    host: str
    port: int
    tls: bool
    verify_certificate: bool
    password: str | None
    encoding: str
    admin_defined: bool
    ca_file: str | None = None
    """CAs trusted for this server instead of the system's (admin-defined servers only)."""
    config_section: str | None = None
    """The gateway.toml table where the admin trusts this server's CA, for error hints
    (None: the server's own ``[networks.irc.servers.NAME]``)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(NetworkSettings):
    """Configuration of the IRC network (validated by :func:`_model`, its pydantic twin,
    built only to check the file: the network's process never imports pydantic)."""

    servers: dict[str, ServerConfig] = field(default_factory=dict)
    """Admin-defined servers by short name: ``[networks.irc.servers.libera]``."""
    fixed_server: str | None = None
    """Serve only this server (a name from ``servers`` or a host name): JIDs drop the
    ``%server`` part."""
    allowed_servers: list[str] = field(default_factory=lambda: ["*"])
    """Globs of server names users may reach (admin-defined servers are always allowed)."""
    denied_servers: list[str] = field(default_factory=list)
    """Globs of server names users may never reach; checked after ``allowed_servers``."""
    allow_private_addresses: bool = False
    """Let users reach servers that resolve to loopback, private or link-local addresses.
    Off by default: the gateway must not be a way into the admin's own network."""
    auto_register: bool = False
    """Let a JID the gateway allows (``allowed_jids``) join a channel without registering
    first, as Biboumi does: the nick it asks for in the room becomes its IRC nick."""
    default_nick: str | None = None
    """Nick used when a user registered without one (default: their JID's local part)."""
    flood_burst: int = DEFAULT_BURST
    """Lines (1 to 1,000,000) sent at once to a server before flood control spaces them
    out."""
    flood_rate: float = DEFAULT_RATE_PER_S
    """Lines per second (up to 1,000,000) sent to a server after the burst. Flood control
    cannot be switched off, but on a server of your own that exempts the gateway (e.g. a
    class without flood penalty) a burst and rate of 1,000,000 leave it no effect."""
    reconnect_queue_size: int = 100
    """IRC lines (0 to 100,000) kept while reconnecting, sent after rejoining; beyond this
    the user's message is bounced with an error."""
    history_on_join: int = 20
    """At most this many messages (0 to 1000) from the room archive are replayed to a
    client that joins (fewer if the client asks for fewer; the full archive stays
    available by MAM)."""
    chathistory_count: int = 100
    """On servers that offer IRCv3 `chathistory`: at most this many (0 to 1000) of a
    channel's newest messages are fetched into the room archive on each join and rejoin
    (0: never)."""
    connect_timeout: float = 20.0
    """Seconds (up to 300) to wait for a server to accept and register a connection."""
    reconnect_max_delay: float = 60.0
    """Upper bound of the delay between two reconnection attempts, in seconds (up to
    3600)."""

    @classmethod
    def model(cls) -> type[NetworkConfig]:
        return _model()

    def address_mapping(self) -> AddressMapping:
        """The JID <-> IRC address rules of this gateway."""
        return AddressMapping(fixed_server=self.fixed_server)

    def policy_allows(self, name: str) -> bool:
        """Whether users may reach server ``name`` by name (DNS is checked later)."""
        return _policy_allows(name, self.servers, self.allowed_servers, self.denied_servers)

    def target(self, name: str) -> ServerTarget:
        """Resolve a server name from a JID: an admin-defined server, or a host name on
        6697 with TLS. Raises ``PermissionError`` (with a sentence for the user) when the
        policy refuses the name."""
        name = name.lower()
        server = self.servers.get(name)
        if server is not None:
            password = server.password.get_secret_value() if server.password else None
            return ServerTarget(
                name,
                server.host,
                server.port,
                server.tls,
                server.verify_certificate,
                password,
                server.encoding,
                admin_defined=True,
                ca_file=str(server.ca_file) if server.ca_file else None,
            )
        if not self.policy_allows(name):
            raise PermissionError(f"this gateway does not connect to IRC server {name!r}")
        return ServerTarget(name, name, DEFAULT_PORT, True, True, None, "latin-1", False)


def _policy_allows(
    name: str, servers: Mapping[str, object], allowed: Sequence[str], denied: Sequence[str]
) -> bool:
    name = name.lower()
    if name in servers:
        return True
    if not any(fnmatch.fnmatchcase(name, glob) for glob in allowed):
        return False
    return not any(fnmatch.fnmatchcase(name, glob) for glob in denied)


def _check_globs(globs: list[str]) -> list[str]:
    for glob in globs:
        if not glob or any(c.isspace() for c in glob):
            raise ValueError(f"{glob!r} is not a server name glob such as '*.libera.chat'")
    return [glob.lower() for glob in globs]


@cache
def _model() -> type[NetworkConfig]:
    """The pydantic models of the section (imports pydantic; never in the network's process)."""
    from pydantic import (
        BaseModel,
        ConfigDict,
        Field,
        FilePath,
        SecretStr,
        field_validator,
        model_validator,
    )

    from gateway.config import NetworkConfig

    class IrcServerConfig(BaseModel):
        model_config = ConfigDict(extra="forbid")

        host: str
        port: Annotated[int, Field(ge=1, le=65535)] = DEFAULT_PORT
        tls: bool = True
        verify_certificate: bool = True
        ca_file: FilePath | None = None
        password: SecretStr | None = None
        encoding: str = "latin-1"

        _host = field_validator("host")(_check_host)
        _encoding = field_validator("encoding")(_check_encoding)

    class IrcConfig(NetworkConfig):
        servers: dict[str, IrcServerConfig] = Field(default_factory=dict)
        fixed_server: str | None = None
        allowed_servers: list[str] = Field(default_factory=lambda: ["*"])
        denied_servers: list[str] = Field(default_factory=list)
        allow_private_addresses: bool = False
        auto_register: bool = False
        default_nick: str | None = None
        flood_burst: Annotated[int, Field(ge=1, le=1_000_000)] = DEFAULT_BURST
        flood_rate: Annotated[float, Field(gt=0, le=1_000_000)] = DEFAULT_RATE_PER_S
        reconnect_queue_size: Annotated[int, Field(ge=0, le=100_000)] = 100
        history_on_join: Annotated[int, Field(ge=0, le=1000)] = 20
        chathistory_count: Annotated[int, Field(ge=0, le=1000)] = 100
        connect_timeout: Annotated[float, Field(gt=0, le=300)] = 20.0
        reconnect_max_delay: Annotated[float, Field(gt=0, le=3600)] = 60.0

        @field_validator("servers")
        @classmethod
        def _server_names(cls, servers: dict[str, IrcServerConfig]) -> dict[str, IrcServerConfig]:
            return {_check_server_name(name): server for name, server in servers.items()}

        @field_validator("fixed_server")
        @classmethod
        def _fixed(cls, name: str | None) -> str | None:
            return None if name is None else _check_server_name(name)

        _globs = field_validator("allowed_servers", "denied_servers")(_check_globs)

        @model_validator(mode="after")
        def _fixed_is_reachable(self) -> IrcConfig:
            name = self.fixed_server
            if name is not None and not _policy_allows(
                name, self.servers, self.allowed_servers, self.denied_servers
            ):
                raise ValueError(
                    f"fixed_server {name!r} is neither in [networks.irc.servers] nor allowed "
                    "by allowed_servers/denied_servers; define it as a server"
                )
            return self

    return IrcConfig


def _is_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def check_addresses(
    target: ServerTarget, addresses: Sequence[str], allow_private: bool
) -> list[str]:
    """The addresses of ``target`` the gateway may connect to, in order. DNS answers are
    checked here, once, and the caller connects to these very addresses (no second
    lookup an attacker could answer differently). Raises ``PermissionError`` when none
    is allowed: loopback, private, link-local and other non-public addresses are refused
    for servers the admin did not define, unless ``allow_private``."""
    if target.admin_defined or allow_private:
        return list(addresses)
    allowed = [a for a in addresses if _is_public(ipaddress.ip_address(a.split("%")[0]))]
    if not allowed:
        raise PermissionError(
            f"IRC server {target.name!r} resolves to a private or local address "
            f"({', '.join(addresses) or 'none'}); this gateway only connects to public servers"
        )
    return allowed


@dataclass(frozen=True, slots=True)
class UserServerSettings:
    """What one user set for one server with the `configure` command on its JID.
    Port and TLS apply only to servers the admin did not define."""

    nick: str | None = None
    port: int | None = None
    tls: bool | None = None
    password: str | None = None
    """The server password (PASS)."""
    account_password: str | None = None
    """Password of the user's account (SASL PLAIN if offered, else NickServ IDENTIFY)."""
    after_connect: tuple[str, ...] = ()
    """Raw IRC lines sent once connected, before the channels are joined."""

    @classmethod
    def from_json(cls, data: object) -> UserServerSettings:
        """Read what `to_json` stored; anything malformed is ignored, not fatal."""
        if not isinstance(data, Mapping):
            return cls()

        def text(key: str) -> str | None:
            value = data.get(key)
            return value if isinstance(value, str) and value else None

        port = data.get("port")
        tls = data.get("tls")
        lines = data.get("after_connect")
        return cls(
            nick=text("nick"),
            port=port if isinstance(port, int) and 0 < port < 65536 else None,
            tls=tls if isinstance(tls, bool) else None,
            password=text("password"),
            account_password=text("account_password"),
            after_connect=tuple(x for x in lines if isinstance(x, str))
            if isinstance(lines, list)
            else (),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "nick": self.nick,
            "port": self.port,
            "tls": self.tls,
            "password": self.password,
            "account_password": self.account_password,
            "after_connect": list(self.after_connect),
        }

    def apply(self, target: ServerTarget) -> ServerTarget:
        """`target` with this user's changes."""
        if not target.admin_defined:
            target = replace(
                target,
                port=self.port or target.port,
                tls=target.tls if self.tls is None else self.tls,
            )
        if self.password:
            target = replace(target, password=self.password)
        return target
