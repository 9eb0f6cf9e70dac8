"""HTTP for the Matrix network, under the admin's homeserver policy: no nio here.

Every connection the Matrix plugin makes goes through a session from `http_session`:
host names are checked against ``allowed_homeservers``/``denied_homeservers`` and resolved
by a resolver that drops non-public addresses unless ``allow_private_addresses``; IP
literals and redirects are checked by a request hook; plain ``http://`` needs
``allow_plain_http``. Files the XMPP user sends are fetched with `fetch_url`, under the
same address policy (the gateway must not reach into the admin's network on a user's
behalf) and the size limit. `RedactTokens` keeps access tokens out of every log.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from .config import Config
from .errors import (
    HomeserverNotAllowed,
    HomeserverTimeout,
    HomeserverUnreachable,
    MatrixError,
    RequestFailed,
)

__all__ = [
    "CLIENT_V3",
    "RedactTokens",
    "check_url",
    "fetch_url",
    "http_session",
    "network_error",
    "protect_logs",
    "read_body",
]


CLIENT_V3 = "/_matrix/client/v3"
"""The client-server API's path prefix on a homeserver."""


class RedactTokens(logging.Filter):
    """Hide Matrix access tokens in log records, whoever logs them: at DEBUG, nio logs
    login answers and slidge (SQLAlchemy echo) logs the stored login data."""

    _PATTERNS = (
        re.compile(r"""(['"]access_token['"]\s*:\s*['"])[^'"]+"""),
        re.compile(r"(Bearer\s+)[^\s'\"]+"),
        re.compile(r"(access_token=)[^&\s'\"]+"),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            return True
        redacted = message
        for pattern in self._PATTERNS:
            redacted = pattern.sub(r"\1[redacted]", redacted)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def protect_logs() -> None:
    """Install `RedactTokens` on every handler of the root logger (call it once logging
    is configured)."""
    redact = RedactTokens()
    for handler in logging.getLogger().handlers:
        handler.addFilter(redact)


class _PrivateAddress(OSError):
    """A host name resolved only to addresses the policy refuses."""


class _PolicyResolver(AbstractResolver):
    """The default resolver, minus the addresses the admin's policy refuses."""

    def __init__(self, cfg: Config) -> None:
        self._cfg = cfg
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if self._cfg.address_allowed(r["host"])]
        if not allowed:
            found = ", ".join(sorted({r["host"] for r in results})) or "nothing"
            raise _PrivateAddress(
                f"{host} resolves to {found}, a private or local address; this gateway "
                "only connects to public homeservers"
            )
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def check_url(cfg: Config, url: str, *, homeserver: bool = True) -> None:
    """Raise `HomeserverNotAllowed` unless the policy lets us fetch ``url``. For a file
    the XMPP user sent (``homeserver=False``), only the address policy applies."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        raise HomeserverNotAllowed(f"{url!r} is not an https:// URL")
    if parts.scheme == "http" and homeserver and not cfg.allow_plain_http:
        raise HomeserverNotAllowed(
            f"this gateway only talks to homeservers over https://, not {url!r}"
        )
    if homeserver and not cfg.host_allowed(host):
        raise HomeserverNotAllowed(f"this gateway does not connect to the homeserver {host!r}")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return  # a name: the resolver checks its addresses
    if not cfg.address_allowed(host):
        raise HomeserverNotAllowed(
            f"{host} is a private or local address; this gateway only connects to "
            "public homeservers"
        )


def http_session(cfg: Config, *, homeserver: bool = True) -> aiohttp.ClientSession:
    async def on_start(_session: aiohttp.ClientSession, _ctx: SimpleNamespace, params: Any) -> None:
        check_url(cfg, str(params.url), homeserver=homeserver)

    async def on_redirect(
        _session: aiohttp.ClientSession, _ctx: SimpleNamespace, params: Any
    ) -> None:
        location = params.response.headers.get("Location", "")
        check_url(cfg, str(params.response.url.join(URL(location))), homeserver=homeserver)

    trace = aiohttp.TraceConfig()
    trace.on_request_start.append(on_start)
    trace.on_request_redirect.append(on_redirect)
    connector = aiohttp.TCPConnector(resolver=_PolicyResolver(cfg), limit_per_host=20)
    return aiohttp.ClientSession(
        connector=connector,
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(total=cfg.request_timeout),
    )


def network_error(url: str, exc: BaseException, server: str = "homeserver") -> MatrixError:
    host = urlsplit(url).netloc or url
    if isinstance(exc, MatrixError):
        return exc
    if isinstance(exc, aiohttp.ClientConnectorError) and isinstance(exc.os_error, _PrivateAddress):
        return HomeserverNotAllowed(str(exc.os_error))
    if isinstance(exc, TimeoutError):
        return HomeserverTimeout(f"the {server} {host} did not answer in time; try again later")
    reason = getattr(exc, "os_error", None) or exc
    return HomeserverUnreachable(f"cannot reach the {server} {host}: {reason}")


async def read_body(resp: aiohttp.ClientResponse, limit: int, name: str) -> bytes:
    """The whole body of ``resp``; `RequestFailed` (413) as soon as it passes ``limit``
    bytes. (``StreamReader.read(n)`` would return only what has arrived so far.)"""
    if (resp.content_length or 0) > limit:
        raise RequestFailed(f"{name} is larger than {limit} bytes", status=413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_chunked(64 * 1024):
        size += len(chunk)
        if size > limit:
            raise RequestFailed(f"{name} is larger than {limit} bytes", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


async def fetch_url(cfg: Config, url: str) -> tuple[bytes, str | None, str]:
    """Download a file the XMPP user sent (an HTTP upload URL): its bytes, MIME type and
    name. Refused beyond ``max_upload_size`` or when the address policy forbids the host
    (the gateway must not fetch from the admin's network on a user's behalf)."""
    limit = cfg.max_upload_size
    name = unquote(urlsplit(url).path.rsplit("/", 1)[-1]) or "file"
    async with http_session(cfg, homeserver=False) as http:
        try:
            async with http.get(url) as resp:
                if resp.status != 200:
                    raise RequestFailed(f"fetching {url}: HTTP {resp.status}", status=resp.status)
                data = await read_body(resp, limit, name)
                return data, resp.content_type, name
        except (aiohttp.ClientError, TimeoutError, OSError) as e:
            raise network_error(url, e, "file server") from e
