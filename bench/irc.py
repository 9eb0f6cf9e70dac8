"""Passerelle's IRC network against Biboumi, side by side, on one Prosody and one ngIRCd.

Run ``uv run python -m bench.irc --out bench/results/irc.json`` (``--quick`` for a smoke
run in well under two minutes). Everything listens on 127.0.0.1 and is started and
stopped here: a Prosody with both gateways as components, an ngIRCd without flood
penalty, then each gateway in turn (never both at once, so they don't compete for the
CPU). For each gateway, with its defaults except throttling (Biboumi: ``throttle_limit
-1`` per user, its SQLite archive on; Passerelle: a burst of 1,000,000 lines and
1,000,000 lines/s, the highest its config accepts, which leaves flood control no effect):

1. start-up time, and resident memory (sum of VmRSS of the gateway's processes: for
   Passerelle the supervisor and the IRC child) once idle;
2. latency: an IRC peer says ``ping N`` in a channel, an XMPP user in the same channel
   answers ``pong N`` the moment it sees it, one round at a time; IRC→XMPP is ping sent
   → ping received, XMPP→IRC is pong sent → pong received (same clock, same process);
3. IRC→XMPP throughput: the IRC peer sends N numbered lines at once; measured from the
   first line sent to the last one the XMPP user received, with losses, duplicates and
   reordering counted;
4. XMPP→IRC throughput: the same the other way, measured at the IRC peer;
5. U users joining C channels each, one user after another: wall time until every user
   has its self-presence in every room, then the gateway's memory with them all in;
6. the same U users joining C more channels each, all at the same moment.

Between phases the benchmark waits for the gateway to go quiet (its CPU use falls), so
the backlog of one phase is not billed to the next.

Each phase also records the CPU time the gateway used, this benchmark's own CPU time and
how busy the whole machine was, because on a shared machine those say how far to trust
a figure. The JSON has the machine, versions, load averages and every figure; a
markdown table is printed at the end. With ``--py-spy`` the Passerelle IRC child is
sampled during each phase (see :mod:`bench.pyspy`); such a run's figures are perturbed
by the sampling and are marked ``profiled``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from slixmpp import JID, Presence

from bench.common import (
    MUC_USER_NS,
    BenchError,
    IrcPeer,
    Meter,
    Tally,
    XmppUser,
    cpu_seconds,
    deb_version,
    loadavg,
    machine_info,
    muc_codes,
    now,
    process_tree,
    py_version,
    rss_by_process,
    rss_kib,
    summary_ms,
)
from bench.pyspy import PySpy, summarize
from gateway.localservers import Biboumi, ComponentSpec, NgIrcd, Prosody
from gateway.localservers._process import ManagedServer, terminate
from gateway.localservers.biboumi import CONFIGURE_NODE, server_configuration
from gateway.localservers.errors import ServerStartError
from gateway.localservers.ports import describe_logs

log = logging.getLogger("bench.irc")

DOMAIN = "localhost"
PASSWORD = "bench password, loopback only"
IRC_SERVER = "127.0.0.1"
STEP_TIMEOUT = 30.0  # one login, registration, join or ping
STALL = 20.0  # a throughput phase ends this long after the last new message
SPACED_PAUSE = 0.1
"""Pause between rounds of the second latency series: longer than a delayed ACK (40 ms),
so a gateway that leaves Nagle's algorithm on is not penalised for it there."""
TMPFS = Path("/dev/shm")
"""Default home of the work directory: both gateways' SQLite databases then cost CPU,
not the fsync latency of a disk that other people's jobs keep busy."""


@dataclass(frozen=True, slots=True)
class Plan:
    messages: int
    pings: int
    warmup_pings: int
    users: int
    channels: int
    settle: float
    """Seconds to wait before reading memory (after start, after the joins)."""
    join_timeout: float
    """How long one user may wait for one room while everybody joins at once."""
    hard_timeout: float
    """The whole run, servers included, is cancelled after this many seconds."""


FULL = Plan(
    messages=2000,
    pings=200,
    warmup_pings=5,
    users=50,
    channels=5,
    settle=5.0,
    join_timeout=600.0,
    hard_timeout=2400.0,
)
QUICK = Plan(
    messages=200,
    pings=20,
    warmup_pings=3,
    users=5,
    channels=2,
    settle=2.0,
    join_timeout=60.0,
    hard_timeout=150.0,
)


# --- the gateways under test -----------------------------------------------------------


class GatewayUnderTest(Protocol):
    key: str
    label: str
    jid: str
    tag: str
    """Short, IRC-safe; in the nicks and channel names of this gateway's run."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...
    def python_pid(self) -> int | None: ...
    async def enrol(self, user: XmppUser, nick: str) -> None: ...
    def archive_rows(self) -> int | None: ...
    def settings(self) -> dict[str, Any]: ...


def room_jid(channel: str, gateway_jid: str) -> str:
    return f"{channel}%{IRC_SERVER}@{gateway_jid}"


def _count_rows(database: Path, table: str) -> int | None:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            row = db.execute(f"SELECT count(*) FROM {table}").fetchone()
            return int(row[0])
    except sqlite3.Error as e:
        log.warning("cannot count rows of %s in %s: %s", table, database, e)
        return None


class BiboumiUnderTest:
    key = "biboumi"
    label = "Biboumi"
    jid = "biboumi.localhost"
    secret = "biboumi bench secret"
    tag = "bb"

    def __init__(self, workdir: Path, prosody: Prosody, irc_port: int) -> None:
        self.server = Biboumi(workdir, self.jid, self.secret, prosody.component_port)
        self.irc_port = irc_port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def pids(self) -> list[int]:
        pid = self.server.pid
        return [] if pid is None else process_tree(pid)

    def python_pid(self) -> int | None:
        return None

    async def enrol(self, user: XmppUser, nick: str) -> None:
        # Biboumi takes the nick from the join; ports and throttling are per user and server.
        await user.run_command(
            self.server.server_jid(IRC_SERVER),
            CONFIGURE_NODE,
            STEP_TIMEOUT,
            **server_configuration(self.irc_port, throttle=False),
        )

    def archive_rows(self) -> int | None:
        return _count_rows(self.server.database_path, "muclogline_")

    def settings(self) -> dict[str, Any]:
        return {
            "archive": "on (SQLite, record_history default true)",
            "throttle_limit": -1,
            "log_level": self.server.log_level,
        }


class PasserelleServer(ManagedServer):
    """``passerelle run`` with the IRC network only, as an admin would start it."""

    name = "Passerelle"
    READY = re.compile(r"^irc \| .*Slidge has successfully started", re.MULTILINE)

    def __init__(
        self, workdir: Path, jid: str, secret: str, xmpp_port: int, irc_port: int, log_level: str
    ) -> None:
        super().__init__(workdir, start_timeout=90.0)
        self.jid, self.secret = jid, secret
        self.xmpp_port, self.irc_port = xmpp_port, irc_port
        self.log_level = log_level

    @property
    def config_path(self) -> Path:
        return self.workdir / "gateway.toml"

    @property
    def log_path(self) -> Path:
        return self.output_path

    @property
    def database_path(self) -> Path:
        return self.workdir / "data" / "irc" / "passerelle.sqlite"

    @property
    def child_pidfile(self) -> Path:
        return self.workdir / "data" / "run" / "irc.pid"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self.running else None

    def prepare(self) -> None:
        self.config_path.write_text(
            f"""\
# Generated by bench.irc; overwritten at each run.
data_dir = "./data"
log_level = "{self.log_level}"

[xmpp]
host = "127.0.0.1"
port = {self.xmpp_port}

[networks.irc]
jid = "{self.jid}"
secret = "{self.secret}"
# Flood control as loose as the config allows (Biboumi's throttle is off too).
flood_burst = 1000000
flood_rate = 1000000.0

[networks.irc.servers."{IRC_SERVER}"]
host = "127.0.0.1"
port = {self.irc_port}
tls = false
""",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return [sys.executable, "-m", "gateway", "run", "-c", str(self.config_path)]

    def listen_ports(self) -> tuple[int, ...]:
        return ()  # a component: ready when slidge says so, see start()

    def start(self) -> None:
        super().start()
        deadline = time.monotonic() + self.start_timeout
        while not self.READY.search(self.output_path.read_text(errors="replace")):
            if not self.running or time.monotonic() > deadline:
                self.stop()
                raise ServerStartError(
                    f"Passerelle's IRC network did not start within {self.start_timeout:g} s"
                    f"\n{describe_logs([self.output_path], 40)}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        # The supervisor gives its child 10 s to stop; give the supervisor more than that.
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.name, timeout=25.0)


class PasserelleUnderTest:
    key = "passerelle"
    label = "Passerelle"
    jid = "irc.localhost"
    secret = "passerelle bench secret"
    tag = "pa"

    def __init__(self, workdir: Path, prosody: Prosody, irc_port: int, log_level: str) -> None:
        self.server = PasserelleServer(
            workdir, self.jid, self.secret, prosody.component_port, irc_port, log_level
        )

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def pids(self) -> list[int]:
        pid = self.server.pid
        return [] if pid is None else process_tree(pid)

    def python_pid(self) -> int | None:
        try:
            return int(self.server.child_pidfile.read_text())
        except (OSError, ValueError):
            return None

    async def enrol(self, user: XmppUser, nick: str) -> None:
        await user.register(self.jid, STEP_TIMEOUT, nick=nick)

    def archive_rows(self) -> int | None:
        return _count_rows(self.server.database_path, "mam")

    def settings(self) -> dict[str, Any]:
        return {
            "archive": "slidge's room archive (SQLite)",
            "flood_burst": 1_000_000,
            "flood_rate": 1_000_000.0,
            "log_level": self.server.log_level,
        }


# --- the phases ------------------------------------------------------------------------


@dataclass
class Channel:
    """One XMPP user and one IRC peer in one channel through the gateway."""

    user: XmppUser
    nick: str
    peer: IrcPeer
    name: str
    room: str


async def ping_pong(ch: Channel, rounds: int, warmup: int, gap: float = 0.0) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    i2x: list[float] = []
    x2i: list[float] = []
    lost = 0
    state: dict[str, Any] = {}

    def on_xmpp(room: str, nick: str, body: str) -> None:
        if room == ch.room and nick == ch.peer.nick and body == f"ping {state.get('n')}":
            state["t1"] = now()
            ch.user.send_groupchat(ch.room, f"pong {state['n']}")

    def on_irc(nick: str, target: str, text: str) -> None:
        pong = state.get("pong")
        if nick == ch.nick and target == ch.name and text == f"pong {state.get('n')}":
            if pong is not None and not pong.done():
                pong.set_result(now())

    ch.user.on_groupchat, ch.peer.on_privmsg = on_xmpp, on_irc
    try:
        for n in range(warmup + rounds):
            state.clear()
            state.update(n=n, pong=loop.create_future())
            t0 = now()
            ch.peer.send(f"PRIVMSG {ch.name} :ping {n}")
            try:
                async with asyncio.timeout(STEP_TIMEOUT / 3):
                    t2 = await state["pong"]
            except TimeoutError:
                lost += 1
                continue
            if n >= warmup:
                i2x.append(state["t1"] - t0)
                x2i.append(t2 - state["t1"])
            if gap:
                await asyncio.sleep(gap)
    finally:
        ch.user.on_groupchat, ch.peer.on_privmsg = None, None
    return {
        "rounds": rounds,
        "pause_between_rounds_s": gap,
        "lost": lost,
        "irc_to_xmpp": summary_ms(i2x),
        "xmpp_to_irc": summary_ms(x2i),
    }


def _cap(messages: int) -> float:
    """How long a throughput phase may take in all: down to 5 messages/s."""
    return max(60.0, messages / 5)


async def irc_to_xmpp(ch: Channel, messages: int, meter: Meter) -> dict[str, Any]:
    tally = Tally("i2x", messages)

    def on_xmpp(room: str, nick: str, body: str) -> None:
        if room == ch.room and nick == ch.peer.nick:
            tally.feed(body)

    ch.user.on_groupchat = on_xmpp
    try:
        with meter:
            tally.start()
            for n in range(messages):
                ch.peer.send(f"PRIVMSG {ch.name} :i2x {n}")
                if n % 100 == 99:
                    await ch.peer.drain()
            await ch.peer.drain()
            sent = now() - tally.started
            await tally.wait(STALL, _cap(messages))
            return tally.result() | {"send_s": round(sent, 3)} | meter.reading()
    finally:
        ch.user.on_groupchat = None


async def xmpp_to_irc(ch: Channel, messages: int, meter: Meter) -> dict[str, Any]:
    tally = Tally("x2i", messages)

    def on_irc(nick: str, target: str, text: str) -> None:
        if nick == ch.nick and target == ch.name:
            tally.feed(text)

    ch.peer.on_privmsg = on_irc
    try:
        with meter:
            tally.start()
            for n in range(messages):
                ch.user.send_groupchat(ch.room, f"x2i {n}")
                if n % 50 == 49:
                    await asyncio.sleep(0)  # let slixmpp's writer run
            sent = now() - tally.started
            await tally.wait(STALL, _cap(messages))
            return tally.result() | {"send_s": round(sent, 3)} | meter.reading()
    finally:
        ch.peer.on_privmsg = None


async def quiet(pids: Callable[[], list[int]], cap: float = 120.0) -> float:
    """Wait until the gateway uses less than 10 % of a core over half a second (it has
    worked off what the last phase left), at most `cap` seconds; return the wait."""
    started = now()
    while now() - started < cap:
        before = cpu_seconds(pids())
        await asyncio.sleep(0.5)
        if cpu_seconds(pids()) - before < 0.05:
            break
    return round(now() - started, 3)


async def bounded_gather(limit: int, jobs: list[Awaitable[Any]]) -> list[Any]:
    """Await `jobs` (not started yet) at most `limit` at a time; exceptions are returned,
    not raised."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Awaitable[Any]) -> Any:
        async with semaphore:
            return await job

    return await asyncio.gather(*(one(j) for j in jobs), return_exceptions=True)


