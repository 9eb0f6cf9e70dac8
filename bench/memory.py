"""Idle resident memory of each Passerelle process, with nobody registered.

Starts a throw-away Prosody on loopback, runs ``passerelle run`` with the chosen networks
(none of them needs its remote server while nobody is registered), waits until every
network has started, lets it idle, then reads ``/proc/PID/status`` (VmRSS) and
``/proc/PID/smaps_rollup`` (Pss, anonymous memory) of the supervisor and each child
(and their own children, e.g. a Delta Chat core). Prints a table; ``--out`` keeps JSON.

    uv run python -m bench.memory                       # irc, matrix, email, each alone
    uv run python -m bench.memory --networks irc --rounds 3

Each network runs in its own ``passerelle run`` (supervisor + one child), one after the
other, so a figure is the same as in ``bench/irc.py``'s "RSS idle". ``--together`` runs
them all under one supervisor instead.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import machine_info, process_tree
from gateway.localservers.prosody import ComponentSpec, Prosody

SECTIONS = {
    "echo": "[networks.echo]\njid = 'echo.localhost'\nsecret = 'echo-secret'\n",
    "irc": (
        "[networks.irc]\njid = 'irc.localhost'\nsecret = 'irc-secret'\n"
        "[networks.irc.servers.local]\nhost = '127.0.0.1'\nport = 6667\ntls = false\n"
    ),
    "matrix": "[networks.matrix]\njid = 'matrix.localhost'\nsecret = 'matrix-secret'\n",
    "email": "[networks.email]\njid = 'email.localhost'\nsecret = 'email-secret'\n",
}
START_TIMEOUT = 120.0
STARTED = "Slidge has successfully started"


def _kib(path: Path, key: str) -> int:
    """The number after ``key:`` in a /proc file (KiB for sizes), 0 if it is gone."""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def process_memory(pid: int) -> dict[str, Any]:
    """VmRSS, Pss and anonymous memory (KiB) and a short name of one process."""
    proc = Path(f"/proc/{pid}")
    try:
        argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
    except OSError:
        argv = []
    if "--network" in argv:
        name = "child " + argv[argv.index("--network") + 1]
    elif "gateway.supervisor" in argv:
        name = "supervisor"
    else:
        name = Path(argv[0]).name if argv else "?"
    return {
        "pid": pid,
        "process": name,
        "rss_kib": _kib(proc / "status", "VmRSS"),
        "pss_kib": _kib(proc / "smaps_rollup", "Pss"),
        "anon_kib": _kib(proc / "smaps_rollup", "Anonymous"),
        "threads": _kib(proc / "status", "Threads"),
    }


def measure(
    prosody: Prosody, networks: list[str], workdir: Path, idle: float
) -> list[dict[str, Any]]:
    """Start one ``passerelle run`` with ``networks``, idle, and return each process's memory."""
    workdir.mkdir(parents=True)
    config = workdir / "gateway.toml"
    config.write_text(
        f"data_dir = './data'\n[xmpp]\nhost = '127.0.0.1'\nport = {prosody.component_port}\n"
        + "".join(SECTIONS[n] for n in networks),
        encoding="utf-8",
    )
    log = (workdir / "passerelle.log").open("w+", encoding="utf-8")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "run", "-c", str(config)],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            text = (workdir / "passerelle.log").read_text(encoding="utf-8", errors="replace")
            if all(f"{n} | " in text and STARTED in text.split(f"{n} | ", 1)[1] for n in networks):
                if sum(STARTED in line for line in text.splitlines()) >= len(networks):
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"Passerelle did not start {networks}:\n{text[-3000:]}")
            time.sleep(0.5)
        time.sleep(idle)
        return [process_memory(pid) for pid in process_tree(proc.pid)]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.memory", description=__doc__)
    parser.add_argument("--networks", default="irc,matrix,email")
    parser.add_argument("--together", action="store_true", help="one supervisor for all")
    parser.add_argument("--rounds", type=int, default=1, help="runs per network (median)")
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before reading")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    networks = [n.strip() for n in args.networks.split(",") if n.strip()]
    groups = [networks] if args.together else [[n] for n in networks]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="passerelle-mem-") as tmp:
        base = Path(tmp)
        components = [ComponentSpec(f"{n}.localhost", f"{n}-secret") for n in SECTIONS]
        with Prosody(base / "prosody", domain="localhost", components=components) as prosody:
            for group in groups:
                for round_ in range(args.rounds):
                    rows = measure(prosody, group, base / f"{'-'.join(group)}-{round_}", args.idle)
                    results.append({"networks": group, "round": round_, "processes": rows})
    print(
        f"{'networks':<20} {'process':<22} {'RSS MiB':>8} {'PSS MiB':>8} {'anon MiB':>8}"
        f" {'threads':>7}"
    )
    for group in groups:
        runs = [r["processes"] for r in results if r["networks"] == group]
        names = sorted(
            {p["process"] for run in runs for p in run}, key=lambda n: (n != "supervisor", n)
        )
        for name in [*names, "total"]:

            def med(key: str, name: str = name, runs: list[Any] = runs) -> float:
                values = [
                    sum(p[key] for p in run if name in ("total", p["process"])) for run in runs
                ]
                return float(statistics.median(values)) / 1024

            print(
                f"{','.join(group):<20} {name:<22} {med('rss_kib'):8.1f} {med('pss_kib'):8.1f}"
                f" {med('anon_kib'):8.1f} {med('threads') * 1024:7.0f}"
            )
    if args.out:
        args.out.write_text(
            json.dumps({"machine": machine_info(), "idle_s": args.idle, "runs": results}, indent=2),
            encoding="utf-8",
        )


if __name__ == "__main__":
    main()
