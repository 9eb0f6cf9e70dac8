"""A small aiohttp server on 127.0.0.1 standing in for a homeserver in unit tests, and
a Matrix client of it."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import AsyncIterator

from aiohttp import web

from gateway.runtime import Secret
from legacy_plugins.matrix.client import Credentials, MatrixClient
from legacy_plugins.matrix.config import Config
from legacy_plugins.matrix.ids import UserId


@contextlib.asynccontextmanager
async def serve(
    app: web.Application, ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[str]:
    """Serve `app` on a free loopback port (over TLS with `ssl_context`); yields its base
    URL."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ssl_context)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"{'https' if ssl_context else 'http'}://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def client_for(base: str, request_timeout: float) -> MatrixClient:
    """A logged-in `MatrixClient` (as ``@alice:localhost``) of the server at `base`."""
    cfg = Config(
        jid="matrix.localhost",
        secret=Secret("secret"),
        allow_private_addresses=True,
        allow_plain_http=True,
        request_timeout=request_timeout,
    )
    return MatrixClient(Credentials(base, UserId("@alice:localhost"), "DEVICE", "token"), cfg)
