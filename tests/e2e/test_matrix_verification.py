"""Verifying Matrix devices with emoji (SAS) through Passerelle: a real Synapse, Prosody.

alice uses Matrix from XMPP through the gateway's device. Her other session and her
contact bob are matrix-nio clients with encryption and stores of their own; nio does the
SAS on their side (with the three places where nio 0.26 departs from the spec put right,
`spec_nio`: stock nio 0.26 cannot verify with Element either), and the test speaks the
``request``/``ready`` steps that nio lacks and Element sends. Stories:

- alice's other session asks to verify the gateway's device, as Element does; alice sees
  the same emoji and numbers in her XMPP client, both confirm, both stores say verified,
  and the gateway still says so after a restart;
- alice asks to verify bob's device from XMPP; she says (ad-hoc command) the emoji do
  not match: bob's client gets the mismatch cancel, nobody is verified; then bob starts
  one (nio's own way, no request) and cancels it: alice is told. Bad input gets clear
  errors.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nio  # type: ignore[import-untyped]
import pytest

from gateway.localservers.synapse import Synapse
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    STARTED,
    WAIT,
    EncryptedPeer,
    MatrixPeer,
    log_in,
    new_account,
    shared_synapse,
    start_matrix_gateway,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NewClient = Callable[..., "asyncio.Future[Client]"]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture
async def gateway(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    return await start_matrix_gateway(start_passerelle)


@pytest.fixture(autouse=True)
def spec_nio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The peers' nio `Sas` as the spec has it (matrix-nio issue #570, PR #573): the
    commitment in unpadded base64 (nio 0.26 sends hex), the emoji straight from
    vodozemac's emoji indices (nio 0.26 re-splits them as if they were bytes), and the MAC
    vodozemac computes announced as what it is, ``hkdf-hmac-sha256.v2`` (nio 0.26 calls
    it ``hkdf-hmac-sha256``, whose base64 differs). Only the peers, in this process."""
    sas_class = nio.crypto.sas.Sas

    def commitment(key: str, content: dict[str, Any]) -> str:
        data = (key + nio.Api.to_canonical_json(content)).encode()
        return base64.b64encode(hashlib.sha256(data).digest()).decode().rstrip("=")

    from_start = sas_class.from_key_verification_start.__func__

    def from_key_verification_start(cls: Any, *args: Any) -> Any:
        sas = from_start(cls, *args)
        sas.commitment = commitment(sas.pubkey, args[-1].source["content"])
        return sas

    def check_commitment(self: Any, key: str) -> bool:
        return bool(self.commitment == commitment(key, self.start_verification().content))

    def generate_emoji(self: Any, info: str) -> list[tuple[str, str]]:
        return [self.emoji[i] for i in self.established_sas.bytes(info).emoji_indices]

    monkeypatch.setattr(sas_class, "_mac_normal", "hkdf-hmac-sha256.v2")
    monkeypatch.setattr(sas_class, "_mac_v1", ["hkdf-hmac-sha256.v2"])
    monkeypatch.setattr(
        sas_class, "from_key_verification_start", classmethod(from_key_verification_start)
    )
    monkeypatch.setattr(sas_class, "_check_commitment", check_commitment)
    monkeypatch.setattr(sas_class, "_generate_emoji", generate_emoji)


class Verifier:
    """An `EncryptedPeer` that takes part in key verifications: it records the
    verification steps it receives and syncs until a condition holds."""

    def __init__(self, peer: EncryptedPeer) -> None:
        self.peer = peer
        self.client = peer.client
        self.steps: list[Any] = []
        self.client.add_to_device_callback(
            self._record, (nio.KeyVerificationEvent, nio.UnknownToDeviceEvent)
        )

    async def _record(self, event: Any) -> None:
        self.steps.append(event)

    async def sync_until(self, done: Callable[[], Any], timeout: float = WAIT) -> Any:
        """Sync (sending what nio queued) until ``done()`` is true; returns its value."""
        async with asyncio.timeout(timeout):
            while not (value := done()):
                await self.peer._sync_once()
            await self.client.send_to_device_messages()
            return value

    def step(self, kind: str, txid: str | None = None) -> Any:
        """The first received step ``m.key.verification.<kind>`` (of ``txid``), or None."""
        for event in self.steps:
            content = event.source.get("content", {})
            if event.source.get("type") == f"m.key.verification.{kind}" and (
                txid is None or content.get("transaction_id") == txid
            ):
                return event
        return None

    async def device_of(self, user_id: str, device_id: str) -> Any:
        """nio's OlmDevice of ``user_id``'s ``device_id``, its keys fetched."""
        self.client.olm.users_for_key_query.add(user_id)
        answer = await self.client.keys_query()
        assert isinstance(answer, nio.KeysQueryResponse), answer
        return self.client.device_store[user_id][device_id]

    async def send(self, kind: str, device: Any, content: dict[str, Any]) -> None:
        message = nio.ToDeviceMessage(
            f"m.key.verification.{kind}", device.user_id, device.id, content
        )
        answer = await self.client.to_device(message)
        assert isinstance(answer, nio.ToDeviceResponse), answer


