"""One XMPP user's connection to their Matrix homeserver: the only module that imports nio.

`login` turns what the user typed in the registration form into `Credentials` (logging
in with a password creates a new device; an access token is checked with ``whoami``) and
a first sync position, so that nothing sent after registration is missed. `MatrixClient`
then syncs forever and sends on the user's behalf.

matrix-nio's `AsyncClient` makes the request-response calls (login, send, redact,
typing, receipts, rooms, profiles). ``/sync`` and ``/messages`` are read as plain JSON and
validated by :mod:`.translate`: nio would check every event against a JSON schema and
mirror room state we keep ourselves anyway (:mod:`.rooms`), which is most of the cost of
a busy sync. Each sync uses a filter with a timeline limit, and when the homeserver still
says ``limited`` (a burst larger than the limit), the gap is read back with
``/messages`` down to the previous sync position: bursts are not lost.

Every HTTP connection passes the admin's homeserver policy (:mod:`.config`): host names
are checked against the globs and resolved by a resolver that drops non-public addresses
(unless allowed); IP literals and redirects are checked by a request hook. No request
goes anywhere else: media come from the user's homeserver, avatars are never fetched from
the internet. Access tokens travel in the ``Authorization`` header and are never logged.
Errors are those of :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import math
import random
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.backoff import Backoff

from .config import Config
from .errors import (
    HomeserverNotAllowed,
    HomeserverTimeout,
    HomeserverUnreachable,
    LoginRefused,
    MatrixError,
    RateLimited,
    RequestFailed,
)
from .events import Membership, PresenceState, SyncBatch, TimelineEvent
from .ids import EventId, RoomId, UserId, is_user_id, server_name
from .net import check_url, http_session, network_error, read_body
from .translate import parse_direct, parse_members, parse_messages, parse_sync


def _import_nio() -> Any:
    """matrix-nio, imported without psycopg2 unless something already loaded it: nio's
    key store is on peewee, which imports psycopg2 (~18 MiB resident: libpq, OpenSSL)
    just in case, while nio only ever opens SQLite. Hidden for that one import only, so
    a PostgreSQL database for slidge still loads the driver when SQLAlchemy asks."""
    hide = "psycopg2" not in sys.modules
    if hide:
        sys.modules["psycopg2"] = None  # type: ignore[assignment]  # "not installed"
    try:
        import nio  # type: ignore[import-untyped]
    finally:
        if hide:
            del sys.modules["psycopg2"]
    return nio


class _LazyNio:
    """matrix-nio (with its encryption libraries, ~1.5 s and ~10 MiB), imported when a
    Matrix account first needs it rather than when the network's process starts:
    `load_nio` does it in a thread at the first login; any other first use imports it
    on the spot."""

    def __init__(self) -> None:
        self._module: Any = None
        self._lock = threading.Lock()

    def load(self) -> Any:
        with self._lock:
            if self._module is None:
                self._module = _import_nio()
        return self._module

    def __getattr__(self, name: str) -> Any:
        return getattr(self._module or self.load(), name)


nio: Any = _LazyNio()
"""The ``nio`` module, for this module and :mod:`.crypto`."""


async def load_nio() -> None:
    """Import nio, if not yet done, in a thread: the event loop keeps serving the users
    already logged in (and the XMPP server) meanwhile."""
    if nio._module is None:
        await asyncio.to_thread(nio.load)


__all__ = ["Credentials", "MatrixClient", "discover_homeserver", "load_nio", "login"]

log = logging.getLogger(__name__)

CLIENT_V3 = "/_matrix/client/v3"
MAX_GAP_EVENTS = 10_000
"""Events read back with ``/messages`` to fill one gap; older ones are lost (and logged)."""
_RATE_LIMIT_RETRIES = 5
_SEND_RETRY_DELAYS = (0.5, 2.0)
"""Seconds before each new attempt of an event's request that timed out or lost its
connection (a transaction ID makes it safe: the homeserver does not make it twice)."""
_LOGIN_LOCK_ERRCODES = frozenset({"M_FORBIDDEN", "M_USER_DEACTIVATED", "M_UNKNOWN_TOKEN"})


@dataclass(frozen=True, slots=True)
class Credentials:
    """A logged-in Matrix device, as stored in the user's ``legacy_module_data``."""

    homeserver: str
    user_id: UserId
    device_id: str
    access_token: str = field(repr=False)

    def to_stored(self) -> dict[str, str]:
        return {
            "homeserver": self.homeserver,
            "user_id": self.user_id,
            "device_id": self.device_id,
            "access_token": self.access_token,
        }

    @classmethod
    def from_stored(cls, data: Mapping[str, Any]) -> Credentials:
        """``LoginRefused`` if the stored data is not a login (register again)."""
        try:
            values = {k: data[k] for k in ("homeserver", "user_id", "device_id", "access_token")}
        except KeyError:
            raise LoginRefused(
                "no Matrix login is stored for this account; register again"
            ) from None
        if not all(isinstance(v, str) and v for v in values.values()):
            raise LoginRefused("the stored Matrix login is damaged; register again")
        return cls(
            values["homeserver"],
            UserId(values["user_id"]),
            values["device_id"],
            values["access_token"],
        )


