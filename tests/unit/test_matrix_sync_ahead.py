"""`MatrixClient.sync_forever` against a small HTTP server on loopback standing in for
the homeserver's ``/sync``: for a batch its caller accepts, the next sync is asked for
while the batch is still being handled; never for a batch with to-device events (the
homeserver deletes those once the next position is asked for), nor for one the caller
turns down."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web

from legacy_plugins.matrix.client import load_nio
from legacy_plugins.matrix.translate import SyncBatch
from tests.unit.loopback_http import client_for, serve

ROOM = "!room:localhost"


def _batch(n: int, *, to_device: bool) -> dict[str, Any]:
    event = {
        "type": "m.room.message",
        "event_id": f"$e{n}",
        "sender": "@bob:localhost",
        "origin_server_ts": 1_700_000_000_000 + n,
        "content": {"msgtype": "m.text", "body": f"message {n}"},
    }
    data: dict[str, Any] = {
        "next_batch": f"s{n}",
        "rooms": {"join": {ROOM: {"timeline": {"events": [event], "limited": False}}}},
    }
    if to_device:
        data["to_device"] = {
            "events": [{"type": "m.room_key", "sender": "@bob:localhost", "content": {}}]
        }
    return data


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[list[str], dict[str, asyncio.Event], str]]:
    """(the positions asked for, in order; an event set when a position is asked; base URL).
    The answer to position ``sN`` is batch N+1; batch 2 holds to-device events."""
    asked: list[str] = []
    seen: dict[str, asyncio.Event] = {f"s{n}": asyncio.Event() for n in range(5)}

    async def sync(request: web.Request) -> web.Response:
        since = request.query.get("since", "s0")
        asked.append(since)
        seen[since].set()
        n = int(since[1:]) + 1
        if n > 3:
            await asyncio.sleep(30)  # nothing new: a long poll (cancelled with the test)
        return web.json_response(_batch(n, to_device=n == 2))

    app = web.Application()
    app.router.add_get("/_matrix/client/v3/sync", sync)
    async with serve(app) as base:
        yield asked, seen, base


@pytest.mark.parametrize(
    ("accept", "asked_while_handling"),
    [
        # batch 1 accepted: s1 asked while it is handled; batch 2 has to-device events:
        # s2 only after; batch 3 accepted again.
        (True, {"s1": True, "s2": False, "s3": True}),
        (False, {"s1": False, "s2": False, "s3": False}),  # the caller turns all down
    ],
)
async def test_the_next_sync_is_asked_ahead_only_when_safe(
    homeserver: tuple[list[str], dict[str, asyncio.Event], str],
    accept: bool,
    asked_while_handling: dict[str, bool],
) -> None:
    await load_nio()
    asked, seen, base = homeserver
    handled: list[str] = []
    during: dict[str, bool] = {}
    done = asyncio.Event()

    async def on_batch(batch: SyncBatch) -> None:
        # Wait (briefly) for the next position to be asked while this batch is handled.
        try:
            async with asyncio.timeout(0.5):
                await seen[batch.next_batch].wait()
        except TimeoutError:
            pass
        during[batch.next_batch] = seen[batch.next_batch].is_set()
        handled.append(batch.next_batch)
        if batch.next_batch == "s3":
            done.set()

    async with client_for(base, request_timeout=5.0) as matrix:
        task = asyncio.create_task(
            matrix.sync_forever("s0", on_batch, lambda _status: None, lambda _b: accept)
        )
        async with asyncio.timeout(10):
            await done.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert handled == ["s1", "s2", "s3"]  # in order, each once
    assert during == asked_while_handling
    assert asked[:3] == ["s0", "s1", "s2"]
