"""The test Synapse really starts on loopback, registers users and keeps them across a
restart (gateway.localservers.synapse)."""

from __future__ import annotations

import json
import urllib.request

import pytest

from gateway.localservers import ServerCommandError, Synapse
from tests.e2e.matrix_helpers import shared_synapse

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


def whoami(server: Synapse, token: str) -> str:
    request = urllib.request.Request(
        f"{server.url}/_matrix/client/v3/account/whoami",
        headers={"Authorization": f"Bearer {token}"},
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return str(json.loads(answer.read())["user_id"])


def test_registers_users_through_the_shared_secret(synapse: Synapse) -> None:
    account = synapse.register_user("localserver-test", "pw")
    assert account.user_id == "@localserver-test:localhost"
    assert whoami(synapse, account.access_token) == account.user_id
    with pytest.raises(ServerCommandError, match="M_USER_IN_USE"):
        synapse.register_user("localserver-test", "pw")


def test_restart_keeps_port_and_accounts(tmp_path_factory: pytest.TempPathFactory) -> None:
    server = Synapse(tmp_path_factory.mktemp("synapse-restart"))
    with server:
        account = server.register_user("carla", "pw")
        port = server.port
        server.restart()
        assert server.port == port
        assert whoami(server, account.access_token) == "@carla:localhost"
    assert not server.running
