"""The parts of the IRC client that need no socket: the reconnect queue, line reading,
and delivery confirmation (echo-message) driven by events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.backoff import Backoff
from legacy_plugins.irc import events as ev
from legacy_plugins.irc.client import (
    JOIN_PATIENCE,
    READ_LIMIT,
    ConnectionFailed,
    Identity,
    IrcClient,
    MessageRejected,
    QueueFull,
    read_line,
)
from legacy_plugins.irc.config import ServerTarget
from legacy_plugins.irc.events import Channel, Prefix
from legacy_plugins.irc.protocol import LocalProtocolError


class Quiet:
    async def on_irc_event(
        self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
    ) -> None:
        pass

    async def on_irc_status(self, client: IrcClient, status: str, text: str) -> None:
        pass


def client(queue_size: int) -> IrcClient:
    target = ServerTarget("srv", "srv", 6697, True, True, None, "latin-1", True)
    return IrcClient(
        target,
        Identity("alice", "alice", "Alice"),
        Quiet(),
        flood_burst=10,
        flood_rate=1.0,
        queue_size=queue_size,
        connect_timeout=5,
        backoff=Backoff(),
        allow_private=False,
    )


def test_lines_wait_while_disconnected_up_to_the_queue_size() -> None:
    irc = client(queue_size=3)
    irc.send("PRIVMSG", "#a", "one")
    irc.send_text("#a", "two\nthree")
    assert list(irc._pending) == [
        b"PRIVMSG #a one\r\n",
        b"PRIVMSG #a two\r\n",
        b"PRIVMSG #a three\r\n",
    ]
    with pytest.raises(QueueFull, match=r"not connected to IRC server 'srv'.*not sent"):
        irc.send("PRIVMSG", "#a", "four")
    assert len(irc._pending) == 3


def test_a_message_that_does_not_fit_is_refused_whole() -> None:
    irc = client(queue_size=2)
    with pytest.raises(QueueFull):
        irc.send_text("#a", "one\ntwo\nthree")
    assert not irc._pending


def test_invalid_lines_never_reach_the_queue() -> None:
    irc = client(queue_size=10)
    with pytest.raises(LocalProtocolError):
        irc.send("PRIVMSG", "#a", "x\r\nQUIT")
    with pytest.raises(LocalProtocolError):
        irc.send("KICK", "#a b", "nick")
    assert not irc._pending


async def test_read_line_skips_overlong_lines_and_ends_at_eof() -> None:
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    reader.feed_data(b"PING :a\r\n" + b"x" * (READ_LIMIT * 3) + b"\r\nPING :b\r\nPING :c")
    reader.feed_eof()
    assert await read_line(reader) == b"PING :a\r\n"
    assert await read_line(reader) == b"PING :b\r\n"
    assert await read_line(reader) == b"PING :c"
    assert await read_line(reader) is None


def connected(irc: IrcClient, *caps: str) -> asyncio.Queue[bytes]:
    """Pretend `irc` is registered with `caps`; return its outgoing line queue."""
    out: asyncio.Queue[bytes] = asyncio.Queue()
    irc._out = out
    irc.state.phase = "registered"
    irc.state.enabled_caps.update(caps)
    return out


def echo(text: str, msgid: str | None = None, target: str = "#a") -> ev.MessageReceived:
    sender = Prefix("alice", "alice", "host")
    return ev.MessageReceived(sender, target, text, "privmsg", Channel(target), True, None, msgid)


async def test_with_echo_message_delivery_waits_for_the_echo_and_returns_its_msgid() -> None:
    irc = client(queue_size=10)
    out = connected(irc, "echo-message")
    sent = asyncio.create_task(irc.deliver_text("#a", "one\ntwo"))
    await asyncio.sleep(0)
    assert [out.get_nowait(), out.get_nowait()] == [b"PRIVMSG #a one\r\n", b"PRIVMSG #a two\r\n"]
    await irc._handle(echo("one", "id-1"))
    assert not sent.done()
    await irc._handle(echo("two", "id-2"))
    assert await sent == "id-1"


async def test_a_refused_message_raises_and_the_numeric_is_not_shown() -> None:
    seen: list[ev.Event] = []

    class Recorder(Quiet):
        async def on_irc_event(
            self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
        ) -> None:
            seen.append(event)

    irc = client(queue_size=10)
    irc._listener = Recorder()
    connected(irc, "echo-message")
    sent = asyncio.create_task(irc.deliver_text("#a", "hello"))
    await asyncio.sleep(0)
    await irc._handle(ev.ServerReply("404", ("#a", "Cannot send to channel (+m)"), "srv"))
    with pytest.raises(MessageRejected, match=r"Cannot send to channel \(\+m\) \(404\)") as err:
        await sent
    assert err.value.code == "404"
    assert seen == []
    await irc._handle(ev.ServerReply("404", ("#a", "not about one of ours"), "srv"))
    assert len(seen) == 1


async def test_without_echo_message_or_connection_nothing_waits() -> None:
    irc = client(queue_size=10)
    assert await irc.deliver_text("#a", "queued while away") is None
    assert list(irc._pending) == [b"PRIVMSG #a :queued while away\r\n"]
    irc = client(queue_size=10)
    out = connected(irc)
    assert await irc.deliver_text("#a", "no echo here") is None
    assert out.get_nowait() == b"PRIVMSG #a :no echo here\r\n"


async def test_a_lost_connection_fails_the_messages_waiting_for_their_echo() -> None:
    irc = client(queue_size=10)
    connected(irc, "echo-message")
    sent = asyncio.create_task(irc.deliver_text("#a", "in flight"))
    await asyncio.sleep(0)
    irc._fail_deliveries()
    with pytest.raises(ConnectionFailed, match="may not have been delivered"):
        await sent


async def test_the_reader_waits_for_the_backlog_hook_after_every_line() -> None:
    """Backpressure: a burst already in the socket buffer is not read in one go; after
    each line the reader awaits the hook (the XMPP send queue draining) before the next."""
    seen: list[str] = []
    release = asyncio.Event()

    class Recorder(Quiet):
        async def on_irc_event(
            self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
        ) -> None:
            if isinstance(event, ev.PongReceived):
                seen.append(event.token)

    async def backlog() -> None:
        seen.append("wait")
        if len(seen) >= 4:
            await release.wait()  # the XMPP side is busy: reading stops here

    target = ServerTarget("srv", "srv", 6697, True, True, None, "latin-1", True)
    irc = IrcClient(
        target,
        Identity("alice", "alice", "Alice"),
        Recorder(),
        flood_burst=10,
        flood_rate=1.0,
        queue_size=10,
        connect_timeout=5,
        backoff=Backoff(),
        allow_private=False,
        backlog=backlog,
    )
    reader = asyncio.StreamReader(limit=READ_LIMIT)
    reader.feed_data(b"".join(b":srv PONG srv :t%d\r\n" % i for i in range(4)))
    reader.feed_eof()
    reading = asyncio.create_task(irc._read(reader))
    for _ in range(20):
        await asyncio.sleep(0)
    assert seen == ["t0", "wait", "t1", "wait"]  # stopped: lines 2 and 3 still unread
    release.set()
    assert "closed the connection" in await reading
    assert seen == ["t0", "wait", "t1", "wait", "t2", "wait", "t3", "wait"]


async def test_a_join_waits_while_the_server_keeps_talking_and_not_longer() -> None:
    """The join timeout is the server's silence: with many joins at once the gateway
    is behind on reading and the answer comes late, but lines keep coming."""
    timeout = 0.05
    irc = client(queue_size=10)
    connected(irc)
    with pytest.raises(ConnectionFailed, match=r"did not let us into #quiet within 0.05 s"):
        await irc.join(Channel("#quiet"), timeout)  # silence: fails after one timeout

    async def talk(until: float) -> None:
        loop = asyncio.get_running_loop()
        while loop.time() < until:
            irc.lines_read += 1
            await asyncio.sleep(timeout / 5)

    loop = asyncio.get_running_loop()
    start = loop.time()
    talking = asyncio.create_task(talk(start + 1.0))
    joining = asyncio.create_task(irc.join(Channel("#busy"), timeout))
    await asyncio.sleep(timeout * 2.5)
    assert not joining.done()  # past its timeout, still waiting: the server talks
    joined: Any = object()  # stands for the channel's state
    irc._join_waiters["#busy"].set_result(joined)
    assert await joining is joined
    with pytest.raises(ConnectionFailed):  # talking, but never answering: bounded
        await irc.join(Channel("#never"), timeout)
    assert loop.time() - start < timeout * 2.5 + timeout * JOIN_PATIENCE + 0.5
    talking.cancel()
