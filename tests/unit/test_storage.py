"""``[storage] url`` without a server: the URL slidge gets, how database errors end the
process, the local PostgreSQL wrapper's arguments, and detectors for the slidge bugs that
PostgreSQL storage works around (when one fails, upstream fixed it: drop the workaround).
"""

from __future__ import annotations

import importlib.metadata
import inspect
import os
from pathlib import Path

import pytest
import sqlalchemy.exc
from slidge.db import models
from slidge.db.alembic import versions
from sqlalchemy.dialects import registry
from sqlalchemy.engine import make_url

from gateway import child, slidge_fixes
from gateway.child import EXIT_CONFIG, EXIT_TEMPFAIL, describe_db_error, postgres_url
from gateway.config import load
from gateway.localservers import postgres as pg
from gateway.localservers.errors import ServerStartError

CONFIG = """
[storage]
url = "postgresql://gw:dbp%40ss@db.example.org:5433/passerelle"

[networks.echo]
jid = "echo.example.org"
secret = "s3cret"
"""

# -- detectors ------------------------------------------------------------------------


def test_bug3_migration_still_calls_sqlite_instr() -> None:
    migration = Path(versions.__path__[0]) / "39ce1636571a_store_only_local_parts_of_jids.py"
    assert "INSTR(jid, '@')" in migration.read_text(encoding="utf-8")


def test_bug5_postgres_extra_and_sqlalchemy_default_driver_still_disagree() -> None:
    requires = importlib.metadata.requires("slidge") or []
    assert any(r.startswith("psycopg2-binary") and "postgres" in r for r in requires)
    # SQLAlchemy 2.1 made psycopg 3 the default for a bare postgresql:// URL.
    assert registry.load("postgresql").driver == "psycopg"


def test_bug6_room_still_has_no_cascade_to_group_origins() -> None:
    assert "GroupMessagesOrigin" not in inspect.getsource(models.Room)


# -- the fixes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg2"),
        ("postgres://u@h/db", "postgresql+psycopg2"),
        ("postgresql+psycopg2://u@h/db", "postgresql+psycopg2"),
        ("sqlite:///x.sqlite", "sqlite"),
    ],
)
def test_postgres_driver_is_named(url: str, driver: str) -> None:
    assert slidge_fixes.postgres_driver(make_url(url)).drivername == driver


def test_cascade_room_origins_is_idempotent() -> None:
    slidge_fixes.cascade_room_origins()
    slidge_fixes.cascade_room_origins()
    relationship = models.Room.__mapper__.relationships[slidge_fixes.ORIGINS_RELATIONSHIP]
    assert relationship.mapper.class_ is models.GroupMessagesOrigin
    assert relationship.cascade.delete_orphan


# -- the URL slidge gets ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected", "password"),
    [
        (
            "postgresql://gw:secret@db:5433/passerelle",
            "postgresql+psycopg2://gw@db:5433/passerelle?options=-csearch_path%3Dpasserelle_irc",
            "secret",
        ),
        (
            "postgres://gw@db/passerelle",
            "postgresql+psycopg2://gw@db/passerelle?options=-csearch_path%3Dpasserelle_irc",
            None,
        ),
        (
            "postgresql://gw:p%40ss%2Fw@db/p?sslmode=require&options=-cstatement_timeout%3D5s",
            "postgresql+psycopg2://gw@db/p?options=-cstatement_timeout%3D5s+-csearch_path"
            "%3Dpasserelle_irc&sslmode=require",
            "p@ss/w",
        ),
    ],
)
def test_postgres_url(url: str, expected: str, password: str | None) -> None:
    assert postgres_url(url, "passerelle_irc") == (expected, password)


def test_slidge_argv_has_the_schema_and_no_password(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    argv = child.slidge_argv(load(path), "echo")
    db_url = argv[argv.index("--db-url") + 1]
    assert db_url == (
        "postgresql+psycopg2://gw@db.example.org:5433/passerelle"
        "?options=-csearch_path%3Dpasserelle_echo"
    )
    assert not any("dbp" in arg for arg in argv)


# -- database errors --------------------------------------------------------------------

URL = "postgresql+psycopg2://gw@db.example.org:5433/passerelle"


def operational(message: str) -> sqlalchemy.exc.OperationalError:
    return sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception(message))


