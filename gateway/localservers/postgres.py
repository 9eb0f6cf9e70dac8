"""A throw-away PostgreSQL on loopback, for the end-to-end tests of ``[storage] url``.

`PostgreSQL(workdir)` creates a cluster with Debian's binaries (``apt-get install
postgresql``; nothing is installed at run time), listens on 127.0.0.1 on a free port with
its unix socket in its own directory, and runs ``postgres`` in the foreground. It is a
test server: loopback connections as ``postgres`` are trusted, other roles log in with a
password (so a wrong password can be tested), and ``fsync`` is off.

initdb and postgres refuse to run as root. As root, both run as the ``postgres`` system
user through ``setpriv``, which *execs* the program: the process this object holds is the
postmaster itself. (``runuser`` forks and stays in between, and on SIGTERM it kills its
child with SIGKILL two seconds later, which would cut a clean shutdown short.) That user
must be able to reach the cluster directory; pytest's temporary directories are private
to root (mode 0700), so when `workdir` is not reachable the cluster goes into a fresh
directory under the system's temporary directory instead, linked from
``workdir/cluster`` and deleted when the context manager exits.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

from gateway.localservers._process import STOP_TIMEOUT, ManagedServer, terminate
from gateway.localservers.errors import ServerCommandError, ServerStartError
from gateway.localservers.ports import LOOPBACK, describe_logs, free_port

log = logging.getLogger(__name__)

SYSTEM_USER = "postgres"
"""The system account the server runs as when we are root (created by Debian's package)."""
SUPERUSER = "postgres"
"""The cluster's superuser role; trusted on loopback."""

DEBIAN_BIN_DIRS = Path("/usr/lib/postgresql")


def find_bindir() -> Path | None:
    """The directory holding ``initdb`` and ``postgres``: Debian's newest, else ``$PATH``."""
    versions = []
    with contextlib.suppress(OSError):
        for entry in DEBIAN_BIN_DIRS.iterdir():
            if entry.name.isdigit() and (entry / "bin" / "postgres").is_file():
                versions.append((int(entry.name), entry / "bin"))
    if versions:
        return max(versions)[1]
    found = shutil.which("postgres")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    return None


def reachable_by(path: Path, uid: int, gids: set[int]) -> bool:
    """Whether a process with `uid` and `gids` may traverse every directory down to `path`."""
    for directory in [path, *path.parents]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            continue  # created later by us, with our own permissions
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


class PostgreSQL(ManagedServer):
    """One PostgreSQL cluster and server on 127.0.0.1, created and owned by this object.

    Use as a context manager, or call `start()` and `stop()`; `restart()` keeps the port
    and the data. `url()` gives a SQLAlchemy URL, `create_database()` and `create_role()`
    prepare what a test needs, `psql()` runs SQL as the superuser.
    """

    name = "PostgreSQL"

    def __init__(
        self, workdir: Path, *, port: int | None = None, start_timeout: float = 30.0
    ) -> None:
        super().__init__(workdir, start_timeout)
        self._port = port
        bindir = find_bindir()
        if bindir is None:
            raise ServerStartError(
                "PostgreSQL's initdb and postgres were not found in "
                f"{DEBIAN_BIN_DIRS}/*/bin or on $PATH: install the Debian package 'postgresql'"
            )
        self.bindir = bindir
        self._cluster: Path | None = None
        self._private_cluster = False

    # -- paths and ports ------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("PostgreSQL.port is chosen at start(); start the server first")
        return self._port

    @property
    def cluster_path(self) -> Path:
        """The directory owned by the server's user: ``data/`` and ``socket/``."""
        if self._cluster is None:
            raise RuntimeError("PostgreSQL.cluster_path is chosen at start(); start it first")
        return self._cluster

    @property
    def data_path(self) -> Path:
        return self.cluster_path / "data"

    @property
    def socket_dir(self) -> Path:
        return self.cluster_path / "socket"

    @property
    def log_path(self) -> Path:
        """postgres logs to stderr in the foreground, so its log is its output."""
        return self.workdir / "postgresql.log"

    @property
    def output_path(self) -> Path:
        return self.log_path

    def url(self, dbname: str = "passerelle", user: str = SUPERUSER, password: str = "") -> str:
        """A ``postgresql://`` URL for `dbname` on this server, over TCP on loopback."""
        auth = quote(user, safe="")
        if password:
            auth += ":" + quote(password, safe="")
        return f"postgresql://{auth}@{LOOPBACK}:{self.port}/{dbname}"

    # -- running as the postgres user -----------------------------------------------

    def _as_server_user(self, argv: list[str], *setpriv: str) -> list[str]:
        """`argv` as the server user when root, with more `setpriv` options if given."""
        if os.geteuid() != 0:
            return ["setpriv", *setpriv, "--", *argv] if setpriv else argv
        user = f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups"
        return ["setpriv", *setpriv, *user, "--", *argv]

    def _server_user(self) -> pwd.struct_passwd | None:
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise ServerStartError(
                f"running as root, but there is no '{SYSTEM_USER}' system user to run "
                "PostgreSQL as: install the Debian package 'postgresql'"
            ) from None

    def _choose_cluster(self) -> Path:
        user = self._server_user()
        cluster = self.workdir / "cluster"
        if user is None:
            cluster.mkdir(mode=0o700, exist_ok=True)
            return cluster
        gids = {user.pw_gid, *os.getgrouplist(SYSTEM_USER, user.pw_gid)}
        if cluster.is_symlink():  # a private cluster made by an earlier start()
            target = cluster.resolve()
            if target.is_dir():
                return target
            cluster.unlink()
        if not reachable_by(self.workdir, user.pw_uid, gids):
            private = Path(tempfile.mkdtemp(prefix="passerelle-postgres-"))
            self._private_cluster = True
            log.info(
                "%s is not reachable by the %r user; keeping the cluster in %s",
                self.workdir, SYSTEM_USER, private,
            )  # fmt: skip
            cluster.symlink_to(private, target_is_directory=True)
            cluster = private
        cluster.mkdir(mode=0o700, exist_ok=True)
        os.chown(cluster, user.pw_uid, user.pw_gid)
        return cluster

    # -- ManagedServer --------------------------------------------------------------

    def prepare(self) -> None:
        """Choose the port and create the cluster (once; a restart keeps its data)."""
        if self._port is None:
            self._port = free_port()
        if self._cluster is None:
            self._cluster = self._choose_cluster()
        if (self.data_path / "PG_VERSION").exists():
            return
        self.socket_dir.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(self.socket_dir)
        initdb = [
            str(self.bindir / "initdb"),
            "--pgdata", str(self.data_path),
            "--username", SUPERUSER,
            "--encoding", "UTF8",
            "--no-locale",
            "--no-sync",
            "--auth-local", "trust",
            "--auth-host", "scram-sha-256",
        ]  # fmt: skip
        self._run_as_server_user(initdb)
        # Test only: the superuser is trusted on loopback; every other role needs its
        # password, so that a wrong one can be tried.
        hba = self.data_path / "pg_hba.conf"
        hba.write_text(
            "# Generated by gateway.localservers.postgres (a test server).\n"
            "local all all trust\n"
            f"host all {SUPERUSER} {LOOPBACK}/32 trust\n"
            f"host all all {LOOPBACK}/32 scram-sha-256\n",
            encoding="utf-8",
        )
        self._give_to_server_user(hba)

    def command(self) -> list[str]:
        postgres = [
            str(self.bindir / "postgres"),
            "-D", str(self.data_path),
            "-p", str(self.port),
            "-c", f"listen_addresses={LOOPBACK}",
            "-c", f"unix_socket_directories={self.socket_dir}",
            "-c", "fsync=off",
            "-c", "synchronous_commit=off",
            "-c", "full_page_writes=off",
            "-c", "logging_collector=off",
        ]  # fmt: skip
        # Changing the user clears the parent-death signal `spawn` sets; setpriv sets it
        # again after: SIGINT, a fast shutdown that does not wait for clients (a killed
        # test run may leave some).
        return self._as_server_user(postgres, "--pdeathsig", "INT")

    def listen_ports(self) -> tuple[int, ...]:
        return (self.port,)

    def start(self) -> None:
        """Start the server and wait until it accepts queries, not only connections."""
        super().start()
        deadline = time.monotonic() + self.start_timeout
        while True:
            ready = subprocess.run(  # noqa: S603 - our own binary and arguments
                [str(self.bindir / "pg_isready"), "-q", "-h", LOOPBACK, "-p", str(self.port)],
                check=False,
                timeout=10,
            )
            if ready.returncode == 0:
                return
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"PostgreSQL on {LOOPBACK}:{self.port} never accepted queries\n"
                    f"{describe_logs([self.log_path])}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        """Fast shutdown (SIGINT: disconnect clients, then stop) of the process we started."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(STOP_TIMEOUT)
        terminate(proc, self.name)

    def close(self) -> None:
        """Stop the server and delete a private cluster made outside `workdir`."""
        self.stop()
        if self._private_cluster and self._cluster is not None:
            shutil.rmtree(self._cluster, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / "cluster").unlink()
            self._cluster = None
            self._private_cluster = False

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- SQL ------------------------------------------------------------------------

    def psql(self, sql: str, dbname: str = "postgres") -> str:
        """Run `sql` as the superuser and return psql's unaligned, tuples-only output."""
        argv = [
            str(self.bindir / "psql"),
            "--no-psqlrc", "--no-align", "--tuples-only", "--quiet",
            "--set", "ON_ERROR_STOP=1",
            "--host", LOOPBACK, "--port", str(self.port),
            "--username", SUPERUSER, "--dbname", dbname,
            "--command", sql,
        ]  # fmt: skip
        return self._run(argv, shown=f"psql -d {dbname}")

    def create_database(self, name: str, owner: str = SUPERUSER) -> None:
        """Create the database `name` owned by role `owner`."""
        self.psql(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        log.info("Created database %s (owner %s)", name, owner)

    def create_role(self, name: str, password: str) -> None:
        """Create a login role that authenticates with `password` (SCRAM over TCP)."""
        escaped = password.replace("'", "''")
        self.psql(f"CREATE ROLE \"{name}\" LOGIN PASSWORD '{escaped}'")
        log.info("Created role %s", name)

    # -- helpers --------------------------------------------------------------------

    def _give_to_server_user(self, path: Path) -> None:
        user = self._server_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _run_as_server_user(self, argv: list[str]) -> str:
        return self._run(self._as_server_user(argv), shown=Path(argv[0]).name)

    def _run(self, argv: list[str], *, shown: str) -> str:
        result = subprocess.run(  # noqa: S603 - our own binaries and arguments
            argv,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd="/",  # the postgres user may not be allowed into our working directory
        )
        if result.returncode != 0:
            raise ServerCommandError(
                f"{shown} failed with code {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result.stdout
