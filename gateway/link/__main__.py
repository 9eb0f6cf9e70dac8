"""``python -m gateway.link -c FILE``: the link component's process, started by the supervisor.

It loads the configuration, logs to stdout (the supervisor prefixes ``link | ``), with
the component secret redacted from every record, and runs the service until SIGTERM or
SIGINT, then leaves every room and channel and exits 0 within a few seconds. A
configuration problem — a file that does not validate, no ``[link]`` section, a secret
the XMPP server refuses — exits with :data:`~gateway.child.EXIT_CONFIG` (78), which the
supervisor does not restart; anything else that ends it is restarted with backoff.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from gateway import config as config_mod
from gateway.child import EXIT_CONFIG, _config_secrets, _die_with_parent
from gateway.errors import ConfigError
from gateway.redact import RedactSecrets

log = logging.getLogger("gateway.link")


async def _run(cfg: config_mod.Config) -> None:
    from .service import LinkService

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await LinkService(cfg).run(stop)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.link", description=__doc__)
    parser.add_argument("-c", "--config", type=Path, required=True)
    args = parser.parse_args(argv)
    _die_with_parent()
    try:
        cfg = config_mod.load(args.config)
    except ConfigError as e:
        print(f"passerelle: {e}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    link = cfg.settings.link
    if link is None or not link.enabled:
        print(f"passerelle: {args.config}: link: no enabled [link] section", file=sys.stderr)
        sys.exit(EXIT_CONFIG)

    # The component secret and the database password (``[storage] url``).
    secrets = _config_secrets(cfg, link)  # type: ignore[arg-type]
    RedactSecrets(secrets).install()
    logging.basicConfig(
        stream=sys.stdout,
        level=link.log_level or cfg.settings.log_level,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if (link.log_level or cfg.settings.log_level) != "DEBUG":
        logging.getLogger("slixmpp").setLevel(logging.WARNING)

    from .service import LinkFatal
    from .store import StoreError

    try:
        asyncio.run(_run(cfg))
    except* LinkFatal as fatal:
        for exc in fatal.exceptions:
            log.error("%s", exc)
        sys.exit(EXIT_CONFIG)
    except* StoreError as broken:
        codes = [EXIT_CONFIG]
        for error in broken.exceptions:
            log.error("%s", error)
            if isinstance(error, StoreError):
                codes.append(error.exit_code)
        sys.exit(codes[-1])
    log.info("stopped")


if __name__ == "__main__":
    main()
