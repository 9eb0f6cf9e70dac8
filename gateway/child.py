"""The entry point of one network's process: configure slidge from our config, then run it.

slidge 0.4.2 allows one legacy module per interpreter (its config, store and registries are
process-global), so the supervisor starts ``python -m gateway.child -c FILE --network NAME``
once per network. This module translates the network's section into slidge's options,
applies :mod:`gateway.slidge_fixes`, and hands over to ``slidge.main.main``.

The secret reaches slidge through this process's environment, never through a command
line that ``ps`` would show. slidge exits with its own codes: 0 after SIGTERM, 1 on an
unhandled exception in a stanza handler, 3 after a crashed task, 10/15 when the XMPP
connection is lost; the supervisor restarts it for any of them but 0 and :data:`EXIT_CONFIG`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import re
import signal
import sys
from pathlib import Path

from . import config as config_mod
from . import slidge_fixes
from .errors import ConfigError
from .networks import slidge_module
from .runtime import set_network_config

EXIT_CONFIG = 78
"""Exit code for a configuration problem (sysexits' EX_CONFIG): restarting will not help."""

_PR_SET_PDEATHSIG = 1


class RedactSecrets(logging.Filter):
    """Hide credentials in wire logs (DEBUG level logs every stanza).

    Registration forms carry legacy passwords; component handshakes carry a hash of the
    secret. Anything in a ``password`` element, a ``handshake`` element, or the value of a
    data-form field whose name suggests a secret is replaced by ``[redacted]``.
    """

    _PATTERNS = (
        re.compile(r"(<password[^>]*>)(.*?)(</password>)", re.S),
        re.compile(r"(<handshake[^>]*>)(.*?)(</handshake>)", re.S),
        re.compile(
            r"(<field[^>]*var=['\"][^'\"]*(?:pass|secret|token|key)[^'\"]*['\"][^>]*>.*?<value>)"
            r"(.*?)(</value>)",
            re.S | re.I,
        ),
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno <= logging.DEBUG and record.args:
            record.args = tuple(
                self.redact(a) if isinstance(a, str | bytes) else a
                for a in (record.args if isinstance(record.args, tuple) else (record.args,))
            )
        return True

    @classmethod
    def redact(cls, text: str | bytes) -> str:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        for pattern in cls._PATTERNS:
            text = pattern.sub(r"\1[redacted]\3", text)
        return text


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM us if the supervisor dies, so no orphan keeps a component JID."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def slidge_argv(cfg: config_mod.Config, name: str) -> list[str]:
    """slidge's command-line options for network ``name`` (without the secret)."""
    net = cfg.networks[name]
    home = cfg.network_dir(name)
    db_url = cfg.network_db_url(name)
    if cfg.settings.storage.url is not None:
        sep = "&" if "?" in db_url else "?"
        db_url = f"{db_url}{sep}options=-csearch_path%3D{postgres_schema(name)}"
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
    return f"passerelle_{name}"


def _configure_logging() -> None:
    redact = RedactSecrets()
    for logger in ("slixmpp.xmlstream.xmlstream", "slidge.core.gateway", "slixmpp"):
        logging.getLogger(logger).addFilter(redact)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.child", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, required=True)
    parser.add_argument("--network", required=True)
    args = parser.parse_args(argv)
    _die_with_parent()

    try:
        cfg = config_mod.load(args.config)
        net = cfg.networks[args.network]
        module = slidge_module(args.network)
    except (ConfigError, KeyError) as e:
        print(f"passerelle: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)

    set_network_config(net)
    cfg.network_dir(args.network).mkdir(parents=True, exist_ok=True)
    if cfg.settings.storage.url is not None:
        slidge_fixes.postgres_prepare(
            cfg.settings.storage.url.get_secret_value(), postgres_schema(args.network)
        )
    os.environ["SLIDGE_SECRET"] = net.secret.get_secret_value()
    os.environ["SLIDGE_CONF_DIR"] = str(cfg.network_dir(args.network) / "no-slidge-conf.d")
    sys.argv = slidge_argv(cfg, args.network)
    _configure_logging()
    slidge_fixes.apply()

    import slidge.main

    slidge.main.main(module)


if __name__ == "__main__":
    main()
