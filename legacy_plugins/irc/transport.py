"""The socket under an IRC connection: resolve and check, connect, TLS, read lines.

`open_connection` resolves the server's host once, refuses addresses the policy forbids
(SSRF: `config.check_addresses`), and connects to exactly the addresses it checked,
with TLS and certificate verification when the server wants it (the system's CAs, or
the server's `ca_file`) and `TCP_NODELAY` set.
`read_line` returns one line, skipping lines longer than `READ_LIMIT` instead of failing.
`describe` turns a connection error into words for the user.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl

from .config import ServerTarget, check_addresses

__all__ = ["READ_LIMIT", "describe", "open_connection", "read_line"]

log = logging.getLogger(__name__)

READ_LIMIT = 16 * 1024  # tags (8191) + line (512), with room to spare


async def open_connection(
    target: ServerTarget, allow_private: bool, timeout: float, log: logging.Logger = log
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to `target` within `timeout` seconds. Raises `PermissionError` when the
    policy refuses every address, `OSError`/`TimeoutError`/`ssl.SSLError` otherwise."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout):
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        allowed = check_addresses(target, addresses, allow_private)
        context = tls_context(target.verify_certificate, target.ca_file) if target.tls else None
        error: OSError | None = None
        for address in allowed:
            try:
                reader, writer = await asyncio.open_connection(
                    address,
                    target.port,
                    ssl=context,
                    server_hostname=target.host if context else None,
                    limit=READ_LIMIT,
                )
            except OSError as exc:
                error = exc
                continue
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            log.info("connected to %s (%s) port %d", target.host, address, target.port)
            return reader, writer
    raise error or OSError(f"{target.host} has no address")


async def read_line(reader: asyncio.StreamReader) -> bytes | None:
    """One line, or None at the end of the stream. Overlong lines are skipped."""
    while True:
        try:
            return await reader.readuntil(b"\n")
        except asyncio.IncompleteReadError as exc:
            return exc.partial or None
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)
            await _skip_to_newline(reader)
            log.warning("skipped an IRC line longer than %d bytes", READ_LIMIT)


async def _skip_to_newline(reader: asyncio.StreamReader) -> None:
    while True:
        try:
            await reader.readuntil(b"\n")
            return
        except asyncio.LimitOverrunError as exc:
            await reader.readexactly(exc.consumed)


def tls_context(verify: bool, ca_file: str | None = None) -> ssl.SSLContext:
    """Verify the certificate and the host name against the system's CAs, or against
    `ca_file` (only) when given; or, with `verify` off, accept any certificate."""
    context = ssl.create_default_context(cafile=ca_file)
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def describe(exc: BaseException, target: ServerTarget | None = None) -> str:
    """Why a connection to `target` failed, in words for the user (with what can be
    done about a certificate that is not trusted)."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({exc.verify_message}){_trust_hint(target)}"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host name ({exc.strerror})"
    return str(exc) or type(exc).__name__


def _trust_hint(target: ServerTarget | None) -> str:
    """What can be done about a server certificate the gateway does not trust, naming
    the config table the server comes from."""
    if target is None:
        return ""
    if not target.admin_defined:
        return f"; {target.host} must present a certificate valid for that name"
    if target.config_section is not None:  # e.g. [link]: verification cannot be turned off
        return (
            "; the gateway's admin can trust the server's CA with ca_file "
            f"in [{target.config_section}] (or add it to the system's trust store)"
        )
    name = target.name
    bare = name.isascii() and name.replace("-", "").replace("_", "").isalnum()
    key = name if bare else f'"{name}"'
    return (
        "; the gateway's admin can trust the server's CA with ca_file "
        f"(or set verify_certificate = false) in [networks.irc.servers.{key}]"
    )
