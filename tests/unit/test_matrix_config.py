"""The [networks.matrix] section, the homeserver policy and the error mapping."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.config import validate
from legacy_plugins.matrix import client, login, net
from legacy_plugins.matrix.client import Credentials
from legacy_plugins.matrix.config import Config, address_is_public
from legacy_plugins.matrix.errors import (
    HomeserverNotAllowed,
    HomeserverTimeout,
    HomeserverUnreachable,
    LoginRefused,
    RateLimited,
    RequestFailed,
    as_xmpp_error,
)


def config(**keys: Any) -> Config:
    return validate(Config, {"jid": "matrix.example.org", "secret": "s", **keys})


def test_defaults_refuse_private_addresses_and_plain_http() -> None:
    cfg = config()
    assert not cfg.allow_private_addresses and not cfg.allow_plain_http
    assert cfg.host_allowed("matrix.org")
    with pytest.raises(HomeserverNotAllowed, match="https"):
        net.check_url(cfg, "http://matrix.org")
    with pytest.raises(HomeserverNotAllowed, match="private or local"):
        net.check_url(cfg, "https://127.0.0.1:8008")
    with pytest.raises(HomeserverNotAllowed, match="private or local"):
        net.check_url(cfg, "https://[::1]/")
    net.check_url(cfg, "https://matrix.org")


def test_test_setup_allows_loopback_over_http() -> None:
    cfg = config(allow_private_addresses=True, allow_plain_http=True)
    net.check_url(cfg, "http://127.0.0.1:8008")


def test_allow_and_deny_globs() -> None:
    cfg = config(allowed_homeservers=["*.Example.org"], denied_homeservers=["bad.example.org"])
    assert cfg.host_allowed("matrix.example.org")
    assert not cfg.host_allowed("bad.example.org")
    assert not cfg.host_allowed("matrix.org")
    with pytest.raises(HomeserverNotAllowed, match="does not connect"):
        net.check_url(cfg, "https://matrix.org")


def test_bad_globs_fail_at_start_up() -> None:
    with pytest.raises(ValidationError, match="host name glob"):
        config(allowed_homeservers=["https://matrix.org/"])
    with pytest.raises(ValidationError):
        config(timeline_limit=5)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2a00:1450::1", True),
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("192.168.1.1", False),
        ("169.254.1.1", False),
        ("::1", False),
        ("fe80::1%eth0", False),
        ("::ffff:127.0.0.1", False),
        ("224.0.0.1", False),
        ("not an address", False),
    ],
)
def test_address_is_public(address: str, public: bool) -> None:
    assert address_is_public(address) is public


class FakeResolver:
    def __init__(self, *hosts: str) -> None:
        self.hosts = hosts

    async def resolve(self, host: str, port: int = 0, family: int = 0) -> list[dict[str, Any]]:
        return [{"host": h, "port": port} for h in self.hosts]

    async def close(self) -> None:
        pass


async def test_resolver_drops_private_addresses() -> None:
    resolver = net._PolicyResolver(config())
    resolver._inner = FakeResolver("10.0.0.1", "8.8.8.8")  # type: ignore[assignment]
    assert [r["host"] for r in await resolver.resolve("mx.example.org", 443, socket.AF_INET)] == [
        "8.8.8.8"
    ]
    resolver._inner = FakeResolver("127.0.0.1")  # type: ignore[assignment]
    with pytest.raises(OSError, match="private or local"):
        await resolver.resolve("evil.example.org", 443)


def test_error_answers() -> None:
    assert isinstance(
        client._error_from_answer("login to x", "M_FORBIDDEN", "Invalid password", 403, None),
        LoginRefused,
    )
    limited = client._error_from_answer("sync", "M_LIMIT_EXCEEDED", "slow down", 429, 2500)
    assert isinstance(limited, RateLimited) and limited.retry_after == 2.5
    assert str(limited) == "sync: slow down (rate limited; try again in 3 s)"
    unsaid = client._error_from_answer("sync", None, "", 429, None)
    assert str(unsaid) == "sync: HTTP 429 (rate limited; try again later)"
    assert isinstance(
        client._error_from_answer("sync", "M_UNKNOWN_TOKEN", "", 401, None), LoginRefused
    )
    failed = client._error_from_answer("sending", "M_FORBIDDEN", "not in room", 403, None)
    assert isinstance(failed, RequestFailed) and failed.errcode == "M_FORBIDDEN"


@pytest.mark.parametrize(
    ("error", "condition"),
    [
        (HomeserverNotAllowed("x"), "not-allowed"),
        (HomeserverUnreachable("x"), "remote-server-not-found"),
        (HomeserverTimeout("x"), "remote-server-timeout"),
        (LoginRefused("x"), "not-authorized"),
        (RateLimited("x", 1.0), "resource-constraint"),
        (RequestFailed("x", "M_FORBIDDEN", 403), "forbidden"),
        (RequestFailed("x", "M_TOO_LARGE", 413), "not-acceptable"),
        (RequestFailed("x", "M_UNKNOWN", 500), "service-unavailable"),
    ],
)
def test_xmpp_conditions(error: Exception, condition: str) -> None:
    xmpp = as_xmpp_error(error)  # type: ignore[arg-type]
    assert xmpp.condition == condition and xmpp.text == "x"


def test_credentials_never_show_the_token() -> None:
    creds = Credentials("https://hs", "@a:hs", "DEV", "secret-token")  # type: ignore[arg-type]
    assert "secret-token" not in repr(creds)
    assert Credentials.from_stored(creds.to_stored()) == creds
    with pytest.raises(LoginRefused, match="register again"):
        Credentials.from_stored({"homeserver": "https://hs"})
    with pytest.raises(LoginRefused, match="damaged"):
        Credentials.from_stored({**creds.to_stored(), "access_token": 5})


@pytest.mark.parametrize(
    ("waits", "outcome", "slept"),
    [
        ([], "answer 1", []),  # no 429
        ([2.5], "answer 2", [2.5]),  # a short wait: waited, asked again
        ([10.0], "answer 2", [10.0]),  # the longest waited
        ([333.0], "rate limited", []),  # minutes: the form says so at once
        ([1.0, 1.0], "rate limited", [1.0]),  # waited once only
    ],
)
async def test_a_login_waits_out_a_short_429_once(
    monkeypatch: pytest.MonkeyPatch, waits: list[float], outcome: str, slept: list[float]
) -> None:
    asked: list[int] = []
    sleeps: list[float] = []

    async def request() -> str:
        asked.append(len(asked) + 1)
        return f"answer {len(asked)}"

    async def call(_homeserver: str, what: str, answer: Any) -> Any:
        text = await answer
        if len(asked) <= len(waits):
            raise RateLimited(f"{what}: rate limited", waits[len(asked) - 1])
        return text

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    monkeypatch.setattr(login, "_call", call)
    monkeypatch.setattr("legacy_plugins.matrix.login.asyncio.sleep", sleep)
    if outcome == "rate limited":
        with pytest.raises(RateLimited):
            await login._patient("https://hs", "login", request)
    else:
        assert await login._patient("https://hs", "login", request) == outcome
    assert sleeps == slept