def _first_error(results: list[Any]) -> BaseException | None:
    return next((r for r in results if isinstance(r, BaseException)), None)


class CheckedUser(XmppUser):
    """An `XmppUser` that keeps, for each room it joins, the presences its client got
    while joining, in order, up to and including its own: (nick, role, status codes)."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.joins: dict[str, tuple[str, list[tuple[str, str, set[int]]]]] = {}
        self.add_event_handler("presence", self._keep)

    async def join(self, room: str, nick: str, timeout: float) -> float:
        self.joins[JID(room).bare] = (nick, [])
        return await super().join(room, nick, timeout)

    def _keep(self, pres: Presence) -> None:
        sender = pres["from"]
        nick, seen = self.joins.get(sender.bare, ("", None))
        if seen is None or pres["type"] in {"error", "unavailable"}:
            return
        if seen and (110 in seen[-1][2] or seen[-1][0] == nick):
            return  # joined: later presences are the room's life, not the join
        item = pres.xml.find(f"{{{MUC_USER_NS}}}x/{{{MUC_USER_NS}}}item")
        role = "" if item is None else item.get("role", "")
        seen.append((sender.resource, role, muc_codes(pres)))


def check_joins(
    users: list[CheckedUser], rooms: list[str], nicks: list[str], *, all_at_once: bool
) -> dict[str, Any]:
    """What each client got while joining each room: every occupant once, with a role,
    and its own presence last with status 110. One user after another: exactly the users
    who joined before, the first one a moderator (the IRC channel's first member gets
    +o), the others participants. All at once: nobody but these users, at most one
    moderator. Returns how many joins were checked and the first problems."""
    problems: list[str] = []
    checked = 0
    for i, user in enumerate(users):
        for room in rooms:
            nick, seen = user.joins.get(JID(room).bare, ("", []))
            if not seen:
                continue  # the join failed: counted as such
            checked += 1
            where = f"{nick} in {JID(room).user}"
            *others, last = seen
            if last[0] != nick or 110 not in last[2]:
                problems.append(f"{where}: last presence {last[0]!r} {sorted(last[2])}")
            names = [name for name, _, _ in others]
            if len(set(names)) != len(names):
                problems.append(f"{where}: an occupant twice: {sorted(names)}")
            roles = {name: role for name, role, _ in others} | {nick: last[1]}
            if all_at_once:
                strangers = set(names) - set(nicks)
                moderators = [n for n, role in roles.items() if role == "moderator"]
                if strangers or len(moderators) > 1 or "" in roles.values():
                    problems.append(f"{where}: {strangers=} {moderators=} {roles=}")
                continue
            expected = {
                n: "moderator" if k == 0 else "participant" for k, n in enumerate(nicks[: i + 1])
            }
            if roles != expected:
                problems.append(f"{where}: occupants {roles} instead of {expected}")
    return {"joins_checked": checked, "problems": len(problems), "first_problems": problems[:5]}


async def join_many(
    gw: GatewayUnderTest,
    users: list[CheckedUser],
    prefix: str,
    plan: Plan,
    meter: Meter,
    *,
    all_at_once: bool,
) -> dict[str, Any]:
    """Each user joins `plan.channels` channels named `prefix`0, `prefix`1… (all of a
    user's rooms at once); users one after another, or `all_at_once`. Wall time until
    every user is in every room, or gave up."""
    rooms = [room_jid(f"{prefix}{k}{gw.tag}", gw.jid) for k in range(plan.channels)]

    async def join_all(i: int, user: XmppUser) -> float:
        started = now()
        await asyncio.gather(*(user.join(r, f"{gw.tag}u{i}", plan.join_timeout) for r in rooms))
        return now() - started

    results: list[float | BaseException] = []
    with meter:
        started = now()
        if all_at_once:
            results = await asyncio.gather(
                *(join_all(i, u) for i, u in enumerate(users)), return_exceptions=True
            )
        else:
            for i, user in enumerate(users):
                try:
                    results.append(await join_all(i, user))
                except (BenchError, TimeoutError) as e:
                    results.append(e)
        wall = now() - started
        reading = meter.reading()
    per_user = [r for r in results if isinstance(r, float)]
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    return {
        "users": len(users),
        "channels_each": plan.channels,
        "all_at_once": all_at_once,
        "joined_users": len(per_user),
        "failed_users": len(errors),
        "errors": errors[:5],
        "seconds": round(wall, 3),
        "per_user": summary_ms(per_user),
        "presences": check_joins(
            users, rooms, [f"{gw.tag}u{i}" for i in range(len(users))], all_at_once=all_at_once
        ),
    } | reading


@contextlib.contextmanager
def maybe_profile(spy: PySpy | None, gw: GatewayUnderTest, phase: str) -> Iterator[None]:
    pid = gw.python_pid()
    if spy is None or pid is None:
        yield
        return
    with spy.record(pid, f"{gw.key}-{phase}"):
        yield


async def bench_gateway(
    gw: GatewayUnderTest,
    plan: Plan,
    irc_port: int,
    xmpp_port: int,
    spy: PySpy | None,
    out: dict[str, Any],
) -> None:
    """Measure one gateway; figures land in `out` as soon as they exist."""
    out["settings"] = gw.settings()
    out["loadavg_before"] = loadavg()
    started = now()
    gw.start()
    out["start_s"] = round(now() - started, 3)
    log.info("%s started in %.1f s", gw.label, out["start_s"])
    pinger: XmppUser | None = None
    peer: IrcPeer | None = None
    users: list[CheckedUser] = []
    try:
        await asyncio.sleep(plan.settle)
        pids = gw.pids()
        out["processes"] = len(pids)
        out["rss_idle_kib"] = rss_kib(pids)
        out["rss_idle_by_process"] = rss_by_process(pids)

        pinger = XmppUser(f"ping@{DOMAIN}", PASSWORD)
        await pinger.start(xmpp_port, STEP_TIMEOUT)
        nick = f"{gw.tag}ping"
        await gw.enrol(pinger, nick)
        peer = await IrcPeer.connect(irc_port, f"{gw.tag}peer", STEP_TIMEOUT)
        channel = f"#bench{gw.tag}"
        await peer.join(channel, STEP_TIMEOUT)
        ch = Channel(pinger, nick, peer, channel, room_jid(channel, gw.jid))
        seen_join = peer.expect(rf"^:{re.escape(nick)}!\S+ JOIN :?{re.escape(channel)}")
        await pinger.join(ch.room, nick, STEP_TIMEOUT)
        await peer.wait(seen_join, STEP_TIMEOUT)

        log.info("%s: %d ping-pongs", gw.label, plan.pings)
        with maybe_profile(spy, gw, "latency"):
            out["latency"] = await ping_pong(ch, plan.pings, plan.warmup_pings)
            out["latency_spaced"] = await ping_pong(ch, plan.pings, plan.warmup_pings, SPACED_PAUSE)
        out["quiet_before_irc_to_xmpp_s"] = await quiet(gw.pids)
        log.info("%s: %d messages IRC -> XMPP", gw.label, plan.messages)
        with maybe_profile(spy, gw, "irc_to_xmpp"):
            out["irc_to_xmpp"] = await irc_to_xmpp(ch, plan.messages, Meter(gw.pids))
        out["quiet_before_xmpp_to_irc_s"] = await quiet(gw.pids)
        log.info("%s: %d messages XMPP -> IRC", gw.label, plan.messages)
        with maybe_profile(spy, gw, "xmpp_to_irc"):
            out["xmpp_to_irc"] = await xmpp_to_irc(ch, plan.messages, Meter(gw.pids))
        out["quiet_after_traffic_s"] = await quiet(gw.pids)
        out["rss_after_traffic_kib"] = rss_kib(gw.pids())

        log.info("%s: %d users log in and enrol", gw.label, plan.users)
        users = [CheckedUser(f"user{i}@{DOMAIN}", PASSWORD) for i in range(plan.users)]
        logins = await bounded_gather(10, [u.start(xmpp_port, STEP_TIMEOUT) for u in users])
        if error := _first_error(logins):
            raise BenchError(f"an XMPP user could not log in: {error}")
        enrol_started = now()
        enrolled = await bounded_gather(
            5, [gw.enrol(u, f"{gw.tag}u{i}") for i, u in enumerate(users)]
        )
        if error := _first_error(enrolled):
            raise BenchError(f"a user could not enrol with {gw.label}: {error}")
        out["enrol_s"] = round(now() - enrol_started, 3)

        log.info(
            "%s: %d users join %d channels each, one user after another",
            gw.label,
            plan.users,
            plan.channels,
        )
        with maybe_profile(spy, gw, "join"):
            out["join"] = await join_many(
                gw, users, "#load", plan, Meter(gw.pids), all_at_once=False
            )
        out["quiet_after_join_s"] = await quiet(gw.pids)
        await asyncio.sleep(plan.settle)
        pids = gw.pids()
        out["rss_loaded_kib"] = rss_kib(pids)
        out["rss_loaded_by_process"] = rss_by_process(pids)

        log.info(
            "%s: %d users join %d more channels each, all at once",
            gw.label,
            plan.users,
            plan.channels,
        )
        with maybe_profile(spy, gw, "join_burst"):
            out["join_burst"] = await join_many(
                gw, users, "#burst", plan, Meter(gw.pids), all_at_once=True
            )
        out["quiet_after_burst_s"] = await quiet(gw.pids)
        await asyncio.sleep(plan.settle)
        out["rss_after_burst_kib"] = rss_kib(gw.pids())
        out["archive_rows"] = gw.archive_rows()
    finally:
        await asyncio.gather(*(u.stop() for u in users), return_exceptions=True)
        if peer is not None:
            await peer.close()
        if pinger is not None:
            await pinger.stop()
        gw.stop()
        out["loadavg_after"] = loadavg()


def filesystem_of(path: Path) -> str:
    """The type of the filesystem `path` is on (tmpfs, ext4…), from /proc/mounts."""
    best, kind = "", "unknown"
    for line in Path("/proc/mounts").read_text().splitlines():
        _dev, mount, fstype, *_ = line.split()
        if path.is_relative_to(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return kind


async def register_accounts(prosody: Prosody, names: list[str]) -> None:
    semaphore = asyncio.Semaphore(4)

    async def one(name: str) -> None:
        async with semaphore:
            await asyncio.to_thread(prosody.register, name, PASSWORD)

    await asyncio.gather(*(one(n) for n in names))


async def run(plan: Plan, args: argparse.Namespace, report: dict[str, Any]) -> None:
    async with asyncio.timeout(plan.hard_timeout):
        await _run(plan, args, report)


async def _run(plan: Plan, args: argparse.Namespace, report: dict[str, Any]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="passerelle-bench-", dir=args.workdir_base))
    report["workdir"] = str(workdir)
    report["workdir_filesystem"] = filesystem_of(workdir)
    spy = PySpy(args.py_spy, args.out.parent / "profiles") if args.py_spy else None
    try:
        with contextlib.ExitStack() as stack:
            prosody = Prosody(
                workdir / "prosody",
                domain=DOMAIN,
                components=[
                    ComponentSpec(PasserelleUnderTest.jid, PasserelleUnderTest.secret),
                    ComponentSpec(BiboumiUnderTest.jid, BiboumiUnderTest.secret, privileged=False),
                ],
                log_level="warn",
            )
            stack.enter_context(prosody)
            ngircd = stack.enter_context(NgIrcd(workdir / "ngircd", no_flood_limit=True))
            await register_accounts(prosody, ["ping"] + [f"user{i}" for i in range(plan.users)])
            makers: dict[str, Callable[[], GatewayUnderTest]] = {
                "biboumi": lambda: BiboumiUnderTest(workdir / "biboumi", prosody, ngircd.port),
                "passerelle": lambda: PasserelleUnderTest(
                    workdir / "passerelle", prosody, ngircd.port, args.passerelle_log_level
                ),
            }
            for key in args.gateways:
                gw = makers[key]()
                entry: dict[str, Any] = {"label": gw.label}
                report["gateways"][key] = entry
                try:
                    await bench_gateway(gw, plan, ngircd.port, prosody.c2s_port, spy, entry)
                except Exception as e:
                    log.exception("%s: the benchmark failed", gw.label)
                    entry["error"] = f"{type(e).__name__}: {e}"
    finally:
        if spy is not None:
            report["profiles"] = {
                path.stem: summarize(path) for path in sorted(spy.out_dir.glob("*.txt"))
            }
        if args.keep:
            log.info("work directory kept: %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# --- report ----------------------------------------------------------------------------


def _mib(kib: int | None) -> str:
    return "—" if kib is None else f"{kib / 1024:.1f}"


def _rate(phase: dict[str, Any] | None) -> str:
    if not phase:
        return "—"
    rate = phase.get("msg_per_s")
    text = "—" if rate is None else f"{rate:.0f}"
    lost, dup = phase.get("lost", 0), phase.get("duplicates", 0)
    extra = []
    if lost:
        extra.append(f"{lost} lost")
    if dup:
        extra.append(f"{dup} dup")
    if phase.get("reordered"):
        extra.append(f"{phase['reordered']} reordered")
    return text + (f" ({', '.join(extra)})" if extra else "")


def _latency(latency: dict[str, Any] | None, way: str) -> str:
    if not latency:
        return "—"
    s = latency[way]
    if s["p50_ms"] is None:
        return "—"
    return f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}"


def _join(join: dict[str, Any] | None) -> str:
    if not join:
        return "—"
    text = f"{join['seconds']:.2f}"
    if join["failed_users"]:
        text += f" ({join['failed_users']} of {join['users']} users failed)"
    return text


def markdown_table(report: dict[str, Any]) -> str:
    gws = report["gateways"]
    keys = list(gws)
    plan = report["plan"]
    n, u, c = plan["messages"], plan["users"], plan["channels"]
    versions = report["versions"]

    def head(key: str) -> str:
        version = versions.get(key) or ""
        return f"{gws[key]['label']} {version}".strip()

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (f"IRC→XMPP throughput, {n} msgs, msg/s", lambda g: _rate(g.get("irc_to_xmpp"))),
        (f"XMPP→IRC throughput, {n} msgs, msg/s", lambda g: _rate(g.get("xmpp_to_irc"))),
        (
            f"IRC→XMPP latency p50 / p99, ms ({plan['pings']} pings)",
            lambda g: _latency(g.get("latency"), "irc_to_xmpp"),
        ),
        (
            f"XMPP→IRC latency p50 / p99, ms ({plan['pings']} pongs)",
            lambda g: _latency(g.get("latency"), "xmpp_to_irc"),
        ),
        (
            f"same, {SPACED_PAUSE * 1000:.0f} ms between rounds: IRC→XMPP",
            lambda g: _latency(g.get("latency_spaced"), "irc_to_xmpp"),
        ),
        (
            f"same, {SPACED_PAUSE * 1000:.0f} ms between rounds: XMPP→IRC",
            lambda g: _latency(g.get("latency_spaced"), "xmpp_to_irc"),
        ),
        ("RSS idle after start, MiB", lambda g: _mib(g.get("rss_idle_kib"))),
        (f"RSS with {u} users x {c} channels, MiB", lambda g: _mib(g.get("rss_loaded_kib"))),
        (
            f"time to join {u} users x {c} channels, one user after another, s",
            lambda g: _join(g.get("join")),
        ),
        (
            f"time for {u} users to join {c} more channels each, all at once, s",
            lambda g: _join(g.get("join_burst")),
        ),
        ("start-up, s", lambda g: f"{g['start_s']:.1f}" if "start_s" in g else "—"),
        (
            "gateway CPU s during IRC→XMPP / XMPP→IRC",
            lambda g: " / ".join(
                f"{g[p]['gateway_cpu_s']:.1f}" if g.get(p) else "—"
                for p in ("irc_to_xmpp", "xmpp_to_irc")
            ),
        ),
    ]
    lines = [
        "| figure | " + " | ".join(head(k) for k in keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for title, cell in rows:
        lines.append(f"| {title} | " + " | ".join(cell(gws[k]) for k in keys) + " |")
    for k in keys:
        if "error" in gws[k]:
            lines.append(f"\n{gws[k]['label']} failed: {gws[k]['error']}")
    machine = report["machine"]
    lines.append(
        f"\n{report['date']}, {machine['nproc']} cores ({machine['cpu_model']}), load average "
        f"{machine['loadavg_start'][0]:.2f} at start, "
        f"{(machine.get('loadavg_end') or [float('nan')])[0]:.2f} at end"
        + (" — profiled with py-spy, figures perturbed" if report.get("profiled") else "")
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.irc", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/irc.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run (< 2 minutes)")
    parser.add_argument(
        "--gateways",
        type=lambda s: s.split(","),
        default=["biboumi", "passerelle"],
        help="comma-separated, in order: biboumi,passerelle",
    )
    parser.add_argument("--messages", type=int, help="override the plan's message count")
    parser.add_argument("--pings", type=int, help="override the plan's ping-pong count")
    parser.add_argument("--users", type=int, help="override the plan's user count")
    parser.add_argument("--channels", type=int, help="override the plan's channels per user")
    parser.add_argument(
        "--passerelle-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--py-spy", type=Path, help="py-spy binary: profile Passerelle's child")
    parser.add_argument(
        "--workdir-base",
        type=Path,
        default=TMPFS if TMPFS.is_dir() else None,
        help=f"where the servers' data and databases go (default: {TMPFS}, else TMPDIR)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if unknown := set(args.gateways) - {"biboumi", "passerelle"}:
        parser.error(f"unknown gateway(s) {', '.join(sorted(unknown))}")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("slixmpp", "gateway.localservers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    plan = QUICK if args.quick else FULL
    plan = replace(
        plan,
        messages=args.messages or plan.messages,
        pings=args.pings or plan.pings,
        users=args.users or plan.users,
        channels=args.channels or plan.channels,
    )
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "plan": asdict(plan),
        "profiled": bool(args.py_spy),
        "machine": machine_info() | {"loadavg_start": loadavg()},
        "versions": {
            "biboumi": deb_version("biboumi"),
            "prosody": deb_version("prosody"),
            "ngircd": deb_version("ngircd"),
            "passerelle": py_version("passerelle"),
            "slidge": py_version("slidge"),
            "slixmpp": py_version("slixmpp"),
        },
        "note": (
            "Preliminary: measured on a shared machine; read each figure with the load "
            "average and the per-phase host_busy_pct next to it."
        ),
        "gateways": {},
    }

    def terminated(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)  # unwinds through the `finally`s that stop servers

    signal.signal(signal.SIGTERM, terminated)
    started = now()
    failed = False
    try:
        asyncio.run(run(plan, args, report))
    except TimeoutError:
        log.error("hard timeout: the run took more than %g s", plan.hard_timeout)
        report["error"] = f"hard timeout after {plan.hard_timeout:g} s"
        failed = True
    finally:
        report["machine"]["loadavg_end"] = loadavg()
        report["duration_s"] = round(now() - started, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
        log.info("wrote %s after %.0f s", args.out, report["duration_s"])
    print(markdown_table(report))
    failed = failed or any("error" in g for g in report["gateways"].values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
