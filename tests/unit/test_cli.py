"""The command line: help on every command, and a bad config is one line that names the key."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main


@pytest.mark.parametrize(
    "argv", [["--help"], ["run", "--help"], ["check", "--help"], ["demo", "--help"]]
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 0
    assert "usage: passerelle" in capsys.readouterr().out


@pytest.mark.parametrize("command", ["run", "check"])
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, command: str) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        "[networks.echo]\njid = 'echo.example.org'\nsecrett = 'x'\n", encoding="utf-8"
    )
    result = subprocess.run(
        [sys.executable, "-m", "gateway", command, "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"passerelle: {config}: networks.echo.secret: Field required — add 'secret = …' to [networks.echo]",
        f"passerelle: {config}: networks.echo.secrett: Extra inputs are not permitted — remove "
        "'secrett' from [networks.echo] or check its spelling (see examples/gateway.toml)",
    ]


def test_run_plan_holds_no_secret_and_names_every_child(tmp_path: Path) -> None:
    from gateway.config import load
    from gateway.supervisor import children_from_plan, plan

    config = tmp_path / "gateway.toml"
    config.write_text(
        "[xmpp]\nhost = '127.0.0.1'\nport = 5347\n"
        "[networks.echo]\njid = 'echo.example.org'\nsecret = 's3cr3t-value'\n",
        encoding="utf-8",
    )
    data = plan(load(config))
    assert "s3cr3t-value" not in json.dumps(data)
    [child] = children_from_plan(data)
    assert child.name == "echo"
    assert child.argv[-2:] == ["--network", "echo"]
    assert child.pidfile is not None and child.pidfile.name == "echo.pid"
