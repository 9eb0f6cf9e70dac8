"""A throw-away InspIRCd 3 on loopback, for the end-to-end tests and `passerelle demo`.

InspIRCd is the IRCv3 server we test against: it loads the capability modules the
Debian build ships (cap, ircv3 = extended-join/away-notify/account-notify, account-tag,
batch, cap-notify, chghost, message-tags, echo-message, invite-notify,
labeled-response, msgid, server-time, multi-prefix, userhost-in-names, setname,
monitor). Flood limits are raised for tests (and lifted with `no_flood_limit=True`),
DNS and ident lookups are off, and everything lives under `workdir`. It runs with
`--nofork --nopid`, plus `--runasroot` when started as root (InspIRCd otherwise refuses
to start).

Three listeners are optional, each on a port of its own chosen at start: TLS
(`tls_cert` and `tls_key`, PEM files: `ssl_gnutls` serves them on `tls_port`); a port
where the connect class wants a server password (`server_password`: `PASS`, on
`password_port`; the other ports stay open without one); and a server link for a
services package (`services`, see `ServicesLink` and `ircservices.Atheme`): InspIRCd
only relays SASL to such a server, so `sasl` is loaded only then, along with
`spanningtree`. Without them the config is what it always was.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import quoteattr

from gateway.localservers._process import ManagedServer
from gateway.localservers.ports import LOOPBACK, free_port

log = logging.getLogger(__name__)

IRCV3_MODULES: tuple[str, ...] = (
    "cap",
    "ircv3",
    "ircv3_accounttag",
    "ircv3_batch",
    "ircv3_capnotify",
    "ircv3_chghost",
    "ircv3_ctctags",
    "ircv3_echomessage",
    "ircv3_invitenotify",
    "ircv3_labeledresponse",
    "ircv3_msgid",
    "ircv3_servertime",
    "namesx",
    "uhnames",
    "chghost",
    "setname",
    "monitor",
    "services_account",
)
"""Modules loaded by default; `services_account` provides the account names that
account-tag and account-notify carry."""


@dataclass(frozen=True, slots=True)
class ServicesLink:
    """A services server that may link to this InspIRCd (U-lined: it may set accounts)
    and receives the SASL exchanges of its clients."""

    name: str = "services.localhost"
    """Its server name, as in its own config (`serverinfo::name` for Atheme)."""
    password: str = "passerelle-services-link"  # noqa: S105 - loopback test link
    """Sent and expected in both directions."""
    sasl: bool = True
    """Relay SASL to it (the `sasl` module); without, accounts log in with NickServ only."""


def _tag(tag: str, /, **attrs: str | int) -> str:
    body = " ".join(f"{key}={quoteattr(str(value))}" for key, value in attrs.items())
    return f"<{tag} {body}>"


class InspIRCd(ManagedServer):
    """One InspIRCd 3 process on 127.0.0.1, configured and owned by this object."""

    name = "InspIRCd"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        server_name: str = "irc.localhost",
        network: str = "PasserelleTest",
        modules: tuple[str, ...] = IRCV3_MODULES,
        no_flood_limit: bool = False,
        max_nick_length: int = 30,
        start_timeout: float = 10.0,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        tls_port: int | None = None,
        server_password: str | None = None,
        password_port: int | None = None,
        services: ServicesLink | None = None,
        link_port: int | None = None,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self._port = port
        self.server_name = server_name
        self.network = network
        self.modules = modules
        self.no_flood_limit = no_flood_limit
        self.max_nick_length = max_nick_length
        if (tls_cert is None) != (tls_key is None):
            raise ValueError("InspIRCd needs both tls_cert and tls_key for a TLS listener")
        self.tls_cert, self.tls_key, self._tls_port = tls_cert, tls_key, tls_port
        self.server_password, self._password_port = server_password, password_port
        self.services, self._link_port = services, link_port

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("InspIRCd.port is chosen at start(); start the server first")
        return self._port

    @property
    def tls_port(self) -> int:
        """The TLS listener's port (with `tls_cert` and `tls_key`)."""
        return self._optional_port(self._tls_port, "tls_port", self.tls_cert)

    @property
    def password_port(self) -> int:
        """The port where `server_password` is required (with `server_password`)."""
        return self._optional_port(self._password_port, "password_port", self.server_password)

    @property
    def link_port(self) -> int:
        """The port `services` link to (with `services`)."""
        return self._optional_port(self._link_port, "link_port", self.services)

    def _optional_port(self, port: int | None, name: str, option: object) -> int:
        if option is None:
            raise RuntimeError(f"this InspIRCd has no {name}: its option was not given")
        if port is None:
            raise RuntimeError(f"InspIRCd.{name} is chosen at start(); start the server first")
        return port

    @property
    def config_path(self) -> Path:
        return self.workdir / "inspircd.conf"

    @property
    def motd_path(self) -> Path:
        return self.workdir / "inspircd.motd"

    @property
    def log_path(self) -> Path:
        return self.workdir / "inspircd.log"

    def render_config(self) -> str:
        """The whole inspircd.conf; the port must have been given or chosen."""
        flood: dict[str, str | int]
        if self.no_flood_limit:
            # commandrate is in lines per 1000 s; a penalty this high is never reached.
            flood = {"threshold": 1_000_000, "commandrate": 1_000_000_000, "fakelag": "no"}
        else:
            # 100 lines/s with a burst of 100 lines: a busy test, not a flood.
            flood = {"threshold": 100, "commandrate": 100_000, "fakelag": "yes"}
        data = self.workdir / "data"
        connect: dict[str, str | int] = {
            "allow": "*",
            "maxchans": 1000,
            "timeout": 60,
            "pingfreq": "2m",
            "hardsendq": "16M",
            "softsendq": "1M",
            "recvq": "1M",
            "localmax": 10_000,
            "globalmax": 10_000,
            "limit": 10_000,
            "resolvehostnames": "no",
            "useident": "no",
            **flood,
        }
        lines = [
            "# Generated by gateway.localservers.inspircd; edits are overwritten at start.",
            '<config format="xml">',
            _tag(
                "path",
                configdir=str(self.workdir),
                datadir=str(data),
                logdir=str(self.workdir),
            ),
            _tag(
                "server",
                name=self.server_name,
                description="Passerelle test server",
                network=self.network,
            ),
            _tag("admin", name="Passerelle tests", nick="admin", email="root@localhost"),
            _tag("bind", address=LOOPBACK, port=self.port, type="clients"),
            *self._optional_listeners(connect),
            _tag("files", motd=str(self.motd_path)),
            # No lookups are made (nouserdns), but never let core_dns read resolv.conf.
            _tag("dns", server=LOOPBACK, timeout=1),
            _tag("performance", nouserdns="yes", clonesonconnect="no"),
            _tag("limits", maxnick=self.max_nick_length, maxchan=64, maxident=10),
            _tag(
                "log",
                method="file",
                type="* -USERINPUT -USEROUTPUT",
                level="default",
                target=str(self.log_path),
            ),
        ]
        modules = list(self.modules)
        if self.tls_cert is not None:
            modules += ["ssl_gnutls", "sslinfo"]
        if self.services is not None:
            wanted = (
                "services_account",
                "spanningtree",
                *(("sasl",) if self.services.sasl else ()),
            )
            modules += [m for m in wanted if m not in modules]
        lines += [_tag("module", name=module) for module in modules]
        return "\n".join(lines) + "\n"

    def _optional_listeners(self, connect: dict[str, str | int]) -> list[str]:
        """The `bind` and `connect` tags after the plain client port: TLS, password and
        services link when configured; the one `connect` class "main" otherwise."""
        lines, open_ports = [], [str(self.port)]
        if self.tls_cert is not None and self.tls_key is not None:
            lines += [
                _tag(
                    "sslprofile",
                    name="tls",
                    provider="gnutls",
                    certfile=str(self.tls_cert),
                    keyfile=str(self.tls_key),
                    hash="sha256",
                    requestclientcert="no",
                ),
                _tag(
                    "bind", address=LOOPBACK, port=self.tls_port, type="clients", sslprofile="tls"
                ),
            ]
            open_ports.append(str(self.tls_port))
        if self.server_password is not None:
            # A connection to this port matches this class only with the password, and
            # "main" is not open to this port: a wrong password is refused, not demoted.
            lines += [
                _tag("bind", address=LOOPBACK, port=self.password_port, type="clients"),
                _tag(
                    "connect",
                    name="password",
                    port=self.password_port,
                    password=self.server_password,
                    hash="plaintext",
                    **connect,
                ),
                _tag("connect", name="main", port=",".join(open_ports), **connect),
            ]
        else:
            lines.append(_tag("connect", name="main", **connect))
        if self.services is not None:
            link = self.services
            lines += [
                _tag("bind", address=LOOPBACK, port=self.link_port, type="servers"),
                _tag(
                    "link",
                    name=link.name,
                    ipaddr=LOOPBACK,
                    port=self.link_port,
                    allowmask="127.0.0.0/8",
                    sendpass=link.password,
                    recvpass=link.password,
                ),
                _tag("uline", server=link.name, silent="yes"),
            ]
            if link.sasl:
                lines.append(_tag("sasl", target=link.name, requiressl="no"))
        return lines

    def prepare(self) -> None:
        if self._port is None:
            self._port = free_port()
        if self.tls_cert is not None and self._tls_port is None:
            self._tls_port = free_port()
        if self.server_password is not None and self._password_port is None:
            self._password_port = free_port()
        if self.services is not None and self._link_port is None:
            self._link_port = free_port()
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        self.motd_path.write_text(
            f"{self.server_name}: a Passerelle test server on loopback.\n", encoding="utf-8"
        )
        self.config_path.write_text(self.render_config(), encoding="utf-8")

    def command(self) -> list[str]:
        argv = ["inspircd", "--config", str(self.config_path), "--nofork", "--nopid"]
        if os.geteuid() == 0:
            argv.append("--runasroot")
        return argv

    def listen_ports(self) -> tuple[int, ...]:
        optional = (
            (self.tls_cert, self._tls_port),
            (self.server_password, self._password_port),
            (self.services, self._link_port),
        )
        return (self.port, *(p for option, p in optional if option is not None and p is not None))
