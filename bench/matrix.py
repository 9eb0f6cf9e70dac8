"""Passerelle's Matrix network against matridge, side by side, on one Prosody and one Synapse.

Run ``uv run python -m bench.matrix --out bench/results/matrix.json`` (``--quick`` for a
smoke run of a few minutes). Everything listens on 127.0.0.1 and is started and stopped
here: a Prosody with both gateways as components, a Synapse without rate limits, then
each gateway in turn (never both at once, so they do not compete for the CPU), each with
its defaults. By default each gateway has two turns, in the order A B B A (``--rounds``),
so that neither is always the one measured on a homeserver that just started.
matridge (slidge's own Matrix gateway) is installed from PyPI into a venv of its own on
the first run (:mod:`bench.matrix_matridge`).

For each turn of a gateway, with Matrix and XMPP accounts of its own and a fresh
gateway (new work directory and database):

1. start-up time, and resident memory (VmRSS of the gateway's processes: for Passerelle
   the supervisor and the Matrix child) once idle, before any user;
2. one XMPP user logs in to Matrix through the gateway (its registration form) and joins
   a room a Matrix peer created (the room is already in its Matrix account);
3. latency: the peer says ``ping N`` in the room, the XMPP user answers ``pong N`` the
   moment it sees it; Matrix→XMPP is ping sent → ping received, XMPP→Matrix is pong
   sent → pong seen by the peer's sync; one round at a time, with a pause between rounds;
4. Matrix→XMPP throughput: the peer sends N numbered messages (a window of requests in
   flight, so the homeserver is not what limits), measured from the first sent to the
   last the XMPP user received; losses, duplicates and order are checked against the
   order the messages have in the room on the homeserver;
   then the same as a backlog: the gateway is paused (SIGSTOP) while the peer sends, and
   timed from its resume (SIGCONT), so the homeserver does not set the pace;
5. XMPP→Matrix throughput: the XMPP user sends N numbered groupchat messages, counted
   by the peer's sync and again from the room's history on the homeserver;
6. U more XMPP users log in to their Matrix accounts (all members of one busy room)
   through the gateway; the time until all are connected, then memory with them in.

Before the turns, a latency duel: both gateways started at once, each with a room of its
own, and their ping-pong rounds (as in 3.) alternating, A B then B A; whatever the
homeserver and a shared machine are doing at a moment weighs on both alike, and each
round of one is paired with the same round of the other (the median difference and how
often each was faster). Turns one after another cannot give that: Synapse's cost per
event grows with the run (turns late in a run are slower whichever gateway has them).

Between phases the benchmark waits for the gateway's CPU use to fall, so one phase's
backlog is not billed to the next. Every wait is bounded and the whole run has a hard
timeout. The JSON has the machine, versions, load averages and every figure; a markdown
table is printed at the end. With ``--py-spy`` each gateway's Python process is sampled
during each phase (:mod:`bench.pyspy`); such a run's figures are perturbed and say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.common import (
    BenchError,
    Meter,
    Tally,
    XmppUser,
    deb_version,
    loadavg,
    machine_info,
    now,
    process_tree,
    py_version,
    rss_by_process,
    rss_kib,
    summary_ms,
)
from bench.irc import (
    PASSWORD,
    TMPFS,
    PasserelleServer,
    bounded_gather,
    filesystem_of,
    quiet,
    register_accounts,
)
from bench.matrix_matridge import (
    MATRIDGE_VERSION,
    MatridgeServer,
    ensure_venv,
    venv_versions,
)
from bench.matrix_peer import MatrixPeer
from bench.pyspy import PySpy, summarize
from gateway.localservers import ComponentSpec, Prosody, Synapse
from legacy_plugins.matrix.ids import id_to_localpart

log = logging.getLogger("bench.matrix")

DOMAIN = "localhost"
MATRIX_PASSWORD = "matrix bench password, loopback only"
STEP_TIMEOUT = 60.0  # one login, registration, join or ping
STALL = 30.0  # a throughput phase ends this long after the last new message
PAUSE = 0.1
"""Between latency rounds: longer than a delayed ACK, so Nagle's algorithm never counts."""
PHASES = ("latency_duel", "latency", "matrix_to_xmpp", "matrix_backlog", "xmpp_to_matrix", "logins")
"""What is measured, in this order (``--phases`` picks some): "latency_duel" (both
gateways at once, before the turns: `latency_duel`), then in each turn, after start-up,
idle memory and the first login, the others; "logins" is the 20 more users and the
memory with them."""


@dataclass(frozen=True, slots=True)
class Plan:
    messages: int
    pings: int
    warmup_pings: int
    users: int
    send_window: int
    """Matrix→XMPP: requests in flight at the homeserver (1: one after another)."""
    settle: float
    """Seconds to wait before reading memory."""
    hard_timeout: float
    """Seconds per round (one turn of each gateway): the whole run, servers included,
    is cancelled after this many seconds times the rounds."""


FULL = Plan(
    messages=1000,
    pings=200,
    warmup_pings=5,
    users=20,
    send_window=16,
    settle=5.0,
    hard_timeout=2700.0,
)
QUICK = Plan(
    messages=100,
    pings=20,
    warmup_pings=3,
    users=3,
    send_window=16,
    settle=2.0,
    hard_timeout=420.0,
)


# --- the gateways under test -----------------------------------------------------------