@pytest.fixture
async def verifiers(synapse: Synapse, tmp_path: Path) -> AsyncIterator[Any]:
    made: list[EncryptedPeer] = []

    async def make(account: Any, store: str) -> Verifier:
        peer = EncryptedPeer(synapse, account, tmp_path / store)
        made.append(peer)
        await peer.start()
        return Verifier(peer)

    try:
        yield make
    finally:
        for peer in made:
            await peer.close()


async def devices_of(synapse: Synapse, account: Any) -> set[str]:
    """The device IDs of ``account`` other than the one it was registered with."""
    myself = MatrixPeer(synapse, account)
    try:
        devices = (await myself.call("GET", "/devices"))["devices"]
    finally:
        await myself.close()
    return {str(d["device_id"]) for d in devices} - {myself.account.device_id}


def from_gateway(text: str) -> Callable[[Any], bool]:
    return lambda m: m["from"].bare == MATRIX_JID and text in m["body"]


async def gateway_reply(alice: Client) -> str:
    """The gateway's next message, other than its welcome after registration and the
    "End of command." slidge adds after an error."""
    reply = await alice.next_matching(
        lambda m: (
            m["from"].bare == MATRIX_JID
            and not m["body"].startswith("Welcome")
            and m["body"] != "End of command."
        )
    )
    return str(reply["body"])


async def both(xmpp: Awaitable[Any], peer: Awaitable[Any]) -> tuple[Any, Any]:
    """Wait for an XMPP message while the Matrix peer syncs (each needs the other)."""
    return tuple(await asyncio.gather(xmpp, peer))


def trust_of(listing: str, device: str) -> str:
    """What the ``device @user`` answer says of ``device``: verified, unverified…"""
    (line,) = [line for line in listing.splitlines() if line.startswith(device)]
    return line.split(":")[0].rsplit(", ", 1)[1]


async def devices_listed(alice: Client, user: str, attempts: int = 30) -> str:
    """``device @user``'s answer, asked again while the gateway is still logging in."""
    for _ in range(attempts):
        alice.send_chat(MATRIX_JID, f"device {user}")
        reply = await gateway_reply(alice)
        if f"Devices of {user}" in reply:
            return reply
        await asyncio.sleep(1)
    raise AssertionError(f"the gateway never listed the devices of {user}")


def assert_same_sas(body: str, sas: Any) -> None:
    """The gateway's message shows the peer's seven emoji in its order, and its numbers."""
    emoji = [f"{symbol} {name}" for symbol, name in sas.get_emoji()]
    assert len(emoji) == 7
    lines = body.splitlines()
    shown = lines[lines.index(next(line for line in lines if "same order" in line)) + 1]
    assert shown.split("  ") == emoji, body
    assert f"numbers {' '.join(str(n) for n in sas.get_decimals())})" in body


