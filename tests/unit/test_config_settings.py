"""Each network's light settings class and its pydantic twin stay in step, and the
network's process gets its validated section without ever importing pydantic."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel, ValidationError

from gateway.child import EXIT_CONFIG, child_plan
from gateway.config import plain, validate
from gateway.networks import NETWORKS
from gateway.runtime import NetworkSettings, Secret, from_plain, settings_class
from legacy_plugins.irc.config import Config as IrcConfig
from legacy_plugins.irc.config import ServerConfig

MINIMAL = {"jid": "net.example.org", "secret": "s3cret"}
ROOT = Path(__file__).resolve().parents[2]


def field_names(cls: type[Any]) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_settings_class_and_model_have_the_same_keys_and_defaults(name: str) -> None:
    cls = settings_class(name)
    assert issubclass(cls, NetworkSettings)
    assert field_names(cls) == set(cls.model().model_fields)
    expected = cls(jid=MINIMAL["jid"], secret=Secret(MINIMAL["secret"]))
    assert validate(cls, dict(MINIMAL)) == expected


def test_nested_irc_server_keys_and_defaults_match() -> None:
    servers = IrcConfig.model().model_fields["servers"].annotation
    model = get_args(servers)[1]  # dict[str, IrcServerConfig]
    assert issubclass(model, BaseModel)
    assert field_names(ServerConfig) == set(model.model_fields)
    cfg = validate(IrcConfig, {**MINIMAL, "servers": {"Libera": {"host": " irc.libera.chat "}}})
    assert cfg.servers == {"libera": ServerConfig(host="irc.libera.chat")}


def test_every_key_set_survives_the_json_trip(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("not read here\n", encoding="utf-8")
    raw: dict[str, Any] = {
        **MINIMAL,
        "name": "IRC",
        "log_level": "DEBUG",
        "servers": {
            "lib": {"host": "h", "port": 7000, "tls": False, "password": "pw", "ca_file": str(ca)}
        },
        "fixed_server": "lib",
        "allowed_servers": ["*.Example.org"],
        "flood_rate": 3,
        "history_on_join": 5,
    }
    cfg = validate(IrcConfig, raw)
    assert cfg.flood_rate == 3.0 and isinstance(cfg.flood_rate, float)
    assert cfg.allowed_servers == ["*.example.org"]
    server = cfg.servers["lib"]
    assert server.ca_file == ca and server.password == Secret("pw")
    assert cfg.secret.get_secret_value() == "s3cret"
    target = cfg.target("lib")
    assert (target.port, target.tls, target.password, target.ca_file) == (
        7000,
        False,
        "pw",
        str(ca),
    )


def test_validation_errors_are_pydantics() -> None:
    with pytest.raises(ValidationError, match="is not a server name glob"):
        validate(IrcConfig, {**MINIMAL, "denied_servers": ["a b"]})
    with pytest.raises(ValidationError, match="extra"):
        validate(IrcConfig, {**MINIMAL, "servers": {"x": {"host": "h", "typo": 1}}})


def test_secrets_print_hidden_but_travel_in_clear() -> None:
    secret = Secret("hunter22")
    assert "hunter22" not in repr(secret) + str(secret)
    assert not Secret("") and secret
    cfg = validate(IrcConfig, dict(MINIMAL))
    assert "s3cret" not in repr(cfg)
    assert plain(IrcConfig.model().model_validate(MINIMAL))["secret"] == "s3cret"


def test_from_plain_refuses_keys_the_class_lacks() -> None:
    with pytest.raises(TypeError, match="no field"):
        from_plain(IrcConfig, {**MINIMAL, "gone": 1})


CONFIG = """\
data_dir = "./data"
[networks.irc]
jid = "irc.example.org"
secret = "component-secret"
[networks.irc.servers.lib]
host = "127.0.0.1"
password = "server-pass"
[networks.echo]
jid = "echo.example.org"
secret = "echo-secret"
"""


def test_child_plan_has_slidge_options_and_every_secret(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    plan = child_plan(path, "irc")
    assert sorted(plan["secrets"]) == ["component-secret", "server-pass"]
    assert plan["argv"][plan["argv"].index("--jid") + 1] == "irc.example.org"
    assert not any(secret in arg for secret in plan["secrets"] for arg in plan["argv"])
    assert plan["pgpassword"] is None
    assert Path(plan["network_dir"]) == (tmp_path / "data" / "irc").resolve()
    assert Path(plan["network_dir"]).is_dir()


START = textwrap.dedent(
    """\
    import importlib, sys
    from pathlib import Path
    from gateway import child, lazy_imports
    from gateway.networks import slidge_module
    from gateway.runtime import from_plain, network_config, set_network_config, settings_class

    name = sys.argv[2]
    plan = child.validated(Path(sys.argv[1]), name)
    lazy_imports.install()
    cls = settings_class(name)
    set_network_config(from_plain(cls, plan["settings"]))
    import slidge.main
    importlib.import_module(slidge_module(name))
    print(network_config(cls).jid)
    print(sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "pydantic_core")))
    """
)


def run_start(path: Path, network: str) -> subprocess.CompletedProcess[str]:
    """gateway.child's start-up in a fresh interpreter, up to the plugin's import."""
    return subprocess.run(
        [sys.executable, "-c", START, str(path), network],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )


@pytest.mark.parametrize("network", ["irc", "echo"])
def test_network_process_never_imports_pydantic(tmp_path: Path, network: str) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG, encoding="utf-8")
    done = run_start(path, network)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [f"{network}.example.org", "[]"]


def test_bad_config_ends_the_network_process_with_the_fix_it_line(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(CONFIG.replace('host = "127.0.0.1"', 'host = "127.0.0.1"\nprot = 1'), "utf-8")
    done = run_start(path, "irc")
    assert done.returncode == EXIT_CONFIG
    assert "networks.irc.servers.lib.prot: " in done.stderr
    assert "remove 'prot' from [networks.irc.servers.lib]" in done.stderr
    assert "server-pass" not in done.stderr and "component-secret" not in done.stderr
