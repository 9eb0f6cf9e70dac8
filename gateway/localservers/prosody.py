"""A throw-away Prosody on loopback, for the end-to-end tests and `passerelle demo`.

`Prosody(workdir, components=[...])` writes a config that keeps everything under
`workdir` (data, pid file, log, patched plugins), listens on 127.0.0.1 only, on ports
picked at start, with TLS and s2s off and plain-text SASL allowed, and otherwise enables
what a real deployment has (roster, MAM, carbons, PEP, vCard, blocklist, smacks, a MUC
service with MAM, HTTP file share). Each `ComponentSpec` becomes an external component,
granted the XEP-0356 privileges a slidge gateway uses. Every port option is set, even
to `{}`, so that no listener falls back to a default port a system Prosody holds.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gateway.localservers._process import ManagedServer
from gateway.localservers.errors import ServerCommandError, ServerStartError
from gateway.localservers.ports import LOOPBACK, describe_logs, free_port

log = logging.getLogger(__name__)

SYSTEM_MOD_PRIVILEGE = Path("/usr/lib/prosody/modules/mod_privilege/mod_privilege.lua")

# XEP-0356 grants for a slidge component: manage rosters, send messages on behalf of
# users, publish avatars/nicks in their PEP, and ask for upload slots as them.
PRIVILEGED_IQ_NAMESPACES: dict[str, str] = {
    "http://jabber.org/protocol/pubsub": "both",
    "http://jabber.org/protocol/pubsub#owner": "set",
    "urn:xmpp:http:upload:0": "get",
}

# What a real deployment enables on the VirtualHost (presence, message, iq and c2s are
# loaded by Prosody anyway).
HOST_MODULES: tuple[str, ...] = (
    "roster",
    "saslauth",
    "disco",
    "carbons",
    "mam",
    "ping",
    "register",
    "presence",
    "vcard4",
    "vcard_legacy",
    "pep",
    "private",
    "bookmarks",
    "blocklist",
    "smacks",
    "csi_simple",
    "time",
    "version",
    "uptime",
)

# The Debian bookworm mod_privilege opens a <namespace/> per IQ privilege and never
# closes it, so the namespaces nest and slixmpp reads only the first. Upstream appends
# `:up()`; a line that already ends with it does not match.
_UNCLOSED_NAMESPACE = re.compile(
    r'^(?P<call>[ \t]*message:tag\(\s*"namespace"\s*,\s*\{[^}\n]*\}\s*\))[ \t]*$',
    re.MULTILINE,
)


@dataclass(frozen=True, slots=True)
class ComponentSpec:
    """An external component (XEP-0114) the test Prosody accepts."""

    jid: str
    """The component's domain, e.g. ``echo.localhost``."""
    secret: str
    """The shared secret the component authenticates with."""
    privileged: bool = True
    """Grant XEP-0356 privileges (roster, outgoing messages, pubsub and upload IQs)."""


def patch_mod_privilege(source: str) -> tuple[str, bool]:
    """Close each advertised IQ <namespace/> in mod_privilege's Lua source.

    Returns the new source and whether anything was changed; an already fixed module
    comes back unchanged with `False`.
    """
    patched, count = _UNCLOSED_NAMESPACE.subn(r"\g<call>:up()", source)
    return patched, count > 0


def install_mod_privilege(plugins_dir: Path, source: Path = SYSTEM_MOD_PRIVILEGE) -> Path:
    """Copy mod_privilege into `plugins_dir/mod_privilege/`, patched if it needs to be."""
    try:
        text = source.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ServerStartError(
            f"mod_privilege not found at {source}: install the Debian package "
            "'prosody-modules', or start Prosody without privileged components"
        ) from None
    patched, changed = patch_mod_privilege(text)
    if changed:
        log.info("Patched %s: each IQ <namespace/> privilege is now closed", source)
    else:
        log.info("%s needs no patch (no unclosed <namespace/>); copied unchanged", source)
    dest = plugins_dir / "mod_privilege" / "mod_privilege.lua"
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_text(patched, encoding="utf-8")
    return dest