class GatewayUnderTest(Protocol):
    key: str
    label: str
    jid: str
    tag: str
    """Short; in the names of this gateway's Matrix accounts."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def pids(self) -> list[int]: ...
    def python_pid(self) -> int | None: ...
    def login_fields(self, user_id: str, password: str) -> dict[str, str]: ...
    def room_jid(self, room_id: str) -> str: ...
    def archive_rows(self) -> int | None: ...
    def settings(self) -> dict[str, Any]: ...


def _count_rows(database: Path, table: str) -> int | None:
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
            return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
    except sqlite3.Error as e:
        log.warning("cannot count rows of %s in %s: %s", table, database, e)
        return None


class PasserelleMatrixServer(PasserelleServer):
    """``passerelle run`` with the Matrix network only, as an admin would start it."""

    READY = re.compile(r"^matrix \| .*Slidge has successfully started", re.MULTILINE)

    @property
    def database_path(self) -> Path:
        return self.workdir / "data" / "matrix" / "passerelle.sqlite"

    @property
    def child_pidfile(self) -> Path:
        return self.workdir / "data" / "run" / "matrix.pid"

    def prepare(self) -> None:
        self.config_path.write_text(
            f"""\
# Generated by bench.matrix; overwritten at each run.
data_dir = "./data"
log_level = "{self.log_level}"

[xmpp]
host = "127.0.0.1"
port = {self.xmpp_port}

