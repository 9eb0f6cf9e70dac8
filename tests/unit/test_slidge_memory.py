"""Slidge fix 40 (gateway/slidge_memory.py): a detector (slixmpp's send loop still makes
a task per async filter), and slixmpp's loop and ours compared on the same stanzas and
filters: the same lines written, in the same order, the slow path taken alike."""

import asyncio
import inspect
from collections.abc import Callable
from typing import Any

import pytest
from slixmpp import Message, Presence
from slixmpp.xmlstream.xmlstream import XMLStream

from gateway import slidge_memory

SLIXMPP_LOOP: Callable[[Any], Any] = getattr(
    XMLStream.__dict__["run_filters"], "__wrapped__", XMLStream.__dict__["run_filters"]
)
"""slixmpp's own loop, even when another test installed the fix in this process."""


def test_bug40_slixmpp_runs_each_async_filter_as_a_task_is_still_there() -> None:
    source = inspect.getsource(SLIXMPP_LOOP)
    assert "asyncio.create_task(filter(data))" in source and "timeout=1" in source
    # What the fix reads of slixmpp's stream.
    assert "__filters" in inspect.getsource(XMLStream.add_filter)
    assert "self.__slow_tasks.append(task)" in source
    assert "_continue_slow_send" in XMLStream.__dict__


def test_fix40_installs_once_and_detectors_still_read_slixmpp() -> None:
    before = XMLStream.__dict__["run_filters"]
    try:
        slidge_memory.apply()
        slidge_memory.apply()  # idempotent
        assert XMLStream.__dict__["run_filters"] is slidge_memory._run_filters
        assert inspect.unwrap(XMLStream.run_filters) is SLIXMPP_LOOP
    finally:
        XMLStream.run_filters = before  # type: ignore[method-assign]


def _stanzas() -> list[tuple[Any, bool]]:
    """Presences and messages, a raw line, a stanza sent without filters."""
    out: list[tuple[Any, bool]] = []
    for i in range(40):
        p = Presence(sto=f"u{i % 3}@example.org/r", sfrom=f"room@irc.example.org/n{i}")
        if i % 7 == 3:
            p["type"] = "unavailable"
        out.append((p, True))
        if i % 5 == 0:
            m = Message(sto="u0@example.org", sfrom="n@irc.example.org")  # type: ignore[no-untyped-call]
            m["body"] = f"line {i}"
            out.append((m, True))
    out.insert(10, ("<r xmlns='raw'/>", True))
    unfiltered = Message(sto="u1@example.org")  # type: ignore[no-untyped-call]
    unfiltered["body"] = "not filtered"
    out.insert(20, (unfiltered, False))
    return out


def _filters(log: list[str]) -> list[tuple[Any, Any]]:
    """Filters of every kind: sync, async finishing at once, async that waits (for
    every fifth presence), one that drops, one that fails, and a sync 'out_sync' one."""

    def tag(stanza: Any) -> Any:
        if isinstance(stanza, Presence):
            stanza["status"] = (stanza["status"] or "") + "s"
        return stanza

    async def at_once(stanza: Any) -> Any:
        if isinstance(stanza, Presence):
            stanza["status"] += "a"
        return stanza

    async def waits(stanza: Any) -> Any:
        if isinstance(stanza, Presence) and stanza["from"].resource[-1] in "05":
            await asyncio.sleep(0.01)
            stanza["status"] += "w"
        return stanza

    async def drops(stanza: Any) -> Any:
        if isinstance(stanza, Message) and stanza["body"] == "line 10":
            return None
        return stanza

    async def fails(stanza: Any) -> Any:
        if isinstance(stanza, Presence) and stanza["from"].resource == "n13":
            raise ValueError("a filter's bug")
        return stanza

    def last(stanza: Any) -> Any:
        log.append(str(stanza["to"]))
        return stanza

    return [
        ("out", tag),
        ("out", at_once),
        ("out", waits),
        ("out", drops),
        ("out", fails),
        ("out_sync", last),
    ]


async def _run(loop_fn: Callable[[Any], Any], slow: Any = None) -> tuple[list[str], list[str]]:
    stream = XMLStream()
    sent: list[Any] = []
    stream.send_raw = sent.append  # type: ignore[method-assign,assignment]
    seen: list[str] = []
    for mode, flt in _filters(seen):
        stream.add_filter(mode, flt)
    if slow is not None:
        stream.add_filter("out", slow)
    for item in _stanzas():
        stream.waiting_queue.put_nowait(item)
    runner = asyncio.ensure_future(loop_fn(stream))
    try:
        async with asyncio.timeout(10):
            await stream.waiting_queue.join()
            slow_tasks = list(stream._XMLStream__slow_tasks)  # type: ignore[attr-defined]
            await asyncio.gather(*slow_tasks, return_exceptions=True)
            await asyncio.sleep(0.05)  # the slow path's send follows its task
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    return sent, seen


async def test_fix40_writes_what_slixmpp_writes_in_the_same_order(
    caplog: pytest.LogCaptureFixture,
) -> None:
    theirs = await _run(SLIXMPP_LOOP)
    ours = await _run(slidge_memory._run_filters)
    assert ours == theirs
    sent = ours[0]
    assert len(sent) == len(_stanzas()) - 2  # one dropped, one failed
    assert any("saw" in line for line in sent) and "<r xmlns='raw'/>" in sent
    assert "Exception raised in send queue" in caplog.text


async def test_fix40_a_filter_slower_than_a_second_takes_slixmpps_slow_path() -> None:
    async def slow(stanza: Any) -> Any:
        if isinstance(stanza, Presence) and stanza["from"].resource == "n2":
            await asyncio.sleep(1.2)
            stanza["status"] += "!"
        return stanza

    theirs = await _run(SLIXMPP_LOOP, slow)
    ours = await _run(slidge_memory._run_filters, slow)
    assert ours == theirs
    assert "!" in ours[0][-1]  # sent last, after everything queued behind it


async def test_fix40_a_long_queue_lets_other_tasks_run() -> None:
    stream = XMLStream()
    sent: list[Any] = []
    stream.send_raw = sent.append  # type: ignore[method-assign,assignment]

    async def at_once(stanza: Any) -> Any:
        return stanza

    stream.add_filter("out", at_once)
    total = 4 * slidge_memory.FAIR_EVERY
    for i in range(total):
        stream.waiting_queue.put_nowait((Presence(sto=f"u@example.org/{i}"), True))
    written_when_other_ran: list[int] = []

    async def other() -> None:
        await asyncio.sleep(0)
        written_when_other_ran.append(len(sent))

    runner = asyncio.ensure_future(slidge_memory._run_filters(stream))
    bystander = asyncio.ensure_future(other())
    try:
        async with asyncio.timeout(10):
            await stream.waiting_queue.join()
            await bystander
    finally:
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert len(sent) == total
    assert written_when_other_ran and written_when_other_ran[0] < total
