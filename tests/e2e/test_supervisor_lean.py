"""``passerelle run`` validates with pydantic, then the long-lived supervisor and children are
lean processes."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.conftest import PasserelleProcess

pytestmark = pytest.mark.e2e


def _status(pid: int, key: str) -> str:
    text = Path(f"/proc/{pid}/status").read_text(encoding="utf-8")
    match = re.search(rf"^{key}:\s*(.*)$", text, re.MULTILINE)
    assert match is not None
    return match.group(1)


def test_running_supervisor_has_not_loaded_pydantic(
    start_passerelle: Callable[..., PasserelleProcess],
) -> None:
    process = start_passerelle(extra='log_level = "DEBUG"')
    pid = process.proc.pid  # execv keeps the pid
    supervisor_maps = Path(f"/proc/{pid}/maps").read_text(encoding="utf-8")
    child_maps = Path(f"/proc/{process.child_pid('echo')}/maps").read_text(encoding="utf-8")
    assert "libssl" in child_maps  # the child speaks TLS; the supervisor needs no OpenSSL
    assert "libssl" not in supervisor_maps
    # pydantic validates in `passerelle run` (before the exec) and in a short-lived fork
    # of each child: neither long-lived process keeps it.
    assert "pydantic_core" not in supervisor_maps
    assert "pydantic_core" not in child_maps
    # Pillow is loaded on first use only (gateway.lazy_imports); nothing here uses it.
    assert "PIL/_imaging" not in child_maps
    process.wait_for_line(r"^supervisor \| DEBUG .*pydantic/slidge: none$")
    process.wait_for_line(r"^supervisor \| INFO gateway\.supervisor: echo started \(pid \d+\)$")
    print(f"supervisor VmRSS: {_status(pid, 'VmRSS')}")  # for the report; no assertion on it
    assert process.stop() == 0
    assert not (process.config.parent / "data" / "run" / "echo.pid").exists()