async def test_her_other_session_verifies_the_gateway_device_as_element_does(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: Callable[..., Awaitable[Verifier]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    (gw_device,) = await devices_of(synapse, alice_mx)
    other = await verifiers(alice_mx, "alice-other-session")
    me, mine = alice_mx.user_id, other.client.device_id
    gw = await other.device_of(me, gw_device)

    # Element's way: a request, the gateway is ready, then the requester starts.
    txid = uuid.uuid4().hex
    await other.send(
        "request",
        gw,
        {
            "from_device": mine,
            "methods": ["m.sas.v1"],
            "timestamp": int(time.time() * 1000),
            "transaction_id": txid,
        },
    )
    asked, ready = await both(
        alice.next_matching(from_gateway("asks to verify")),
        other.sync_until(lambda: other.step("ready", txid)),
    )
    assert mine in asked["body"] and me in asked["body"]
    assert ready.source["content"]["from_device"] == gw_device
    assert "m.sas.v1" in ready.source["content"]["methods"]
    sas = nio.crypto.Sas(me, mine, other.client.olm.account.identity_keys["ed25519"], gw, txid)
    other.client.olm.key_verifications[txid] = sas
    answer = await other.client.to_device(sas.start_verification())
    assert isinstance(answer, nio.ToDeviceResponse), answer

    shown, _ = await both(
        alice.next_matching(from_gateway("Verifying")),
        other.sync_until(lambda: sas.established_sas is not None),
    )
    assert_same_sas(shown["body"], sas)
    assert gw_device not in {d for d in sas.verified_devices}

    # Both confirm; each side checks the other's MAC and marks the device verified.
    answer = await other.client.confirm_short_auth_string(txid)
    assert isinstance(answer, nio.ToDeviceResponse), answer
    alice.send_chat(MATRIX_JID, "verify yes")
    said, _ = await both(
        alice.next_matching(from_gateway("is verified")),
        other.sync_until(lambda: sas.verified and other.step("done", txid)),
    )
    assert mine in said["body"]
    assert other.client.olm.is_device_verified(gw)

    assert trust_of(await devices_listed(alice, me), mine) == "verified"

    # The gateway's store keeps it across a restart.
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(STARTED, after=mark, timeout=90)
    assert trust_of(await devices_listed(alice, me), mine) == "verified"
    assert not [line for line in gateway.lines if "Traceback" in line]


async def test_alice_verifies_bob_says_no_then_bob_cancels_and_bad_input(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: Callable[..., Awaitable[Verifier]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob_mx = await asyncio.to_thread(new_account, synapse, "bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    (gw_device,) = await devices_of(synapse, alice_mx)
    bob = await verifiers(bob_mx, "bob-store")
    bob_device = bob.client.device_id
    gw = await bob.device_of(alice_mx.user_id, gw_device)

    # Bad input: clear errors, and the gateway keeps going.
    for command, error in (
        (
            f"verify {bob.peer.user_id} NOSUCHDEVICE",
            f"has no device 'NOSUCHDEVICE' (their devices: {bob_device})",
        ),
        ("verify yes", "No verification waits for your answer"),
        ("verify bob", "I do not understand"),
        ("verify @bob", "is not a Matrix ID"),
        (f"verify {bob.peer.user_id}", "Which device"),
    ):
        alice.send_chat(MATRIX_JID, command)
        reply = await gateway_reply(alice)
        assert reply.startswith("Error:") and error in reply, reply

    # alice asks from XMPP: a request to bob's device, then start once bob is ready.
    alice.send_chat(MATRIX_JID, f"verify {bob.peer.user_id} {bob_device}")
    asked, request = await both(
        alice.next_matching(from_gateway("Asked the device")),
        bob.sync_until(lambda: bob.step("request")),
    )
    assert bob_device in asked["body"]
    content = request.source["content"]
    txid = content["transaction_id"]
    assert content["from_device"] == gw_device and "m.sas.v1" in content["methods"]
    await bob.send(
        "ready", gw, {"from_device": bob_device, "methods": ["m.sas.v1"], "transaction_id": txid}
    )
    await bob.sync_until(lambda: txid in bob.client.key_verifications)
    answer = await bob.client.accept_key_verification(txid)
    assert isinstance(answer, nio.ToDeviceResponse), answer
    sas = bob.client.key_verifications[txid]
    shown, _ = await both(
        alice.next_matching(from_gateway("Verifying")),
        bob.sync_until(lambda: sas.established_sas is not None),
    )
    assert_same_sas(shown["body"], sas)
    assert bob_device in shown["body"]

    # alice says they differ (with the ad-hoc command, whose form shows what waits):
    # bob's client is told the emoji did not match.
    form = await alice.plugin["xep_0050"].send_command(MATRIX_JID, "matrix/verify")  # type: ignore[no-untyped-call]
    assert bob_device in form["command"]["form"]["instructions"]
    said, cancel = await both(
        alice.run_command(MATRIX_JID, "matrix/verify", action="no"),
        bob.sync_until(lambda: bob.step("cancel", txid)),
    )
    assert said["command"]["status"] == "completed"
    assert "did not match" in said["command"]["notes"][0][1]
    assert cancel.source["content"]["code"] == "m.mismatched_sas"
    assert not bob.client.olm.is_device_verified(gw)
    assert trust_of(await devices_listed(alice, bob.peer.user_id), bob_device) == "unverified"

    # bob starts one the way nio does (no request), then cancels it: alice is told.
    answer = await bob.client.start_key_verification(gw)
    assert isinstance(answer, nio.ToDeviceResponse), answer
    (second,) = [t for t, s in bob.client.key_verifications.items() if t != txid]
    sas = bob.client.key_verifications[second]
    shown, _ = await both(
        alice.next_matching(from_gateway("Verifying")),
        bob.sync_until(lambda: sas.established_sas is not None),
    )
    assert_same_sas(shown["body"], sas)
    answer = await bob.client.cancel_key_verification(second)
    assert isinstance(answer, nio.ToDeviceResponse), answer
    told = await alice.next_matching(from_gateway("was cancelled"))
    assert bob_device in told["body"] and "cancelled by the user" in told["body"]
    alice.send_chat(MATRIX_JID, "verify list")
    assert "No verification in progress" in await gateway_reply(alice)
    assert not [line for line in gateway.lines if "Traceback" in line]