def _error_from_answer(
    what: str, errcode: str | None, message: str, status: int | None, retry_ms: int | None
) -> MatrixError:
    text = f"{what}: {message or errcode or f'HTTP {status}'}"
    if errcode == "M_LIMIT_EXCEEDED" or status == 429:
        when = f"in {math.ceil(retry_ms / 1000)} s" if retry_ms else "later"
        return RateLimited(f"{text} (rate limited; try again {when})", (retry_ms or 5000) / 1000)
    if errcode in _LOGIN_LOCK_ERRCODES and what.startswith("login"):
        return LoginRefused(text)
    if errcode == "M_UNKNOWN_TOKEN":
        return LoginRefused(f"{text} — the Matrix session has ended; register again")
    return RequestFailed(text, errcode, status)


# --- logging in ------------------------------------------------------------------------


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
        max_limit_exceeded=1,
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
            resp = await _call(
                base, f"login to {base} as {user}", client.login(password, cfg.device_name)
            )
            creds = Credentials(base, UserId(resp.user_id), resp.device_id, resp.access_token)
        elif access_token is not None:
            client.access_token = access_token
            resp = await _call(base, f"login to {base} with an access token", client.whoami())
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


async def _call(homeserver: str, what: str, call: Awaitable[Any]) -> Any:
    """Await a nio request; its error answer or network failure becomes a MatrixError."""
    try:
        resp = await call
    except (aiohttp.ClientError, TimeoutError, OSError) as e:
        raise network_error(homeserver, e) from e
    if isinstance(resp, nio.ErrorResponse):
        status = getattr(getattr(resp, "transport_response", None), "status", None)
        raise _error_from_answer(what, resp.status_code, resp.message, status, resp.retry_after_ms)
    return resp


# --- the session's client --------------------------------------------------------------

StatusCallback = Callable[[str | None], None]
"""Told "why we are not connected" (a sentence), or None once connected again."""


