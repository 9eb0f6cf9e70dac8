"""What every benchmark here needs: lean clients on both sides, counters, and /proc readings.

`XmppUser` is a slixmpp client that hands every message and presence to callbacks as soon
as it is parsed (no queue to scan), joins rooms, registers with a gateway (XEP-0077) and
fills in ad-hoc forms. `IrcPeer` is a raw IRC client on an asyncio stream that does the
same with lines. `Tally` counts numbered messages (``"tag 17"``): losses, duplicates,
reordering and timing. `Meter` reads, around one phase, the CPU time of the gateway's
processes, of this process, and of the whole machine (from ``/proc``), so a figure can be
read next to how busy everything was. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import math
import os
import platform
import re
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import slixmpp
from slixmpp import JID
from slixmpp.stanza import Message, Presence
from slixmpp.xmlstream import ET

MUC_NS = "http://jabber.org/protocol/muc"
MUC_USER_NS = "http://jabber.org/protocol/muc#user"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

now = time.perf_counter


# --- statistics ------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The `q`-th percentile (0-100) by the nearest-rank method; None without values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, Any]:
    """Count, p50, p90, p99, max and mean of durations, in milliseconds."""

    def ms(value: float | None) -> float | None:
        return None if value is None else round(value * 1000, 3)

    return {
        "count": len(seconds),
        "p50_ms": ms(percentile(seconds, 50)),
        "p90_ms": ms(percentile(seconds, 90)),
        "p99_ms": ms(percentile(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(sum(seconds) / len(seconds) if seconds else None),
    }


class Tally:
    """Counts `total` numbered messages ``f"{tag} {n}"``, 0 <= n < total, as they arrive."""

    def __init__(self, tag: str, total: int) -> None:
        self.tag = tag
        self.total = total
        self._pattern = re.compile(rf"^{re.escape(tag)} (\d+)$")
        self.seen: set[int] = set()
        self.duplicates = 0
        self.reordered = 0
        self.foreign = 0
        self._highest = -1
        self.started = now()
        self.first_at: float | None = None
        self._arrivals: list[float] = []
        self.last_at: float | None = None
        self.complete = asyncio.Event()

    def start(self) -> None:
        self.started = now()

    def feed(self, text: str) -> bool:
        """Count `text` if it is one of ours; return whether it was."""
        match = self._pattern.match(text)
        if match is None:
            return False
        n = int(match.group(1))
        if not 0 <= n < self.total:
            self.foreign += 1
            return True
        if n in self.seen:
            self.duplicates += 1
        else:
            self.seen.add(n)
            self._arrivals.append(now() - self.started)
            if n < self._highest:
                self.reordered += 1
        self._highest = max(self._highest, n)
        self.last_at = now()
        if self.first_at is None:
            self.first_at = self.last_at
        if len(self.seen) == self.total:
            self.complete.set()
        return True

    async def wait(self, stall: float, cap: float) -> bool:
        """Wait until every message arrived, or nothing new came for `stall` seconds
        after the first one, or `cap` seconds passed since `start()`; return whether all
        arrived. (A gateway may hold everything back until it has read the whole burst,
        so the first message may take long: only the cap applies before it.)"""
        deadline = self.started + cap
        while not self.complete.is_set():
            before = len(self.seen) + self.duplicates
            left = deadline - now()
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(stall, left)):
                    await self.complete.wait()
            stalled = len(self.seen) + self.duplicates == before
            if not self.complete.is_set() and stalled and self.first_at is not None:
                break
        return self.complete.is_set()

    def result(self) -> dict[str, Any]:
        received = len(self.seen)
        elapsed = (self.last_at - self.started) if self.last_at is not None else None
        return {
            "messages": self.total,
            "received": received,
            "lost": self.total - received,
            "duplicates": self.duplicates,
            "reordered": self.reordered,
            "seconds": None if elapsed is None else round(elapsed, 3),
            "first_after_s": None
            if self.first_at is None
            else round(self.first_at - self.started, 3),
            "quartiles_after_s": [
                None if (q := percentile(self._arrivals, p)) is None else round(q, 3)
                for p in (25, 50, 75)
            ],
            "msg_per_s": round(received / elapsed, 1) if elapsed else None,
        }


# --- processes, machine ----------------------------------------------------------------


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants that are alive now."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def rss_kib(pids: Iterable[int]) -> int:
    """Sum of VmRSS (resident memory, KiB) of `pids`; processes that vanished count 0."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
    return total


def rss_by_process(pids: Iterable[int]) -> list[dict[str, Any]]:
    """Each process's command line (shortened) and VmRSS in KiB."""
    rows = []
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        command = " ".join(a.decode(errors="replace") for a in argv if a)
        rows.append({"pid": pid, "command": command[:120], "rss_kib": rss_kib([pid])})
    return rows


