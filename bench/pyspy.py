"""Where a Python gateway spends its time: py-spy samples taken during a benchmark phase.

py-spy is not a dependency of the project: install it into a throw-away environment
(``uv venv /tmp/pyspy && uv pip install --python /tmp/pyspy/bin/python py-spy``) and pass
``--py-spy /tmp/pyspy/bin/py-spy`` to ``bench.irc``. `PySpy.record` samples one process
(the IRC network's child) for the length of a phase, with idle samples included, into
py-spy's "raw" format (one collapsed stack and its count per line). `summarize` reads
such a file: how busy the main thread's event loop was (samples not waiting in the
selector), the functions with the most samples of their own, and the share of busy
samples spent inside a few areas (SQLAlchemy, logging, XML, …) at any depth. Run
``python -m bench.pyspy FILE...`` to print the summaries.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

AREAS: dict[str, str] = {
    "SQL (sqlalchemy + sqlite3)": r"\((?:sqlalchemy|sqlite3)/",
    "slidge (minus its entry point)": r"\(slidge/(?!main\.py)",
    "Passerelle IRC plugin": r"\(legacy_plugins/irc/",
    "Passerelle core (minus its entry point)": r"\(gateway/(?!child\.py)",
    "XML in: parse + stream handlers": r"^XMLStream\.data_received ",
    "XML out: serialize": r"\(slixmpp/xmlstream/tostring",
    "stanza objects (stanzabase)": r"\(slixmpp/xmlstream/stanzabase",
    "logging": r"\(logging/",
    "asyncio (minus the loop itself)": r"\(asyncio/(?!base_events|events)",
}
"""Areas whose share of busy samples is reported: a sample counts for an area if any of
its frames matches the pattern."""

_IDLE_LEAF = re.compile(r"select \(selectors\.py|\.poll \(|\.select \(")
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_LINENO = re.compile(r":\d+\)$")


class PySpy:
    """Runs ``py-spy record`` against a process, one output file per phase."""

    def __init__(self, binary: Path, out_dir: Path, rate: int = 100) -> None:
        self.binary = binary
        self.out_dir = out_dir
        self.rate = rate

    @contextlib.contextmanager
    def record(self, pid: int, name: str) -> Iterator[Path]:
        """Sample `pid` while the block runs; the raw profile is written to the path
        yielded (py-spy writes it when interrupted)."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        output = self.out_dir / f"{name}.txt"
        argv = [
            str(self.binary), "record", "--pid", str(pid), "--rate", str(self.rate),
            "--format", "raw", "--threads", "--idle", "--output", str(output),
        ]  # fmt: skip
        with (self.out_dir / f"{name}.log").open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            yield output
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                log.warning("py-spy (pid %d) did not stop in 30 s; killing it", proc.pid)
                proc.kill()
                proc.wait()


def _stacks(path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(thread label, frames outermost first, count) for each line of a raw profile."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        match = _LINE.match(line)
        if match is None:
            continue
        thread, *frames = match["stack"].split(";")
        yield thread, frames, int(match["count"])


def summarize(path: Path, top: int = 20) -> dict[str, Any]:
    """Busy share of the main thread and where its busy samples went."""
    threads: Counter[str] = Counter()
    idle = busy = 0
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    patterns = {name: re.compile(p) for name, p in AREAS.items()}
    for thread, frames, count in _stacks(path):
        label = thread.split(": ", 1)[1] if ": " in thread else thread
        threads[label] += count
        if "MainThread" not in label or not frames:
            continue
        if _IDLE_LEAF.search(frames[-1]):
            idle += count
            continue
        busy += count
        own[_LINENO.sub(")", frames[-1])] += count
        for func in {_LINENO.sub(")", f) for f in frames}:
            inclusive[func] += count
        for name, pattern in patterns.items():
            if any(pattern.search(f) for f in frames):
                areas[name] += count

    def share(n: int) -> float:
        return round(100 * n / busy, 1) if busy else 0.0

    return {
        "file": str(path),
        "threads": dict(threads.most_common()),
        "main_samples": idle + busy,
        "main_busy_pct": round(100 * busy / (idle + busy), 1) if idle + busy else None,
        "areas_pct_of_busy": {name: share(n) for name, n in areas.most_common()},
        "top_own_pct_of_busy": [[f, share(n)] for f, n in own.most_common(top)],
        "top_inclusive_pct_of_busy": [
            [f, share(n)]
            for f, n in inclusive.most_common(top * 3)
            if not f.startswith(("<module>", "run (asyncio/", "Handle._run", "BaseEventLoop."))
        ][:top],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pyspy", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=20)
    args = parser.parse_args(argv)
    for path in args.files:
        print(json.dumps(summarize(path, args.top), indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
