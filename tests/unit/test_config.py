"""The configuration contract: valid files load, every mistake is one line naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import load
from gateway.errors import ConfigError
from gateway.networks import NETWORKS

MINIMAL = """
[networks.echo]
jid = "echo.example.org"
secret = "s3cret"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        load(write(tmp_path, text))
    return err.value.problems


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("PASSERELLE_"):
            monkeypatch.delenv(key)


def test_minimal_config_has_documented_defaults(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, MINIMAL))
    assert cfg.settings.xmpp.host == "127.0.0.1"
    assert cfg.settings.xmpp.port == 5347
    assert cfg.data_dir == tmp_path / "data"
    assert list(cfg.enabled_networks) == ["echo"]
    assert cfg.network_db_url("echo") == f"sqlite:///{tmp_path}/data/echo/passerelle.sqlite"
    # Default allow-list: users of the server the component belongs to.
    assert cfg.allowed_jid_globs() == ["*@example.org"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[networks.echo]\njid = 'echo.example.org'\n",
            "networks.echo.secret: Field required — add 'secret = …' to [networks.echo]",
        ),
        (
            MINIMAL + "colour = 'blue'\n",
            "networks.echo.colour: Extra inputs are not permitted — remove 'colour' from [networks.echo]",
        ),
        (
            "admin = ['a@b.c']\n" + MINIMAL,
            "admin: Extra inputs are not permitted — remove 'admin' from the top level",
        ),
        (
            "[xmpp]\nport = 70000\n" + MINIMAL,
            "xmpp.port: Input should be less than or equal to 65535",
        ),
        (
            "[networks.echo]\njid = 'bob@example.org'\nsecret = 'x'\n",
            "networks.echo.jid: 'bob@example.org' is not a domain name",
        ),
        (
            "[networks.telegram]\njid = 't.example.org'\nsecret = 'x'\n",
            "networks.telegram: unknown network 'telegram'; the networks are: echo, email, future, irc, matrix",
        ),
        (
            "[networks.future]\njid = 'f.example.org'\nsecret = 'x'\n",
            "networks.future: the 'future' network is not implemented in this version",
        ),
        (
            "admins = ['not a jid']\n" + MINIMAL,
            "admins: Value error, 'not a jid' is not a bare JID".replace("Value error, ", ""),
        ),
        (
            "allowed_jids = ['example.org']\n" + MINIMAL,
            "allowed_jids: 'example.org' is not a JID glob",
        ),
        (
            "[storage]\nurl = 'mysql://x'\n" + MINIMAL,
            "storage.url: only PostgreSQL URLs are supported",
        ),
        (
            "[networks.echo]\nenabled = false\njid = 'e.example.org'\nsecret = 'x'\n",
            "networks: no network is enabled",
        ),
        (
            "[networks.echo]\njid = 'e.example.org'\nsecret = 'x'\ndelay_ms = -1\n",
            "networks.echo.delay_ms: Input should be greater than or equal to 0",
        ),
        ("data_dir = [\n", "not valid TOML"),
    ],
)
def test_mistakes_are_reported_with_key_and_fix(
    tmp_path: Path, text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A registered network whose plugin does not exist (yet), whatever the tree holds.
    monkeypatch.setitem(NETWORKS, "future", "legacy_plugins.future")
    found = problems(tmp_path, text)
    assert len(found) == 1, found
    assert expected in found[0], found[0]
    assert found[0].startswith(str(tmp_path / "gateway.toml") + ":")


def test_missing_file_says_where_to_start(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"copy examples/gateway\.toml"):
        load(tmp_path / "nope.toml")


def test_two_networks_cannot_share_a_jid(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(NETWORKS, "echo2", "examples.echo")
    found = problems(
        tmp_path, MINIMAL + "[networks.echo2]\njid = 'echo.example.org'\nsecret = 'y'\n"
    )
    assert found == [
        f"{tmp_path / 'gateway.toml'}: networks.echo2.jid: 'echo.example.org' is also the JID of "
        "networks.echo — give each network its own component JID"
    ]


def test_disabled_section_of_unimplemented_network_is_accepted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(NETWORKS, "future", "legacy_plugins.future")
    cfg = load(
        write(
            tmp_path,
            MINIMAL + "[networks.future]\nenabled = false\njid = 'f.example.org'\nsecret = 'x'\n",
        )
    )
    assert list(cfg.networks) == ["echo"]


def test_environment_overrides_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASSERELLE_XMPP__PORT", "5348")
    monkeypatch.setenv("PASSERELLE_NETWORKS__ECHO__SECRET", "from-env")
    monkeypatch.setenv("PASSERELLE_ADMINS", '["Boss@Example.org"]')
    cfg = load(write(tmp_path, MINIMAL))
    assert cfg.settings.xmpp.port == 5348
    assert cfg.networks["echo"].secret.get_secret_value() == "from-env"
    assert cfg.networks["echo"].jid == "echo.example.org"  # the rest of the section is kept
    assert cfg.settings.admins == ["boss@example.org"]


def test_environment_error_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PASSERELLE_XMPP__PORT", "abc")
    found = problems(tmp_path, MINIMAL)
    assert found[0].startswith("environment variable PASSERELLE_XMPP__PORT: xmpp.port:")


def test_secrets_never_print(tmp_path: Path) -> None:
    cfg = load(write(tmp_path, MINIMAL + "[storage]\nurl = 'postgresql://u:dbpass@h/db'\n"))
    shown = repr(cfg.settings) + str(cfg.settings) + repr(cfg.networks)
    assert "s3cret" not in shown
    assert "dbpass" not in shown


@pytest.mark.parametrize(
    ("globs", "jid", "allowed"),
    [
        (None, "alice@example.org", True),
        (None, "alice@evil.org", False),
        (None, "alice@sub.example.org", False),
        (["*@example.org", "bob@other.net"], "bob@other.net", True),
        (["*@example.org", "bob@other.net"], "eve@other.net", False),
        (["team-*@example.org"], "team-a@example.org", True),
        (["team-*@example.org"], "Team-A@Example.org", True),
        (["team-*@example.org"], "x-team-a@example.org", False),
        ([], "alice@example.org", False),
    ],
)
def test_allow_list(tmp_path: Path, globs: list[str] | None, jid: str, allowed: bool) -> None:
    import re

    extra = "" if globs is None else f"allowed_jids = {globs!r}\n"
    cfg = load(write(tmp_path, extra + MINIMAL))
    assert cfg.is_allowed(jid) is allowed
    # slidge gets the same rule as a regular expression, matched against the bare JID.
    assert bool(re.match(cfg.allowed_jids_regex(), jid.lower())) is allowed
