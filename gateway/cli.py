"""The ``passerelle`` command: ``run``, ``check`` and ``demo``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from . import __version__
from .config import Config, load
from .errors import ConfigError


def _load(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as e:
        for problem in e.problems:
            print(f"passerelle: {problem}", file=sys.stderr)
        sys.exit(2)


def cmd_run(args: argparse.Namespace) -> int:
    """Validate the configuration here, then become the lean supervisor (same pid)."""
    from .supervisor import exec_supervisor, plan

    exec_supervisor(plan(_load(args.config)))
    return 1  # not reached: exec_supervisor replaces this process


def cmd_check(args: argparse.Namespace) -> int:
    from .check import run_checks

    cfg = _load(args.config)
    results = asyncio.run(run_checks(cfg))
    for result in results:
        print(result.line())
    return 0 if all(r.ok for r in results) else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(args.dir)


def _config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c", "--config", type=Path, default=Path("gateway.toml"),
        help="configuration file (default: ./gateway.toml)",
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="passerelle",
        description="An XMPP gateway to IRC, Matrix and email "
        "(one XEP-0114 component per network).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run every enabled network until SIGTERM/SIGINT",
        description="Run every network enabled in the configuration file, one process each, "
        "restarting any that fails, until SIGTERM or SIGINT; then stop them cleanly.",
    )
    _config_option(run)
    run.set_defaults(func=cmd_run)

    check = sub.add_parser(
        "check",
        help="validate the configuration and try each component connection",
        description="Validate the configuration file and try each network's component "
        "connection to the XMPP server. One line per check; exit code 0 only if all pass.",
    )
    _config_option(check)
    check.set_defaults(func=cmd_check)

    demo = sub.add_parser(
        "demo",
        help="run a throw-away demo on loopback (Prosody, an IRC server, Passerelle)",
        description="Start a local Prosody, a local IRC server and Passerelle on loopback "
        "ports, register a demo XMPP account and print how to log in. Ctrl-C stops "
        "everything it started.",
    )
    demo.add_argument(
        "--dir",
        type=Path,
        default=Path("demo"),
        help="where to keep its configs, data and logs (default: ./demo)",
    )
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
