"""The supervisor with small real child processes: restarts, isolation, clean stop, kill."""

from __future__ import annotations

import asyncio
import io
import sys

from gateway.backoff import Backoff
from gateway.child import EXIT_CONFIG
from gateway.supervisor import ChildSpec, Supervisor

FAST = Backoff(initial=0.05, cap=0.2, jitter=0.0, healthy_after=60.0)


def py(code: str, name: str) -> ChildSpec:
    return ChildSpec(name=name, argv=[sys.executable, "-c", code])


async def run_for(supervisor: Supervisor, seconds: float) -> None:
    async def stop_later() -> None:
        await asyncio.sleep(seconds)
        supervisor.stop()

    async with asyncio.timeout(seconds + 30):
        await asyncio.gather(supervisor.run(), stop_later())


async def test_crashing_child_is_restarted_and_others_keep_running() -> None:
    out = io.StringIO()
    crasher = py("print('boom', flush=True); raise SystemExit(3)", "crasher")
    steady = py("import time; print('up', flush=True); time.sleep(60)", "steady")
    supervisor = Supervisor([crasher, steady], backoff=FAST, output=out)
    await run_for(supervisor, 1.5)
    lines = out.getvalue().splitlines()
    assert lines.count("crasher | boom") >= 3
    assert supervisor.restarts["crasher"] >= 2
    assert lines.count("steady | up") == 1  # never restarted
    assert supervisor.restarts["steady"] == 0


async def test_configuration_error_is_not_restarted() -> None:
    supervisor = Supervisor([py(f"raise SystemExit({EXIT_CONFIG})", "bad")], backoff=FAST)
    await run_for(supervisor, 0.5)
    assert supervisor.restarts["bad"] == 0
    assert supervisor.gave_up == {"bad"}


async def test_supervisor_returns_once_every_child_gave_up() -> None:
    supervisor = Supervisor([py(f"raise SystemExit({EXIT_CONFIG})", "bad")], backoff=FAST)
    async with asyncio.timeout(20):
        await supervisor.run()  # no stop() needed
    assert supervisor.gave_up == {"bad"}


async def test_stop_sends_sigterm_and_waits() -> None:
    out = io.StringIO()
    code = (
        "import signal, sys, time\n"
        "def bye(*_):\n    print('clean exit', flush=True); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, bye)\nprint('ready', flush=True)\ntime.sleep(60)\n"
    )
    supervisor = Supervisor([py(code, "polite")], backoff=FAST, output=out)
    await run_for(supervisor, 0.8)
    assert out.getvalue().splitlines() == ["polite | ready", "polite | clean exit"]


async def test_child_ignoring_sigterm_is_killed_after_timeout() -> None:
    code = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)\n"
    supervisor = Supervisor([py(code, "stubborn")], backoff=FAST, stop_timeout=0.5)
    loop = asyncio.get_running_loop()
    started = loop.time()
    await run_for(supervisor, 0.5)
    assert loop.time() - started < 10


async def test_long_and_undecodable_output_is_forwarded() -> None:
    out = io.StringIO()
    code = "import sys; sys.stdout.buffer.write(b'x' * 70000 + b'\\n\\xff\\xfe bad\\n'); sys.stdout.flush()"
    supervisor = Supervisor([py(code, "noisy")], backoff=Backoff(initial=10), output=out)
    await run_for(supervisor, 0.8)
    text = out.getvalue()
    assert "x" * 70000 in text
    assert "noisy | \ufffd\ufffd bad" in text


def test_exit_config_matches_the_child() -> None:
    from gateway import child, supervisor

    assert supervisor.EXIT_CONFIG == child.EXIT_CONFIG


def test_lean_supervisor_exits_1_after_a_configuration_error() -> None:
    import json
    import subprocess

    child = {"name": "bad", "argv": [sys.executable, "-c", f"raise SystemExit({EXIT_CONFIG})"]}
    plan = {"version": "t", "log_level": "INFO", "children": [child]}
    result = subprocess.run(
        [sys.executable, "-m", "gateway.supervisor", "--plan", json.dumps(plan)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    assert "ERROR passerelle: stopped after configuration errors in: bad" in result.stderr
