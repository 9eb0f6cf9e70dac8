"""``python -m gateway.link``: a configuration it cannot run with exits 78 (not restarted)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ECHO = "[networks.echo]\njid = 'echo.example.org'\nsecret = 's'\n"


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (ECHO, "no enabled [link] section"),
        (
            ECHO + "[link]\njid = 'link.example.org'\nsecret = 'l'\nenabled = false\n",
            "no enabled [link]",
        ),
        ("[link]\njid = 'not a domain'\nsecret = 'l'\n", "link.jid"),
        (None, "no such file"),
    ],
)
def test_configuration_problems_exit_78(tmp_path: Path, text: str | None, problem: str) -> None:
    path = tmp_path / "gateway.toml"
    if text is not None:
        path.write_text(text, encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "gateway.link", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    assert problem in result.stderr