[networks.matrix]
jid = "{self.jid}"
secret = "{self.secret}"
# The lab's homeserver is on loopback, over plain HTTP.
allow_private_addresses = true
allow_plain_http = true
""",
            encoding="utf-8",
        )


class _Launched:
    """What both gateways share: one process tree started and stopped by `server`."""

    server: PasserelleMatrixServer | MatridgeServer

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def pids(self) -> list[int]:
        pid = self.server.pid
        return [] if pid is None else process_tree(pid)

    def archive_rows(self) -> int | None:
        return _count_rows(self.server.database_path, "mam")


class PasserelleUnderTest(_Launched):
    key = "passerelle"
    label = "Passerelle"
    jid = "matrix.localhost"
    secret = "passerelle matrix bench secret"
    tag = "pa"
    server: PasserelleMatrixServer

    def __init__(self, workdir: Path, prosody: Prosody, homeserver: str, log_level: str) -> None:
        self.homeserver = homeserver
        self.server = PasserelleMatrixServer(
            workdir, self.jid, self.secret, prosody.component_port, 0, log_level
        )

    def python_pid(self) -> int | None:
        try:
            return int(self.server.child_pidfile.read_text())
        except (OSError, ValueError):
            return None

    def login_fields(self, user_id: str, password: str) -> dict[str, str]:
        return {"user_id": user_id, "password": password, "homeserver": self.homeserver}

    def room_jid(self, room_id: str) -> str:
        return f"{id_to_localpart(room_id)}@{self.jid}"

    def settings(self) -> dict[str, Any]:
        return {
            "launcher": "passerelle run (supervisor + Matrix child)",
            "config": "defaults (timeline_limit 100, backfill_count 50), loopback allowed",
            "database": "SQLite, WAL (Passerelle's slidge fix 7)",
            "log_level": self.server.log_level,
        }


class MatridgeUnderTest(_Launched):
    key = "matridge"
    label = "matridge"
    jid = "matridge.localhost"
    secret = "matridge bench secret"
    tag = "md"
    server: MatridgeServer

    def __init__(self, workdir: Path, prosody: Prosody, homeserver: str, python: Path) -> None:
        self.homeserver = homeserver
        self.server = MatridgeServer(workdir, python, self.jid, self.secret, prosody.component_port)

    def python_pid(self) -> int | None:
        return self.server.pid

    def login_fields(self, user_id: str, password: str) -> dict[str, str]:
        # matridge's form: homeserver, user name, password, and a device name, which the
        # form fills in ("matridge on <its JID>") and a client sends back.
        return {
            "homeserver": self.homeserver,
            "username": user_id,
            "password": password,
            "device": f"matridge on {self.jid}",
        }

    def room_jid(self, room_id: str) -> str:
        # matridge 0.5: each upper-case letter becomes "^" and the letter in lower case
        # ("^" itself is doubled), then XEP-0106 escaping, as slidge does by default.
        from slidge.util.jid_escaping import ESCAPE_TABLE

        folded = "".join(
            "^^" if c == "^" else f"^{c.lower()}" if "A" <= c <= "Z" else c for c in room_id
        )
        return f"{folded.translate(ESCAPE_TABLE)}@{self.jid}"

    def settings(self) -> dict[str, Any]:
        return {
            "launcher": "python -m matridge (one process), component avatar download disabled",
            "config": "defaults",
            "database": "SQLite, slidge's defaults (rollback journal)",
            "log_level": "INFO (slidge's default)",
        }


# --- XMPP side helpers -----------------------------------------------------------------


async def log_in(user: XmppUser, gw: GatewayUnderTest, user_id: str, timeout: float) -> float:
    """Register with the gateway's form and wait until it says the session is up (its
    presence with show=chat, which both slidge gateways send once logged in)."""
    online: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_presence(pres: Any) -> None:
        if pres["from"].bare == gw.jid and pres["show"] == "chat" and not online.done():
            online.set_result(None)

    user.add_event_handler("presence", on_presence)
    started = now()
    try:
        await user.register(gw.jid, timeout, **gw.login_fields(user_id, MATRIX_PASSWORD))
        async with asyncio.timeout(timeout):
            await online
    except TimeoutError:
        raise BenchError(
            f"{user.boundjid.bare}: {gw.label} did not log in within {timeout:g} s"
        ) from None
    finally:
        user.del_event_handler("presence", on_presence)
    return now() - started


async def join_room(user: XmppUser, room: str, nick: str, timeout: float) -> float:
    """Join the MUC, retrying while the gateway does not know the room yet."""
    started = now()
    last: Exception | None = None
    while now() - started < timeout:
        try:
            await user.join(room, nick, timeout)
            return now() - started
        except BenchError as e:
            last = e
            await asyncio.sleep(0.5)
    raise BenchError(f"{user.boundjid.bare} could not join {room}: {last}")


# --- the phases ------------------------------------------------------------------------


@dataclass
class Room:
    """One XMPP user and one Matrix peer in one room through the gateway."""

    user: XmppUser
    user_mxid: str
    peer: MatrixPeer
    room_id: str
    jid: str


def _ours(room: Room, sender_room: str) -> bool:
    return sender_room.lower() == room.jid.lower()


class PingPong:
    """Latency rounds in one room: the peer says ``ping N``, the XMPP user answers
    ``pong N`` the moment it sees it (its callbacks are set until `close`)."""

    def __init__(self, rm: Room) -> None:
        self.rm = rm
        self.state: dict[str, Any] = {}
        rm.user.on_groupchat, rm.peer.on_message = self._on_xmpp, self._on_matrix

    def _on_xmpp(self, room: str, _nick: str, body: str) -> None:
        state = self.state
        if _ours(self.rm, room) and body == f"ping {state.get('n')}" and "t1" not in state:
            state["t1"] = now()
            self.rm.user.send_groupchat(self.rm.jid, f"pong {state['n']}")

    def _on_matrix(self, room_id: str, sender: str, body: str) -> None:
        rm, pong = self.rm, self.state.get("pong")
        if (
            room_id == rm.room_id
            and sender == rm.user_mxid
            and body == f"pong {self.state.get('n')}"
        ):
            if pong is not None and not pong.done():
                pong.set_result(now())

    async def round(self, n: int) -> tuple[float, float] | None:
        """Round `n`: (ping sent → seen by XMPP, pong sent → seen by Matrix) in seconds,
        or None if either did not arrive in time."""
        state = self.state
        state.clear()
        state.update(n=n, pong=asyncio.get_running_loop().create_future())
        t0 = now()
        try:
            async with asyncio.timeout(STEP_TIMEOUT / 3):
                await self.rm.peer.send_text(self.rm.room_id, f"ping {n}")
                t2 = await state["pong"]
        except TimeoutError:
            return None
        return state["t1"] - t0, t2 - state["t1"]

    def close(self) -> None:
        self.rm.user.on_groupchat, self.rm.peer.on_message = None, None


async def ping_pong(rm: Room, rounds: int, warmup: int, gap: float) -> dict[str, Any]:
    m2x: list[float] = []
    x2m: list[float] = []
    lost = 0
    pinger = PingPong(rm)
    try:
        for n in range(warmup + rounds):
            result = await pinger.round(n)
            if result is None:
                lost += 1
                continue
            if n >= warmup:
                m2x.append(result[0])
                x2m.append(result[1])
            await asyncio.sleep(gap)
    finally:
        pinger.close()
    return {
        "rounds": rounds,
        "pause_between_rounds_s": gap,
        "lost": lost,
        "matrix_to_xmpp": summary_ms(m2x),
        "xmpp_to_matrix": summary_ms(x2m),
    }


def _cap(messages: int) -> float:
    """How long a throughput phase may take in all: down to 2 messages/s."""
    return max(90.0, messages / 2)


def out_of_order(arrivals: list[int], order: dict[int, int]) -> int:
    """How many of `arrivals` came after one that is later in `order` (message → its
    position in the room on the homeserver); unknown messages are skipped."""
    count, highest = 0, -1
    for n in arrivals:
        position = order.get(n)
        if position is None:
            continue
        if position < highest:
            count += 1
        highest = max(highest, position)
    return count


def _numbers(events: list[dict[str, Any]], sender: str, tag: str) -> list[int]:
    pattern = re.compile(rf"^{re.escape(tag)} (\d+)$")
    found = []
    for event in events:
        body = event.get("content", {}).get("body", "")
        if event.get("sender") == sender and (m := pattern.match(body)):
            found.append(int(m.group(1)))
    return found


async def matrix_to_xmpp(rm: Room, plan: Plan, meter: Meter) -> dict[str, Any]:
    tally = Tally("m2x", plan.messages)
    arrivals: list[int] = []
    since = rm.peer.since or ""

    def on_xmpp(room: str, _nick: str, body: str) -> None:
        if _ours(rm, room) and tally.feed(body):
            arrivals.append(int(body.split()[1]))

    rm.user.on_groupchat = on_xmpp
    try:
        with meter:
            tally.start()
            bodies = [f"m2x {n}" for n in range(plan.messages)]
            await rm.peer.send_many(rm.room_id, bodies, plan.send_window)
            sent = now() - tally.started
            await tally.wait(STALL, _cap(plan.messages))
            result = tally.result() | {"send_s": round(sent, 3)} | meter.reading()
    finally:
        rm.user.on_groupchat = None
    # With several requests in flight the homeserver may order them otherwise than
    # numbered: what the gateway must keep is the room's order.
    on_server = _numbers(await rm.peer.timeline(rm.room_id, since), rm.peer.user_id, "m2x")
    order = {n: i for i, n in enumerate(on_server)}
    result["reordered"] = out_of_order(arrivals, order)
    result["reordered_against"] = "the room's order on the homeserver"
    result["sent_in_room_order"] = on_server == sorted(on_server)
    return result


@contextlib.contextmanager
def paused(pids: list[int]) -> Iterator[None]:
    """SIGSTOP the gateway's processes (ours: started by this run) for the block, and
    SIGCONT them whatever happens."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


