"""The ``[networks.matrix]`` section: which homeservers users may log in to, and how.

Users register with a homeserver URL (or a server name, resolved through
``/.well-known/matrix/client``). The admin limits where the gateway connects:

- ``allowed_homeservers`` / ``denied_homeservers`` are globs of host names (``*`` by
  default: any);
- every address a homeserver resolves to, at every connection, must be public unless
  ``allow_private_addresses`` is set, so the gateway cannot be used to reach the admin's
  own network (loopback, private, link-local, …);
- plain ``http://`` is refused unless ``allow_plain_http`` is set (tests on loopback).

Example::

    [networks.matrix]
    jid = "matrix.example.org"
    secret = "…"
    allowed_homeservers = ["*.example.org", "matrix.org"]
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING, Annotated

from gateway.runtime import NetworkSettings

if TYPE_CHECKING:
    from gateway.config import NetworkConfig

__all__ = ["Config", "address_is_public"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Config(NetworkSettings):
    """Configuration of the Matrix network (validated by :func:`_model`, its pydantic twin,
    built only to check the file: the network's process never imports pydantic)."""

    allowed_homeservers: list[str] = field(default_factory=lambda: ["*"])
    """Globs of homeserver host names users may log in to (``matrix.org``, ``*.example.org``)."""
    denied_homeservers: list[str] = field(default_factory=list)
    """Globs of homeserver host names users may never log in to; checked after
    ``allowed_homeservers``."""
    allow_private_addresses: bool = False
    """Let users reach homeservers on loopback, private or link-local addresses. Off by
    default: the gateway must not be a way into the admin's own network."""
    allow_plain_http: bool = False
    """Accept ``http://`` homeserver URLs (for a test homeserver on loopback). Off by
    default: access tokens must not cross the network in clear text."""
    device_name: str = "Passerelle"
    """The name of the Matrix device (session) the gateway logs in as."""
    timeline_limit: int = 100
    """Events per room and sync response (10 to 1000). A burst larger than this is fetched
    with ``/messages``, so nothing is lost either way; a larger value means fewer requests."""
    sync_timeout: float = 30.0
    """Seconds (1 to 300) a sync request waits for new events (long polling)."""
    request_timeout: float = 30.0
    """Seconds (1 to 300) any other request to the homeserver may take."""
    max_upload_size: int = 100 * 1024 * 1024
    """Largest attachment, in bytes, carried in either direction (the homeserver's own
    limit applies too)."""
    backfill_count: int = 50
    """Messages (0 to 1000) of a room's history put in its MUC archive when the user first
    joins it from XMPP (0: none)."""
    auto_accept_invites: bool = True
    """Join rooms and direct chats the user is invited to, so they show up in XMPP
    (direct chats are always accepted)."""
    key_request_delay: float = 5.0
    """Seconds (0 to 300) after an encrypted message was sent before the gateway asks
    the user's other devices for a key it lacks (the sender's key is often merely late)."""

    @classmethod
    def model(cls) -> type[NetworkConfig]:
        return _model()

    def host_allowed(self, host: str) -> bool:
        """Whether the homeserver host name (or IP literal) passes the allow/deny globs."""
        host = host.lower().strip("[]")
        allowed = any(fnmatch.fnmatchcase(host, glob) for glob in self.allowed_homeservers)
        return allowed and not any(fnmatch.fnmatchcase(host, g) for g in self.denied_homeservers)

    def address_allowed(self, address: str) -> bool:
        """Whether the gateway may connect to this IP address."""
        return self.allow_private_addresses or address_is_public(address)


def _check_globs(globs: list[str]) -> list[str]:
    for glob in globs:
        if not glob or any(c.isspace() or c in "/@" for c in glob):
            raise ValueError(f"{glob!r} is not a host name glob such as '*.example.org'")
    return [glob.lower() for glob in globs]


@cache
def _model() -> type[NetworkConfig]:
    from pydantic import Field, field_validator

    from gateway.config import NetworkConfig

    class MatrixConfig(NetworkConfig):
        allowed_homeservers: list[str] = Field(default_factory=lambda: ["*"])
        denied_homeservers: list[str] = Field(default_factory=list)
        allow_private_addresses: bool = False
        allow_plain_http: bool = False
        device_name: str = "Passerelle"
        timeline_limit: Annotated[int, Field(ge=10, le=1000)] = 100
        sync_timeout: Annotated[float, Field(ge=1, le=300)] = 30.0
        request_timeout: Annotated[float, Field(ge=1, le=300)] = 30.0
        max_upload_size: Annotated[int, Field(ge=0)] = 100 * 1024 * 1024
        backfill_count: Annotated[int, Field(ge=0, le=1000)] = 50
        auto_accept_invites: bool = True
        key_request_delay: Annotated[float, Field(ge=0, le=300)] = 5.0

        _globs = field_validator("allowed_homeservers", "denied_homeservers")(_check_globs)

    return MatrixConfig


def address_is_public(address: str) -> bool:
    """True for globally routable unicast addresses; False for anything else, including
    strings that are not addresses."""
    try:
        ip = ipaddress.ip_address(address.split("%", maxsplit=1)[0].strip("[]"))
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast
