"""``passerelle demo``: a whole working setup on loopback, for trying Passerelle in a minute.

It starts a throw-away Prosody (with the components, privileges, MUC and upload service a
real deployment has), registers a demo XMPP account, writes a ``gateway.toml`` and runs
Passerelle's supervisor on it, all under one directory and on non-default ports of
127.0.0.1. It prints how to log in; Ctrl-C stops what it started, and nothing else.
The servers come from Debian packages; ``scripts/demo.sh`` installs them first.
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
from .localservers import ComponentSpec, LocalServerError, Prosody
from .supervisor import Supervisor, network_children, run_supervisor

log = logging.getLogger(__name__)

DOMAIN = "localhost"
DEMO_USER = "demo"
PREFERRED_PORTS = {"c2s": 15222, "component": 15347, "http": 15280}
"""Fixed when free, so the login details stay the same between runs."""


@dataclass(frozen=True, slots=True)
class LoginDetails:
    """What a person (or the e2e test) needs to log in; also written to ``login.json``."""

    jid: str
    password: str
    host: str
    port: int
    gateway: str


def _port_or_free(preferred: int) -> int:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", preferred))
        except OSError:
            s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _missing_programs() -> list[str]:
    return [p for p in ("prosody", "prosodyctl") if shutil.which(p) is None]


def banner(login: LoginDetails) -> str:
    return f"""
=====================================================================
 Passerelle demo is starting. Log in with any XMPP client:

   JID:       {login.jid}
   password:  {login.password}
   server:    {login.host}, port {login.port}  (plain connection, no TLS: loopback only)

 e.g. Gajim: Add account > Advanced > Connection: host {login.host}, port {login.port},
      "Unencrypted connection".  profanity: /connect {login.jid} server {login.host} \
port {login.port} tls disable

 Then:
   1. Register with the gateway {login.gateway}: in Gajim, Discover services,
      select it and "Register"; or run its "Register" ad-hoc command.
   2. The contact echo@{login.gateway} appears in your roster: say hello.
   3. Correct your message: echo corrects its answer.

 Press Ctrl-C to stop everything the demo started.
=====================================================================
"""


def run_demo(directory: Path, network: str = "echo") -> int:
    if missing := _missing_programs():
        print(
            f"passerelle demo: {', '.join(missing)} not found. Run scripts/demo.sh, which "
            "installs the Debian packages it needs (prosody, prosody-modules).",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(level="INFO", format="demo | %(levelname)s %(name)s: %(message)s")
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    gateway_jid = f"{network}.{DOMAIN}"
    secret = secrets.token_urlsafe(24)
    prosody = Prosody(
        directory / "prosody",
        domain=DOMAIN,
        components=[ComponentSpec(gateway_jid, secret)],
        c2s_port=_port_or_free(PREFERRED_PORTS["c2s"]),
        component_port=_port_or_free(PREFERRED_PORTS["component"]),
        http_port=_port_or_free(PREFERRED_PORTS["http"]),
    )
    try:
        with prosody:
            password = secrets.token_urlsafe(9)
            prosody.register(DEMO_USER, password)
            login = LoginDetails(
                f"{DEMO_USER}@{DOMAIN}", password, "127.0.0.1", prosody.c2s_port, gateway_jid
            )
            config_path = directory / "gateway.toml"
            config_path.write_text(
                f"# Written by `passerelle demo`; thrown away with this directory.\n"
                f'data_dir = "./data"\nadmins = ["{login.jid}"]\n\n'
                f'[xmpp]\nhost = "127.0.0.1"\nport = {prosody.component_port}\n\n'
                f'[networks.{network}]\njid = "{gateway_jid}"\nsecret = "{secret}"\n',
                encoding="utf-8",
            )
            config_path.chmod(0o600)
            login_path = directory / "login.json"
            login_path.write_text(json.dumps(asdict(login)), encoding="utf-8")
            login_path.chmod(0o600)
            print(banner(login), flush=True)
            supervisor = Supervisor(network_children(load(config_path)))
            asyncio.run(run_supervisor(supervisor))
    except LocalServerError as e:
        print(f"passerelle demo: {e}", file=sys.stderr)
        return 1
    print("demo stopped: Passerelle and Prosody are down.")
    return 0