async def matrix_backlog(rm: Room, plan: Plan, pids: Callable[[], list[int]]) -> dict[str, Any]:
    """The gateway is paused while the peer sends N messages, then resumed: how fast it
    works off a backlog it finds in one sync (what a reconnect or a busy room gives), with
    the homeserver out of the way. Timed from the resume."""
    tally = Tally("backlog", plan.messages)
    arrivals: list[int] = []
    since = rm.peer.since or ""

    def on_xmpp(room: str, _nick: str, body: str) -> None:
        if _ours(rm, room) and tally.feed(body):
            arrivals.append(int(body.split()[1]))

    stopped = pids()
    rm.user.on_groupchat = on_xmpp
    try:
        with paused(stopped):
            started = now()
            bodies = [f"backlog {n}" for n in range(plan.messages)]
            await rm.peer.send_many(rm.room_id, bodies, plan.send_window)
            sent = now() - started
        with Meter(pids) as meter:
            tally.start()
            await tally.wait(STALL, _cap(plan.messages))
            result = tally.result() | {"paused_send_s": round(sent, 3)} | meter.reading()
    finally:
        rm.user.on_groupchat = None
    on_server = _numbers(await rm.peer.timeline(rm.room_id, since), rm.peer.user_id, "backlog")
    result["reordered"] = out_of_order(arrivals, {n: i for i, n in enumerate(on_server)})
    result["reordered_against"] = "the room's order on the homeserver"
    return result


async def xmpp_to_matrix(rm: Room, plan: Plan, meter: Meter) -> dict[str, Any]:
    tally = Tally("x2m", plan.messages)
    since = rm.peer.since or ""
    limited_before = rm.peer.limited_syncs

    def on_matrix(room_id: str, sender: str, body: str) -> None:
        if room_id == rm.room_id and sender == rm.user_mxid:
            tally.feed(body)

    rm.peer.on_message = on_matrix
    try:
        with meter:
            tally.start()
            for n in range(plan.messages):
                rm.user.send_groupchat(rm.jid, f"x2m {n}")
                if n % 50 == 49:
                    await asyncio.sleep(0)  # let slixmpp's writer run
            sent = now() - tally.started
            await tally.wait(STALL, _cap(plan.messages))
            result = tally.result() | {"send_s": round(sent, 3)} | meter.reading()
    finally:
        rm.peer.on_message = None
    # A recount from the room's history, independent of the peer's sync.
    on_server = _numbers(await rm.peer.timeline(rm.room_id, since), rm.user_mxid, "x2m")
    result["on_server"] = {
        "events": len(on_server),
        "distinct": len(set(on_server)),
        "lost": plan.messages - len(set(on_server)),
        "duplicates": len(on_server) - len(set(on_server)),
        "reordered": out_of_order(on_server, {n: n for n in range(plan.messages)}),
    }
    result["peer_limited_syncs"] = rm.peer.limited_syncs - limited_before
    return result


# --- one gateway -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Turn:
    """One gateway's turn in the run: which gateway, and which of its turns (1, 2...).
    Each turn has Matrix accounts, XMPP accounts and a work directory of its own."""

    key: str
    number: int

    @property
    def name(self) -> str:
        return f"{self.key}#{self.number}"

    @property
    def xmpp_prefix(self) -> str:
        return f"t{self.number}{self.key[0]}"


def turn_order(gateways: list[str], rounds: int) -> list[Turn]:
    """A-B, then B-A, then A-B...: neither gateway is always the one measured right
    after the homeserver started (its warm-up) or when the machine has been busiest."""
    turns: list[Turn] = []
    for r in range(rounds):
        for key in gateways if r % 2 == 0 else reversed(gateways):
            turns.append(Turn(key, r + 1))
    return turns


def xmpp_names(turn: Turn, users: int) -> list[str]:
    """The turn's XMPP accounts: its pinger first, then the crowd."""
    return [f"{turn.xmpp_prefix}ping"] + [f"{turn.xmpp_prefix}user{i}" for i in range(users)]


@contextlib.contextmanager
def maybe_profile(
    spy: PySpy | None, gw: GatewayUnderTest, turn: Turn, phase: str
) -> Iterator[None]:
    """Sample the gateway's Python process with py-spy during the block, if asked to."""
    pid = gw.python_pid()
    if spy is None or pid is None:
        yield
        return
    with spy.record(pid, f"{gw.key}{turn.number}-{phase}"):
        yield


