"""Secret sharing's pure rules (legacy_plugins/matrix/gossip.py): which secrets are asked
for and of whom, which answers are taken, what a secret looks like in the log."""

from __future__ import annotations

from typing import Any

import pytest

from legacy_plugins.matrix.gossip import (
    GOSSIP_REQUEST,
    GOSSIP_SEND,
    WANTED,
    Received,
    SecretRequests,
    Sender,
    capture_secrets,
    parse_secret_send,
)

ME = "@alice:example.org"
BACKUP, SELF_SIGNING = WANTED


def requests() -> SecretRequests:
    ids = iter(f"r{n}" for n in range(100))
    return SecretRequests(new_id=lambda: next(ids))


def test_each_secret_is_asked_once_of_each_device_under_one_id() -> None:
    r = requests()
    assert r.ask(["DEV2", "DEV1"]) == [
        (BACKUP, "r0", ["DEV1", "DEV2"]),
        (SELF_SIGNING, "r1", ["DEV1", "DEV2"]),
    ]
    assert r.ask(["DEV1"]) == []
    assert r.ask(["DEV1", "DEV3"]) == [(BACKUP, "r0", ["DEV3"]), (SELF_SIGNING, "r1", ["DEV3"])]
    assert r.answered("r0") == (BACKUP, ["DEV1", "DEV2", "DEV3"])
    assert r.answered("r0") is None
    assert r.ask(["DEV4"]) == [(SELF_SIGNING, "r1", ["DEV4"])]  # the backup key is had
    assert r.ask([]) == []


VERIFIED = Sender(ME, "DEV1", True)
UNVERIFIED = Sender(ME, "DEV2", False)
MALLORY = Sender("@mallory:example.org", "EVIL", True)


@pytest.mark.parametrize(
    ("received", "sender", "verdict", "why"),
    [
        (Received(ME, "curve", "r0", "s"), VERIFIED, "take", BACKUP),
        (Received(ME, "curve", "r1", "s"), VERIFIED, "take", SELF_SIGNING),
        (Received(ME, "", "r0", "s"), VERIFIED, "refuse", "not encrypted"),
        (Received(ME, "curve", "r0", "s"), UNVERIFIED, "refuse", "DEV2 is not verified"),
        (Received(ME, "curve", "r0", "s"), None, "refuse", "the homeserver does not list"),
        (Received(ME, "curve", "r0", "s"), MALLORY, "refuse", "only your own devices"),
        (Received(MALLORY.user, "curve", "r0", "s"), MALLORY, "refuse", "only your own"),
        (Received(ME, "curve", "nope", "s"), VERIFIED, "refuse", "answers no request"),
    ],
)
def test_which_answers_are_taken(
    received: Received, sender: Sender | None, verdict: str, why: str
) -> None:
    r = requests()
    r.ask(["DEV1"])
    got, what = r.judge(received, ME, sender)
    assert got == verdict
    assert why in what


def test_an_answered_request_takes_no_second_answer() -> None:
    r = requests()
    r.ask(["DEV1"])
    r.answered("r0")
    assert r.judge(Received(ME, "curve", "r0", "s"), ME, VERIFIED)[0] == "refuse"


@pytest.mark.parametrize(
    ("payload", "parsed"),
    [
        ({"content": {"request_id": "r0", "secret": "c2VjcmV0"}}, ("r0", "c2VjcmV0")),
        ({"content": {"request_id": "r0"}}, None),
        ({"content": {"request_id": "", "secret": "x"}}, None),
        ({"content": {"request_id": 5, "secret": "x"}}, None),
        ({"content": "x"}, None),
        ("x", None),
        (None, None),
    ],
)
def test_parse_secret_send(payload: object, parsed: tuple[str, str] | None) -> None:
    got = parse_secret_send(ME, "curve", payload)
    assert (None if got is None else (got.request_id, got.secret)) == parsed


def test_a_secret_is_not_in_its_repr() -> None:
    got = parse_secret_send(ME, "curve", {"content": {"request_id": "r0", "secret": "TOPSECRET"}})
    assert "TOPSECRET" not in repr(got)


class FakeOlm:
    def __init__(self) -> None:
        self.handled: list[str] = []

    def _handle_olm_event(self, sender: str, sender_key: str, payload: dict[str, Any]) -> Any:
        self.handled.append(payload["type"])
        return "event"


def test_secrets_nio_decrypts_are_kept_from_nio_and_requests_never_answered() -> None:
    olm, sink = FakeOlm(), []  # type: ignore[var-annotated]
    capture_secrets(olm, sink)
    send = {"type": GOSSIP_SEND, "content": {"request_id": "r0", "secret": "s"}}
    assert olm._handle_olm_event(ME, "curve", send) is None
    assert olm._handle_olm_event(ME, "curve", {"type": GOSSIP_REQUEST, "content": {}}) is None
    assert olm._handle_olm_event(ME, "curve", {"type": "m.room_key"}) == "event"
    assert sink == [(ME, "curve", send)]
    assert olm.handled == ["m.room_key"]
    for _ in range(50):
        olm._handle_olm_event(ME, "curve", send)
    assert len(sink) == 20  # bounded


def test_secret_events_in_the_clear_are_taken_out_of_a_sync(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A request is only logged (DEBUG), a secret sent in the clear is kept to be
    refused, everything else goes on to the device."""
    from legacy_plugins.matrix.events import SyncBatch
    from legacy_plugins.matrix.gossip import SessionGossip

    request = {"type": GOSSIP_REQUEST, "sender": ME, "content": {"action": "request"}}
    clear = {"type": GOSSIP_SEND, "sender": ME, "content": {"request_id": "r0", "secret": "s"}}
    key = {"type": "m.room.encrypted", "sender": ME, "content": {}}
    batch = SyncBatch("s1", to_device=(request, key, clear))
    with caplog.at_level("DEBUG", logger="legacy_plugins.matrix.gossip"):
        rest, found = SessionGossip()._secret_events(batch)
    assert rest.to_device == (key,)
    assert found == [Received(ME, "", "r0", "s")]
    assert [r.levelname for r in caplog.records] == ["DEBUG"]
    assert "Not answering a secret request" in caplog.records[0].getMessage()
    untouched = SyncBatch("s2", to_device=(key,))
    assert SessionGossip()._secret_events(untouched) == (untouched, [])
