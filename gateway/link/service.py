"""The link component as a whole: its XMPP connection, its IRC servers, its links.

`LinkService.run()` owns everything long-lived in one task group: the XMPP connection
loop (reconnecting with backoff; a refused secret or unknown component is fatal), one
`IrcServer` per IRC server that linked channels live on, and one task per active
`Link`. Links come from ``[[links]]`` and from the database (added by admins); admins
add, remove, pause and resume them at run time through :mod:`gateway.link.commands`,
which call the methods below. Stopping leaves every room and QUITs every IRC
connection before the XMPP stream is closed.

Each link's position (how far it relayed each side) changes with every message, and is
written at once, before the message is handed on: a process killed at any moment after
a message went out knows it did (one killed between the write and the send loses that
one message rather than saying it twice). A write costs about a millisecond on SQLite
or a loopback PostgreSQL; a database that fails keeps the positions in memory and is
tried again every 5 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Literal

from gateway.backoff import Backoff
from gateway.config import Config, LinkComponentConfig, LinkConfig
from gateway.errors import PasserelleError, RemoteError

from .bridge import link_id
from .component import LinkComponent
from .ircside import IrcServer, server_target
from .room import Link
from .store import LinkStore, Position, link_db

__all__ = ["LinkError", "LinkFatal", "LinkInfo", "LinkService", "spec_id"]

log = logging.getLogger(__name__)

XMPP_RECONNECT = Backoff(initial=1.0, cap=30.0, healthy_after=30.0)

Source = Literal["config", "admin"]


class LinkFatal(PasserelleError):
    """The XMPP server refuses the component for good (wrong secret, unknown JID)."""


class LinkError(PasserelleError):
    """An admin's request cannot be done; the text says why, for the admin."""


def spec_id(spec: LinkConfig) -> str:
    url = spec.channel
    return link_id(spec.muc, url.host, url.port, url.tls, url.channel)


@dataclass(slots=True)
class _Entry:
    id: str
    spec: LinkConfig
    source: Source
    paused: bool
    link: Link | None = None
    task: asyncio.Task[None] | None = None


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """One link as the ``list`` command shows it."""

    id: str
    source: Source
    paused: bool
    state: str
    problem: str
    xmpp_occupants: int
    irc_connections: int

    def describe(self) -> str:
        where = "gateway.toml" if self.source == "config" else "added by an admin"
        if self.paused:
            return f"{self.id} — paused ({where})"
        line = (
            f"{self.id} — {self.state}: {self.xmpp_occupants} IRC users in the room, "
            f"{self.irc_connections} XMPP users on IRC ({where})"
        )
        return f"{line}; {self.problem}" if self.problem else line


