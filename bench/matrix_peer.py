"""The Matrix side of the Matrix benchmark: a person on the lab's Synapse, as lean as can be.

`MatrixPeer` speaks the client-server API with one aiohttp session. It sends events (one
at a time, or a window of them in flight), and a background task long-polls ``/sync``
with a large timeline limit, handing every room message to a callback the moment the
sync response is parsed, so a message is timed when it reaches the peer, not when a test
looks for it. `timeline` reads a room's events back from the server afterwards (the
authoritative order, and a recount that does not depend on the sync). Every request has
a timeout; every loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import aiohttp

from bench.common import BenchError

log = logging.getLogger(__name__)

SYNC_FILTER = json.dumps(
    {
        "presence": {"not_types": ["*"]},
        "account_data": {"not_types": ["*"]},
        "room": {
            "timeline": {"limit": 5000, "types": ["m.room.message"]},
            "ephemeral": {"not_types": ["*"]},
            "state": {"lazy_load_members": True},
        },
    }
)
"""Room messages only, and more of them per sync than any phase sends, so a sync is
never `limited` (a gap the peer would have to fill)."""


class MatrixPeer:
    """A Matrix account with an access token on the lab's homeserver."""

    def __init__(self, base_url: str, user_id: str, access_token: str) -> None:
        self.base_url = base_url
        self.user_id = user_id
        self._http = aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {access_token}"},
            timeout=aiohttp.ClientTimeout(total=60),
        )
        self._txn = itertools.count()
        self.since: str | None = None
        self.on_message: Callable[[str, str, str], None] | None = None
        """Called with (room_id, sender, body) for every room message the sync brings."""
        self.limited_syncs = 0
        """Sync responses that left a gap in some room's timeline (should stay 0)."""
        self._sync_task: asyncio.Task[None] | None = None

    async def call(
        self, method: str, path: str, body: object = None, params: dict[str, str] | None = None
    ) -> Any:
        url = f"{self.base_url}/_matrix/client/v3{path}"
        async with self._http.request(method, url, json=body, params=params) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise BenchError(f"{self.user_id}: {method} {path} → HTTP {resp.status}: {data}")
            return data

    async def close(self) -> None:
        await self.stop_sync()
        await self._http.close()

    # -- rooms ----------------------------------------------------------------------------

    async def create_room(self, name: str, *, public: bool = False) -> str:
        body = {"name": name, "preset": "public_chat" if public else "private_chat"}
        return str((await self.call("POST", "/createRoom", body))["room_id"])

    async def invite(self, room_id: str, user_id: str) -> None:
        await self.call("POST", f"/rooms/{quote(room_id, safe='')}/invite", {"user_id": user_id})

    async def join(self, room_id: str) -> None:
        await self.call("POST", f"/join/{quote(room_id, safe='')}", {})

    async def send_text(self, room_id: str, body: str) -> str:
        path = f"/rooms/{quote(room_id, safe='')}/send/m.room.message/b{next(self._txn)}"
        answer = await self.call("PUT", path, {"msgtype": "m.text", "body": body})
        return str(answer["event_id"])

    async def send_many(self, room_id: str, bodies: list[str], window: int) -> None:
        """Send `bodies` with at most `window` requests in flight (1: strictly in order)."""
        semaphore = asyncio.Semaphore(window)

        async def one(body: str) -> None:
            async with semaphore:
                await self.send_text(room_id, body)

        await asyncio.gather(*(one(b) for b in bodies))

    async def timeline(self, room_id: str, since: str, max_pages: int = 50) -> list[dict[str, Any]]:
        """The room's messages after the sync position `since`, oldest first."""
        events: list[dict[str, Any]] = []
        token = since
        path = f"/rooms/{quote(room_id, safe='')}/messages"
        for _ in range(max_pages):
            params = {
                "dir": "f",
                "from": token,
                "limit": "1000",
                "filter": json.dumps({"types": ["m.room.message"]}),
            }
            page = await self.call("GET", path, params=params)
            chunk = page.get("chunk", [])
            events.extend(chunk)
            if not chunk or "end" not in page:
                return events
            token = page["end"]
        raise BenchError(f"{room_id}: more than {max_pages} pages of messages")

    # -- sync -------------------------------------------------------------------------------

    async def start_sync(self) -> None:
        """Take the current sync position, then follow the sync in the background."""
        data = await self.call("GET", "/sync", params={"filter": SYNC_FILTER, "timeout": "0"})
        self.since = data["next_batch"]
        self._sync_task = asyncio.create_task(self._sync_forever(), name=f"sync-{self.user_id}")

    async def stop_sync(self) -> None:
        task, self._sync_task = self._sync_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _sync_forever(self) -> None:
        failures = 0
        while True:
            params = {"filter": SYNC_FILTER, "timeout": "5000", "since": self.since or ""}
            try:
                data = await self.call("GET", "/sync", params=params)
            except (aiohttp.ClientError, TimeoutError, BenchError) as e:
                failures += 1
                if failures > 10:
                    log.error("%s: sync failed %d times in a row: %s", self.user_id, failures, e)
                    raise
                await asyncio.sleep(0.5)
                continue
            failures = 0
            self.since = data["next_batch"]
            for room_id, room in data.get("rooms", {}).get("join", {}).items():
                timeline = room.get("timeline", {})
                if timeline.get("limited"):
                    self.limited_syncs += 1
                for event in timeline.get("events", []):
                    body = event.get("content", {}).get("body")
                    if self.on_message is not None and isinstance(body, str):
                        self.on_message(room_id, event.get("sender", ""), body)
