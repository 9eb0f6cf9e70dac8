"""The parts of the IRC client that need no socket: the reconnect queue and line reading."""

from __future__ import annotations

import asyncio

import pytest

from gateway.backoff import Backoff
from legacy_plugins.irc import events as ev
from legacy_plugins.irc.client import READ_LIMIT, Identity, IrcClient, QueueFull, read_line
from legacy_plugins.irc.config import ServerTarget
from legacy_plugins.irc.events import Channel
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
