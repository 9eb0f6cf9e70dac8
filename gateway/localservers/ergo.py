"""A throw-away Ergo on loopback, for the end-to-end tests of IRCv3 `chathistory`.

Ergo (ergo.chat) is the IRC server that offers the whole IRCv3 set Passerelle uses,
`draft/chathistory` among it, which neither ngIRCd nor InspIRCd 3 has. It is packaged
by Debian from trixie on (`ergochat`; bookworm's `ergo` is a chemistry program), so
`scripts/bootstrap.sh test` unpacks trixie's package, checked against Debian's signed
archive, into `.tools/debian/ergochat` (see `scripts/fetch_deb.py`): a Go program that
needs only libc. `PASSERELLE_ERGO` names another binary.

`Ergo(workdir)` writes a config (JSON, which Ergo's YAML reader takes) that listens on
127.0.0.1 only, without TLS, host name or ident lookups, IP cloaking, per-IP limits,
nick reservation or fake lag, with languages off and the history in memory (up to
`history_length` lines a channel, all of it open to `CHATHISTORY`, 1,000 a request),
creates its database with `ergochat initdb` and runs `ergochat run` in the foreground.
The history lives as long as the process: `restart()` forgets it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from gateway.localservers._process import ManagedServer
from gateway.localservers.errors import ServerStartError
from gateway.localservers.ports import LOOPBACK, free_port

log = logging.getLogger(__name__)

UNPACKED = Path(__file__).resolve().parents[2] / ".tools/debian/ergochat/usr/bin/ergochat"


def ergo_binary() -> Path:
    """The Ergo to run: `PASSERELLE_ERGO`, the one bootstrap unpacked, or on PATH."""
    named = os.environ.get("PASSERELLE_ERGO")
    if named:
        return Path(named)
    if UNPACKED.is_file():
        return UNPACKED
    found = shutil.which("ergochat") or shutil.which("ergo-ircd")
    if found:
        return Path(found)
    raise ServerStartError(
        f"no Ergo IRC server: {UNPACKED} is missing. Run `bash scripts/bootstrap.sh test` "
        "(it unpacks Debian trixie's ergochat there) or set PASSERELLE_ERGO to its binary."
    )


class Ergo(ManagedServer):
    """One Ergo process on 127.0.0.1, configured and owned by this object."""

    name = "Ergo"

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        server_name: str = "ergo.localhost",
        network: str = "PasserelleTest",
        history_length: int = 2048,
        chathistory_max: int = 1000,
        start_timeout: float = 10.0,
    ) -> None:
        super().__init__(workdir, start_timeout)
        self._port = port
        self.server_name = server_name
        self.network = network
        self.history_length = history_length
        self.chathistory_max = chathistory_max

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("Ergo.port is chosen at start(); start the server first")
        return self._port

    @property
    def config_path(self) -> Path:
        return self.workdir / "ircd.yaml"

    @property
    def database_path(self) -> Path:
        return self.workdir / "ircd.db"

    @property
    def motd_path(self) -> Path:
        return self.workdir / "ergo.motd"

    @property
    def log_path(self) -> Path:
        return self.output_path  # Ergo logs to stderr

    def config(self) -> dict[str, Any]:
        """The whole configuration; the port must have been given or chosen."""
        return {
            "network": {"name": self.network},
            "server": {
                "name": self.server_name,
                "listeners": {f"{LOOPBACK}:{self.port}": {}},
                "casemapping": "ascii",
                "enforce-utf8": True,
                "lookup-hostnames": False,
                "forward-confirm-hostnames": False,
                "check-ident": False,
                "motd": str(self.motd_path),
                "max-sendq": "16M",
                "ip-limits": {"count": False, "throttle": False},
                "ip-cloaking": {"enabled": False},
            },
            "accounts": {
                "registration": {"enabled": True, "bcrypt-cost": 4},
                "multiclient": {
                    "enabled": True,
                    "allowed-by-default": True,
                    "always-on": "disabled",
                },
                "nick-reservation": {"enabled": False},
            },
            "channels": {"default-modes": "+nt", "registration": {"enabled": True}},
            "datastore": {"path": str(self.database_path), "autoupgrade": True},
            "languages": {"enabled": False},
            "limits": {
                "nicklen": 32,
                "identlen": 20,
                "realnamelen": 150,
                "channellen": 64,
                "awaylen": 390,
                "kicklen": 390,
                "topiclen": 390,
                "monitor-entries": 100,
                "whowas-entries": 100,
                "chan-list-modes": 100,
                "registration-messages": 1024,
                "multiline": {"max-bytes": 4096, "max-lines": 100},
            },
            "fakelag": {"enabled": False},
            "history": {
                "enabled": True,
                "channel-length": self.history_length,
                "client-length": 256,
                "autoresize-window": "3d",
                "autoreplay-on-join": 0,
                "chathistory-maxmessages": self.chathistory_max,
                "znc-maxmessages": self.chathistory_max,
                "restrictions": {"expire-time": "1w", "query-cutoff": "none"},
            },
            "logging": [{"method": "stderr", "type": "* -userinput -useroutput", "level": "info"}],
            "lock-file": str(self.workdir / "ircd.lock"),
        }

    def prepare(self) -> None:
        if self._port is None:
            self._port = free_port()
        self.motd_path.write_text(
            f"{self.server_name}: a Passerelle test server on loopback.\n", encoding="utf-8"
        )
        self.config_path.write_text(json.dumps(self.config(), indent=1) + "\n", encoding="utf-8")
        if not self.database_path.exists():
            done = subprocess.run(  # noqa: S603 - argv built here
                [str(ergo_binary()), "initdb", "--conf", str(self.config_path), "--quiet"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
            if done.returncode != 0:
                raise ServerStartError(f"ergochat initdb failed: {done.stdout}{done.stderr}")

    def command(self) -> list[str]:
        return [str(ergo_binary()), "run", "--conf", str(self.config_path)]

    def listen_ports(self) -> tuple[int, ...]:
        return (self.port,)