def cpu_seconds(pids: Iterable[int]) -> float:
    """User + system CPU time consumed so far by `pids` (not their dead children)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLOCK_TICKS


def host_cpu() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])
    return total - idle, total


def loadavg() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


@dataclass
class Meter:
    """CPU used during one phase by the gateway (`pids()`), by this benchmark, and by the
    machine as a whole (all cores: 100 % means every core busy)."""

    pids: Callable[[], list[int]]
    _gateway: float = 0.0
    _bench: float = 0.0
    _host: tuple[float, float] = (0.0, 0.0)
    _wall: float = 0.0

    def __enter__(self) -> Meter:
        self._gateway = cpu_seconds(self.pids())
        self._bench = time.process_time()
        self._host = host_cpu()
        self._wall = now()
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def reading(self) -> dict[str, float]:
        busy, total = host_cpu()
        wall = now() - self._wall
        return {
            "wall_s": round(wall, 3),
            "gateway_cpu_s": round(cpu_seconds(self.pids()) - self._gateway, 3),
            "bench_cpu_s": round(time.process_time() - self._bench, 3),
            "host_busy_pct": round(
                100 * (busy - self._host[0]) / max(1.0, total - self._host[1]), 1
            ),
        }


def machine_info() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_total_mib": mem_kib // 1024,
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def deb_version(package: str) -> str | None:
    """The installed version of a Debian package, or None."""
    try:
        result = subprocess.run(
            ["dpkg-query", "-W", "-f", "${Version}", package],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def py_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


# --- XMPP side -------------------------------------------------------------------------


class BenchError(RuntimeError):
    """Something the benchmark waits for did not happen (an error answer, a timeout)."""


def muc_codes(pres: Presence) -> set[int]:
    x = pres.xml.find(f"{{{MUC_USER_NS}}}x")
    if x is None:
        return set()
    return {int(s.get("code", "0")) for s in x.findall(f"{{{MUC_USER_NS}}}status")}


@dataclass
class _Join:
    nick: str
    done: asyncio.Future[Presence]
    occupants: int = 0


class XmppUser(slixmpp.ClientXMPP):
    """One XMPP account, logged in to the lab's Prosody without TLS."""

    def __init__(self, jid: str, password: str) -> None:
        super().__init__(jid, password)
        self.enable_direct_tls = False
        self.enable_starttls = False
        self.enable_plaintext = True
        self.plugin["feature_mechanisms"].unencrypted_scram = True
        self.plugin["feature_mechanisms"].unencrypted_plain = True
        for plugin in ("xep_0004", "xep_0030", "xep_0050", "xep_0077"):
            self.register_plugin(plugin)
        self.on_groupchat: Callable[[str, str, str], None] | None = None
        """Called with (room, nick, body) for every groupchat message with a body."""
        self._joins: dict[str, _Join] = {}
        self.add_event_handler("message", self._on_message)
        self.add_event_handler("presence", self._on_presence)
        self.add_event_handler("session_start", self._on_start)
        self._started: asyncio.Future[None] = asyncio.get_event_loop().create_future()

    def _on_message(self, msg: Message) -> None:
        if msg["type"] == "groupchat" and self.on_groupchat is not None:
            sender = msg["from"]
            self.on_groupchat(sender.bare, sender.resource, msg["body"])

    def _on_presence(self, pres: Presence) -> None:
        sender = pres["from"]
        join = self._joins.get(sender.bare)
        if join is None or join.done.done():
            return
        if pres["type"] == "error":
            join.done.set_result(pres)
        elif 110 in muc_codes(pres) or (sender.resource == join.nick and "muc" in pres):
            join.done.set_result(pres)
        elif pres["type"] != "unavailable":
            join.occupants += 1

    async def _on_start(self, _event: object) -> None:
        await self.get_roster()
        self.send_presence()
        if not self._started.done():
            self._started.set_result(None)

    async def start(self, port: int, timeout: float) -> None:
        self.connect("127.0.0.1", port)
        async with asyncio.timeout(timeout):
            await self._started

    async def stop(self) -> None:
        self.disconnect()
        try:
            async with asyncio.timeout(5):
                await self.disconnected
        except TimeoutError:
            self.abort()
        for task in (self._run_out_filters, self._current_connection_attempt):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def join(self, room: str, nick: str, timeout: float) -> float:
        """Join `room` as `nick` without history; return the seconds until our own
        presence came back. Raises `BenchError` if the room refused us."""
        loop = asyncio.get_running_loop()
        join = _Join(nick, loop.create_future())
        self._joins[JID(room).bare] = join
        pres = self.make_presence(pto=f"{room}/{nick}")
        x = ET.Element(f"{{{MUC_NS}}}x")
        ET.SubElement(x, f"{{{MUC_NS}}}history", {"maxstanzas": "0"})
        pres.append(x)
        started = now()
        pres.send()
        try:
            async with asyncio.timeout(timeout):
                answer = await join.done
        except TimeoutError:
            raise BenchError(
                f"{self.boundjid.bare}: no answer joining {room} in {timeout:g} s"
            ) from None
        finally:
            self._joins.pop(JID(room).bare, None)
        if answer["type"] == "error":
            raise BenchError(f"{self.boundjid.bare}: {room} refused us: {answer['error']}")
        return now() - started

    def send_groupchat(self, room: str, body: str) -> None:
        self.make_message(mto=room, mbody=body, mtype="groupchat").send()

    async def register(self, gateway: str, timeout: float, **fields: str) -> None:
        """Register with `gateway` (XEP-0077 with a data form, as Gajim does)."""
        forms: Any = self.plugin["xep_0004"]
        registration: Any = self.plugin["xep_0077"]
        await registration.get_registration(jid=gateway, timeout=timeout)
        submit = forms.make_form(ftype="submit")
        submit.add_field("FORM_TYPE", value="jabber:iq:register", ftype="hidden")
        for var, value in fields.items():
            submit.add_field(var, value=value)
        iq: Any = self.make_iq_set(ito=gateway)
        iq["register"].append(submit)
        await iq.send(timeout=timeout)

    async def run_command(
        self, jid: str, node: str, timeout: float, **fields: str | list[str]
    ) -> None:
        """Execute ad-hoc command `node` on `jid`, with `fields` changed from the form's
        defaults, through to completion."""
        forms: Any = self.plugin["xep_0004"]
        commands: Any = self.plugin["xep_0050"]
        result = await commands.send_command(jid, node, timeout=timeout)
        for _ in range(5):
            command = result["command"]
            if command["status"] != "executing":
                return
            submit = forms.make_form(ftype="submit")
            for var, form_field in command["form"].get_fields().items():
                if form_field["type"] == "fixed" or not var:
                    continue
                value = fields.get(var, form_field["value"])
                submit.add_field(var, ftype=form_field["type"], value=value)
            iq: Any = self.make_iq_set(ito=jid)
            iq["command"]["node"] = node
            iq["command"]["sessionid"] = command["sessionid"]
            iq["command"]["action"] = "complete" if "complete" in command["actions"] else "next"
            iq["command"].append(submit)
            result = await iq.send(timeout=timeout)
        raise BenchError(f"ad-hoc command {node} on {jid} did not complete in 5 steps")