class LinkService:
    def __init__(self, cfg: Config) -> None:
        settings = cfg.settings.link
        assert settings is not None
        self.settings: LinkComponentConfig = settings
        self._ca_file = str(settings.ca_file) if settings.ca_file else None
        self.admins = tuple(cfg.settings.admins)
        self.component = LinkComponent(
            settings.jid, settings.secret.get_secret_value(), self.admins
        )
        storage = cfg.settings.storage.url
        url, connect_args = link_db(
            storage.get_secret_value() if storage is not None else None, cfg.data_dir
        )
        self.store = LinkStore(url, connect_args)
        self._dirty: dict[str, Position] = {}
        self._flush_scheduled = False
        self._xmpp = (cfg.settings.xmpp.host, cfg.settings.xmpp.port)
        self._config_links = list(cfg.settings.links)
        self._entries: dict[str, _Entry] = {}
        self._servers: dict[tuple[str, int, bool], IrcServer] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._stopping = False

    # --- running -------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set; raises `LinkFatal` if the XMPP server refuses us."""
        from .commands import register_commands

        async with asyncio.TaskGroup() as tasks:
            self._tasks = tasks
            register_commands(self)
            xmpp = tasks.create_task(self._run_xmpp(), name="xmpp")
            self._load_links()
            for entry in self._entries.values():
                if not entry.paused:
                    self._start(entry)
            log.info(
                "link component %s: %d links (%d paused)",
                self.settings.jid, len(self._entries),
                sum(e.paused for e in self._entries.values()),
            )  # fmt: skip
            stopping = tasks.create_task(stop.wait())
            await asyncio.wait((xmpp, stopping), return_when=asyncio.FIRST_COMPLETED)
            await self._shutdown()
            xmpp.cancel()
            stopping.cancel()
        self._flush_positions()
        self.store.close()

    def _load_links(self) -> None:
        paused = self.store.paused()
        for spec in self._config_links:
            key = spec_id(spec)
            self._entries[key] = _Entry(key, spec, "config", key in paused)
        for stored in self.store.links():
            if stored.id in self._entries:
                log.warning(
                    "%s is in gateway.toml and in the database; using gateway.toml", stored.id
                )
                continue
            self._entries[stored.id] = _Entry(stored.id, stored.spec, "admin", stored.id in paused)

    async def _shutdown(self) -> None:
        log.info("stopping: leaving every room and IRC channel")
        self._stopping = True
        for entry in self._entries.values():
            if entry.task is not None:
                entry.task.cancel()
        await asyncio.gather(
            *(e.task for e in self._entries.values() if e.task is not None),
            return_exceptions=True,
        )
        await asyncio.gather(
            *(server.stop("Passerelle is stopping") for server in self._servers.values()),
            return_exceptions=True,
        )
        if self.component.online.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    await self.component.disconnect(wait=2)

    def _position_changed(self, link_id: str, position: Position) -> None:
        self._dirty[link_id] = position
        if not self._flush_scheduled:  # else: the database failed, a retry is due
            self._write_positions()

    def _write_positions(self) -> None:
        """Write the changed positions, the latest of each, in one transaction."""
        self._flush_scheduled = False
        if not self._dirty or self._stopping:
            return
        batch, self._dirty = self._dirty, {}
        try:
            self.store.save_positions(batch)
        except Exception as exc:  # the database is away: keep them for the next try
            for key, position in batch.items():
                self._dirty.setdefault(key, position)
            log.warning("cannot save the links' positions (%s); retrying in 5 s", exc)
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(5, self._write_positions)

    def _flush_positions(self) -> None:
        if self._dirty:
            try:
                self.store.save_positions(self._dirty)
            except Exception as exc:
                log.warning("cannot save the links' positions on the way out: %s", exc)
            self._dirty = {}

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        assert self._tasks is not None
        return self._tasks.create_task(coro, name=name)

    async def _run_xmpp(self) -> None:
        """Connect, and connect again after every loss, with backoff."""
        loop = asyncio.get_running_loop()
        component, (host, port) = self.component, self._xmpp
        failures = 0
        while True:
            started = loop.time()
            component.connect(host, port)
            change = await component.state_changes.get()
            if change == "up":
                log.info("link component %s is connected to the XMPP server", self.settings.jid)
                while change != "down":
                    change = await component.state_changes.get()
                if self._stopping:
                    return
                for entry in self._entries.values():
                    if entry.link is not None:
                        entry.link.xmpp_down()
                reason = "lost the connection"
            else:
                reason = "cannot connect"
            if component.fatal is not None:
                raise LinkFatal(
                    f"the XMPP server at {host}:{port} refused the component "
                    f"{self.settings.jid} ({component.fatal}): check [link] jid and secret "
                    "against the server's Component declaration and component_secret"
                )
            failures = XMPP_RECONNECT.failures_after(failures, loop.time() - started)
            delay = XMPP_RECONNECT.delay(failures, random.random())  # noqa: S311 - jitter
            log.warning(
                "XMPP server at %s:%d: %s; reconnecting in %.1f s", host, port, reason, delay
            )
            await asyncio.sleep(delay)
            while not component.state_changes.empty():
                component.state_changes.get_nowait()

    # --- links ---------------------------------------------------------------------------

    def _server_for(self, spec: LinkConfig) -> IrcServer:
        url = spec.channel
        key = (url.host, url.port, url.tls)
        server = self._servers.get(key)
        if server is None:
            server = IrcServer(
                server_target(url.host, url.port, url.tls, self._ca_file),
                self.settings,
                self._spawn,
            )
            self._servers[key] = server
            server.start()
        return server

    def _start(self, entry: _Entry) -> None:
        link = Link(
            entry.id,
            entry.spec,
            self.component,
            self._server_for(entry.spec),
            allow_puppets=self.settings.max_irc_connections > 0,
            position=self.store.position(entry.id),
            save_position=lambda position: self._position_changed(entry.id, position),
        )
        entry.link = link
        entry.task = self._spawn(self._run_link(link), f"link {entry.id}")

    async def _run_link(self, link: Link) -> None:
        try:
            await link.run()
        except Exception:  # one broken link must not stop the others
            log.exception("%s failed", link)

    async def _stop(self, entry: _Entry) -> None:
        task, entry.task, entry.link = entry.task, None, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._close_idle_servers()

    async def _close_idle_servers(self) -> None:
        for key, server in list(self._servers.items()):
            if not server.links:
                del self._servers[key]
                await server.stop("no linked channel left")

    # --- what admin commands do ----------------------------------------------------------

    def is_admin(self, jid: str) -> bool:
        return jid.lower() in self.admins

    def list_links(self) -> list[LinkInfo]:
        infos = []
        for entry in self._entries.values():
            link = entry.link
            infos.append(
                LinkInfo(
                    entry.id,
                    entry.source,
                    entry.paused,
                    link.state if link is not None else "stopped",
                    link.problem if link is not None else "",
                    link.xmpp_puppets if link is not None else 0,
                    link.irc_puppets if link is not None else 0,
                )
            )
        return infos

    async def check_links(self) -> str:
        """Each link with what its room's owner must grant, for the ``check`` command."""
        parts = []
        for entry in self._entries.values():
            if entry.link is None:
                parts.append(f"{entry.id}: {'paused' if entry.paused else 'stopped'}")
                continue
            lines = await entry.link.check()
            parts.append(f"{entry.id} ({entry.link.state}):\n" + "\n".join(f"- {x}" for x in lines))
        return "\n".join(parts) if parts else "There is no link yet."

    async def add_link(self, spec: LinkConfig, by: str) -> list[str]:
        """Add and start a link; return warnings about the room for the admin."""
        key = spec_id(spec)
        if key in self._entries:
            raise LinkError(f"{key} is already linked")
        try:
            features = await self.component.room_features(spec.muc)
        except RemoteError as exc:
            raise LinkError(f"cannot check {spec.muc}: {exc}") from None
        if features is None:
            raise LinkError(
                f"the room {spec.muc} does not exist; create it (persistent) first: "
                "Passerelle only links existing rooms"
            )
        warnings = room_warnings(features, self.settings.jid)
        if "muc_passwordprotected" in features:
            raise LinkError(f"the room {spec.muc} has a password; remove it first")
        self.store.add(key, spec, by)
        entry = self._entries[key] = _Entry(key, spec, "admin", False)
        self._start(entry)
        log.info("%s added %s", by, key)
        return warnings

    async def remove_link(self, key: str, by: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            raise LinkError(f"there is no link {key}")
        if entry.source == "config":
            raise LinkError(f"{key} comes from gateway.toml: remove it there (or pause it)")
        del self._entries[key]
        await self._stop(entry)
        self._dirty.pop(key, None)
        self.store.remove(key)
        log.info("%s removed %s", by, key)

    async def set_paused(self, key: str, paused: bool, by: str) -> None:
        entry = self._entries.get(key)
        if entry is None:
            raise LinkError(f"there is no link {key}")
        self.store.set_paused(key, paused, by)
        entry.paused = paused
        if paused:
            await self._stop(entry)
        elif entry.task is None:
            self._start(entry)
        log.info("%s %s %s", by, "paused" if paused else "resumed", key)


def room_warnings(features: frozenset[str], component: str) -> list[str]:
    """What a room owner must grant for the link to work, from the room's features."""
    warnings = []
    if "muc_membersonly" in features:
        warnings.append(
            "the room is members-only: make the link's occupants members (every JID on "
            f"{component} that joins), or the room refuses them"
        )
    if "muc_moderated" in features:
        warnings.append(
            "the room is moderated: give the link's occupants voice, or IRC users cannot speak"
        )
    return warnings
