"""Logging in to Matrix: the registration form's answers turned into a device.

`discover_homeserver` finds the homeserver's base URL from a URL or a server name (its
``/.well-known/matrix/client``, over TLS, under the admin's homeserver policy). `login`
logs in with a password (a new device) or checks an access token with ``whoami``, and
takes a first sync position, so that nothing sent after registration is missed; it
returns the `Credentials` to store and that position, and stores nothing itself.
Failures are the errors of :mod:`.errors`, which the registration form shows. The
logged-in device then talks through :mod:`.client`; nothing here runs after
registration.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from .client import Credentials, MatrixClient, _call, load_nio, nio
from .config import Config
from .errors import HomeserverNotAllowed, LoginRefused, RateLimited
from .ids import UserId, is_user_id, server_name
from .net import check_url, http_session, network_error

__all__ = ["discover_homeserver", "login"]

LOGIN_WAIT_MAX = 10.0
"""Seconds a login waits when the homeserver answers 429, once; a longer wait (Synapse
names minutes after failed attempts) is the form's error, with the wait, at once."""


async def discover_homeserver(cfg: Config, value: str) -> str:
    """The base URL of a homeserver given as a URL or as a server name (``.well-known``)."""
    value = value.strip().rstrip("/")
    if "://" in value:
        check_url(cfg, value)
        return value
    if not value or any(c.isspace() or c in "/@" for c in value):
        raise HomeserverNotAllowed(f"{value!r} is neither a homeserver URL nor a server name")
    base = f"https://{value}"
    check_url(cfg, base)
    async with http_session(cfg) as http:
        try:
            async with http.get(f"{base}/.well-known/matrix/client") as resp:
                if resp.status != 200:
                    return base
                data = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            if isinstance(e, aiohttp.ClientConnectorError):
                raise network_error(base, e) from e
            return base
    url = data.get("m.homeserver", {}).get("base_url") if isinstance(data, dict) else None
    if not isinstance(url, str) or "://" not in url:
        return base
    url = url.rstrip("/")
    check_url(cfg, url)
    return url


async def login(
    cfg: Config,
    homeserver: str | None,
    user: str | None,
    *,
    password: str | None = None,
    access_token: str | None = None,
) -> tuple[Credentials, str]:
    """Log in (password) or check a token; returns the credentials and the position to
    sync from. Raises the errors of :mod:`.errors`; nothing is kept on failure."""
    if user and not is_user_id(user):
        raise LoginRefused(f"{user!r} is not a Matrix ID such as @alice:example.org")
    await load_nio()
    if not homeserver:
        if not user:
            raise LoginRefused("give a homeserver URL or a full Matrix ID (@alice:example.org)")
        homeserver = server_name(user)
    base = await discover_homeserver(cfg, homeserver)
    config = nio.AsyncClientConfig(
        max_limit_exceeded=0,  # a 429 comes back to `_patient`, not waited out by nio
        max_timeouts=0,
        request_timeout=cfg.request_timeout,
        encryption_enabled=False,
        store_sync_tokens=False,
    )
    http = http_session(cfg)
    client = nio.AsyncClient(base, user or "", config=config)
    client.client_session = http
    try:
        if password is not None:
            resp = await _patient(
                base, f"login to {base} as {user}", lambda: client.login(password, cfg.device_name)
            )
            creds = Credentials(base, UserId(resp.user_id), resp.device_id, resp.access_token)
        elif access_token is not None:
            client.access_token = access_token
            resp = await _patient(base, f"login to {base} with an access token", client.whoami)
            if user and resp.user_id != user:
                raise LoginRefused(f"that access token belongs to {resp.user_id}, not to {user}")
            creds = Credentials(base, UserId(resp.user_id), resp.device_id or "", access_token)
        else:
            raise LoginRefused("give a password or an access token")
    finally:
        await client.close()
    async with MatrixClient(creds, cfg) as matrix:
        token = await matrix.first_position()
    return creds, token


async def _patient(homeserver: str, what: str, request: Callable[[], Awaitable[Any]]) -> Any:
    """`_call` of ``request()``; after a 429 that names a short wait, once more after it."""
    try:
        return await _call(homeserver, what, request())
    except RateLimited as e:
        if e.retry_after > LOGIN_WAIT_MAX:
            raise
        await asyncio.sleep(e.retry_after)
    return await _call(homeserver, what, request())