# --- IRC side --------------------------------------------------------------------------

PRIVMSG = re.compile(r"^:(?P<nick>[^!\s]+)!\S+ PRIVMSG (?P<target>\S+) :(?P<text>.*)$")


@dataclass
class _Wait:
    pattern: re.Pattern[str]
    done: asyncio.Future[re.Match[str]]


@dataclass
class IrcPeer:
    """A person on IRC speaking raw lines to the lab's server."""

    nick: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    on_privmsg: Callable[[str, str, str], None] | None = None
    """Called with (nick, target, text) for every PRIVMSG received."""
    _waits: list[_Wait] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, port: int, nick: str, timeout: float) -> IrcPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(nick, reader, writer)
        peer._task = asyncio.create_task(peer._read(), name=f"irc-peer-{nick}")
        welcome = peer.expect(rf"^:\S+ 001 {re.escape(nick)} ")
        peer.send(f"NICK {nick}", f"USER {nick.lower()} 0 * :{nick} (benchmark)")
        await peer.wait(welcome, timeout)
        return peer

    async def _read(self) -> None:
        while line := await self.reader.readline():
            text = line.decode("utf-8", "replace").rstrip("\r\n")
            if text.startswith("PING "):
                self.writer.write(f"PONG {text[5:]}\r\n".encode())
                continue
            if self.on_privmsg is not None and (m := PRIVMSG.match(text)):
                self.on_privmsg(m["nick"], m["target"], m["text"])
            for wait in list(self._waits):
                if not wait.done.done() and (match := wait.pattern.search(text)):
                    wait.done.set_result(match)
                    self._waits.remove(wait)

    def expect(self, pattern: str) -> _Wait:
        """Start waiting for a line matching `pattern` (before sending what causes it)."""
        wait = _Wait(re.compile(pattern), asyncio.get_running_loop().create_future())
        self._waits.append(wait)
        return wait

    async def wait(self, wait: _Wait, timeout: float) -> re.Match[str]:
        try:
            async with asyncio.timeout(timeout):
                return await wait.done
        except TimeoutError:
            raise BenchError(
                f"IRC peer {self.nick} saw no line matching {wait.pattern.pattern!r} "
                f"within {timeout:g} s"
            ) from None
        finally:
            if wait in self._waits:
                self._waits.remove(wait)

    def send(self, *lines: str) -> None:
        for line in lines:
            self.writer.write(line.encode() + b"\r\n")

    async def join(self, channel: str, timeout: float) -> None:
        done = self.expect(rf" 366 {re.escape(self.nick)} {re.escape(channel)} ")
        self.send(f"JOIN {channel}")
        await self.wait(done, timeout)

    async def drain(self) -> None:
        await self.writer.drain()

    async def close(self) -> None:
        with contextlib.suppress(OSError):
            self.send("QUIT :benchmark done")
            await self.writer.drain()
        self.writer.close()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await self._task
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