@pytest.mark.parametrize(
    ("message", "code"),
    [
        ('FATAL:  password authentication failed for user "gw"', EXIT_CONFIG),
        ("fe_sendauth: no password supplied", EXIT_CONFIG),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "gw"', EXIT_CONFIG),
        ('FATAL:  role "gw" does not exist', EXIT_CONFIG),
        ('FATAL:  database "passerelle" does not exist', EXIT_CONFIG),
        ("permission denied for database passerelle", EXIT_CONFIG),
        ('FATAL:  role "gw" is not permitted to log in', EXIT_CONFIG),
        ("connection to server failed: Connection refused\n\tIs the server running", EXIT_TEMPFAIL),
        ('could not translate host name "db.example.org" to address', EXIT_TEMPFAIL),
        ("FATAL:  the database system is starting up", EXIT_TEMPFAIL),
        ("FATAL:  sorry, too many clients already", EXIT_TEMPFAIL),
        ("server closed the connection unexpectedly", EXIT_TEMPFAIL),
    ],
)
def test_database_errors_are_classified(message: str, code: int) -> None:
    line, exit_code = describe_db_error(operational(message), URL)
    assert exit_code == code
    assert "\n" not in line
    assert line.startswith("[storage] url: ")
    assert "db.example.org:5433" in line
    assert "'passerelle'" in line


def test_unknown_driver_is_a_configuration_error() -> None:
    exc = sqlalchemy.exc.NoSuchModuleError("Can't load plugin: sqlalchemy.dialects:postgresql.x")
    assert describe_db_error(exc, URL)[1] == EXIT_CONFIG


def test_missing_driver_is_a_configuration_error() -> None:
    line, code = describe_db_error(ModuleNotFoundError("No module named 'psycopg2'"), URL)
    assert code == EXIT_CONFIG
    assert "passerelle[postgres]" in line


def test_unreachable_database_exits_for_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    seen: list[str] = []

    def refuse(url: str, schema: str) -> None:
        seen.append(os.environ.get("PGPASSWORD", ""))
        raise operational("connection to server failed: Connection refused")

    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setattr(slidge_fixes, "postgres_prepare", refuse)
    with pytest.raises(SystemExit) as exit_:
        child._prepare_storage(load(path), "echo")
    assert exit_.value.code == EXIT_TEMPFAIL
    assert seen == ["dbp@ss"]  # the password travels in the environment
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "cannot reach PostgreSQL at db.example.org:5433" in err
    assert "dbp" not in err


# -- the local PostgreSQL ---------------------------------------------------------------


def test_missing_binaries_raise_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pg, "find_bindir", lambda: None)
    with pytest.raises(ServerStartError, match="install the Debian package 'postgresql'"):
        pg.PostgreSQL(Path("/nonexistent"))


def test_url_quotes_user_and_password(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(pg, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    server = pg.PostgreSQL(tmp_path, port=5999)
    assert server.url() == "postgresql://postgres@127.0.0.1:5999/passerelle"
    url = make_url(server.url("db", "gw", "p@ss:/w"))
    assert (url.username, url.password, url.port, url.database) == ("gw", "p@ss:/w", 5999, "db")


def test_server_runs_as_the_postgres_user_when_root(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(pg, "find_bindir", lambda: Path("/usr/lib/postgresql/15/bin"))
    server = pg.PostgreSQL(tmp_path, port=5999)
    server._cluster = tmp_path / "cluster"
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    argv = server.command()
    # The parent-death signal is set after the user change, which clears it (SIGINT: a
    # fast shutdown, see gateway.localservers._process).
    death = ["setpriv", "--pdeathsig", "INT"]
    assert argv[:7] == [*death, "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
    assert argv[7] == "/usr/lib/postgresql/15/bin/postgres"
    assert "listen_addresses=127.0.0.1" in argv
    assert "fsync=off" in argv
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert server.command()[:5] == [*death, "--", "/usr/lib/postgresql/15/bin/postgres"]


def test_reachable_by(tmp_path: Path) -> None:
    private = tmp_path / "private"
    inner = private / "inner"
    inner.mkdir(parents=True)
    private.chmod(0o700)
    tmp_path.chmod(0o755)
    stranger, strangers = 54321, {54321}
    assert not pg.reachable_by(inner, stranger, strangers)
    assert pg.reachable_by(tmp_path / "not-yet", os.getuid(), {os.getgid()})
    private.chmod(0o711)
    if all(os.stat(p).st_mode & 0o001 for p in tmp_path.parents):
        assert pg.reachable_by(inner, stranger, strangers)
