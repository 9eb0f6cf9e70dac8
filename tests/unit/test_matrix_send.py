"""`MatrixClient.send` against a small HTTP server on loopback standing in for the
homeserver's send endpoint: a request that times out or loses its connection is made
again with the same transaction ID (so the homeserver never makes the event twice);
an error answer is not retried."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from legacy_plugins.matrix import client as client_module
from legacy_plugins.matrix.client import load_nio
from legacy_plugins.matrix.errors import HomeserverTimeout, RequestFailed
from legacy_plugins.matrix.ids import RoomId
from tests.unit.loopback_http import client_for, serve

Behaviour = Callable[[web.Request, int], Any]


@pytest.fixture
async def homeserver() -> AsyncIterator[tuple[list[str], list[Behaviour], str]]:
    """(paths seen, what to do for each request in turn, base URL)."""
    seen: list[str] = []
    plan: list[Behaviour] = []

    async def send(request: web.Request) -> web.StreamResponse:
        seen.append(request.path)
        result: web.StreamResponse = await plan[len(seen) - 1](request, len(seen))
        return result

    app = web.Application()
    app.router.add_put("/_matrix/client/v3/rooms/{room}/send/{type}/{txn}", send)
    async with serve(app) as base:
        yield seen, plan, base


async def _slow(request: web.Request, n: int) -> web.Response:
    await asyncio.sleep(3)
    return web.json_response({"event_id": f"$late{n}"})


async def _answer(request: web.Request, n: int) -> web.Response:
    return web.json_response({"event_id": f"$event{n}"})


async def _drop(request: web.Request, n: int) -> web.Response:
    assert request.transport is not None
    request.transport.close()  # the connection lost before any answer
    await asyncio.sleep(0.1)
    return web.json_response({})


async def _refuse(request: web.Request, n: int) -> web.Response:
    return web.json_response({"errcode": "M_FORBIDDEN", "error": "no"}, status=403)


@pytest.mark.parametrize(
    ("plan", "outcome", "requests"),
    [
        ([_answer], "$event1", 1),
        ([_slow, _answer], "$event2", 2),  # timed out: again, same transaction
        ([_drop, _drop, _answer], "$event3", 3),
        ([_slow, _slow, _slow], HomeserverTimeout, 3),  # given up after two retries
        ([_refuse], RequestFailed, 1),  # an answer, even an error, is not retried
    ],
)
async def test_a_send_is_retried_with_the_same_transaction_id(
    homeserver: tuple[list[str], list[Behaviour], str],
    monkeypatch: pytest.MonkeyPatch,
    plan: list[Behaviour],
    outcome: str | type[Exception],
    requests: int,
) -> None:
    await load_nio()
    seen, behaviours, base = homeserver
    behaviours.extend(plan)
    monkeypatch.setattr(client_module, "_SEND_RETRY_DELAYS", (0.05, 0.05))
    async with client_for(base, request_timeout=0.5) as matrix:
        if isinstance(outcome, str):
            assert await matrix.send(RoomId("!room:localhost"), "m.room.message", {}) == outcome
        else:
            with pytest.raises(outcome):
                await matrix.send(RoomId("!room:localhost"), "m.room.message", {})
    assert len(seen) == requests
    assert len(set(seen)) == 1  # one transaction ID for all attempts
