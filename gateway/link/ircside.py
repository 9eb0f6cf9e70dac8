"""The link component's IRC side: per server, one relay connection and the puppets.

For each IRC server that linked channels live on there is one `IrcServer`. Its relay
connection (nick ``passerelle``) sits in every linked channel of that server: it reads
the channels — the only connection whose channel events are relayed, so every IRC line
reaches XMPP once — and, in relay-bot mode, writes ``<bob> text`` for XMPP occupants.
Each XMPP occupant who speaks gets a puppet connection of their own (``bob[x]``),
opened on their first message, closed after `idle_timeout` seconds of silence or when
they leave the room, and reconnected with backoff like any `IrcClient`. Past
`max_irc_connections` puppets on a server, the relay bot speaks for the others.

Everything IRC goes through `legacy_plugins.irc.client.IrcClient`: registration, CAP,
flood control, line splitting (no CR/LF injection), reconnection and rejoining.
Lines from our own connections are recognised by nick (the relay's, every puppet's,
and a puppet's next nick while a NICK is in flight) and never relayed back.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.backoff import Backoff
from gateway.config import LinkComponentConfig
from legacy_plugins.irc import events as ev
from legacy_plugins.irc.client import (
    ConnectionFailed,
    Identity,
    IrcClient,
    IrcClientError,
    JoinRefused,
    Status,
)
from legacy_plugins.irc.config import ServerTarget
from legacy_plugins.irc.events import Channel
from legacy_plugins.irc.flood import DEFAULT_BURST, DEFAULT_RATE_PER_S
from legacy_plugins.irc.protocol import LocalProtocolError
from legacy_plugins.irc.translate import irc_username

from .bridge import Recent, irc_nick

__all__ = ["RELAY_NICK", "ChannelLink", "IrcServer", "PuppetKey"]

log = logging.getLogger(__name__)

RELAY_NICK = "passerelle"
RELAY_REALNAME = "Passerelle XMPP link"
JOIN_TIMEOUT = 30.0
BARRIER_TIMEOUT = 5.0
QUEUE_SIZE = int(os.environ.get("PASSERELLE_LINK_IRC_QUEUE_SIZE", "") or 100)
"""Lines kept per connection while it reconnects; past them the sender is told (the
environment variable is for tests)."""
CONNECT_TIMEOUT = 20.0
RECONNECT = Backoff(initial=1.0, cap=30.0)
_REFUSALS = frozenset({"404", "442", "477", "482", "489"})
"""Numerics that refuse a PRIVMSG or TOPIC of ours (cannot send, not on channel, not op)."""

PuppetKey = tuple[str, str]
"""(link id, the occupant's MUC nick)."""


class ChannelLink(Protocol):
    """What a link shows its IRC server."""

    id: str
    channel: Channel

    def irc_event(self, event: ev.Event) -> None:
        """A channel event the relay read, in order; never blocks."""

    def irc_connected(self) -> None:
        """The relay connection is (again) registered."""

    def irc_own_line(self, event: ev.MessageReceived) -> None:
        """A line one of our own connections said in the channel (not relayed)."""

    def irc_private(self, occupant: str, event: ev.MessageReceived) -> None:
        """An IRC user wrote privately to the puppet of XMPP occupant `occupant`."""


@dataclass(slots=True)
class _Puppet:
    client: IrcClient
    task: asyncio.Task[None]
    last_used: float
    link: ChannelLink
    occupant: str
    nicks: set[str] = field(default_factory=set)
    """Nicks it is about to take (a NICK in flight), folded."""
    busy: bool = False
    """Opening or joining: not idle, whatever the clock says."""
    leaving: str | None = None
    """Why it closes once reconnected: the occupant left while the server was away, and
    the lines it keeps for them go out first."""


class IrcServer:
    """The connections to one IRC server: the relay and the puppets of XMPP occupants."""

    def __init__(
        self,
        target: ServerTarget,
        settings: LinkComponentConfig,
        spawn: _Spawn,
    ) -> None:
        self.target = target
        self.settings = settings
        self._spawn = spawn
        self.relay = self._client(Identity(RELAY_NICK, "passerelle", RELAY_REALNAME))
        self._links: list[ChannelLink] = []
        self._puppets: dict[PuppetKey, _Puppet] = {}
        self._pongs: dict[str, asyncio.Future[None]] = {}
        self._tokens = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._pm_notices: Recent[str, bool] = Recent(256)
        """Whom the relay told that it reads no private message (once each, lately)."""

    @property
    def name(self) -> str:
        return self.target.name

    def start(self) -> None:
        self._tasks.append(self._spawn(self.relay.run(), f"irc-relay-{self.name}"))
        self._tasks.append(self._spawn(self._reap(), f"irc-reaper-{self.name}"))

    async def stop(self, reason: str) -> None:
        """QUIT every connection (in parallel, a few seconds at most), end their tasks."""
        puppets = list(self._puppets)
        await asyncio.gather(
            *(self.close_puppet(key, reason) for key in puppets),
            self.relay.quit(reason),
            return_exceptions=True,
        )
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # --- links ---------------------------------------------------------------------------

    def attach(self, link: ChannelLink) -> None:
        self._links.append(link)

    async def detach(self, link: ChannelLink, reason: str) -> None:
        """The link stops: its puppets quit, the relay leaves its channel if no other
        link uses it."""
        if link in self._links:
            self._links.remove(link)
        for key, puppet in list(self._puppets.items()):
            if puppet.link is link:
                await self.close_puppet(key, reason)
        if not any(self.fold(other.channel) == self.fold(link.channel) for other in self._links):
            self.relay.part(link.channel, reason)

    @property
    def links(self) -> tuple[ChannelLink, ...]:
        return tuple(self._links)

    async def join_relay(self, channel: Channel) -> None:
        """Have the relay join `channel` and stay there (it rejoins after reconnecting).
        Raises `JoinRefused` when the server refuses."""
        while True:
            try:
                await self.relay.join(channel, JOIN_TIMEOUT)
                return
            except JoinRefused:
                raise
            except ConnectionFailed as exc:
                log.info(
                    "relay not in %s on %r yet (%s); it joins once connected",
                    channel,
                    self.name,
                    exc,
                )
                await self._wait_relay_ready()

    async def _wait_relay_ready(self) -> None:
        while not self.relay.ready:
            with contextlib.suppress(ConnectionFailed):
                await self.relay.wait_ready(3600)

    def fold(self, name: str) -> str:
        return self.relay.fold(name)

    def is_own(self, nick: str) -> bool:
        key = self.fold(nick)
        if key == self.fold(self.relay.nick):
            return True
        return any(
            key == self.fold(p.client.nick) or key in p.nicks for p in self._puppets.values()
        )

    def own_nick_of(self, link: ChannelLink, occupant: str) -> str | None:
        """The IRC nick of an XMPP occupant's puppet, if they have one."""
        puppet = self._puppets.get((link.id, occupant))
        return puppet.client.nick if puppet is not None and puppet.client.ready else None

    # --- puppets -------------------------------------------------------------------------

    def puppets_of(self, link: ChannelLink) -> int:
        return sum(1 for p in self._puppets.values() if p.link is link)

    async def puppet_for(self, link: ChannelLink, occupant: str, template: str) -> IrcClient | None:
        """The connection that speaks for `occupant` in `link`'s channel, opened and
        joined if needed; None when the relay must speak instead (the cap is reached,
        the server is unreachable, or the puppet cannot join)."""
        loop = asyncio.get_running_loop()
        key = (link.id, occupant)
        puppet = self._puppets.get(key)
        if puppet is None:
            if not self.relay.ready or len(self._puppets) >= self.settings.max_irc_connections:
                return None
            puppet = self._open(link, occupant, template)
        puppet.last_used = loop.time()
        puppet.leaving = None
        client = puppet.client
        if client.connected_once and self.fold(link.channel) in client.wanted:
            return client  # in the channel, or rejoining it after a reconnection
        puppet.busy = True
        try:
            await client.join(link.channel, JOIN_TIMEOUT)
        except IrcClientError as exc:
            log.warning(
                "IRC puppet %s for %r on %r could not join %s (%s); the relay speaks instead",
                client.identity.nick, occupant, self.name, link.channel, exc,
            )  # fmt: skip
            await self.close_puppet(key, "could not join")
            return None
        finally:
            puppet.busy = False
            puppet.last_used = loop.time()
        return client

    def _open(self, link: ChannelLink, occupant: str, template: str) -> _Puppet:
        nicklen = self.relay.state.isupport.nicklen
        nick = irc_nick(template, occupant, nicklen)
        identity = Identity(nick, irc_username(occupant), f"{occupant} (XMPP)")
        client = self._client(identity)
        task = self._spawn(self._guarded(client), f"irc-puppet-{self.name}-{nick}")
        puppet = _Puppet(client, task, asyncio.get_running_loop().time(), link, occupant)
        self._puppets[(link.id, occupant)] = puppet
        log.info("opening IRC connection %s on %r for %r", nick, self.name, occupant)
        return puppet

    async def _guarded(self, client: IrcClient) -> None:
        """A puppet's connection loop: a bug in it ends that puppet, not the component."""
        try:
            await client.run()
        except Exception:
            log.exception("IRC puppet %s on %r failed", client.identity.nick, self.name)

    async def release_puppet(self, key: PuppetKey, reason: str) -> None:
        """The occupant is gone: close their connection — once it is connected again,
        if it is reconnecting, so the lines it keeps for them are not lost."""
        puppet = self._puppets.get(key)
        if puppet is not None and puppet.client.connected_once and not puppet.client.ready:
            puppet.leaving = reason
            return
        await self.close_puppet(key, reason)

    async def close_puppet(self, key: PuppetKey, reason: str) -> None:
        puppet = self._puppets.pop(key, None)
        if puppet is None:
            return
        log.info("closing IRC connection %s on %r (%s)", puppet.client.nick, self.name, reason)
        try:
            await puppet.client.quit(reason)
        finally:
            puppet.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await puppet.task

    def rename_puppet(self, link: ChannelLink, old: str, new: str, template: str) -> None:
        """The occupant `old` is now `new` in the room: their puppet follows (NICK)."""
        puppet = self._puppets.pop((link.id, old), None)
        if puppet is None:
            return
        puppet.occupant = new
        self._puppets[(link.id, new)] = puppet
        nick = irc_nick(template, new, self.relay.state.isupport.nicklen)
        if puppet.client.ready and self.fold(nick) != self.fold(puppet.client.nick):
            puppet.nicks.add(self.fold(nick))
            puppet.client.send("NICK", nick)

    async def barrier(self, client: IrcClient) -> None:
        """Return once the server has handled every line `client` sent so far (PING →
        PONG), so a line sent next on another connection cannot overtake them."""
        if not client.ready:
            return
        token = f"passerelle-link-{next(self._tokens)}"
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs[token] = waiter
        try:
            client.send("PING", token)
            async with asyncio.timeout(BARRIER_TIMEOUT):
                await waiter
        except (TimeoutError, IrcClientError):
            log.info("no PONG from %r within %g s; sending on", self.name, BARRIER_TIMEOUT)
        finally:
            self._pongs.pop(token, None)

    async def _reap(self) -> None:
        idle = self.settings.idle_timeout
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(max(idle / 4, 0.5), 30.0))
            now = loop.time()
            for key, puppet in list(self._puppets.items()):
                if puppet.client.connected_once and not puppet.client.ready:
                    continue  # reconnecting: what it keeps goes out first
                if puppet.leaving is not None:
                    await self.close_puppet(key, puppet.leaving)
                elif not puppet.busy and now - puppet.last_used >= idle:
                    await self.close_puppet(key, "idle")

    # --- events (IrcClient's Listener) ---------------------------------------------------

    async def on_irc_event(
        self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
    ) -> None:
        if isinstance(event, ev.PongReceived):
            waiter = self._pongs.get(event.token)
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            return
        if client is not self.relay or isinstance(event, ev.ServerReply):
            self._own_event(client, event)
        if _is_private(event):
            assert isinstance(event, ev.MessageReceived)
            self._private(client, event)
            return
        if client is not self.relay:
            return
        if isinstance(event, ev.NickChanged):
            self._nick_seen(event)
        if isinstance(event, ev.MessageReceived) and event.channel is not None:
            if event.own or self.is_own(event.sender.nick):
                for link in self._links_on(event.channel):
                    link.irc_own_line(event)
                return
        for link in self._concerned(event, channels):
            link.irc_event(event)

    def _concerned(self, event: ev.Event, channels: tuple[Channel, ...]) -> list[ChannelLink]:
        """The links a relay event goes to: those of its channels, except for what our
        own connections did."""
        if isinstance(event, ev.MessageReceived):
            if event.channel is None or event.own or self.is_own(event.sender.nick):
                return []
            channels = (event.channel,)
        elif isinstance(event, ev.Joined | ev.Parted | ev.Kicked | ev.Quit | ev.NickChanged):
            who = event.nick if not isinstance(event, ev.NickChanged) else event.old
            if event.own or self.is_own(who):
                return []
            if isinstance(event, ev.NickChanged) and self.is_own(event.new):
                return []
        elif isinstance(event, ev.Topic):
            if not event.live or self.is_own(event.by or ""):
                return []
            channels = (event.channel,)
        elif isinstance(event, ev.ChannelMembers):
            channels = (event.channel,)
        else:
            return []
        folded = {self.fold(channel) for channel in channels}
        return [link for link in self._links if self.fold(link.channel) in folded]

    def _private(self, client: IrcClient, event: ev.MessageReceived) -> None:
        """A private message to one of our connections: to a puppet, it goes to the
        XMPP person privately; to the relay, the sender is told it is not read."""
        if self.is_own(event.sender.nick):
            return
        puppet = next((p for p in self._puppets.values() if p.client is client), None)
        if puppet is not None:
            puppet.link.irc_private(puppet.occupant, event)
            return
        if client is self.relay and self._pm_notices.get(self.fold(event.sender.nick)) is None:
            self._pm_notices.put(self.fold(event.sender.nick), True)
            with contextlib.suppress(IrcClientError, LocalProtocolError):
                client.send(
                    "NOTICE",
                    event.sender.nick,
                    "I relay IRC channels to XMPP rooms; messages to me are not read. "
                    "To write to an XMPP person privately, write to their nick (…[x]).",
                )

    def _links_on(self, channel: Channel) -> list[ChannelLink]:
        folded = self.fold(channel)
        return [link for link in self._links if self.fold(link.channel) == folded]

    def _nick_seen(self, event: ev.NickChanged) -> None:
        """A puppet took the nick it asked for: it is no longer in flight."""
        new = self.fold(event.new)
        for puppet in self._puppets.values():
            puppet.nicks.discard(new)

    def _own_event(self, client: IrcClient, event: ev.Event) -> None:
        """What happens to our own connections is logged, not relayed."""
        if isinstance(event, ev.Kicked) and event.own:
            log.warning(
                "%s was kicked from %s on %r by %s: %s",
                client.nick, event.channel, self.name, event.by, event.reason,
            )  # fmt: skip
        elif isinstance(event, ev.ServerReply) and event.code in _REFUSALS:
            log.warning(
                "IRC server %r refused a line from %s (%s): %s",
                self.name, client.nick, event.code, " ".join(event.params),
            )  # fmt: skip

    async def on_irc_status(self, client: IrcClient, status: Status, text: str) -> None:
        if client is self.relay:
            # A refused certificate's text says what to set in [link] (the transport's hint).
            level = logging.WARNING if status == "disconnected" else logging.INFO
            log.log(level, "relay on %r: %s", self.name, text)
            if status == "connected":
                for link in self._links:
                    link.irc_connected()
        else:
            log.debug("puppet %s on %r: %s", client.identity.nick, self.name, text)

    # --- plumbing ------------------------------------------------------------------------

    def _client(self, identity: Identity) -> IrcClient:
        return IrcClient(
            self.target,
            identity,
            self,
            flood_burst=DEFAULT_BURST,
            flood_rate=DEFAULT_RATE_PER_S,
            queue_size=QUEUE_SIZE,
            connect_timeout=CONNECT_TIMEOUT,
            backoff=RECONNECT,
            allow_private=True,
        )


def _is_private(event: ev.Event) -> bool:
    """A message (not a notice: those are never answered) sent to us by a person."""
    return (
        isinstance(event, ev.MessageReceived)
        and event.channel is None
        and not event.own
        and not event.history
        and event.kind != "notice"
        and not event.sender.is_server
    )


class _Spawn(Protocol):
    def __call__(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]: ...


def server_target(host: str, port: int, tls: bool, ca_file: str | None = None) -> ServerTarget:
    """A server named in a link: the admin chose it, so private addresses are allowed.
    `ca_file` (``[link] ca_file``) replaces the system's CAs for its certificate."""
    return ServerTarget(
        name=host,
        host=host,
        port=port,
        tls=tls,
        verify_certificate=True,
        password=None,
        encoding="latin-1",
        admin_defined=True,
        ca_file=ca_file,
        config_section="link",
    )
