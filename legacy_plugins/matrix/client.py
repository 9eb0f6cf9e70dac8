"""One XMPP user's connection to their Matrix homeserver: the only module that imports nio.

`MatrixClient` is a logged-in device (`Credentials`, made by :mod:`.login` when the user
registers): it syncs (:mod:`.sync`, a part of it) and sends on the user's behalf —
messages, edits, reactions, redactions, typing, receipts, rooms, profiles, media and
presence here, the encryption requests in :mod:`.keysapi`, another part of it.
matrix-nio's `AsyncClient` makes some of the request-response calls; the others, and
``/sync``, are plain JSON requests (`MatrixClient._json`, which waits out rate limits).
matrix-nio itself is imported when the first account needs it (`load_nio`), not when
the network's process starts.

Every HTTP connection passes the admin's homeserver policy (:mod:`.config`, through
:mod:`.net`): host names are checked against the globs and resolved by a resolver that
drops non-public addresses (unless allowed); IP literals and redirects are checked by a
request hook. No request goes anywhere else: media come from the user's homeserver,
avatars are never fetched from the internet. Access tokens travel in the
``Authorization`` header and are never logged. Errors are those of :mod:`.errors`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import threading
import uuid
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp

from gateway.backoff import Backoff

from .config import Config
from .errors import (
    HomeserverTimeout,
    HomeserverUnreachable,
    LoginRefused,
    MatrixError,
    RateLimited,
    RequestFailed,
)
from .events import PresenceState, TimelineEvent
from .ids import EventId, RoomId, UserId
from .keysapi import KeysApi
from .net import CLIENT_V3, http_session, network_error, read_body
from .sync import Syncing
from .translate import parse_direct, parse_messages


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


__all__ = ["Credentials", "MatrixClient", "load_nio"]

log = logging.getLogger(__name__)

_RATE_LIMIT_RETRIES = 5
_SEND_RETRY_DELAYS = (0.5, 2.0)
"""Seconds before each new attempt of an event's request that timed out or lost its
connection (a transaction ID makes it safe: the homeserver does not make it twice)."""
_LOGIN_LOCK_ERRCODES = frozenset({"M_FORBIDDEN", "M_USER_DEACTIVATED", "M_UNKNOWN_TOKEN"})


OWN_DEVICE = "own_device"
"""Stored with the login: whether the gateway made the device (a password login), and
so may log it out (when she registers again, or unregisters). A device whose access
token she gave is another app's: logging it out would log that app out."""


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


class MatrixClient(Syncing, KeysApi):
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

    async def logout(self) -> None:
        """End this device's session on the homeserver (unregistration)."""
        await self._nio_call("logging out", self._nio.logout())
