"""``passerelle demo``: a whole working setup on loopback, for trying Passerelle in a minute.

It starts a throw-away Prosody (with the components, privileges, MUC and upload service a
real deployment has) and an ngircd IRC server, registers a demo XMPP account, writes a
``gateway.toml`` with the IRC and echo networks and runs Passerelle's supervisor on it,
all under one directory and on non-default ports of 127.0.0.1. It prints how to log in;
Ctrl-C stops what it started, and nothing else. The servers come from Debian packages;
``scripts/demo.sh`` installs them first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .config import load
from .localservers import ComponentSpec, LocalServerError, NgIrcd, Prosody
from .supervisor import Supervisor, network_children, run_supervisor

log = logging.getLogger(__name__)

DOMAIN = "localhost"
DEMO_USER = "demo"
PREFERRED_PORTS = {"c2s": 15222, "component": 15347, "http": 15280, "irc": 16667}
"""Fixed when free, so the login details stay the same between runs."""


@dataclass(frozen=True, slots=True)
class LoginDetails:
    """What a person (or the e2e test) needs to log in; also written to ``login.json``."""

    jid: str
    password: str
    host: str
    port: int
    gateway: str
    """The echo network's component."""
    irc_gateway: str
    irc_port: int
    """The demo IRC server's port on 127.0.0.1, for an IRC client such as irssi."""


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _missing_programs() -> list[str]:
    return [p for p in ("prosody", "prosodyctl", "ngircd") if shutil.which(p) is None]


def banner(login: LoginDetails) -> str:
    channel = f"#demo%127.0.0.1@{login.irc_gateway}"
    return f"""
=====================================================================
 Passerelle demo is starting. Log in with any XMPP client:

   JID:       {login.jid}
   password:  {login.password}
   server:    {login.host}, port {login.port}  (plain connection, no TLS: loopback only)

 e.g. Gajim: Add account > Advanced > Connection: host {login.host}, port {login.port},
      "Unencrypted connection".  profanity: /connect {login.jid} server {login.host} \
port {login.port} tls disable

 IRC:
   1. Register with the gateway {login.irc_gateway} (Gajim: Discover services, pick
      it, "Register"; or its "Register" ad-hoc command) and choose an IRC nick.
   2. Join the group chat {channel}
   3. From an IRC client, join #demo on {login.host} port {login.irc_port}
      (irssi -c {login.host} -p {login.irc_port}) and talk to yourself across.
 Echo (a fake network that repeats you): register with {login.gateway}, then talk to
   echo@{login.gateway}; correct your message and echo corrects its answer.

 Press Ctrl-C to stop everything the demo started.
=====================================================================
"""


def _write_config(path: Path, login: LoginDetails, prosody: Prosody, irc_port: int) -> None:
    secrets_by_jid = {c.jid: c.secret for c in prosody.components}
    path.write_text(
        f"""# Written by `passerelle demo`; thrown away with this directory.
data_dir = "./data"
admins = ["{login.jid}"]

[xmpp]
host = "127.0.0.1"
port = {prosody.component_port}

[networks.echo]
jid = "{login.gateway}"
secret = "{secrets_by_jid[login.gateway]}"

[networks.irc]
jid = "{login.irc_gateway}"
secret = "{secrets_by_jid[login.irc_gateway]}"

# The demo's own IRC server; admin-defined servers may be on loopback.
[networks.irc.servers."127.0.0.1"]
host = "127.0.0.1"
port = {irc_port}
tls = false
""",
        encoding="utf-8",
    )
    path.chmod(0o600)


def run_demo(directory: Path) -> int:
    if missing := _missing_programs():
        print(
            f"passerelle demo: {', '.join(missing)} not found. Run scripts/demo.sh, which "
            "installs the Debian packages it needs (prosody, prosody-modules, ngircd).",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(level="INFO", format="demo | %(levelname)s %(name)s: %(message)s")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    echo_jid, irc_jid = f"echo.{DOMAIN}", f"irc.{DOMAIN}"
    prosody = Prosody(
        directory / "prosody",
        domain=DOMAIN,
        components=[
            ComponentSpec(echo_jid, secrets.token_urlsafe(24)),
            ComponentSpec(irc_jid, secrets.token_urlsafe(24)),
        ],
        c2s_port=_port_or_free(PREFERRED_PORTS["c2s"]),
        component_port=_port_or_free(PREFERRED_PORTS["component"]),
        http_port=_port_or_free(PREFERRED_PORTS["http"]),
    )
    ircd = NgIrcd(directory / "ngircd", port=_port_or_free(PREFERRED_PORTS["irc"]))
    try:
        with prosody, ircd:
            password = secrets.token_urlsafe(9)
            prosody.register(DEMO_USER, password)
            login = LoginDetails(
                jid=f"{DEMO_USER}@{DOMAIN}",
                password=password,
                host="127.0.0.1",
                port=prosody.c2s_port,
                gateway=echo_jid,
                irc_gateway=irc_jid,
                irc_port=ircd.port,
            )
            config_path = directory / "gateway.toml"
            _write_config(config_path, login, prosody, ircd.port)
            login_path = directory / "login.json"
            login_path.write_text(json.dumps(asdict(login)), encoding="utf-8")
            login_path.chmod(0o600)
            print(banner(login), flush=True)
            supervisor = Supervisor(network_children(load(config_path)))
            asyncio.run(run_supervisor(supervisor))
    except LocalServerError as e:
        print(f"passerelle demo: {e}", file=sys.stderr)
        return 1
    print("demo stopped: Passerelle, Prosody and ngircd are down.")
    return 0