class MatrixClient:
    """A logged-in device: sync and send. Use as an async context manager (or `close`)."""

    def __init__(self, creds: Credentials, cfg: Config) -> None:
        self.creds = creds
        self.cfg = cfg
        self.me = creds.user_id
        self._http = http_session(cfg)
        self._nio = nio.AsyncClient(
            creds.homeserver,
            creds.user_id,
            device_id=creds.device_id,
            config=nio.AsyncClientConfig(
                max_limit_exceeded=_RATE_LIMIT_RETRIES,
                max_timeouts=2,
                request_timeout=cfg.request_timeout,
                encryption_enabled=False,
                store_sync_tokens=False,
            ),
        )
        self._nio.client_session = self._http
        self._nio.restore_login(creds.user_id, creds.device_id, creds.access_token)
        self._backoff = Backoff(initial=1.0, cap=60.0)
        self.presence: PresenceState = "offline"
        """What each sync tells the homeserver about the user (their XMPP presence):
        without it, a presence set once would time out to offline."""

    async def __aenter__(self) -> MatrixClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._nio.close()
        if not self._http.closed:
            await self._http.close()

    # -- raw JSON requests ----------------------------------------------------------

    async def _json(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, str] | None = None,
        body: object = None,
        timeout: float | None = None,
    ) -> Any:
        """A client-server API request whose answer we read as JSON; retries on 429."""
        url = self.creds.homeserver + path
        headers = {"Authorization": f"Bearer {self.creds.access_token}"}
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.cfg.request_timeout)
        for attempt in range(_RATE_LIMIT_RETRIES + 1):
            try:
                async with self._http.request(
                    method, url, params=params, json=body, headers=headers, timeout=client_timeout
                ) as resp:
                    data = await resp.json(content_type=None)
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
                if isinstance(e, ValueError) and not isinstance(e, aiohttp.ClientError):
                    raise RequestFailed(f"{what}: the homeserver's answer is not JSON") from e
                raise network_error(self.creds.homeserver, e) from e
            if status == 200:
                return data
            data = data if isinstance(data, dict) else {}
            error = _error_from_answer(
                what, data.get("errcode"), data.get("error", ""), status, data.get("retry_after_ms")
            )
            if isinstance(error, RateLimited) and attempt < _RATE_LIMIT_RETRIES:
                log.warning(
                    "%s: rate limited by the homeserver; retrying in %.1f s",
                    what,
                    error.retry_after,
                )
                await asyncio.sleep(error.retry_after)
                continue
            raise error
        raise AssertionError("unreachable")

    async def _nio_call(self, what: str, call: Awaitable[Any]) -> Any:
        return await _call(self.creds.homeserver, what, call)

    # -- sync -----------------------------------------------------------------------

    def sync_filter(self) -> dict[str, Any]:
        return {
            "room": {
                "timeline": {"limit": self.cfg.timeline_limit},
                "state": {"lazy_load_members": True},
                "ephemeral": {"types": ["m.typing", "m.receipt"]},
                "account_data": {"types": []},
            },
            "presence": {"types": ["m.presence"]},
            "account_data": {"types": ["m.direct"]},
        }

    async def first_position(self) -> str:
        """A sync position "now", without reading history (for a new registration)."""
        params = {"filter": _dumps({"room": {"timeline": {"limit": 1}}, "presence": {"types": []}})}
        data = await self._json("GET", f"{CLIENT_V3}/sync", "first sync", params=params)
        return parse_sync(data, self.me).next_batch

    async def sync(
        self, since: str | None, *, full_state: bool = False, timeout_ms: int = 0
    ) -> SyncBatch:
        """One sync, with every gap (``limited`` timeline) filled from ``/messages``."""
        params = {"filter": _dumps(self.sync_filter()), "set_presence": self.presence}
        if since:
            params["since"] = since
        if full_state:
            params["full_state"] = "true"
        if timeout_ms:
            params["timeout"] = str(timeout_ms)
        data = await self._json(
            "GET",
            f"{CLIENT_V3}/sync",
            "sync",
            params=params,
            timeout=timeout_ms / 1000 + self.cfg.request_timeout,
        )
        try:
            batch = parse_sync(data, self.me)
        except ValueError as e:
            raise RequestFailed(str(e)) from e
        if since is None:
            return batch
        joined = []
        for room in batch.joined:
            if room.limited and room.prev_batch:
                missing = await self._gap(room.room_id, room.prev_batch, since)
                joined.append(
                    dataclasses.replace(room, timeline=(*missing, *room.timeline), limited=False)
                )
            else:
                joined.append(room)
        return dataclasses.replace(batch, joined=tuple(joined))

    async def _gap(self, room_id: RoomId, prev_batch: str, since: str) -> list[TimelineEvent]:
        """The events between ``since`` and a limited timeline, oldest first."""
        events: list[TimelineEvent] = []
        token: str | None = prev_batch
        path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/messages"
        while token is not None and len(events) < MAX_GAP_EVENTS:
            params = {"from": token, "to": since, "dir": "b", "limit": "500"}
            data = await self._json("GET", path, f"history of {room_id}", params=params)
            page, end = parse_messages(room_id, data)
            events.extend(page)
            token = end if page and end != token else None
        if len(events) >= MAX_GAP_EVENTS:
            log.warning(
                "More than %d events missed in %s; older ones are dropped", MAX_GAP_EVENTS, room_id
            )
        log.debug("Filled a gap of %d events in %s", len(events), room_id)
        events.reverse()
        return events

    async def sync_forever(
        self,
        since: str,
        on_batch: Callable[[SyncBatch], Awaitable[None]],
        on_status: StatusCallback,
    ) -> None:
        """Long-poll until cancelled; ``on_batch`` is awaited for each batch, in order.

        Network trouble and server errors are retried with capped exponential backoff
        (and ``on_status`` is told); a revoked login (`LoginRefused`) ends the loop."""
        failures = 0
        timeout_ms = int(self.cfg.sync_timeout * 1000)
        while True:
            try:
                batch = await self.sync(since, timeout_ms=timeout_ms)
            except LoginRefused:
                raise
            except MatrixError as e:
                failures += 1
                delay = (
                    e.retry_after
                    if isinstance(e, RateLimited)
                    else self._backoff.delay(failures, random.random())  # noqa: S311
                )
                log.warning(
                    "Sync with %s failed (%s); retrying in %.1f s", self.creds.homeserver, e, delay
                )
                on_status(f"{e}; retrying in {delay:.0f} s")
                await asyncio.sleep(delay)
                continue
            if failures:
                failures = 0
                on_status(None)
            await on_batch(batch)
            since = batch.next_batch

    # -- account data and profiles ----------------------------------------------------

    async def get_direct(self) -> dict[UserId, tuple[RoomId, ...]]:
        """The user's ``m.direct`` (empty if never set). Also checks the login."""
        path = f"{CLIENT_V3}/user/{quote(self.me, safe='')}/account_data/m.direct"
        try:
            data = await self._json("GET", path, "reading m.direct")
        except RequestFailed as e:
            if e.errcode == "M_NOT_FOUND":
                return {}
            raise
        return parse_direct(data)

    async def set_direct(self, content: Mapping[UserId, list[RoomId]]) -> None:
        path = f"{CLIENT_V3}/user/{quote(self.me, safe='')}/account_data/m.direct"
        await self._json("PUT", path, "writing m.direct", body=dict(content))

    async def profile(self, user: UserId) -> tuple[str | None, str | None]:
        """Display name and avatar (``mxc://``) of ``user``; Nones if unknown."""
        try:
            resp = await self._nio_call(f"profile of {user}", self._nio.get_profile(user))
        except RequestFailed:
            return None, None
        return resp.displayname, resp.avatar_url

    async def joined_members(self, room_id: RoomId) -> dict[UserId, str | None]:
        resp = await self._nio_call(f"members of {room_id}", self._nio.joined_members(room_id))
        return {UserId(m.user_id): m.display_name or None for m in resp.members}

    # -- rooms ------------------------------------------------------------------------

    async def join(self, room: str) -> RoomId:
        resp = await self._nio_call(f"joining {room}", self._nio.join(room))
        return RoomId(resp.room_id)

    async def leave(self, room_id: RoomId) -> None:
        await self._nio_call(f"leaving {room_id}", self._nio.room_leave(room_id))

    async def resolve_alias(self, alias: str) -> RoomId:
        """The room an alias (``#room:server``) points to; ``RequestFailed`` if none."""
        path = f"{CLIENT_V3}/directory/room/{quote(alias, safe='')}"
        data = await self._json("GET", path, f"looking up {alias}")
        room_id = data.get("room_id") if isinstance(data, dict) else None
        if not isinstance(room_id, str) or not room_id.startswith("!"):
            raise RequestFailed(f"looking up {alias}: the homeserver gave no room")
        return RoomId(room_id)

    async def create_room(self, name: str, invite: list[UserId]) -> RoomId:
        """A new private group room named ``name``, with ``invite`` invited."""
        resp = await self._nio_call(
            f"creating the room {name!r}",
            self._nio.room_create(
                name=name, invite=list(invite), preset=nio.RoomPreset.private_chat
            ),
        )
        return RoomId(resp.room_id)

    async def invite(self, room_id: RoomId, user: UserId) -> None:
        await self._nio_call(f"inviting {user} to {room_id}", self._nio.room_invite(room_id, user))

    async def kick(self, room_id: RoomId, user: UserId, reason: str | None) -> None:
        await self._nio_call(
            f"removing {user} from {room_id}", self._nio.room_kick(room_id, user, reason)
        )

    async def ban(self, room_id: RoomId, user: UserId, reason: str | None) -> None:
        await self._nio_call(
            f"banning {user} from {room_id}", self._nio.room_ban(room_id, user, reason)
        )

    async def unban(self, room_id: RoomId, user: UserId) -> None:
        await self._nio_call(f"unbanning {user} in {room_id}", self._nio.room_unban(room_id, user))

    async def set_power(self, room_id: RoomId, user: UserId, level: int) -> None:
        """Give ``user`` the power ``level`` (read, change and write the power levels)."""
        path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/state/m.room.power_levels/"
        what = f"changing the power level of {user} in {room_id}"
        levels = await self._json("GET", path, what)
        if not isinstance(levels, dict):
            raise RequestFailed(f"{what}: the homeserver's power levels are not an object")
        users = levels.get("users")
        levels["users"] = {**(users if isinstance(users, dict) else {}), user: level}
        await self._json("PUT", path, what, body=levels)

    async def history(self, room_id: RoomId, limit: int) -> list[TimelineEvent]:
        """The room's last ``limit`` events (those the user may see), oldest first."""
        path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/messages"
        params = {"dir": "b", "limit": str(limit)}
        data = await self._json("GET", path, f"history of {room_id}", params=params)
        page, _end = parse_messages(room_id, data)
        return list(reversed(page))

    async def create_dm(self, user: UserId) -> RoomId:
        """A new direct chat with ``user`` (invited), as Matrix clients create one."""
        resp = await self._nio_call(
            f"starting a chat with {user}",
            self._nio.room_create(
                is_direct=True, invite=[user], preset=nio.RoomPreset.trusted_private_chat
            ),
        )
        return RoomId(resp.room_id)

    async def set_room_avatar(self, room_id: RoomId, mxc: str | None) -> None:
        """The room's avatar (``mxc://``; None: none)."""
        content = {"url": mxc} if mxc else {}
        await self._nio_call(
            f"setting the avatar of {room_id}",
            self._nio.room_put_state(room_id, "m.room.avatar", content),
        )

    async def set_topic(self, room_id: RoomId, topic: str) -> None:
        await self._nio_call(
            f"setting the topic of {room_id}",
            self._nio.room_put_state(room_id, "m.room.topic", {"topic": topic}),
        )

    # -- events -----------------------------------------------------------------------

    async def send(self, room_id: RoomId, event_type: str, content: Mapping[str, Any]) -> EventId:
        """Send an event; its ``transaction_id`` lets sync recognise it as ours. A request
        that timed out or lost its connection is made again (``_SEND_RETRIES`` times) with
        the same transaction ID, which the homeserver answers with the event it already
        made, if it did: never twice."""
        path = (
            f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/send/"
            f"{quote(event_type, safe='')}/{uuid.uuid4().hex}"
        )
        what = f"sending to {room_id}"
        for delay in (*_SEND_RETRY_DELAYS, None):
            try:
                data = await self._json("PUT", path, what, body=dict(content))
                break
            except (HomeserverTimeout, HomeserverUnreachable) as e:
                if delay is None:
                    raise
                log.warning("%s: %s; trying again in %.1f s with the same ID", what, e, delay)
                await asyncio.sleep(delay)
        event_id = data.get("event_id") if isinstance(data, dict) else None
        if not isinstance(event_id, str) or not event_id.startswith("$"):
            raise RequestFailed(f"sending to {room_id}: the homeserver gave no event ID")
        return EventId(event_id)

    async def redact(
        self, room_id: RoomId, event_id: EventId, reason: str | None = None
    ) -> EventId:
        resp = await self._nio_call(
            f"deleting {event_id}",
            self._nio.room_redact(room_id, event_id, reason, tx_id=uuid.uuid4().hex),
        )
        return EventId(resp.event_id)

    async def typing(self, room_id: RoomId, typing: bool) -> None:
        await self._nio_call(
            f"typing in {room_id}", self._nio.room_typing(room_id, typing, timeout=30_000)
        )

    async def read(self, room_id: RoomId, event_id: EventId) -> None:
        """Move the read receipt and the fully-read marker to ``event_id``."""
        await self._nio_call(
            f"marking {event_id} read",
            self._nio.room_read_markers(room_id, event_id, event_id),
        )

    # -- media --------------------------------------------------------------------------

    async def download(self, mxc: str, limit: int | None = None) -> tuple[bytes, str | None]:
        """The bytes and MIME type of ``mxc://server/id``, up to ``limit`` bytes
        (default: ``max_upload_size``)."""
        parts = urlsplit(mxc)
        if parts.scheme != "mxc" or not parts.netloc or not parts.path.strip("/"):
            raise RequestFailed(f"{mxc!r} is not a Matrix media URI")
        media = f"{quote(parts.netloc, safe='')}/{quote(parts.path.strip('/'), safe='')}"
        headers = {"Authorization": f"Bearer {self.creds.access_token}"}
        limit = self.cfg.max_upload_size if limit is None else limit
        for prefix in ("/_matrix/client/v1/media/download", "/_matrix/media/v3/download"):
            url = f"{self.creds.homeserver}{prefix}/{media}"
            try:
                async with self._http.get(url, headers=headers) as resp:
                    if resp.status == 404 and prefix.startswith("/_matrix/client"):
                        continue  # a homeserver without authenticated media (spec < 1.11)
                    if resp.status != 200:
                        raise RequestFailed(
                            f"downloading {mxc}: HTTP {resp.status}", status=resp.status
                        )
                    return await read_body(resp, limit, mxc), resp.content_type
            except (aiohttp.ClientError, TimeoutError, OSError) as e:
                raise network_error(self.creds.homeserver, e) from e
        raise RequestFailed(f"downloading {mxc}: not found", status=404)

    async def upload(self, data: bytes, content_type: str, filename: str) -> str:
        """Upload to the homeserver's media repository; returns the ``mxc://`` URI."""
        url = f"{self.creds.homeserver}/_matrix/media/v3/upload"
        headers = {
            "Authorization": f"Bearer {self.creds.access_token}",
            "Content-Type": content_type,
        }
        try:
            async with self._http.post(
                url, params={"filename": filename}, data=data, headers=headers
            ) as resp:
                answer = await resp.json(content_type=None)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as e:
            raise network_error(self.creds.homeserver, e) from e
        answer = answer if isinstance(answer, dict) else {}
        uri = answer.get("content_uri")
        if status != 200 or not isinstance(uri, str):
            raise _error_from_answer(
                f"uploading {filename}",
                answer.get("errcode"),
                answer.get("error", ""),
                status,
                None,
            )
        return uri

    async def set_avatar_url(self, mxc: str) -> None:
        """The user's own avatar (an ``mxc://`` URI; empty: none)."""
        path = f"{CLIENT_V3}/profile/{quote(self.me, safe='')}/avatar_url"
        await self._json("PUT", path, "setting the avatar", body={"avatar_url": mxc})

    async def set_presence(self, state: PresenceState, status: str | None) -> None:
        """The user's presence and status message, now and for the next syncs."""
        self.presence = state
        path = f"{CLIENT_V3}/presence/{quote(self.me, safe='')}/status"
        body = {"presence": state, "status_msg": status or ""}
        await self._json("PUT", path, "setting the presence", body=body)

    # -- end-to-end encryption: the requests (the cryptography is :mod:`.crypto`) -------

    async def keys_upload(self, body: Mapping[str, Any]) -> Any:
        path = f"{CLIENT_V3}/keys/upload"
        return await self._json("POST", path, "uploading encryption keys", body=dict(body))

    async def keys_query(self, users: Iterable[str]) -> Any:
        body: dict[str, Any] = {"device_keys": {user: [] for user in users}}
        return await self._json("POST", f"{CLIENT_V3}/keys/query", "reading device keys", body=body)

    async def keys_claim(self, devices: Mapping[str, Iterable[str]]) -> Any:
        body = {
            "one_time_keys": {
                user: {device: "signed_curve25519" for device in ids}
                for user, ids in devices.items()
            }
        }
        path = f"{CLIENT_V3}/keys/claim"
        return await self._json("POST", path, "claiming one-time keys", body=body)

    async def account_data(self, event_type: str) -> Any:
        """The user's account data ``event_type`` (`RequestFailed` M_NOT_FOUND if none)."""
        user, kind = quote(self.me, safe=""), quote(event_type, safe="")
        path = f"{CLIENT_V3}/user/{user}/account_data/{kind}"
        return await self._json("GET", path, f"reading {event_type}")

    async def key_backup_version(self) -> Any:
        """The current key backup version (`RequestFailed` M_NOT_FOUND if none)."""
        return await self._json("GET", f"{CLIENT_V3}/room_keys/version", "reading the key backup")

    async def key_backup_keys(self, version: str) -> Any:
        """Every key of the key backup ``version`` (a long answer: a longer timeout)."""
        return await self._json(
            "GET",
            f"{CLIENT_V3}/room_keys/keys",
            "reading the key backup",
            params={"version": version},
            timeout=max(self.cfg.request_timeout, 120.0),
        )

    async def put_key_backup_keys(self, version: str, rooms: Mapping[str, Any]) -> Any:
        """Add keys (``rooms``: room → ``{"sessions": …}``) to the backup ``version``."""
        path = f"{CLIENT_V3}/room_keys/keys"
        body = {"rooms": dict(rooms)}
        params = {"version": version}
        return await self._json("PUT", path, "backing up room keys", params=params, body=body)

    async def upload_signatures(self, signed: Mapping[str, Any]) -> Any:
        """Upload cross-signing signatures (``signed``: user → key ID → signed object)."""
        path = f"{CLIENT_V3}/keys/signatures/upload"
        return await self._json("POST", path, "uploading cross-signing signatures", body=signed)

    async def send_to_device(self, event_type: str, messages: Mapping[str, Any]) -> None:
        """Send to-device events (``messages``: user → device → content)."""
        path = f"{CLIENT_V3}/sendToDevice/{quote(event_type, safe='')}/{uuid.uuid4().hex}"
        await self._json("PUT", path, "sending keys to devices", body={"messages": dict(messages)})

    async def room_members(self, room_id: RoomId) -> list[Membership]:
        """Every member of the room, whatever sync's lazy loading has shown so far."""
        path = f"{CLIENT_V3}/rooms/{quote(room_id, safe='')}/members"
        data = await self._json("GET", path, f"members of {room_id}")
        return parse_members(room_id, data)

    async def logout(self) -> None:
        """End this device's session on the homeserver (unregistration)."""
        await self._nio_call("logging out", self._nio.logout())


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
