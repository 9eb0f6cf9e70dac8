"""The verification flow (verification.py) between two gateway devices, without a server.

Two `Verifications`, each on a real nio Olm machine (in-memory SQLite store) that knows
the other device's keys; their to-device messages are handed to the other side in
memory, and the clock is a number the test moves. This covers what the end-to-end tests
against Synapse (tests/e2e/test_matrix_verification.py) cannot wait for or cannot make a
real client do: the ten-minute timeout, a MAC tampered with on the way, the other side
confirming first, a step out of order.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import nio  # type: ignore[import-untyped]
import pytest

from legacy_plugins.matrix.ids import UserId
from legacy_plugins.matrix.verification import TIMEOUT_S, VerificationError, Verifications


@dataclass
class Side:
    """One device: its Olm machine, what it sent, what its user was told."""

    user: str
    device: str
    olm: Any = None
    sent: list[dict[str, Any]] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    verifications: Any = None

    # what Verifications uses of MatrixClient and E2EE
    @property
    def me(self) -> str:
        return self.user

    @property
    def device_id(self) -> str:
        return self.device

    @property
    def ed25519(self) -> str:
        return str(self.olm.account.identity_keys["ed25519"])

    @property
    def _olm(self) -> Any:
        return self.olm

    async def devices(self, user: UserId) -> list[Any]:
        return []

    async def send_to_device(self, event_type: str, messages: Mapping[str, Any]) -> None:
        for devices in messages.values():
            for content in devices.values():
                self.sent.append({"type": event_type, "sender": self.user, "content": content})


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def side(user: str, device: str, clock: Clock) -> Side:
    s = Side(user, device)
    s.olm = nio.crypto.Olm(user, device, nio.store.SqliteMemoryStore(user, device, "pickle"))
    s.verifications = Verifications(cast(Any, s), cast(Any, s), s.said.append, clock)
    return s


def introduce(a: Side, b: Side) -> None:
    """``a`` knows ``b``'s device keys, as after a keys query."""
    keys = b.olm.account.identity_keys
    device = nio.crypto.OlmDevice(
        b.user, b.device, {"ed25519": keys["ed25519"], "curve25519": keys["curve25519"]}
    )
    a.olm.device_store.add(device)
    a.olm.store.save_device_keys({b.user: {b.device: device}})


@pytest.fixture
def pair() -> tuple[Side, Side, Clock]:
    clock = Clock()
    alice, bob = side("@alice:a.org", "ALICEGW", clock), side("@bob:b.org", "BOBGW", clock)
    introduce(alice, bob)
    introduce(bob, alice)
    return alice, bob, clock


async def relay(a: Side, b: Side, tamper: Any = None) -> None:
    """Deliver what each side sent to the other until nothing moves (bounded)."""
    for _ in range(20):
        if not a.sent and not b.sent:
            return
        for src, dst in ((a, b), (b, a)):
            events, src.sent[:] = list(src.sent), []
            if tamper is not None:
                events = [tamper(e) for e in events]
            await dst.verifications.on_events(events)
    raise AssertionError("the sides kept talking")


def trusted(a: Side, b: Side) -> bool:
    return bool(a.olm.is_device_verified(a.olm.device_store[b.user][b.device]))


async def shown_emoji(a: Side, b: Side) -> tuple[str, str]:
    """alice asks bob's device; both are shown the emoji lines (returned)."""
    answer = await a.verifications.command([b.user, b.device])
    assert answer.startswith("Asked the device BOBGW")
    await relay(a, b)
    line_a = next(t for t in a.said if t.startswith("🔐 Verifying")).splitlines()[1]
    line_b = next(t for t in b.said if t.startswith("🔐 Verifying")).splitlines()[1]
    return line_a, line_b


async def test_both_confirm_and_both_devices_are_verified(pair: tuple[Side, Side, Clock]) -> None:
    alice, bob, _clock = pair
    line_a, line_b = await shown_emoji(alice, bob)
    assert line_a == line_b and len(line_a.split("  ")) == 7
    assert bob.said[0].startswith("🔐 the device ALICEGW of @alice:a.org asks to verify")
    assert await alice.verifications.command(["yes"]) == (
        "Confirmed; waiting for the device BOBGW of @bob:b.org to confirm too."
    )
    await relay(alice, bob)
    # bob's side had alice's MAC before bob said yes: his answer finishes it.
    assert (
        await bob.verifications.command(["yes"])
        == "✅ the device ALICEGW of @alice:a.org is verified."
    )
    await relay(alice, bob)
    assert alice.said[-1] == "✅ the device BOBGW of @bob:b.org is verified."
    assert trusted(alice, bob) and trusted(bob, alice)
    assert alice.verifications.pending().startswith("No verification in progress")


