"""The Synapse fixture's config, and the access-token log filter (no server runs)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gateway.localservers import Synapse
from legacy_plugins.matrix.net import RedactTokens


def test_config_keeps_everything_local_and_unthrottled(tmp_path: Path) -> None:
    server = Synapse(tmp_path, port=18008)
    server.prepare()
    config = json.loads(server.config_path.read_text())
    assert config["listeners"][0]["bind_addresses"] == ["127.0.0.1"]
    assert config["listeners"][0]["port"] == 18008 and not config["listeners"][0]["tls"]
    assert config["database"]["name"] == "sqlite3"
    assert config["federation_domain_whitelist"] == []
    assert config["trusted_key_servers"] == []
    assert config["report_stats"] is False and config["url_preview_enabled"] is False
    assert config["rc_message"]["per_second"] >= 1000
    assert server.url == "http://127.0.0.1:18008"
    key = server.signing_key_path.read_text().split()
    assert key[0] == "ed25519" and key[1].startswith("a_") and len(key[2]) == 43
    # Restarting keeps the key and the secrets, so tokens and accounts stay valid.
    secret = server.shared_secret
    server.prepare()
    assert server.signing_key_path.read_text().split() == key
    assert json.loads(server.config_path.read_text())["registration_shared_secret"] == secret


def test_rate_limits_given_replace_only_those_settings(tmp_path: Path) -> None:
    tight = {"per_second": 0.003, "burst_count": 1}
    server = Synapse(
        tmp_path,
        port=18008,
        rate_limits={"rc_login": {"address": tight}, "rc_message": {"per_second": 1}},
    )
    server.prepare()
    config = json.loads(server.config_path.read_text())
    assert config["rc_login"]["address"] == tight
    # The other login limits, and the message burst, stay raised.
    assert config["rc_login"]["account"]["per_second"] >= 1000
    assert config["rc_login"]["failed_attempts"]["burst_count"] >= 1000
    assert config["rc_message"] == {"per_second": 1, "burst_count": 100_000}
    assert config["rc_joins"]["local"]["per_second"] >= 1000
    # A server without them is not affected by another's.
    plain = Synapse(tmp_path / "plain", port=18009)
    plain.prepare()
    assert json.loads(plain.config_path.read_text())["rc_login"]["address"]["burst_count"] >= 1000
    with pytest.raises(ValueError, match="presence"):
        Synapse(tmp_path, rate_limits={"presence": {}})


def test_port_is_chosen_at_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = Synapse(tmp_path).port


# fmt: off
LOG_CASES = [
    ("%s", ("{'access_token': 'syt_secret', 'user_id': '@a:b'}",), "{'access_token': '[redacted]', 'user_id': '@a:b'}"),
    ("params %s", (('{"access_token": "syt_x"}', 1),), "params ('{\"access_token\": \"[redacted]\"}', 1)"),
    ("GET %s", ("https://hs/sync?access_token=syt_y&since=s1",), "GET https://hs/sync?access_token=[redacted]&since=s1"),
    ("headers %s", ("Authorization: Bearer syt_z",), "headers Authorization: Bearer [redacted]"),
    ("nothing secret %d", (3,), "nothing secret 3"),
]
# fmt: on


@pytest.mark.parametrize(("message", "args", "shown"), LOG_CASES)
def test_access_tokens_never_reach_the_logs(
    message: str, args: tuple[object, ...], shown: str
) -> None:
    record = logging.LogRecord("nio", logging.DEBUG, __file__, 1, message, args, None)
    assert RedactTokens().filter(record)
    assert record.getMessage() == shown