class Lab:
    """The servers and accounts shared by both gateways' runs."""

    def __init__(self, synapse: Synapse, xmpp_port: int) -> None:
        self.synapse = synapse
        self.xmpp_port = xmpp_port

    async def account(self, localpart: str) -> MatrixPeer:
        account = await asyncio.to_thread(self.synapse.register_user, localpart, MATRIX_PASSWORD)
        return MatrixPeer(self.synapse.url, account.user_id, account.access_token)


@contextlib.asynccontextmanager
async def live_room(gw: GatewayUnderTest, turn: Turn, lab: Lab) -> AsyncIterator[Room]:
    """`gw` started, its XMPP user logged in and in a room with a Matrix peer (whose sync
    runs); everything stopped on the way out."""
    tag = f"{gw.tag}{turn.number}"
    peer = await lab.account(f"{tag}peer")
    me: MatrixPeer | None = None
    user: XmppUser | None = None
    try:
        me = await lab.account(f"{tag}ping")
        room_id = await peer.create_room(f"Bench {gw.label}")
        await peer.invite(room_id, me.user_id)
        await me.join(room_id)
        gw.start()
        user = XmppUser(f"{xmpp_names(turn, 0)[0]}@{DOMAIN}", PASSWORD)
        await user.start(lab.xmpp_port, STEP_TIMEOUT)
        await log_in(user, gw, me.user_id, STEP_TIMEOUT)
        rm = Room(user, me.user_id, peer, room_id, gw.room_jid(room_id))
        await join_room(user, rm.jid, "pinger", STEP_TIMEOUT)
        await peer.start_sync()
        yield rm
    finally:
        if user is not None:
            await user.stop()
        await asyncio.gather(*(p.close() for p in (peer, me) if p), return_exceptions=True)
        gw.stop()


async def latency_duel(
    gateways: list[tuple[GatewayUnderTest, Turn]], lab: Lab, plan: Plan
) -> dict[str, Any]:
    """Both gateways running at once, each in a room of its own, and their latency rounds
    alternating (A B, then B A, ...): whatever the homeserver and the machine are doing
    at a moment weighs on both alike, which turns one after another cannot give."""
    async with contextlib.AsyncExitStack() as stack:
        pingers: list[tuple[str, PingPong]] = []
        for gw, turn in gateways:
            rm = await stack.enter_async_context(live_room(gw, turn, lab))
            pingers.append((gw.label, PingPong(rm)))
            stack.callback(pingers[-1][1].close)
        for gw, _turn in gateways:
            await quiet(gw.pids)
        samples: dict[str, list[tuple[int, float, float]]] = {key: [] for key, _ in pingers}
        lost = dict.fromkeys(samples, 0)
        for n in range(plan.warmup_pings + plan.pings):
            for key, pinger in pingers if n % 2 == 0 else reversed(pingers):
                result = await pinger.round(n)
                if result is None:
                    lost[key] += 1
                elif n >= plan.warmup_pings:
                    samples[key].append((n, *result))
                await asyncio.sleep(PAUSE)
    out: dict[str, Any] = {
        "rounds": plan.pings,
        "pause_between_rounds_s": PAUSE,
        "order": "alternating, the first gateway swapped every round",
        "gateways": {
            key: {
                "lost": lost[key],
                "matrix_to_xmpp": summary_ms([m for _, m, _ in rows]),
                "xmpp_to_matrix": summary_ms([x for _, _, x in rows]),
            }
            for key, rows in samples.items()
        },
    }
    if len(samples) == 2:
        (a, rows_a), (b, rows_b) = samples.items()
        by_round = {n: (m, x) for n, m, x in rows_b}
        pairs = [(m - by_round[n][0], x - by_round[n][1]) for n, m, x in rows_a if n in by_round]
        out["paired"] = {
            "first": a,
            "second": b,
            "rounds": len(pairs),
            "note": f"{a} minus {b}, round by round; negative: {a} was faster",
        } | {
            way: {
                "median_difference_ms": round(statistics.median(d) * 1000, 3) if d else None,
                "first_faster_in": sum(1 for v in d if v < 0),
            }
            for way, d in (
                ("matrix_to_xmpp", [p[0] for p in pairs]),
                ("xmpp_to_matrix", [p[1] for p in pairs]),
            )
        }
    return out


