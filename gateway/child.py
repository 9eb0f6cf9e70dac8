"""The entry point of one network's process: configure slidge from our config, then run it.

slidge 0.4.2 allows one legacy module per interpreter (its config, store and registries are
process-global), so the supervisor starts ``python -m gateway.child -c FILE --network NAME``
once per network. This module translates the network's section into slidge's options,
applies :mod:`gateway.slidge_fixes`, and hands over to ``slidge.main.main``. Before slidge
is imported, :mod:`gateway.lazy_imports` keeps the modules slidge rarely uses out of the
process until first use, and :mod:`gateway.malloc_tuning` caps malloc arenas and gives
freed memory back after start-up (a child idled at ~83 MiB instead of ~102 with them);
:mod:`gateway.gc_tuning` then keeps the start-up heap out of the garbage collector's walks.

The configuration is read and validated in a short-lived fork (:func:`validated`): the
same pydantic models and fix-it messages as ``passerelle check``, the file re-read at
every (re)start, but pydantic never enters the long-lived process (~9 MiB less of it
idle: ~75 MiB). The fork sends back, through a pipe, slidge's options and this network's
section as JSON, which becomes the plugin's light settings object (:mod:`gateway.runtime`).

The secret reaches slidge through this process's environment, never through a command
line that ``ps`` would show, nor a file. slidge exits with its own codes: 0 after
SIGTERM, 1 on an unhandled exception in a stanza handler, 3 after a crashed task, 10/15
when the XMPP connection is lost; the supervisor restarts it for any of them but 0 and
:data:`EXIT_CONFIG`.

With ``[storage] url``, the network's schema is prepared before slidge starts, and a
database problem ends the process with one line on stderr: a refused login, an unknown
database or role, a missing privilege or driver is the admin's to fix (:data:`EXIT_CONFIG`,
not restarted); a server that cannot be reached may come back (:data:`EXIT_TEMPFAIL`,
restarted with backoff). The database password, like the component secret, reaches
slidge through the environment (``PGPASSWORD``), so no URL that slidge logs carries it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import logging
import os
import signal
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import gc_tuning, lazy_imports, malloc_tuning, slidge_fixes
from .errors import ConfigError
from .networks import NetworkUnavailable, slidge_module
from .redact import RedactSecrets
from .runtime import from_plain, set_network_config, settings_class

if TYPE_CHECKING:
    from . import config as config_mod

EXIT_CONFIG = 78
"""Exit code for a configuration problem (sysexits' EX_CONFIG): restarting will not help."""
EXIT_TEMPFAIL = 75
"""Exit code when the database cannot be reached (sysexits' EX_TEMPFAIL): try again later."""

# Messages from libpq and the server that restarting cannot fix. Connection failures carry
# no SQLSTATE in psycopg2, so the text is all there is; anything else counts as transient.
_PERMANENT_DB_ERRORS = (
    "password authentication failed",
    "no password supplied",
    "no pg_hba.conf entry",
    "does not exist",  # role or database
    "permission denied",
    "invalid connection option",
    "invalid dsn",
    "invalid sslmode",
    "not permitted to log in",
    "does not support ssl",
)

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        return ctypes.CDLL(None, use_errno=True).prctl
    return None


_PRCTL = _load_prctl()
"""libc's ``prctl``, looked up once at import: :func:`_die_with_parent` also runs as a
pre-exec function, in a child forked from a process with threads, where looking a
library up (``dlopen`` and its lock, maybe held by another thread at the fork) could
hang the child for good."""


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the supervisor dies, so no orphan keeps a component JID."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def slidge_argv(cfg: config_mod.Config, name: str) -> list[str]:
    """slidge's command-line options for network ``name`` (without the secret)."""
    net = cfg.networks[name]
    home = cfg.network_dir(name)
    db_url = cfg.network_db_url(name)
    if cfg.settings.storage.url is not None:
        db_url, _password = postgres_url(db_url, postgres_schema(name))
    argv = [
        f"passerelle-{name}",
        "--jid", net.jid,
        "--server", cfg.settings.xmpp.host,
        "--port", str(cfg.settings.xmpp.port),
        "--home-dir", str(home),
        "--db-url", db_url,
        "--user-jid-validator", cfg.allowed_jids_regex(),
        "--log-format", "%(levelname)s %(name)s: %(message)s",
    ]  # fmt: skip
    if cfg.settings.admins:
        argv += ["--admins", *cfg.settings.admins]
    if net.name:
        argv += ["--component-name", net.name]
    level = net.log_level or cfg.settings.log_level
    if level == "DEBUG":
        argv.append("--debug")
    elif level in ("WARNING", "ERROR"):
        argv.append("--quiet")
    return argv


def postgres_schema(name: str) -> str:
    """The schema that holds network ``name``'s tables; one database serves every network."""
    return f"passerelle_{name}"


def postgres_url(url: str, schema: str) -> tuple[str, str | None]:
    """The URL slidge gets for ``[storage] url``, and the password taken out of it.

    The driver is named (slidge fix 5), ``search_path`` is set to ``schema`` so every table,
    and slidge's ``alembic_version``, lands there, and the password is left out: slidge
    logs its settings at DEBUG, so the password travels in ``PGPASSWORD`` instead.
    """
    from sqlalchemy.engine import make_url

    parsed = slidge_fixes.postgres_driver(make_url(url))
    options = parsed.query.get("options", "")
    if not isinstance(options, str):
        options = " ".join(options)
    search_path = f"-csearch_path={schema}"
    parsed = parsed.update_query_dict({"options": f"{options} {search_path}".strip()})
    password = parsed.password
    parsed = parsed._replace(password=None)
    return parsed.render_as_string(hide_password=False), (
        None if password is None else str(password)
    )


def describe_db_error(exc: BaseException, url: str) -> tuple[str, int]:
    """A one-line message for a failure to prepare the database, and the exit code.

    ``url`` is the URL without password; the message names its host, port, database and
    user, never the password.
    """
    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    where = (
        f"PostgreSQL at {parsed.host or 'the local socket'}:{parsed.port or 5432} "
        f"(database {parsed.database!r}, user {parsed.username!r})"
    )
    if isinstance(exc, sqlalchemy.exc.ArgumentError):
        return f"[storage] url: not a usable database URL: {exc}", EXIT_CONFIG
    if isinstance(exc, ModuleNotFoundError):
        return (
            f"[storage] url: the PostgreSQL driver is missing ({exc}) — install Passerelle "
            "with its 'postgres' extra, e.g. pip install 'passerelle[postgres]'",
            EXIT_CONFIG,
        )
    orig = getattr(exc, "orig", None) or exc
    detail = " ".join(str(orig).split()) or type(orig).__name__
    if any(marker in detail.lower() for marker in _PERMANENT_DB_ERRORS):
        return (
            f"[storage] url: {where} refused us: {detail} — fix the URL, the role's password "
            "or its privileges (it needs CONNECT, and CREATE on the database unless the "
            "schema exists); not restarting",
            EXIT_CONFIG,
        )
    return (
        f"[storage] url: cannot reach {where}: {detail} — retrying with backoff",
        EXIT_TEMPFAIL,
    )


def _prepare_storage(cfg: config_mod.Config, name: str) -> None:
    """Create the network's schema, or exit with a one-line reason (see module docstring)."""
    import sqlalchemy.exc

    if cfg.settings.storage.url is None:
        return
    try:
        url, password = postgres_url(cfg.network_db_url(name), postgres_schema(name))
    except sqlalchemy.exc.ArgumentError as e:
        print(f"passerelle: [storage] url: not a valid database URL: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if password is not None:
        os.environ["PGPASSWORD"] = password
    try:
        slidge_fixes.postgres_prepare(url, postgres_schema(name))
    except (sqlalchemy.exc.SQLAlchemyError, ModuleNotFoundError) as e:
        message, code = describe_db_error(e, url)
        print(f"passerelle: {message}", file=sys.stderr)
        sys.exit(code)


def _config_secrets(cfg: config_mod.Config, net: config_mod.NetworkConfig) -> list[str]:
    """Every secret value in this process's configuration: the component secret, the
    database password, and any ``SecretStr`` a plugin declares, nested ones included."""
    from pydantic import BaseModel, SecretStr

    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for key in type(value).model_fields:
                walk(getattr(value, key))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(net)
    if (url := cfg.settings.storage.url) is not None:
        from sqlalchemy.engine import make_url

        with contextlib.suppress(Exception):
            if (password := make_url(url.get_secret_value()).password) is not None:
                found.append(str(password))
    return found


def child_plan(path: Path, name: str) -> dict[str, Any]:
    """Everything the network's process needs from the configuration, as JSON data:
    raises :class:`ConfigError` (or ``KeyError`` for a network without a section) and
    exits like :func:`_prepare_storage` on a database problem. Runs in :func:`validated`'s
    fork; the result holds secrets, so it goes through a pipe, never to a log or a file."""
    from . import config as config_mod

    cfg = config_mod.load(path)
    net = cfg.networks[name]
    cfg.network_dir(name).mkdir(parents=True, exist_ok=True)
    _prepare_storage(cfg, name)
    return {
        "settings": config_mod.plain(net),
        "argv": slidge_argv(cfg, name),
        "network_dir": str(cfg.network_dir(name)),
        "pgpassword": os.environ.get("PGPASSWORD") if cfg.settings.storage.url else None,
        "secrets": _config_secrets(cfg, net),
    }


class Validation:
    """:func:`child_plan` computed in a forked process, so pydantic, the other networks'
    models and the database check stay out of this one, while this one imports slidge.
    The fork's problems reach stderr as they would have here; its exit code
    (:data:`EXIT_CONFIG`, :data:`EXIT_TEMPFAIL`, 1 for a bug) becomes this process's.
    Start it before any thread starts."""

    def __init__(self, path: Path, name: str) -> None:
        def work() -> bytes:
            try:
                return json.dumps(child_plan(path, name)).encode()
            except (ConfigError, KeyError, NetworkUnavailable) as e:
                print(f"passerelle: {e}", file=sys.stderr)
                raise SystemExit(EXIT_CONFIG) from None

        self._fork = lazy_imports.start_forked(work)

    def plan(self) -> dict[str, Any]:
        """Wait for the fork: its plan, or this process ends with the fork's code."""
        plan: dict[str, Any] = json.loads(self._fork.result())
        return plan


def validated(path: Path, name: str) -> dict[str, Any]:
    """:class:`Validation`, waited for at once."""
    return Validation(path, name).plan()


def _no_sql_echo(_record: logging.LogRecord) -> bool:
    return False


def _configure_logging(secrets: Iterable[str]) -> None:
    RedactSecrets(secrets).install()
    # slidge turns SQLAlchemy's echo on at DEBUG: every statement with its parameters,
    # which include each user's stored credentials (legacy_module_data). DEBUG is for the
    # wire; the SQL stays out.
    logging.getLogger("sqlalchemy.engine.Engine").addFilter(_no_sql_echo)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.child", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--network", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    validation = Validation(args.config, args.network)  # before any thread or pydantic
    # Meanwhile (2 cores or more), slidge's imports; nothing of them reads the config,
    # slidge's own options are parsed in main().
    lazy_imports.install()  # before anything imports slidge
    slidge_fixes.apply()
    import slidge.main

    plan = validation.plan()
    set_network_config(from_plain(settings_class(args.network), plan["settings"]))
    if plan["pgpassword"] is not None:
        os.environ["PGPASSWORD"] = plan["pgpassword"]
    os.environ["SLIDGE_SECRET"] = plan["settings"]["secret"]
    os.environ["SLIDGE_CONF_DIR"] = str(Path(plan["network_dir"]) / "no-slidge-conf.d")
    sys.argv = plan["argv"]
    _configure_logging(plan["secrets"])
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # the loop slixmpp's get_event_loop() then returns
    malloc_tuning.install(loop)
    gc_tuning.install(loop)

    slidge.main.main(slidge_module(args.network))


if __name__ == "__main__":
    main()
