"""matridge, slidge's own Matrix gateway, in a virtual environment of its own.

matridge pins its own slidge and matrix-nio, so it never goes into Passerelle's
environment: `ensure_venv` creates ``.tools/matridge-VERSION/`` (git-ignored) with ``uv``
the first time the benchmark runs and reuses it afterwards (a marker file says the
install finished). `MatridgeServer` runs it as an XEP-0114 component, the way its users
do (``python -m matridge --jid … --secret … --server … --port … --home-dir …``), with
its defaults, except one thing: its gateway class names a component avatar on
codeberg.org that slidge downloads at start-up, and nothing here may leave loopback, so
the launcher sets ``COMPONENT_AVATAR = None`` before handing over to matridge's own
entry point.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

from gateway.localservers._process import ManagedServer, terminate
from gateway.localservers.errors import ServerStartError
from gateway.localservers.ports import describe_logs

log = logging.getLogger(__name__)

MATRIDGE_VERSION = "0.5.0"
"""The newest matridge on PyPI. It needs Python ≥ 3.13 and brings slidge 0.5. The one
before, 0.4.1 (Python 3.11, slidge 0.4.2 like Passerelle), cannot be benchmarked: an XMPP
client cannot join a room whose Matrix id has upper-case letters (every room id has), it
gets ``item-not-found``."""
PYTHON_FOR = {"0.4": "3.11", "0.5": "3.13"}
"""The Python version each matridge series runs on (``--matridge-python`` overrides)."""
REPO = Path(__file__).resolve().parent.parent
INSTALL_TIMEOUT = 900.0

LAUNCHER = (
    "import sys, matridge, matridge.gateway\n"
    "matridge.gateway.Gateway.COMPONENT_AVATAR = None  # no download from codeberg.org\n"
    "sys.argv[0] = 'matridge'\n"
    "matridge.main()\n"
)


def venv_dir(version: str = MATRIDGE_VERSION) -> Path:
    return REPO / ".tools" / f"matridge-{version}"


def _uv() -> str:
    found = shutil.which("uv") or (
        str(REPO / ".tools/bin/uv") if (REPO / ".tools/bin/uv").exists() else None
    )
    if found is None:
        raise ServerStartError("uv is needed to install matridge: run scripts/bootstrap.sh")
    return found


def find_python(request: str) -> str:
    """An interpreter for `request`: a path as given, or for a version such as ``3.13``
    the first ``python3.13`` that runs (on the PATH, or one pyenv installed)."""
    if "/" in request:
        return request
    candidates = [shutil.which(f"python{request}") or ""]
    candidates += sorted(
        str(p) for p in Path.home().glob(f".pyenv/versions/{request}*/bin/python{request}")
    )
    for candidate in filter(None, candidates):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run([candidate, "-c", "pass"], capture_output=True, timeout=30, check=True)
            return candidate
    return request  # let uv look for it


def ensure_venv(version: str = MATRIDGE_VERSION, python_request: str | None = None) -> Path:
    """The Python interpreter of a venv with ``matridge==version``; created if missing,
    with `python_request` (a path or a version; default: the one the series needs)."""
    venv = venv_dir(version)
    python = venv / "bin" / "python"
    marker = venv / ".passerelle-bench-installed"
    if marker.exists() and python.exists():
        return python
    log.info("installing matridge %s into %s (once)", version, venv)
    shutil.rmtree(venv, ignore_errors=True)
    uv = _uv()
    base = find_python(python_request or PYTHON_FOR.get(version.rsplit(".", 1)[0], "3.13"))
    steps = [
        [uv, "venv", "--quiet", "--python", base, str(venv)],
        [uv, "pip", "install", "--quiet", "--python", str(python), f"matridge=={version}"],
    ]  # fmt: skip
    deadline = time.monotonic() + INSTALL_TIMEOUT
    for argv in steps:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=max(1.0, deadline - time.monotonic()),
            check=False,
        )
        if result.returncode != 0:
            raise ServerStartError(
                f"installing matridge {version} failed ({' '.join(argv[:3])}):\n"
                f"{result.stdout}{result.stderr}"
            )
    marker.write_text(version + "\n")
    return python


def venv_versions(python: Path) -> dict[str, str]:
    """Versions of matridge and what it runs on, as installed in its venv."""
    code = (
        "import json, importlib.metadata as m\n"
        "names = ['matridge', 'slidge', 'slixmpp', 'matrix-nio', 'sqlalchemy', 'python-olm']\n"
        "print(json.dumps({n: m.version(n) for n in names}))\n"
    )
    try:
        result = subprocess.run(
            [str(python), "-c", code], capture_output=True, text=True, timeout=60, check=True
        )
        versions: dict[str, str] = json.loads(result.stdout)
    except (OSError, subprocess.SubprocessError, ValueError) as e:
        log.warning("cannot read the versions in %s: %s", python, e)
        return {}
    return versions


class MatridgeServer(ManagedServer):
    """One matridge process, connected to Prosody as the component `jid`."""

    name = "matridge"
    READY = re.compile(r"Slidge has successfully started")

    def __init__(self, workdir: Path, python: Path, jid: str, secret: str, xmpp_port: int) -> None:
        super().__init__(workdir, start_timeout=120.0)
        self.python = python
        self.jid, self.secret, self.xmpp_port = jid, secret, xmpp_port

    @property
    def home_dir(self) -> Path:
        return self.workdir / "home"

    @property
    def database_path(self) -> Path:
        return self.home_dir / "slidge.sqlite"

    @property
    def log_path(self) -> Path:
        return self.output_path

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    def prepare(self) -> None:
        self.home_dir.mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            str(self.python), "-P", "-c", LAUNCHER,
            "--jid", self.jid, "--server", "127.0.0.1", "--port", str(self.xmpp_port),
            "--home-dir", str(self.home_dir),
        ]  # fmt: skip

    def listen_ports(self) -> tuple[int, ...]:
        return ()  # a component: ready when slidge says so

    def start(self) -> None:
        # The secret goes through the environment (SLIDGE_SECRET), not the command line.
        os.environ["SLIDGE_SECRET"] = self.secret
        try:
            super().start()
        finally:
            del os.environ["SLIDGE_SECRET"]
        deadline = time.monotonic() + self.start_timeout
        while not self.READY.search(self.output_path.read_text(errors="replace")):
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"matridge did not start within {self.start_timeout:g} s"
                    f"\n{describe_logs([self.output_path], 40)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.name, timeout=15.0)