async def bench_gateway(
    gw: GatewayUnderTest,
    turn: Turn,
    lab: Lab,
    plan: Plan,
    spy: PySpy | None,
    out: dict[str, Any],
    phases: frozenset[str] = frozenset(PHASES),
) -> None:
    """Measure one gateway in one turn, the `phases` asked for (in their fixed order);
    figures land in `out` as soon as they exist."""
    out["settings"] = gw.settings()
    tag = f"{gw.tag}{turn.number}"
    pinger_name, *crowd_names = xmpp_names(turn, plan.users)
    out["loadavg_before"] = loadavg()
    peers: list[MatrixPeer] = []
    users: list[XmppUser] = []
    try:
        # Matrix accounts first (the homeserver's work is not the gateway's).
        peer = await lab.account(f"{tag}peer")
        me = await lab.account(f"{tag}ping")
        crowd = [await lab.account(f"{tag}u{i}") for i in range(plan.users)]
        peers += [peer, me, *crowd]
        room_id = await peer.create_room(f"Bench {gw.label}")
        await peer.invite(room_id, me.user_id)
        await me.join(room_id)
        busy_room = await peer.create_room(f"Crowd {gw.label}", public=True)
        for p in crowd:
            await p.join(busy_room)
        for n in range(20):
            await peer.send_text(busy_room, f"crowd history {n}")

        started = now()
        gw.start()
        out["start_s"] = round(now() - started, 3)
        log.info("%s started in %.1f s", gw.label, out["start_s"])
        await asyncio.sleep(plan.settle)
        pids = gw.pids()
        out["processes"] = len(pids)
        out["rss_idle_kib"] = rss_kib(pids)
        out["rss_idle_by_process"] = rss_by_process(pids)

        pinger = XmppUser(f"{pinger_name}@{DOMAIN}", PASSWORD)
        users.append(pinger)
        await pinger.start(lab.xmpp_port, STEP_TIMEOUT)
        out["login_s"] = round(await log_in(pinger, gw, me.user_id, STEP_TIMEOUT), 3)
        rm = Room(pinger, me.user_id, peer, room_id, gw.room_jid(room_id))
        out["join_s"] = round(await join_room(pinger, rm.jid, "pinger", STEP_TIMEOUT), 3)
        await peer.start_sync()
        out["quiet_after_login_s"] = await quiet(gw.pids)

        if "latency" in phases:
            log.info("%s: %d ping-pongs", gw.label, plan.pings)
            with maybe_profile(spy, gw, turn, "latency"):
                out["latency"] = await ping_pong(rm, plan.pings, plan.warmup_pings, PAUSE)
        if "matrix_to_xmpp" in phases:
            out["quiet_before_matrix_to_xmpp_s"] = await quiet(gw.pids)
            log.info("%s: %d messages Matrix -> XMPP", gw.label, plan.messages)
            with maybe_profile(spy, gw, turn, "matrix_to_xmpp"):
                out["matrix_to_xmpp"] = await matrix_to_xmpp(rm, plan, Meter(gw.pids))
        if "matrix_backlog" in phases:
            out["quiet_before_backlog_s"] = await quiet(gw.pids)
            log.info("%s: a backlog of %d messages Matrix -> XMPP", gw.label, plan.messages)
            with maybe_profile(spy, gw, turn, "matrix_backlog"):
                out["matrix_backlog"] = await matrix_backlog(rm, plan, gw.pids)
        if "xmpp_to_matrix" in phases:
            out["quiet_before_xmpp_to_matrix_s"] = await quiet(gw.pids)
            log.info("%s: %d messages XMPP -> Matrix", gw.label, plan.messages)
            homeserver = Meter(lambda: [pid] if (pid := lab.synapse.pid) else [])
            with maybe_profile(spy, gw, turn, "xmpp_to_matrix"), homeserver:
                out["xmpp_to_matrix"] = await xmpp_to_matrix(rm, plan, Meter(gw.pids))
                # Synapse's share: on 2 cores, what the gateway makes it do slows it down.
                out["xmpp_to_matrix"]["homeserver_cpu_s"] = homeserver.reading()["gateway_cpu_s"]
        out["quiet_after_traffic_s"] = await quiet(gw.pids)
        out["rss_after_traffic_kib"] = rss_kib(gw.pids())
        if "logins" not in phases:
            return

        log.info("%s: %d more users log in to Matrix", gw.label, plan.users)
        crowd_users = [XmppUser(f"{name}@{DOMAIN}", PASSWORD) for name in crowd_names]
        users += crowd_users
        logins = await bounded_gather(
            10, [u.start(lab.xmpp_port, STEP_TIMEOUT) for u in crowd_users]
        )
        if error := next((r for r in logins if isinstance(r, BaseException)), None):
            raise BenchError(f"an XMPP user could not log in: {error}")
        with maybe_profile(spy, gw, turn, "logins"), Meter(gw.pids) as meter:
            started = now()
            results = await bounded_gather(
                5,
                [
                    log_in(u, gw, p.user_id, STEP_TIMEOUT * 3)
                    for u, p in zip(crowd_users, crowd, strict=True)
                ],
            )
            per_user = [r for r in results if isinstance(r, float)]
            errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
            out["logins"] = {
                "users": plan.users,
                "seconds": round(now() - started, 3),
                "failed_users": len(errors),
                "errors": errors[:5],
                "per_user": summary_ms(per_user),
            } | meter.reading()
        out["quiet_after_logins_s"] = await quiet(gw.pids)
        await asyncio.sleep(plan.settle)
        pids = gw.pids()
        out["rss_loaded_kib"] = rss_kib(pids)
        out["rss_loaded_by_process"] = rss_by_process(pids)
        out["archive_rows"] = gw.archive_rows()
    finally:
        await asyncio.gather(*(u.stop() for u in users), return_exceptions=True)
        await asyncio.gather(*(p.close() for p in peers), return_exceptions=True)
        gw.stop()
        out["loadavg_after"] = loadavg()


async def run(plan: Plan, args: argparse.Namespace, report: dict[str, Any]) -> None:
    python = None
    if "matridge" in args.gateways:
        python = await asyncio.to_thread(ensure_venv, args.matridge_version, args.matridge_python)
        report["versions"]["matridge_venv"] = await asyncio.to_thread(venv_versions, python)
    async with asyncio.timeout(plan.hard_timeout * args.rounds):
        await _run(plan, args, report, python)


