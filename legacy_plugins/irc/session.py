"""One registered XMPP user on IRC: their connections and what they send.

The session opens one `IrcClient` per IRC server the user reaches (shared by all their
XMPP clients) and owns its task; it turns XMPP-side actions into IRC lines (with the
errors the user should see), finds the slidge objects for IRC names, and hands each IRC
event to `incoming.dispatch`. The connection state is the server contact's presence,
and the user hears once when a connection is lost and when it is back, not once per line.
At login (the gateway starting, or the user registering) it rejoins the user's
persistent channels, so they are followed while the user is offline.

A message the user sends is confirmed by the server when it offers echo-message: the
XMPP echo then carries the server's msgid as its stanza id, and a refusal (a moderated
channel, a nick that is gone) comes back as an error on the message instead of an echo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import uuid
from typing import Any

from slidge import BaseSession
from slidge.util.types import XMPPMessage
from slixmpp.exceptions import XMPPError
from slixmpp.types import ErrorConditions

from gateway.backoff import Backoff
from gateway.runtime import network_config
from gateway.slidge_fixes import push_to_roster

from . import events as ev
from . import incoming
from .client import (
    ConnectionFailed,
    Identity,
    IrcClient,
    IrcClientError,
    MessageRejected,
    QueueFull,
    Status,
)
from .config import Config, UserServerSettings
from .contact import Contact
from .events import Channel, Nick
from .group import JOIN_TIMEOUT, MUC, Participant, channel_legacy_id
from .protocol import IrcProtocolError, LocalProtocolError, parse_line, serialize
from .translate import (
    AddressError,
    OutgoingText,
    ServerAddress,
    UserAddress,
    correction_text,
    irc_username,
    xmpp_to_irc,
)

log = logging.getLogger(__name__)

REMEMBERED_TEXTS = 500  # sent messages kept to turn corrections into short lines
XMPP_BACKLOG = 20  # stanzas waiting to go out to XMPP before the IRC readers pause
BACKLOG_WAIT = 5.0  # seconds an IRC reader waits at most for the XMPP queue to drain
BACKLOG_POLL = 0.002  # seconds between looks at the XMPP queue while an IRC reader waits
REFUSALS: dict[str, ErrorConditions] = {
    "401": "item-not-found",
    "403": "item-not-found",
    "404": "forbidden",
}
"""XMPP error conditions for the server's refusal of a message (default not-acceptable)."""


