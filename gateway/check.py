"""``passerelle check``: is the configuration valid, and will the XMPP server take each component?

For each enabled network it opens the component connection (XEP-0114) exactly as the network
will, authenticates with its secret, and closes it again. Each check prints one line:
``ok``, or what is wrong and how to fix it. The handshake is a few lines of XML over a socket,
so this check needs no slidge and can run while Passerelle itself is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from .config import Config

_STREAM_NS = "http://etherx.jabber.org/streams"
_STREAM_ID_RE = re.compile(rb"<stream:stream[^>]*\sid=['\"]([^'\"]+)['\"]")
_STREAM_ERROR_RE = re.compile(rb"<stream:error>\s*<([a-z-]+)")

_FIXES = {
    "host-unknown": "the XMPP server has no component with this JID: add "
    '`Component "{jid}"` with `component_secret` to its configuration and reload it',
    "not-authorized": "the secret does not match: set the same value as the server's "
    "`component_secret` for {jid}",
    "conflict": "another process is already connected as {jid} (is Passerelle already running?)",
}


@dataclass(frozen=True, slots=True)
class CheckResult:
    what: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.what}: {self.detail}"


class _StreamRefused(Exception):
    """The server answered with a stream error, or closed the connection."""

    def __init__(self, condition: str) -> None:
        self.condition = condition


_HANDSHAKE_OK_RE = re.compile(rb"<handshake\s*/>|<handshake>\s*</handshake>")


async def _read_until(reader: asyncio.StreamReader, pattern: re.Pattern[bytes]) -> re.Match[bytes]:
    """Read until ``pattern`` matches what arrived; a stream error or EOF raises."""
    buf = b""
    while (match := pattern.search(buf)) is None:
        if err := _STREAM_ERROR_RE.search(buf):
            raise _StreamRefused(err.group(1).decode())
        chunk = await reader.read(4096)
        if not chunk:
            raise _StreamRefused("connection-closed")
        buf += chunk
    return match


async def component_handshake(
    host: str, port: int, jid: str, secret: str, timeout: float = 10.0
) -> str | None:
    """Authenticate as component ``jid``. Returns None on success, else the error condition."""
    async with asyncio.timeout(timeout):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"<stream:stream xmlns='jabber:component:accept' xmlns:stream='{_STREAM_NS}' "
                f"to='{jid}'>".encode()
            )
            await writer.drain()
            stream_id = (await _read_until(reader, _STREAM_ID_RE)).group(1)
            digest = hashlib.sha1(stream_id + secret.encode()).hexdigest()  # noqa: S324  (XEP-0114)
            writer.write(f"<handshake>{digest}</handshake>".encode())
            await writer.drain()
            await _read_until(reader, _HANDSHAKE_OK_RE)
            writer.write(b"</stream:stream>")
            await writer.drain()
            return None
        except _StreamRefused as refused:
            return refused.condition
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def check_component(cfg: Config, section: str, jid: str, secret: SecretStr) -> CheckResult:
    """Log in as one component (a network's, or the link's) as it will at start."""
    host, port = cfg.settings.xmpp.host, cfg.settings.xmpp.port
    what = f"{section}: component {jid} at {host}:{port}"
    try:
        error = await component_handshake(host, port, jid, secret.get_secret_value())
    except TimeoutError:
        return CheckResult(
            what,
            False,
            "no answer within 10 s — is [xmpp] host/port the "
            "server's component port (Prosody: component_ports)?",
        )
    except OSError as e:
        return CheckResult(
            what,
            False,
            f"cannot connect ({e.strerror or e}) — is the XMPP server "
            "running, and does [xmpp] port match its component port?",
        )
    if error is None:
        return CheckResult(what, True, "connected and authenticated")
    fix = _FIXES.get(error, "see the XMPP server's log").format(jid=jid)
    return CheckResult(what, False, f"refused ({error}) — {fix}")


def check_data_dir(path: Path) -> CheckResult:
    """Can Passerelle write there? Checked without creating anything."""
    what = f"data_dir {path}"
    if path.exists():
        if not path.is_dir():
            return CheckResult(what, False, "exists but is not a directory")
        if not os.access(path, os.W_OK | os.X_OK):
            return CheckResult(what, False, "not writable by this user — fix its permissions")
        return CheckResult(what, True, "writable")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        return CheckResult(
            what, False, f"missing, and {parent} is not writable by this user — create it"
        )
    return CheckResult(what, True, "will be created at start")


async def run_checks(cfg: Config) -> list[CheckResult]:
    results = [
        CheckResult("configuration", True, f"{cfg.path} is valid"),
        check_data_dir(cfg.data_dir),
    ]
    components = [
        (f"networks.{name}", net.jid, net.secret) for name, net in cfg.enabled_networks.items()
    ]
    if (link := cfg.settings.link) is not None and link.enabled:
        components.append(("link", link.jid, link.secret))
    results += await asyncio.gather(*(check_component(cfg, *c) for c in components))
    return results
