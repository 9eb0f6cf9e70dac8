"""The [networks.irc] section: servers, the reachability policy and the SSRF check."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import validate
from legacy_plugins.irc.config import DEFAULT_PORT, Config, ServerTarget, check_addresses

BASE: dict[str, Any] = {"jid": "irc.example.org", "secret": "s"}


def config(**keys: Any) -> Config:
    return validate(Config, {**BASE, **keys})


def test_the_test_contract_server() -> None:
    cfg = config(servers={"127.0.0.1": {"host": "127.0.0.1", "port": 16667, "tls": False}})
    target = cfg.target("127.0.0.1")
    assert (target.host, target.port, target.tls, target.admin_defined) == (
        "127.0.0.1",
        16667,
        False,
        True,
    )


def test_defaults() -> None:
    cfg = config()
    assert cfg.flood_burst == 10 and cfg.flood_rate == 1.0
    assert cfg.allow_private_addresses is False
    target = cfg.target("irc.libera.chat")
    assert (target.port, target.tls, target.verify_certificate) == (DEFAULT_PORT, True, True)
    assert not target.admin_defined


def test_server_names_are_folded_and_checked() -> None:
    cfg = config(servers={"Libera": {"host": "irc.libera.chat"}})
    assert cfg.target("LIBERA").host == "irc.libera.chat"
    with pytest.raises(ValidationError, match="cannot be an IRC server name"):
        config(servers={"bad name": {"host": "x"}})


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"servers": {"a": {"host": "x", "port": 0}}}, "greater than or equal to 1"),
        ({"servers": {"a": {"host": "x", "colour": 1}}}, "Extra inputs"),
        ({"servers": {"a": {"host": "x y"}}}, "not a host name"),
        ({"servers": {"a": {"host": "x", "encoding": "klingon"}}}, "unknown encoding"),
        ({"flood_burst": 0}, "greater than or equal to 1"),
        ({"flood_rate": 0}, "greater than 0"),
        ({"flood_rate": 1_000_001}, "less than or equal to 1000000"),
        ({"allowed_servers": ["a b"]}, "not a server name glob"),
        ({"fixed_server": "nope", "allowed_servers": []}, "fixed_server 'nope'"),
    ],
)
def test_bad_sections_fail_early_with_a_reason(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        config(**keys)


@pytest.mark.parametrize(
    ("allowed", "denied", "name", "ok"),
    [
        (["*"], [], "irc.libera.chat", True),
        (["*.libera.chat"], [], "irc.libera.chat", True),
        (["*.libera.chat"], [], "irc.oftc.net", False),
        (["*"], ["*.evil.example"], "irc.evil.example", False),
        ([], [], "defined", True),  # admin-defined servers are always allowed
        ([], ["*"], "defined", True),
    ],
)
def test_policy(allowed: list[str], denied: list[str], name: str, ok: bool) -> None:
    cfg = config(allowed_servers=allowed, denied_servers=denied, servers={"defined": {"host": "h"}})
    assert cfg.policy_allows(name) is ok
    if not ok:
        with pytest.raises(PermissionError, match="does not connect to IRC server"):
            cfg.target(name)


def target(admin_defined: bool) -> ServerTarget:
    return ServerTarget("x", "x", 6697, True, True, None, "latin-1", admin_defined)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "::1",
        "fe80::1%eth0",
        "fc00::1",
        "::ffff:127.0.0.1",
    ],
)
def test_private_and_local_addresses_are_refused(address: str) -> None:
    with pytest.raises(PermissionError, match="private or local address"):
        check_addresses(target(False), [address], allow_private=False)
    assert check_addresses(target(True), [address], allow_private=False) == [address]
    assert check_addresses(target(False), [address], allow_private=True) == [address]


def test_public_addresses_pass_and_private_ones_are_skipped() -> None:
    addresses = ["10.0.0.1", "93.184.216.34", "2001:4860::8888"]
    assert check_addresses(target(False), addresses, allow_private=False) == addresses[1:]
