"""The Matrix client's sync: long-polling ``/sync``, with every gap filled.

`Syncing` is a part of `MatrixClient` (a base class of it, not used alone). ``/sync``
and ``/messages`` are read as plain JSON and validated by :mod:`.translate`: nio would
check every event against a JSON schema and mirror room state we keep ourselves anyway
(:mod:`.rooms`), which is most of the cost of a busy sync. Each sync uses a filter with
a timeline limit and tells the homeserver the user's presence; when the homeserver
still says ``limited`` (a burst larger than the limit), the gap is read back with
``/messages`` down to the previous sync position: bursts are not lost. `sync_forever`
retries network trouble and server errors with capped exponential backoff (rate limits
after the time the homeserver names) and ends only when cancelled or when the login is
revoked. The requests themselves, and everything else the client sends, are
:mod:`.client`'s.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from .errors import LoginRefused, MatrixError, RateLimited, RequestFailed
from .events import SyncBatch, TimelineEvent
from .ids import RoomId
from .net import CLIENT_V3
from .translate import parse_messages, parse_sync

if TYPE_CHECKING:
    from gateway.backoff import Backoff

    from .client import Credentials
    from .config import Config
    from .events import PresenceState
    from .ids import UserId

__all__ = ["MAX_GAP_EVENTS", "ClientPart", "StatusCallback", "Syncing"]

log = logging.getLogger(__name__)

MAX_GAP_EVENTS = 10_000
"""Events read back with ``/messages`` to fill one gap; older ones are lost (and logged)."""

StatusCallback = Callable[[str | None], None]
"""Told "why we are not connected" (a sentence), or None once connected again."""


class ClientPart:
    """What a part of `MatrixClient` (a base class of it, such as `Syncing`) uses of it."""

    if TYPE_CHECKING:  # provided by MatrixClient
        creds: Credentials
        cfg: Config
        me: UserId

        async def _json(
            self,
            method: str,
            path: str,
            what: str,
            *,
            params: Mapping[str, str] | None = None,
            body: object = None,
            timeout: float | None = None,
        ) -> Any: ...


class Syncing(ClientPart):
    """The sync of `MatrixClient` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by MatrixClient
        presence: PresenceState
        _backoff: Backoff

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


def _dumps(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))