class Session(BaseSession[Contact]):
    def __init__(self, user: Any) -> None:
        super().__init__(user)
        self.cfg = network_config(Config)
        self.mapping = self.cfg.address_mapping()
        self.clients: dict[str, IrcClient] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self.motd: dict[str, list[str]] = {}
        self._display: dict[str, str] = {}
        self._sent: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._lost: set[str] = set()

    # --- slidge hooks --------------------------------------------------------------

    async def wait_for_ready(self, timeout: float | None = 10) -> None:
        """slidge waits on its three "ready" futures for every stanza the user sends,
        each through a shield and a timeout (a few tasks and timers a message). Once all
        three are done without error there is nothing to wait for."""
        readies = (self.ready, self.contacts.ready, self.bookmarks.ready)
        if all(f.done() and not f.cancelled() and f.exception() is None for f in readies):
            return
        await super().wait_for_ready(timeout)

    async def login(self) -> str:
        nick = self.identity().nick
        self.create_task(self._join_persistent(), name="irc-persistent-channels")
        return f"Ready as {nick}: join #channel%server@{self.xmpp.boundjid.bare}"

    async def _join_persistent(self) -> None:
        """Rejoin the channels the user keeps while offline (after the rooms are ready)."""
        await self.bookmarks.ready
        with self.xmpp.store.session() as orm:
            rooms = [
                room.legacy_id
                for room in self.xmpp.store.rooms.get_all(orm, self.user_pk)
                if isinstance(room.extra_attributes, dict)
                and room.extra_attributes.get("persistent") is True
            ]
        for legacy_id in rooms:
            try:
                muc: MUC = await self.bookmarks.by_legacy_id(legacy_id)
                await self.keep_joined(muc)
            except XMPPError as e:
                log.warning("could not rejoin persistent channel %s: %s", legacy_id, e.text)
                self.send_gateway_message(f"Could not rejoin {legacy_id}: {e.text}")

    async def keep_joined(self, muc: MUC) -> None:
        """Be in `muc`'s channel, XMPP clients or not (a persistent room)."""
        client = await self.client_for(muc.address.server)
        try:
            await client.join(muc.address.channel, JOIN_TIMEOUT)
        except IrcClientError as e:
            raise XMPPError("service-unavailable", str(e)) from e
        muc.user_nick = client.nick

    async def logout(self) -> None:
        clients = list(self.clients.values())
        await asyncio.gather(*(c.quit("Passerelle is shutting down") for c in clients))
        self.cancel_all_tasks()

    # --- connections ---------------------------------------------------------------

    def identity(self, server: str | None = None) -> Identity:
        """Who the user is on `server`: the registered nick unless set per server."""
        data = self.user.legacy_module_data
        settings = self.server_settings(server) if server else UserServerSettings()
        nick = str(settings.nick or data.get("nick") or self.cfg.default_nick or self.user_jid.node)
        realname = str(data.get("realname") or nick)
        lines = []
        for line in settings.after_connect:
            try:
                lines.append(serialize(parse_line(line.encode())))
            except (IrcProtocolError, LocalProtocolError):
                log.warning("skipping an invalid after-connect line of %s", self.user_jid)
        return Identity(
            nick,
            irc_username(self.user_jid.node),
            realname,
            account_password=settings.account_password,
            after_connect=tuple(lines),
        )

    def server_settings(self, server: str) -> UserServerSettings:
        servers = self.user.legacy_module_data.get("servers")
        data = servers.get(server.lower()) if isinstance(servers, dict) else None
        return UserServerSettings.from_json(data)

    def save_server_settings(self, server: str, settings: UserServerSettings) -> None:
        """Store the user's settings for `server`; a live connection uses them from its
        next (re)connection on, as the `configure` command promises."""
        servers = self.user.legacy_module_data.get("servers")
        servers = dict(servers) if isinstance(servers, dict) else {}
        servers[server.lower()] = settings.to_json()
        self.legacy_module_data_update({"servers": servers})
        client = self.clients.get(server.lower())
        if client is not None:
            client.target = settings.apply(self.cfg.target(client.name))
            client.identity = self.identity(client.name)

    async def client_for(self, server: str) -> IrcClient:
        """The user's connection to `server`, opened (and waited for) if needed. Raises
        XMPPError for the user when the policy refuses the server or it cannot be
        reached; once connected, a later disconnection only queues what is sent."""
        name = server.lower()
        client = self.clients.get(name)
        if client is None:
            try:
                target = self.server_settings(name).apply(self.cfg.target(name))
            except PermissionError as e:
                raise XMPPError("not-allowed", str(e)) from e
            cfg = self.cfg
            client = IrcClient(
                target,
                self.identity(name),
                self,
                flood_burst=cfg.flood_burst,
                flood_rate=cfg.flood_rate,
                queue_size=cfg.reconnect_queue_size,
                connect_timeout=cfg.connect_timeout,
                backoff=Backoff(initial=1.0, cap=cfg.reconnect_max_delay, healthy_after=60.0),
                allow_private=cfg.allow_private_addresses,
                backlog=self._xmpp_backlog,
            )
            self.clients[name] = client
            self._tasks[name] = self.create_task(self._run(client), name=f"irc-{name}")
        if not client.connected_once:
            try:
                await client.wait_ready(self.cfg.connect_timeout + 5)
            except ConnectionFailed as e:
                # Never connected: give up on this server until the user tries again.
                if self.clients.get(name) is client and not client.connected_once:
                    del self.clients[name]
                    self._tasks.pop(name).cancel()
                if "private" in str(e):
                    raise XMPPError("not-allowed", str(e)) from e
                raise XMPPError("remote-server-timeout", str(e)) from e
        return client

    async def _xmpp_backlog(self) -> None:
        """Backpressure for the IRC readers: while more than `XMPP_BACKLOG` stanzas wait
        in slixmpp's send queue (each needs a few loop turns to go out), stop reading
        until half of them are out (or `BACKLOG_WAIT` passed, so a stuck stream can't
        stall IRC). Not until it is empty: with many users, join presences keep it busy,
        and every reader would wait the whole `BACKLOG_WAIT`."""
        queue = self.xmpp.waiting_queue
        if queue.qsize() <= XMPP_BACKLOG:
            return
        loop = asyncio.get_running_loop()
        give_up = loop.time() + BACKLOG_WAIT
        # slixmpp's queue signals "empty" only (join), nothing to await for "half": poll.
        while queue.qsize() > XMPP_BACKLOG // 2 and loop.time() < give_up:  # noqa: ASYNC110
            await asyncio.sleep(BACKLOG_POLL)

    async def _run(self, client: IrcClient) -> None:
        try:
            await client.run()
        finally:
            if self.clients.get(client.name) is client:
                del self.clients[client.name]
                self._tasks.pop(client.name, None)

    def send(self, client: IrcClient, command: str, *params: str) -> None:
        try:
            client.send(command, *params)
        except LocalProtocolError as e:
            raise XMPPError("bad-request", f"This cannot be sent to IRC: {e}") from e
        except QueueFull as e:
            raise XMPPError("resource-constraint", str(e)) from e

    def send_lines(self, client: IrcClient, lines: list[bytes]) -> None:
        try:
            client.send_lines(lines)
        except QueueFull as e:
            raise XMPPError("resource-constraint", str(e)) from e

    def send_text(self, client: IrcClient, target: str, out: OutgoingText) -> None:
        try:
            client.send_text(target, out.text, action=out.action)
        except LocalProtocolError as e:
            raise XMPPError("bad-request", f"This cannot be sent to IRC: {e}") from e
        except QueueFull as e:
            raise XMPPError("resource-constraint", str(e)) from e

    async def send_message(self, client: IrcClient, target: str, message: XMPPMessage) -> str:
        """Send what the user wrote to a channel or nick; return its legacy id: the
        server's msgid when the server confirms delivery (echo-message), else a UUID."""
        body = message.body or ""
        urls = " ".join(a.url for a in message.attachments)
        if urls:
            body = f"{body} {urls}".strip()
        legacy_id = str(uuid.uuid4())
        out = xmpp_to_irc(self.outgoing_text(legacy_id, body, message.replace))
        try:
            msgid = await client.deliver_text(target, out.text, action=out.action)
        except LocalProtocolError as e:
            raise XMPPError("bad-request", f"This cannot be sent to IRC: {e}") from e
        except QueueFull as e:
            raise XMPPError("resource-constraint", str(e)) from e
        except MessageRejected as e:
            raise XMPPError(REFUSALS.get(e.code, "not-acceptable"), str(e)) from e
        except ConnectionFailed as e:
            raise XMPPError("recipient-unavailable", str(e)) from e
        if msgid is None:
            return legacy_id
        if not message.replace and legacy_id in self._sent:  # corrections refer to it by msgid
            self._sent[msgid] = self._sent.pop(legacy_id)
        return msgid

    def outgoing_text(self, legacy_id: str, body: str, replaces: str | None) -> str:
        """What to send for a message: the body, or a short line for a correction."""
        old = self._sent.pop(replaces, None) if replaces else None
        key = replaces or legacy_id
        self._sent[key] = body
        while len(self._sent) > REMEMBERED_TEXTS:
            self._sent.popitem(last=False)
        return body if old is None else correction_text(old, body)

    async def leave_room(self, muc: MUC) -> None:
        """The user left the MUC from every client: part the channel, forget its occupants."""
        client = self.clients.get(muc.address.server)
        if client is not None:
            client.part(muc.channel)
        await self._forget_occupants(muc)

    async def _forget_occupants(self, muc: MUC) -> None:
        async for part in muc.get_participants():
            if not part.is_user:
                muc.remove_participant(part)

    # --- addresses -----------------------------------------------------------------

    def display_nick(self, server: str, folded: str) -> str:
        return self._display.get(f"{folded}%{server}", folded)

    async def contact(self, client: IrcClient, nick: str) -> Contact:
        contact: Contact = await self.contacts.by_legacy_id(self.contact_id(client, nick))
        return contact

    def contact_id(self, client: IrcClient, nick: str) -> str:
        """The legacy id of `nick`'s contact (its display nick recorded)."""
        legacy_id = self.mapping.render(UserAddress(client.name, Nick(nick)))
        self._display[f"{self.mapping.nick(nick)}%{client.name}"] = nick
        return legacy_id

    async def server_contact(self, client: IrcClient) -> Contact | None:
        if self.cfg.fixed_server is not None:
            return None
        legacy_id = self.mapping.render(ServerAddress(client.name))
        contact: Contact = await self.contacts.by_legacy_id(legacy_id)
        return contact

    async def room(self, client: IrcClient, channel: str) -> MUC:
        legacy_id = channel_legacy_id(self.mapping, client.name, channel)
        muc: MUC = await self.bookmarks.by_legacy_id(legacy_id)
        return muc

    async def participant(
        self, muc: MUC, client: IrcClient, nick: str, *, keep: bool = False, joined: bool = False
    ) -> Participant:
        """The occupant for `nick`, found by nickname (it survives renames), else by
        contact (created if needed). `keep`: for a line to show, from a speaker the room
        keeps (`MUC.keep`) without a query; only for that, since a kept copy may be
        older than the row: a change (role, nick, kick) always works on a fresh one.
        `joined`: `nick` has just JOINed and the caller sends its "available" at once
        (`MUC.joined_occupant`)."""
        part = muc.occupant(nick) if keep else None
        if part is not None:
            return part
        if joined:
            with contextlib.suppress(AddressError):
                part = await muc.joined_occupant(self.contact_id(client, nick), nick)
            if part is not None:
                return part
        part = await muc.get_participant(nick, create=False)
        if part is None:
            try:
                contact = await self.contact(client, nick)
            except AddressError:
                part = await muc.get_participant(nick)
            else:
                part = await muc.get_participant_by_contact(contact)
        if keep:
            muc.keep(nick, part)
        return part

    async def tell_about(self, server: str, text: str) -> None:
        """Like `tell`, for a server that may have no connection."""
        client = self.clients.get(server.lower())
        if client is None:
            self.send_gateway_message(text)
        else:
            await self.tell(client, text)

    async def tell(self, client: IrcClient, text: str) -> None:
        """A message from the IRC server (its contact, or the gateway with a fixed one)."""
        contact = await self.server_contact(client)
        if contact is None:
            self.send_gateway_message(text)
        else:
            contact.send_text(text)

    # --- IRC → XMPP ------------------------------------------------------------------

    async def on_irc_status(self, client: IrcClient, status: Status, text: str) -> None:
        contact = await self.server_contact(client)
        if status == "connected":
            if contact is not None and not contact.is_friend:
                await push_to_roster(contact)
            if client.name in self._lost:
                self._lost.discard(client.name)
                await self.tell(client, f"Reconnected to {client.name} as {client.nick}.")
        elif status == "disconnected" and client.connected_once and client.name not in self._lost:
            self._lost.add(client.name)
            await self.tell(client, f"Lost the connection to {client.name}: {text}")
        if contact is None:  # fixed_server: the gateway's own presence shows the state
            self.send_gateway_status(text, None if status == "connected" else "dnd")
            return
        if status == "connected":
            contact.online(text)
        elif status == "connecting":
            contact.busy(text)
        else:
            contact.offline(text)

    async def on_irc_event(
        self, client: IrcClient, event: ev.Event, channels: tuple[Channel, ...]
    ) -> None:
        await incoming.dispatch(self, client, event, channels)
