"""Matrix logins other than with a password and a homeserver URL (`test_matrix.py`): a
server name whose homeserver is found through ``/.well-known/matrix/client``, served
over TLS as on a real domain, and refused with the reason when its certificate is not
trusted. The ``.well-known`` server is a small aiohttp server on
127.0.0.1 with a certificate from a throw-away CA (`test_irc_tls_sasl._issue`) that the
gateway trusts through ``SSL_CERT_FILE``; it points to the test Synapse."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web
from slixmpp.exceptions import IqError

from gateway.localservers.synapse import Synapse
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    MatrixPeer,
    jid_of,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
)
from tests.e2e.test_irc_tls_sasl import Pki, _issue
from tests.e2e.xmpp_client import Client, registration_form
from tests.unit.loopback_http import serve

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NewClient = Callable[..., "asyncio.Future[Client]"]
Peers = Callable[[str], "asyncio.Future[MatrixPeer]"]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture
async def peers(synapse: Synapse) -> AsyncIterator[Peers]:
    async with peer_factory(synapse) as make:
        yield make


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return _issue(tmp_path_factory.mktemp("well-known-pki"))


@contextlib.asynccontextmanager
async def well_known(
    pki: Pki, answer: dict[str, Any], *, asked_for: bool = True
) -> AsyncIterator[str]:
    """An HTTPS server on 127.0.0.1 answering ``/.well-known/matrix/client`` with
    `answer`; yields its server name (``127.0.0.1:PORT``). Checks on the way out that
    the document was asked for (or, with `asked_for` false, that it was not)."""
    asked: list[str] = []

    async def client(request: web.Request) -> web.Response:
        asked.append(request.path)
        return web.json_response(answer)

    app = web.Application()
    app.router.add_get("/.well-known/matrix/client", client)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki.cert, pki.key)
    async with serve(app, context) as base:
        yield base.removeprefix("https://")
    assert bool(asked) == asked_for, f".well-known asked for: {asked}"


async def test_a_server_name_finds_its_homeserver_through_well_known(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # alice gives her Matrix ID, her password and, as the homeserver, a server name: the
    # gateway reads that server's .well-known (over verified TLS) and logs in to the
    # homeserver it names; her chats work.
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca))
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    async with well_known(pki, {"m.homeserver": {"base_url": synapse.url}}) as name:
        await alice.register(
            MATRIX_JID, user_id=alice_mx.user_id, password=alice_mx.password, homeserver=name
        )
        await alice.next_presence(MATRIX_JID, ptype="chat")
    bob = await peers("bob")
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "found you")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "found you"


async def test_a_well_known_server_whose_certificate_is_not_trusted_is_refused(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    pki: Pki,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The same server name, but the gateway does not trust the CA: no login through a
    # server it cannot verify, and the form says why; nothing is stored.
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    answer = {"m.homeserver": {"base_url": synapse.url}}
    async with well_known(pki, answer, asked_for=False) as name:
        with pytest.raises(IqError) as err:
            await alice.register(
                MATRIX_JID, user_id=alice_mx.user_id, password=alice_mx.password, homeserver=name
            )
    assert err.value.condition == "remote-server-not-found"
    assert name in err.value.text and "certificate" in err.value.text
    form = await registration_form(alice, MATRIX_JID)
    assert "remove" not in form["register"]["form"]["fields"]
