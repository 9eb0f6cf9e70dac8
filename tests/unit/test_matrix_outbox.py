"""The Matrix gateway's outbox (legacy_plugins/matrix/outbox.py): one job at a time per
room, in the order queued, each caller getting its own result or error; the next job
starts as soon as the one before it ends; cancellations neither lose nor reorder the
others. Plus the test of which sync batches are only the echoes of what the user sends.
Pure asyncio, no sockets (the order against a real Synapse is bench/matrix.py's check)."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

import pytest

from gateway.formatting import StyledText
from legacy_plugins.matrix.events import JoinedRoom, Message, Receipt, SyncBatch, only_echoes
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.outbox import Outbox

ROOM = RoomId("!r:example.org")
ME = UserId("@me:example.org")


class Tasks:
    """Stands in for the session's task set (`BaseSession.create_task`)."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task[Any]] = []

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self.tasks.append(task)
        return task


async def test_jobs_of_a_room_run_one_at_a_time_in_order() -> None:
    tasks = Tasks()
    outbox = Outbox(tasks.spawn)
    running: list[int] = []
    done: list[int] = []

    async def job(n: int) -> int:
        running.append(n)
        assert len(running) - len(done) == 1, "two jobs of a room at once"
        await asyncio.sleep(0.001 * (n % 3))
        done.append(n)
        return n * 10

    results = await asyncio.gather(
        *(outbox.run(ROOM, functools.partial(job, n)) for n in range(50))
    )
    assert results == [n * 10 for n in range(50)]
    assert done == list(range(50))
    assert not outbox.busy()
    assert len(tasks.tasks) == 1  # one drain task for the whole burst


async def test_rooms_do_not_wait_for_each_other() -> None:
    outbox = Outbox(Tasks().spawn)
    gate = asyncio.Event()

    async def slow() -> str:
        await gate.wait()
        return "slow"

    async def fast() -> str:
        return "fast"

    first = asyncio.ensure_future(outbox.run("a", slow))
    assert await asyncio.wait_for(outbox.run("b", fast), 1.0) == "fast"
    assert not first.done()
    gate.set()
    assert await first == "slow"


async def test_an_error_goes_to_its_caller_and_the_next_job_still_runs() -> None:
    outbox = Outbox(Tasks().spawn)

    async def fails() -> None:
        raise ValueError("refused")

    async def works() -> str:
        return "sent"

    bad = asyncio.ensure_future(outbox.run(ROOM, fails))
    good = asyncio.ensure_future(outbox.run(ROOM, works))
    with pytest.raises(ValueError, match="refused"):
        await bad
    assert await good == "sent"


async def test_a_caller_cancelled_before_its_job_starts_takes_it_out() -> None:
    outbox = Outbox(Tasks().spawn)
    gate = asyncio.Event()
    ran: list[str] = []

    async def job(name: str) -> str:
        if name == "first":
            await gate.wait()
        ran.append(name)
        return name

    first = asyncio.ensure_future(outbox.run(ROOM, lambda: job("first")))
    second = asyncio.ensure_future(outbox.run(ROOM, lambda: job("second")))
    third = asyncio.ensure_future(outbox.run(ROOM, lambda: job("third")))
    await asyncio.sleep(0)
    second.cancel()
    gate.set()
    assert await first == "first"
    assert await third == "third"
    assert ran == ["first", "third"]


async def test_a_job_whose_caller_is_cancelled_meanwhile_still_finishes() -> None:
    outbox = Outbox(Tasks().spawn)
    gate = asyncio.Event()
    finished: list[str] = []

    async def job() -> None:
        await gate.wait()
        finished.append("sent")

    caller = asyncio.ensure_future(outbox.run(ROOM, job))
    await asyncio.sleep(0.01)
    caller.cancel()
    gate.set()
    await asyncio.wait_for(outbox.wait_idle(1.0), 2.0)
    assert finished == ["sent"]
    assert not outbox.busy()


async def test_ending_the_drain_cancels_what_waits() -> None:
    tasks = Tasks()
    outbox = Outbox(tasks.spawn)
    gate = asyncio.Event()

    first = asyncio.ensure_future(outbox.run(ROOM, gate.wait))
    second = asyncio.ensure_future(outbox.run(ROOM, gate.wait))
    await asyncio.sleep(0.01)
    for task in tasks.tasks:
        task.cancel()
    for caller in (first, second):
        with pytest.raises(asyncio.CancelledError):
            await caller
    assert not outbox.busy()


async def test_wait_idle_returns_when_the_jobs_end_or_at_the_timeout() -> None:
    outbox = Outbox(Tasks().spawn)
    await asyncio.wait_for(outbox.wait_idle(10.0), 1.0)  # nothing queued: at once
    gate = asyncio.Event()
    caller = asyncio.ensure_future(outbox.run(ROOM, gate.wait))
    await asyncio.sleep(0)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await outbox.wait_idle(0.05)
    assert loop.time() - started >= 0.04
    assert outbox.busy()
    gate.set()
    await asyncio.wait_for(outbox.wait_idle(10.0), 1.0)
    await caller


def _message(own: bool, n: int = 1) -> Message:
    return Message(
        room_id=ROOM,
        event_id=EventId(f"$e{n}"),
        sender=ME,
        ts=0,
        kind="text",
        text=StyledText.plain("hi"),
        own_device=own,
    )


@pytest.mark.parametrize(
    ("batch", "echoes"),
    [
        (SyncBatch("t", joined=(JoinedRoom(ROOM, timeline=(_message(True),)),)), True),
        (
            SyncBatch(
                "t", joined=(JoinedRoom(ROOM, timeline=(_message(True), _message(True, 2))),)
            ),
            True,
        ),
        (
            SyncBatch(
                "t", joined=(JoinedRoom(ROOM, timeline=(_message(True), _message(False, 2))),)
            ),
            False,
        ),
        (SyncBatch("t", joined=(JoinedRoom(ROOM, timeline=(_message(False),)),)), False),
        (SyncBatch("t"), False),  # an empty sync (timeout): the usual path
        (
            SyncBatch("t", joined=(JoinedRoom(ROOM, timeline=(_message(True),), limited=True),)),
            False,
        ),
        (
            SyncBatch(
                "t",
                joined=(
                    JoinedRoom(
                        ROOM,
                        timeline=(_message(True),),
                        ephemeral=(Receipt(ROOM, UserId("@b:x"), EventId("$e1")),),
                    ),
                ),
            ),
            False,
        ),
        (
            SyncBatch("t", joined=(JoinedRoom(ROOM, timeline=(_message(True),)),), left=(ROOM,)),
            False,
        ),
        (
            SyncBatch("t", joined=(JoinedRoom(ROOM, timeline=(_message(True),)),), to_device=({},)),
            False,
        ),
        (
            SyncBatch(
                "t", joined=(JoinedRoom(ROOM, timeline=(_message(True),)),), one_time_keys=50
            ),
            True,
        ),
    ],
)
def test_which_batches_are_only_echoes(batch: SyncBatch, echoes: bool) -> None:
    assert only_echoes(batch) is echoes