def lua_str(value: str | Path) -> str:
    """A Lua string literal for `value`."""
    text = str(value)
    escaped = (
        text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _lua_list(values: Iterable[str | int]) -> str:
    items = [lua_str(v) if isinstance(v, str) else str(v) for v in values]
    return "{ " + ", ".join(items) + " }" if items else "{}"


class Prosody(ManagedServer):
    """One Prosody process on 127.0.0.1, configured and owned by this object.

    Use as a context manager, or call `start()` and `stop()`; `restart()` keeps the
    ports, data and registered users.
    """

    name = "Prosody"

    def __init__(
        self,
        workdir: Path,
        domain: str = "localhost",
        components: Iterable[ComponentSpec] = (),
        *,
        c2s_port: int | None = None,
        component_port: int | None = None,
        http_port: int | None = None,
        log_level: str = "info",
        start_timeout: float = 20.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self.domain = domain
        self.muc_domain = f"conference.{domain}"
        self.upload_domain = f"upload.{domain}"
        self.components: tuple[ComponentSpec, ...] = tuple(components)
        self._c2s_port = c2s_port
        self._component_port = component_port
        self._http_port = http_port
        self.log_level = log_level

    # -- paths and ports ------------------------------------------------------------

    @property
    def config_path(self) -> Path:
        return self.workdir / "prosody.cfg.lua"

    @property
    def data_path(self) -> Path:
        return self.workdir / "data"

    @property
    def plugins_path(self) -> Path:
        return self.workdir / "plugins"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "prosody.pid"

    @property
    def log_path(self) -> Path:
        """Prosody's own log."""
        return self.workdir / "prosody.log"

    @property
    def c2s_port(self) -> int:
        return _chosen("c2s_port", self._c2s_port)

    @property
    def component_port(self) -> int:
        """XEP-0114 port; Prosody listens on it only when `components` is not empty."""
        return _chosen("component_port", self._component_port)

    @property
    def http_port(self) -> int:
        return _chosen("http_port", self._http_port)

    @property
    def http_url(self) -> str:
        """Base URL of Prosody's plain HTTP server (file share downloads live under it)."""
        return f"http://{LOOPBACK}:{self.http_port}/"

    def _choose_ports(self) -> None:
        if self._c2s_port is None:
            self._c2s_port = free_port()
        if self._component_port is None:
            self._component_port = free_port()
        if self._http_port is None:
            self._http_port = free_port()

    # -- configuration --------------------------------------------------------------

    def render_config(self) -> str:
        """The whole prosody.cfg.lua; ports must have been given or chosen."""
        privileged = [c for c in self.components if c.privileged]
        lines = [
            "-- Generated by gateway.localservers.prosody; edits are overwritten at start.",
        ]
        if os.geteuid() == 0:
            lines.append("run_as_root = true")
        lines += [
            f"data_path = {lua_str(self.data_path)}",
            f"pidfile = {lua_str(self.pidfile)}",
            "-- TLS is off, but Prosody still indexes a certificate directory at start.",
            f"certificates = {lua_str(self.workdir / 'certs')}",
            f"plugin_paths = {_lua_list([str(self.plugins_path)])}",
            "log = {",
            f"  {{ levels = {{ min = {lua_str(self.log_level)} }},"
            f' to = "file", filename = {lua_str(self.log_path)} }};',
            "}",
            "",
            "-- Loopback only, and every listener named so none falls back to a default",
            "-- port that another Prosody on this machine already holds.",
            f"interfaces = {_lua_list([LOOPBACK])}",
            f"local_interfaces = {_lua_list([LOOPBACK])}",
            f"component_interfaces = {_lua_list([LOOPBACK])}",
            f"http_interfaces = {_lua_list([LOOPBACK])}",
            f"https_interfaces = {_lua_list([LOOPBACK])}",
            f"c2s_ports = {_lua_list([self.c2s_port])}",
            f"component_ports = {_lua_list([self.component_port])}",
            f"http_ports = {_lua_list([self.http_port])}",
            "s2s_ports = {}",
            "https_ports = {}",
            "c2s_direct_tls_ports = {}",
            "s2s_direct_tls_ports = {}",
            "legacy_ssl_ports = {}",
            "",
            "-- No TLS on loopback: clients log in with SCRAM/PLAIN over plain TCP.",
            'modules_disabled = { "s2s", "tls" }',
            "c2s_require_encryption = false",
            "s2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            'authentication = "internal_hashed"',
            "allow_registration = false",
            "-- With Nagle on, a stanza right behind another waits up to 40 ms.",
            "network_settings = { nagle = false }",
            "",
            f"modules_enabled = {_lua_list(HOST_MODULES)}",
            "",
            f"VirtualHost {lua_str(self.domain)}",
        ]
        if privileged:
            lines.append('  modules_enabled = { "privilege" }')
            lines.append("  privileged_entities = {")
            for comp in privileged:
                lines.append(f"    [{lua_str(comp.jid)}] = {{")
                lines.append('      roster = "both",')
                lines.append('      message = "outgoing",')
                lines.append("      iq = {")
                for ns, access in PRIVILEGED_IQ_NAMESPACES.items():
                    lines.append(f"        [{lua_str(ns)}] = {lua_str(access)},")
                lines.append("      },")
                lines.append("    },")
            lines.append("  }")
        lines += [
            "",
            f'Component {lua_str(self.muc_domain)} "muc"',
            '  modules_enabled = { "muc_mam" }',
            "",
            f'Component {lua_str(self.upload_domain)} "http_file_share"',
            f"  http_host = {lua_str(LOOPBACK)}",
            f"  http_external_url = {lua_str(self.http_url)}",
        ]
        for comp in self.components:
            lines += ["", f"Component {lua_str(comp.jid)}"]
            lines.append(f"  component_secret = {lua_str(comp.secret)}")
            if comp.privileged:
                lines.append('  modules_enabled = { "privilege" }')
        return "\n".join(lines) + "\n"

    def prepare(self) -> None:
        """Create the directories, patched plugins and config (ports chosen if needed)."""
        self._choose_ports()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_path.mkdir(mode=0o750, exist_ok=True)
        self.plugins_path.mkdir(exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)
        if any(c.privileged for c in self.components):
            install_mod_privilege(self.plugins_path)
        self.config_path.write_text(self.render_config(), encoding="utf-8")

    def command(self) -> list[str]:
        return ["prosody", "--config", str(self.config_path), "-F"]

    def listen_ports(self) -> tuple[int, ...]:
        # Prosody opens the component port only when a Component block needs it.
        if self.components:
            return (self.c2s_port, self.component_port, self.http_port)
        return (self.c2s_port, self.http_port)

    # -- accounts -------------------------------------------------------------------

    def register(self, user: str, password: str) -> None:
        """Create (or reset the password of) `user@domain`."""
        self._prosodyctl("register", user, self.domain, password)
        log.info("Registered %s@%s", user, self.domain)

    def unregister(self, user: str) -> None:
        """Delete the account `user@domain`."""
        self._prosodyctl("deluser", f"{user}@{self.domain}")
        log.info("Deleted %s@%s", user, self.domain)

    def _prosodyctl(self, *args: str) -> None:
        if not self.config_path.exists():
            self.prepare()
        argv = ["prosodyctl", "--config", str(self.config_path), *args]
        result = subprocess.run(  # noqa: S603 - fixed program, our own arguments
            argv, capture_output=True, text=True, timeout=30, check=False
        )
        if result.returncode != 0:
            shown = " ".join(argv[:5])  # never the password
            raise ServerCommandError(
                f"{shown} failed with code {result.returncode}:\n"
                f"{result.stdout}{result.stderr}\n{describe_logs([self.log_path], 20)}"
            )


def _chosen(name: str, port: int | None) -> int:
    if port is None:
        raise RuntimeError(f"Prosody.{name} is chosen at start(); start the server first")
    return port
