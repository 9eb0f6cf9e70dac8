"""One XMPP user's connection to one IRC server, over the socket `transport` opens.

`IrcClient.run()` connects, registers, reads lines and feeds them to the sans-IO
`IrcConnectionState`, and hands every event to a listener (the slidge session), in order.
It reconnects with capped exponential backoff after the server drops the connection,
then rejoins every channel the user is in. Lines the user sends while it is away wait in
a bounded queue and go out after the rejoin; when that queue is full the send fails with
`QueueFull` and the user is told — nothing is dropped silently. All outgoing lines pass
through one token bucket per connection and one writer task, so flood control keeps
their order. Before connecting to a server the admin did not define, the host is
resolved once and refused if any usable address is not public (SSRF); the connection
then goes to exactly the addresses that were checked.

A join completes when the server has sent the member list *and* answered a PING sent
right after the JOIN: the server handles commands in order, so by then it has also
sent what it plays back on join (InspIRCd's channel history), and the room archive has
it before the XMPP client is let in. With IRCv3 `echo-message`, `deliver_text` waits
until the server relays every line of a message (`delivery.Deliveries`) and returns the
server's msgid, or raises `MessageRejected` with the server's refusal. Errors::

    IrcClientError
    ├── ConnectionFailed   the server could not be reached or refused us (text says why)
    ├── JoinRefused        the server refused to let us into a channel (numeric + text)
    └── QueueFull          the connection is down and the outgoing queue is full
    delivery.MessageRejected   the server refused a message (404 cannot send, 401...)
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from gateway.backoff import Backoff

from . import events as ev
from .channels import ChannelState, ChannelTracker
from .config import ServerTarget
from .connection import IrcConnectionState, who_query
from .delivery import Confirmations, MessageRejected
from .events import Channel, Nick
from .flood import TokenBucket
from .protocol import (
    IrcProtocolError,
    LocalProtocolError,
    Message,
    loggable,
    parse_line,
    serialize,
    split_message,
)
from .transport import READ_LIMIT, describe, open_connection, read_line

__all__ = [
    "READ_LIMIT",
    "ConnectionFailed",
    "Identity",
    "IrcClient",
    "IrcClientError",
    "JoinRefused",
    "Listener",
    "MessageRejected",
    "QueueFull",
    "Status",
    "read_line",
]

log = logging.getLogger(__name__)

IDLE_PING_AFTER = 120.0  # seconds of silence before we PING the server
IDLE_DEAD_AFTER = 60.0  # seconds after that PING before the connection counts as dead
HOST_MAX = 63  # bytes we assume for our host in `nick!user@host` when splitting
JOIN_ERRORS = frozenset(
    {"403", "405", "437", "471", "473", "474", "475", "476", "477", "479", "489", "520"}
)
ECHO_WAIT = 10.0  # seconds for the server to echo a line, on top of flood-control delays
JOIN_PATIENCE = 4  # a join waits up to this many timeouts while the server keeps talking
ACCOUNT_CAPS = frozenset({"account-notify", "extended-join", "account-tag"})
"""Capabilities that say the server has services accounts (worth a WHOX on join)."""
JOIN_PING = "passerelle-join "  # PING token prefix that marks the end of a join's output
# End of the replies to what the client asks itself on join (482: the ban list is hidden).
AUTO_END = {"315": "who", "368": "bans", "482": "bans"}

Status = Literal["connecting", "connected", "disconnected"]


class IrcClientError(Exception):
    """Base of what `IrcClient` raises to its users; the text is for the XMPP user."""


class ConnectionFailed(IrcClientError):
    pass


class JoinRefused(IrcClientError):
    def __init__(self, channel: str, code: str, text: str) -> None:
        super().__init__(f"IRC server refused to join {channel}: {text} ({code})")
        self.code = code


class QueueFull(IrcClientError):
    pass


class _ConnectionLost(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Identity:
    """Who we are on the server, and what to do once connected."""

    nick: str
    username: str
    realname: str
    account_password: str | None = None
    """SASL PLAIN (account = nick) if the server offers it, else NickServ IDENTIFY."""
    after_connect: tuple[bytes, ...] = ()
    """Validated raw lines sent after registration, before the channels are joined."""


class Listener(Protocol):
    """What the client reports to (the slidge session)."""

    async def on_irc_event(
        self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
    ) -> None:
        """One event, in wire order. `channels`: those it concerns (see ChannelTracker)."""

    async def on_irc_status(self, client: IrcClient, status: Status, text: str) -> None:
        """The connection went up or down; `text` says why, for the user."""


class IrcClient:
    """A connection to one IRC server for one XMPP user, shared by all their clients."""

    def __init__(
        self,
        target: ServerTarget,
        identity: Identity,
        listener: Listener,
        *,
        flood_burst: int,
        flood_rate: float,
        queue_size: int,
        connect_timeout: float,
        backoff: Backoff,
        allow_private: bool,
        backlog: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.target = target
        self.identity = identity
        self.log = log.getChild(target.name.replace(".", "_"))
        self._listener = listener
        self._flood = (flood_burst, flood_rate)
        self._pending: collections.deque[bytes] = collections.deque()
        self._queue_size = queue_size
        self._connect_timeout = connect_timeout
        self._backoff = backoff
        self._allow_private = allow_private
        self._backlog = backlog
        """Awaited after each line read: returns once the XMPP side has caught up enough
        (backpressure), so a burst goes out as it is read, not after the last line."""
        self.state = self._new_state()
        self.channels = ChannelTracker(lambda: self.state.isupport)
        self.wanted: dict[str, Channel] = {}
        """Channels the user is in: joined again after a reconnection."""
        self._out: asyncio.Queue[bytes] | None = None
        self._ready_waiters: list[asyncio.Future[None]] = []
        self._join_waiters: dict[str, asyncio.Future[ChannelState]] = {}
        self._join_ponged: set[str] = set()
        self._confirmations = Confirmations(self.fold)
        self.auto_queries: set[tuple[str, str]] = set()
        """("who" | "bans", folded channel): replies the client asked for itself, which
        update the occupants quietly instead of being shown to the user."""
        self._who_later: dict[str, Channel] = {}  # joins sent before 005 said WHOX or not
        self._who_twice: set[str] = set()  # channels asked a WHO, then a WHOX (two 315s)
        self.connected_once = False
        self.last_error = ""
        self.lines_read = 0
        """Lines read from the server so far: a join waits longer while this grows."""

    # --- what the session uses ----------------------------------------------------

    @property
    def name(self) -> str:
        return self.target.name

    @property
    def nick(self) -> Nick:
        return self.state.nick

    @property
    def ready(self) -> bool:
        """Registered and able to send now."""
        return self._out is not None and self.state.registered

    def fold(self, name: str) -> str:
        return self.state.casefold(name)

    async def wait_ready(self, timeout: float) -> None:
        """Return once registered; raise `ConnectionFailed` if the next attempt fails."""
        if self.ready:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._ready_waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except TimeoutError:
            raise ConnectionFailed(
                f"IRC server {self.name!r} did not answer within {timeout:g} s"
                + (f" ({self.last_error})" if self.last_error else "")
            ) from None
        finally:
            if waiter in self._ready_waiters:
                self._ready_waiters.remove(waiter)

    async def join(self, channel: Channel, timeout: float) -> ChannelState:
        """Join `channel` (or return at once if already in it) once the server sent the
        member list and answered the PING that follows the JOIN (so whatever it plays
        back on join has been handled); raise `JoinRefused` or `ConnectionFailed`.

        `timeout` is how long the server may stay silent: while lines keep arriving
        (many joins at once, and the gateway is behind reading them) the wait goes on,
        up to `JOIN_PATIENCE` times `timeout` in all."""
        key = self.fold(channel)
        self.wanted[key] = channel
        state = self.channels.get(channel)
        if state is not None and state.names_received:
            return state
        waiter = self._join_waiters.get(key)
        if waiter is None or waiter.done():
            waiter = self._join_waiters[key] = asyncio.get_running_loop().create_future()
            if self.ready:
                self._send_join(channel)
            # otherwise the JOIN goes out with the others after registration
        loop = asyncio.get_running_loop()
        give_up = loop.time() + timeout * JOIN_PATIENCE
        while True:
            lines = self.lines_read
            try:
                async with asyncio.timeout(min(timeout, max(0.0, give_up - loop.time()))):
                    return await asyncio.shield(waiter)
            except TimeoutError:
                if self.lines_read == lines or loop.time() >= give_up:
                    raise ConnectionFailed(
                        f"IRC server {self.name!r} did not let us into {channel} within "
                        f"{timeout:g} s"
                    ) from None

    def part(self, channel: Channel, reason: str = "") -> None:
        """Leave `channel` now if connected; never rejoin it."""
        self.wanted.pop(self.fold(channel), None)
        if self.ready and channel in self.channels:
            self._send_now(Message.of("PART", channel, *([reason] if reason else [])))

    async def quit(self, reason: str, timeout: float = 2.0) -> None:
        """Say goodbye to the server (QUIT), waiting a little for it to be written."""
        out = self._out
        if out is None or not self.state.registered:
            return
        self.wanted.clear()
        self._send_now(Message.of("QUIT", reason))
        try:
            async with asyncio.timeout(timeout):
                await out.join()
        except TimeoutError:
            self.log.info("QUIT to %r not written within %g s", self.name, timeout)

    def send(self, command: str, *params: str) -> None:
        """Send one command (queued while reconnecting). Raises `LocalProtocolError`
        for a line that must not reach the wire, `QueueFull` when it cannot wait."""
        self.send_lines([serialize(Message.of(command, *params))])

    def send_text(
        self, target: str, text: str, *, action: bool = False, notice: bool = False
    ) -> int:
        """PRIVMSG (or NOTICE, or CTCP ACTION) `text` to `target`, split to fit the line
        limit; all of it is sent or none. Returns the number of lines."""
        command = "NOTICE" if notice else "PRIVMSG"
        nick = max(self.nick, self.identity.nick, key=len)
        prefix_len = len(f"{nick}!~{self.identity.username}@".encode()) + HOST_MAX
        chunks = split_message(target, text, command=command, prefix_len=prefix_len, action=action)
        self.send_lines([serialize(Message.of(command, target, chunk)) for chunk in chunks])
        return len(chunks)

    @property
    def confirms_delivery(self) -> bool:
        """Whether the server echoes our messages (IRCv3 echo-message)."""
        return "echo-message" in self.state.enabled_caps

    async def deliver_text(self, target: str, text: str, *, action: bool = False) -> str | None:
        """Send like `send_text`; with echo-message, wait until the server relayed every
        line and return the server's msgid for the message (None without echo-message,
        without msgids, when the lines wait for a reconnection, or when the echo is late).
        Raises `MessageRejected` when the server refuses it, `ConnectionFailed` when the
        connection drops before the server answered."""
        confirm = self.ready and not self._pending and self.confirms_delivery
        nick = max(self.nick, self.identity.nick, key=len)
        prefix_len = len(f"{nick}!~{self.identity.username}@".encode()) + HOST_MAX
        chunks = split_message(target, text, prefix_len=prefix_len, action=action)
        lines = [serialize(Message.of("PRIVMSG", target, chunk)) for chunk in chunks]
        queued = self._out.qsize() if self._out is not None else 0
        self.send_lines(lines)
        if not confirm or not chunks:
            return None
        wait = ECHO_WAIT + (queued + len(lines)) / self._flood[1]
        try:
            return await self._confirmations.wait(target, chunks, wait)
        except TimeoutError:
            self.log.info("no echo from %r for a message to %s in %.0f s", self.name, target, wait)
            return None

    def send_lines(self, lines: list[bytes]) -> None:
        if not lines:
            return
        if self.ready and not self._pending:
            for line in lines:
                self._put(line)
            return
        if len(self._pending) + len(lines) > self._queue_size:
            raise QueueFull(
                f"not connected to IRC server {self.name!r} "
                f"({self.last_error or 'connecting'}) and {len(self._pending)} lines are "
                "already waiting; this message was not sent, please send it again later"
            )
        self._pending.extend(lines)

    # --- the connection loop --------------------------------------------------------

    async def run(self) -> None:
        """Connect and reconnect until cancelled, or until the policy refuses the server."""
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            started = loop.time()
            await self._status("connecting", f"Connecting to {self.target.host}")
            try:
                reason = await self._connect_and_serve()
            except PermissionError as exc:
                self.last_error = str(exc)
                self._fail_waiters(ConnectionFailed(str(exc)))
                await self._status("disconnected", str(exc))
                return
            except (OSError, TimeoutError, _ConnectionLost, ssl.SSLError) as exc:
                reason = describe(exc, self.target)
            finally:
                self._out = None
                self.channels.clear()
                self.auto_queries.clear()
                self._who_later.clear()
                self._who_twice.clear()
                self._join_ponged.clear()
                self._fail_deliveries()
            self.last_error = reason
            self._fail_waiters(ConnectionFailed(f"IRC server {self.name!r}: {reason}"))
            failures = self._backoff.failures_after(failures, loop.time() - started)
            delay = self._backoff.delay(failures, random.random())  # noqa: S311 - jitter
            self.log.warning("IRC server %r: %s; reconnecting in %.1f s", self.name, reason, delay)
            await self._status(
                "disconnected", f"Disconnected: {reason}; reconnecting in {delay:.0f} s"
            )
            await asyncio.sleep(delay)

    async def _connect_and_serve(self) -> str:
        reader, writer = await open_connection(
            self.target, self._allow_private, self._connect_timeout, self.log
        )
        self.state = self._new_state()
        self.channels.clear()
        out: asyncio.Queue[bytes] = asyncio.Queue()
        self._out = out
        writer_task = asyncio.create_task(self._write(writer, out), name=f"irc-writer-{self.name}")
        try:
            for line in self.state.initial_lines():
                out.put_nowait(line)
            return await self._read(reader)
        finally:
            self._out = None
            writer_task.cancel()
            try:
                await writer_task
            except asyncio.CancelledError:
                # Our own cancellation of the writer; re-raise if we are cancelled too.
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise
            except (OSError, ssl.SSLError):
                pass
            writer.close()

    async def _read(self, reader: asyncio.StreamReader) -> str:
        """Read until the connection ends; return why it ended."""
        reason = "the server closed the connection"
        async with asyncio.timeout(self._connect_timeout) as registration_deadline:
            pinged = False
            while True:
                try:
                    async with asyncio.timeout(IDLE_DEAD_AFTER if pinged else IDLE_PING_AFTER):
                        raw = await read_line(reader)
                except TimeoutError:
                    if pinged:
                        return "no answer from the server for 3 minutes"
                    pinged = True
                    self._send_now(Message.of("PING", "passerelle"))
                    continue
                pinged = False
                self.lines_read += 1
                if raw is None:  # (after an ERROR the state is "closed": ask the deadline)
                    registered = registration_deadline.when() is None
                    return reason if registered else reason + self._refusal_hint()
                self.log.debug("<< %s", loggable(raw))
                try:
                    msg = parse_line(raw, self.target.encoding)
                except IrcProtocolError as exc:
                    self.log.warning("ignoring a malformed line: %s", exc)
                    continue
                for event in self.state.receive(msg):
                    if isinstance(event, ev.Registered):
                        registration_deadline.reschedule(None)
                    elif isinstance(event, ev.ServerError):
                        reason = f"the server closed the connection: {event.message}"
                    await self._handle(event)
                for line in self.state.data_to_send():
                    self._put(line)
                if self._backlog is not None:
                    await self._backlog()

    def _refusal_hint(self) -> str:
        """What to check when the server hangs up before we are registered: servers
        rarely say that a server password (PASS) is missing or wrong."""
        if self.target.password is None:
            return (
                " (before registration: if this server needs a password, set it with the "
                "configure command on its JID)"
            )
        return (
            " (before registration: check the server password set with the configure "
            "command on its JID)"
        )

    async def _write(self, writer: asyncio.StreamWriter, out: asyncio.Queue[bytes]) -> None:
        bucket = TokenBucket(*self._flood)
        loop = asyncio.get_running_loop()
        while True:
            line = await out.get()
            delay = bucket.take(loop.time())
            if delay > 0:
                await asyncio.sleep(delay)
            self.log.debug(">> %s", loggable(line))
            writer.write(line)
            await writer.drain()
            out.task_done()

    # --- events -----------------------------------------------------------------------

    async def _handle(self, event: ev.Event) -> None:
        if isinstance(event, ev.Registered):
            await self._on_registered()
        elif isinstance(event, ev.MessageReceived) and event.own and event.kind != "notice":
            self._confirmations.echoed(event)
        elif (
            isinstance(event, ev.ServerReply)
            and self.fold(event.params[0] if event.params else "") not in self._join_waiters
            and self._confirmations.refused(event)  # not a JOIN refusal (403)
        ):
            return  # the sender hears it as an error on their message
        elif isinstance(event, ev.ISupportChanged):
            self._ask_accounts_late()
        elif isinstance(event, ev.PongReceived) and event.token.startswith(JOIN_PING):
            self._join_ponged.add(event.token.removeprefix(JOIN_PING))
            self._resolve_join(event.token.removeprefix(JOIN_PING))
            return
        touched = self.channels.apply(event)
        try:
            await self._listener.on_irc_event(self, event, touched)
        except Exception:
            # A bad event must not end the user's connection: log it and go on.
            self.log.exception("could not deliver IRC event %r", event)
        if isinstance(event, ev.ChannelMembers):
            self._resolve_join(event.channel)
        elif isinstance(event, ev.ServerReply) and event.code in JOIN_ERRORS and event.params:
            self._refuse_join(event.params[0], event.code, event.text)
        elif isinstance(event, ev.ServerReply) and event.code in AUTO_END and event.params:
            query = (AUTO_END[event.code], self.fold(event.params[0]))
            if query[0] == "who" and query[1] in self._who_twice:
                self._who_twice.discard(query[1])  # the WHOX's end is still to come
            else:
                self.auto_queries.discard(query)
        elif isinstance(event, ev.Kicked | ev.Parted) and event.own:
            self.wanted.pop(self.fold(event.channel), None)

    async def _on_registered(self) -> None:
        self.connected_once = True
        self.last_error = ""
        password = self.identity.account_password
        if password and "sasl" not in self.state.enabled_caps:
            self._send_now(Message.of("PRIVMSG", "NickServ", f"IDENTIFY {password}"))
        for line in self.identity.after_connect:
            self._put(line)
        for channel in self.wanted.values():
            self._send_join(channel)
        while self._pending:
            self._put(self._pending.popleft())
        for waiter in self._ready_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._ready_waiters.clear()
        await self._status("connected", f"Connected to {self.name} as {self.state.nick}")

    def _fail_deliveries(self) -> None:
        self._confirmations.fail_all(
            ConnectionFailed(
                f"the connection to IRC server {self.name!r} was lost before the server "
                "confirmed this message; it may not have been delivered"
            )
        )

    def _send_join(self, channel: Channel) -> None:
        """JOIN, then ask who is away and who is banned (quietly), then a PING whose
        PONG says the server has sent everything the JOIN produced."""
        key = self.fold(channel)
        self._send_now(Message.of("JOIN", channel))
        query = who_query(channel, self.state.isupport)  # WHOX: accounts (hats) too
        caps = self.state.enabled_caps
        if "away-notify" in caps or (len(query) > 1 and ACCOUNT_CAPS & caps):
            self.auto_queries.add(("who", key))
            self._send_now(Message.of("WHO", *query))
        if len(query) == 1:
            self._who_later[key] = channel
        self.auto_queries.add(("bans", key))
        self._send_now(Message.of("MODE", channel, "+b"))
        if key in self._join_waiters:
            self._join_ponged.discard(key)
            self._send_now(Message.of("PING", JOIN_PING + key))

    def _ask_accounts_late(self) -> None:
        """The joins sent on registration go out before the server's 005 lines say
        whether it has WHOX: once it has said so, ask WHOX for those channels too (the
        accounts of the people already there then show on their next presence)."""
        if "WHOX" not in self.state.isupport.raw:
            return
        later, self._who_later = self._who_later, {}
        if not ACCOUNT_CAPS & self.state.enabled_caps:
            return
        for key, channel in later.items():
            if ("who", key) in self.auto_queries:
                self._who_twice.add(key)
            self.auto_queries.add(("who", key))
            self._send_now(Message.of("WHO", *who_query(channel, self.state.isupport)))

    def _resolve_join(self, channel: str) -> None:
        key = self.fold(channel)
        state = self.channels.get(channel)
        if key not in self._join_ponged or state is None or not state.names_received:
            return
        self._join_ponged.discard(key)
        waiter = self._join_waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(state)

    def _refuse_join(self, channel: str, code: str, text: str) -> None:
        key = self.fold(channel)
        waiter = self._join_waiters.pop(key, None)
        self.wanted.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_exception(JoinRefused(channel, code, text))

    def _fail_waiters(self, error: IrcClientError) -> None:
        waiters: list[asyncio.Future[Any]] = [*self._ready_waiters, *self._join_waiters.values()]
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
                waiter.exception()  # retrieved: a waiter nobody awaits any more is fine
        self._ready_waiters.clear()
        self._join_waiters.clear()
        self._join_ponged.clear()

    async def _status(self, status: Status, text: str) -> None:
        try:
            await self._listener.on_irc_status(self, status, text)
        except Exception:
            self.log.exception("could not report IRC status %s", status)

    # --- plumbing ------------------------------------------------------------------

    def _new_state(self) -> IrcConnectionState:
        identity = self.identity
        sasl = (identity.nick, identity.account_password) if identity.account_password else None
        return IrcConnectionState(
            identity.nick,
            identity.username,
            identity.realname,
            password=self.target.password,
            sasl_plain=sasl,
            version="Passerelle (XMPP gateway)",
        )

    def _send_now(self, msg: Message) -> None:
        """Protocol traffic of the current connection (JOIN on rejoin, PING); dropped
        if there is no connection, since the next one redoes it."""
        try:
            self._put(serialize(msg))
        except LocalProtocolError as exc:
            self.log.warning("not sending an invalid line: %s", exc)

    def _put(self, line: bytes) -> None:
        if self._out is not None:
            self._out.put_nowait(line)