async def _run(
    plan: Plan, args: argparse.Namespace, report: dict[str, Any], python: Path | None
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="passerelle-bench-matrix-", dir=args.workdir_base))
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
                    ComponentSpec(MatridgeUnderTest.jid, MatridgeUnderTest.secret),
                ],
                log_level="warn",
            )
            stack.enter_context(prosody)
            synapse = stack.enter_context(Synapse(workdir / "synapse"))
            turns = turn_order(args.gateways, args.rounds)
            report["turns"] = [t.name for t in turns]
            duel = [Turn(key, 0) for key in args.gateways]  # accounts of their own
            await register_accounts(
                prosody,
                [name for t in turns for name in xmpp_names(t, plan.users)]
                + [xmpp_names(t, 0)[0] for t in duel],
            )
            lab = Lab(synapse, prosody.c2s_port)
            makers: dict[str, Callable[[Path], GatewayUnderTest]] = {
                "passerelle": lambda d: PasserelleUnderTest(
                    d, prosody, synapse.url, args.passerelle_log_level
                ),
                "matridge": lambda d: MatridgeUnderTest(
                    d, prosody, synapse.url, python or Path(sys.executable)
                ),
            }
            if "latency_duel" in args.phases and len(duel) == 2:
                log.info("latency duel: %d rounds each, alternating", plan.pings)
                try:
                    report["latency_duel"] = await latency_duel(
                        [(makers[t.key](workdir / f"{t.key}-duel"), t) for t in duel], lab, plan
                    )
                except Exception as e:
                    log.exception("the latency duel failed")
                    report["latency_duel"] = {"error": f"{type(e).__name__}: {e}"}
            for turn in turns:
                gw = makers[turn.key](workdir / f"{turn.key}-{turn.number}")
                entry: dict[str, Any] = {"label": gw.label, "turn": turn.number}
                report["gateways"][turn.name] = entry
                try:
                    await bench_gateway(gw, turn, lab, plan, spy, entry, args.phases)
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
    counted = phase.get("on_server", phase)
    extra = [f"{counted[k]} {k}" for k in ("lost", "duplicates", "reordered") if counted.get(k)]
    return text + (f" ({', '.join(extra)})" if extra else "")


def _latency(latency: dict[str, Any] | None, way: str) -> str:
    if not latency or latency[way]["p50_ms"] is None:
        return "—"
    s = latency[way]
    text = f"{s['p50_ms']:.1f} / {s['p99_ms']:.1f}"
    return text + (f" ({latency['lost']} lost)" if latency.get("lost") else "")


def _logins(logins: dict[str, Any] | None) -> str:
    if not logins:
        return "—"
    text = f"{logins['seconds']:.1f}"
    if logins["failed_users"]:
        text += f" ({logins['failed_users']} of {logins['users']} failed)"
    return text