async def test_no_cancels_with_a_mismatch_on_both_sides(pair: tuple[Side, Side, Clock]) -> None:
    alice, bob, _clock = pair
    await shown_emoji(alice, bob)
    answer = await bob.verifications.command(["no"])
    assert answer.endswith("the emoji did not match.")
    await relay(alice, bob)
    assert alice.said[-1] == (
        "❌ The verification of the device BOBGW of @bob:b.org was cancelled: "
        "the emoji or numbers did not match."
    )
    assert not trusted(alice, bob) and not trusted(bob, alice)
    with pytest.raises(VerificationError, match="No verification waits"):
        await alice.verifications.command(["yes"])


async def test_a_mac_changed_on_the_way_verifies_nobody(pair: tuple[Side, Side, Clock]) -> None:
    alice, bob, _clock = pair
    await shown_emoji(alice, bob)

    def spoil(event: dict[str, Any]) -> dict[str, Any]:
        if event["type"] == "m.key.verification.mac":
            mac = {k: "A" * len(v) for k, v in event["content"]["mac"].items()}
            return {**event, "content": {**event["content"], "mac": mac}}
        return event

    await alice.verifications.command(["yes"])
    await bob.verifications.command(["yes"])
    await relay(alice, bob, spoil)
    assert not trusted(alice, bob) and not trusted(bob, alice)
    assert any("the keys did not match" in t for t in alice.said + bob.said)


async def test_ten_minutes_without_a_step_cancel_on_both_sides(
    pair: tuple[Side, Side, Clock],
) -> None:
    alice, bob, clock = pair
    await shown_emoji(alice, bob)
    clock.now += TIMEOUT_S - 1
    await alice.verifications.on_events([])
    assert not alice.sent
    clock.now += 2
    await alice.verifications.on_events([])  # what each sync does
    assert alice.said[-1] == (
        "❌ The verification of the device BOBGW of @bob:b.org was cancelled: it timed out."
    )
    assert [e["content"]["code"] for e in alice.sent] == ["m.timeout"]
    await relay(alice, bob)
    assert bob.said[-1].endswith("was cancelled: it timed out.")
    assert bob.verifications.pending().startswith("No verification in progress")


async def test_steps_out_of_order_or_unknown_are_refused(pair: tuple[Side, Side, Clock]) -> None:
    alice, bob, _clock = pair
    await alice.verifications.command([bob.user, bob.device])
    (request,) = alice.sent
    txid = request["content"]["transaction_id"]
    alice.sent.clear()
    # A MAC before anything started: cancelled as unexpected, the user told.
    mac = {"type": "m.key.verification.mac", "sender": bob.user,
           "content": {"transaction_id": txid, "mac": {}, "keys": "x"}}  # fmt: skip
    await alice.verifications.on_events([mac])
    assert [e["content"]["code"] for e in alice.sent] == ["m.unexpected_message"]
    assert "a step came out of order" in alice.said[-1]
    # Steps of unknown transactions, from someone else, or without one: ignored.
    alice.sent.clear()
    await alice.verifications.on_events(
        [
            {
                "type": "m.key.verification.key",
                "sender": bob.user,
                "content": {"transaction_id": "nope"},
            },
            {
                "type": "m.key.verification.ready",
                "sender": "@eve:e.org",
                "content": {"transaction_id": txid},
            },
            {"type": "m.key.verification.start", "sender": bob.user, "content": {}},
            {"type": "m.key.verification.request", "sender": bob.user, "content": "junk"},
        ]
    )
    assert not alice.sent
    # A request without emoji among its methods is refused with m.unknown_method.
    old: dict[str, Any] = {"type": "m.key.verification.request", "sender": bob.user,
           "content": {"transaction_id": "t2", "from_device": bob.device,
                       "methods": ["m.qr_code.show.v1"], "timestamp": 0}}  # fmt: skip
    await alice.verifications.on_events([old])
    assert not alice.sent  # too old (timestamp 0): ignored
    qr = {**old, "content": {**old["content"], "timestamp": int(time.time() * 1000)}}
    await alice.verifications.on_events([qr])
    assert [e["content"]["code"] for e in alice.sent] == ["m.unknown_method"]


async def test_bad_commands(pair: tuple[Side, Side, Clock]) -> None:
    alice, bob, _clock = pair
    with pytest.raises(VerificationError, match="this gateway's own device"):
        await alice.verifications.command([alice.user, alice.device])
    with pytest.raises(VerificationError, match=r"has no device 'NOPE' \(their devices: none"):
        await alice.verifications.command([bob.user, "NOPE"])
    await alice.verifications.command([bob.user, bob.device])
    with pytest.raises(VerificationError, match="already in progress"):
        await alice.verifications.command([bob.user, bob.device])
    assert "waiting for it to accept" in await alice.verifications.command(["list"])
    assert await alice.verifications.command(["no"]) == (
        "Cancelled the verification of the device BOBGW of @bob:b.org."
    )