def markdown_table(report: dict[str, Any]) -> str:
    gws = report["gateways"]
    keys = list(gws)
    plan = report["plan"]
    n, u = plan["messages"], plan["users"]
    versions = report["versions"]

    def head(name: str) -> str:
        key, _, number = name.partition("#")
        text = f"{gws[name]['label']} {versions.get(key) or ''}".strip()
        return f"{text}, turn {number}" if number else text

    rows: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        (f"Matrix→XMPP throughput, {n} msgs, msg/s", lambda g: _rate(g.get("matrix_to_xmpp"))),
        (
            f"Matrix→XMPP, a backlog of {n} msgs found on resume, msg/s",
            lambda g: _rate(g.get("matrix_backlog")),
        ),
        (f"XMPP→Matrix throughput, {n} msgs, msg/s", lambda g: _rate(g.get("xmpp_to_matrix"))),
        (
            f"Matrix→XMPP latency p50 / p99, ms ({plan['pings']} pings)",
            lambda g: _latency(g.get("latency"), "matrix_to_xmpp"),
        ),
        (
            f"XMPP→Matrix latency p50 / p99, ms ({plan['pings']} pongs)",
            lambda g: _latency(g.get("latency"), "xmpp_to_matrix"),
        ),
        ("RSS idle after start, MiB", lambda g: _mib(g.get("rss_idle_kib"))),
        (f"RSS with {u + 1} users logged in, MiB", lambda g: _mib(g.get("rss_loaded_kib"))),
        (f"time for {u} users to log in (5 at a time), s", lambda g: _logins(g.get("logins"))),
        ("start-up, s", lambda g: f"{g['start_s']:.1f}" if "start_s" in g else "—"),
        (
            "first login after start-up, s",
            lambda g: f"{g['login_s']:.2f}" if "login_s" in g else "—",
        ),
        (
            "gateway CPU s during Matrix→XMPP / XMPP→Matrix",
            lambda g: " / ".join(
                f"{g[p]['gateway_cpu_s']:.1f}" if g.get(p) else "—"
                for p in ("matrix_to_xmpp", "xmpp_to_matrix")
            ),
        ),
        (
            "Synapse CPU s during XMPP→Matrix",
            lambda g: (
                f"{x['homeserver_cpu_s']:.1f}"
                if (x := g.get("xmpp_to_matrix")) and "homeserver_cpu_s" in x
                else "—"
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
    lines += duel_table(report.get("latency_duel"))
    machine = report["machine"]
    lines.append(
        f"\n{report['date']}, {machine['nproc']} cores ({machine['cpu_model']}), load average "
        f"{machine['loadavg_start'][0]:.2f} at start, "
        f"{(machine.get('loadavg_end') or [float('nan')])[0]:.2f} at end"
        + (" — profiled with py-spy, figures perturbed" if report.get("profiled") else "")
    )
    return "\n".join(lines)


def duel_table(duel: dict[str, Any] | None) -> list[str]:
    """The latency duel's lines under the main table (none if it was not run)."""
    if not duel:
        return []
    if "error" in duel:
        return [f"\nThe latency duel failed: {duel['error']}"]
    keys = list(duel["gateways"])
    lines = [
        f"\nLatency with both gateways at once, rounds alternating ({duel['rounds']} each):\n",
        "| figure | " + " | ".join(keys) + " |",
        "|---|" + "---:|" * len(keys),
    ]
    for way, title in (("matrix_to_xmpp", "Matrix→XMPP"), ("xmpp_to_matrix", "XMPP→Matrix")):
        cells = [_latency(duel["gateways"][k], way) for k in keys]
        lines.append(f"| {title} latency p50 / p99, ms | " + " | ".join(cells) + " |")
    if paired := duel.get("paired"):
        for way, title in (("matrix_to_xmpp", "Matrix→XMPP"), ("xmpp_to_matrix", "XMPP→Matrix")):
            d = paired[way]
            lines.append(
                f"\n{title}: {paired['first']} minus {paired['second']}, round by round: "
                f"median {d['median_difference_ms']} ms; {paired['first']} faster in "
                f"{d['first_faster_in']} of {paired['rounds']} rounds"
            )
    return lines


def source_state() -> dict[str, Any]:
    """The commit measured, and the files that differed from it (other people's work in
    progress in a shared tree is measured too)."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
                cwd=Path(__file__).resolve().parent.parent,
            ).stdout.rstrip("\n")
        except (OSError, subprocess.SubprocessError) as e:
            return f"unknown ({e})"

    changed = git(
        "status", "--porcelain", "--untracked-files=all", "--", "gateway", "legacy_plugins"
    )
    return {"commit": git("rev-parse", "HEAD"), "uncommitted": changed.splitlines()}


def _phases(text: str) -> frozenset[str]:
    chosen = frozenset(p.strip() for p in text.split(",") if p.strip())
    if unknown := chosen - set(PHASES):
        raise argparse.ArgumentTypeError(
            f"unknown phase(s) {', '.join(sorted(unknown))}; choose from {', '.join(PHASES)}"
        )
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.matrix", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("bench/results/matrix.json"))
    parser.add_argument("--quick", action="store_true", help="a smoke run (a few minutes)")
    parser.add_argument(
        "--gateways",
        type=lambda s: s.split(","),
        default=["passerelle", "matridge"],
        help="comma-separated, in order: passerelle,matridge",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="turns of each gateway, the order reversed each round (2: A B B A)",
    )
    parser.add_argument("--messages", type=int, help="override the plan's message count")
    parser.add_argument("--pings", type=int, help="override the plan's ping-pong count")
    parser.add_argument("--users", type=int, help="override the plan's user count")
    parser.add_argument("--send-window", type=int, help="Matrix→XMPP requests in flight")
    parser.add_argument(
        "--phases",
        type=_phases,
        default=frozenset(PHASES),
        help=f"comma-separated, run in their fixed order (default all: {','.join(PHASES)}); "
        "e.g. xmpp_to_matrix,logins for a memory A/B",
    )
    parser.add_argument("--matridge-version", default=MATRIDGE_VERSION)
    parser.add_argument(
        "--matridge-python",
        help="interpreter (path or version) for matridge's venv; default: what it needs",
    )
    parser.add_argument(
        "--passerelle-log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    parser.add_argument("--py-spy", type=Path, help="py-spy binary: profile each gateway")
    parser.add_argument(
        "--workdir-base",
        type=Path,
        default=TMPFS if TMPFS.is_dir() else None,
        help=f"where the servers' data and databases go (default: {TMPFS}, else TMPDIR)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if unknown := set(args.gateways) - {"passerelle", "matridge"}:
        parser.error(f"unknown gateway(s) {', '.join(sorted(unknown))}")
    if len(set(args.gateways)) != len(args.gateways) or args.rounds < 1:
        parser.error("name each gateway once; --rounds is at least 1")

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    for noisy in ("slixmpp", "gateway.localservers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    plan = QUICK if args.quick else FULL
    plan = replace(
        plan,
        messages=args.messages or plan.messages,
        pings=args.pings or plan.pings,
        users=args.users or plan.users,
        send_window=args.send_window or plan.send_window,
    )
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "mode": "quick" if args.quick else "full",
        "plan": asdict(plan),
        "phases": [p for p in PHASES if p in args.phases],
        "profiled": bool(args.py_spy),
        "source": source_state(),
        "machine": machine_info() | {"loadavg_start": loadavg()},
        "versions": {
            "passerelle": py_version("passerelle"),
            "matridge": args.matridge_version,
            "slidge": py_version("slidge"),
            "slixmpp": py_version("slixmpp"),
            "matrix-nio": py_version("matrix-nio"),
            "synapse": py_version("matrix-synapse"),
            "prosody": deb_version("prosody"),
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
        limit = plan.hard_timeout * args.rounds
        log.error("hard timeout: the run took more than %g s", limit)
        report["error"] = f"hard timeout after {limit:g} s"
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
