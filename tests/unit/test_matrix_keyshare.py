"""The rules of Matrix room key requests and forwarded keys (legacy_plugins/matrix/keyshare.py)."""

from __future__ import annotations

import itertools
import random
from typing import Any

import pytest

from legacy_plugins.matrix.keyshare import (
    MEGOLM,
    IncomingRequest,
    KeyRequests,
    OutgoingRequest,
    SessionRef,
    cancellation_content,
    judge_forward,
    judge_request,
    parse_key_request,
    request_content,
)

ME, OTHER = "@alice:example.org", "@mallory:example.org"
REF = SessionRef("!room:example.org", "SESSION", "CURVEKEY")
BODY = {"algorithm": MEGOLM, "room_id": REF.room_id, "session_id": "SESSION", "sender_key": "K"}


def event(content: dict[str, Any], sender: Any = ME, kind: str = "m.room_key_request") -> Any:
    return {"type": kind, "sender": sender, "content": content}


def req(action: str = "request", **changes: Any) -> dict[str, Any]:
    content: dict[str, Any] = {
        "action": action,
        "requesting_device_id": "PHONE",
        "request_id": "r1",
    }
    if action == "request":
        content["body"] = dict(BODY)
    content.update(changes)
    return content


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (event(req()), IncomingRequest(ME, "PHONE", "r1", SessionRef(REF.room_id, "SESSION", "K"))),
        (event(req("request_cancellation")), IncomingRequest(ME, "PHONE", "r1", None)),
        (  # spec v1.3: sender_key deprecated, may be missing
            event(req(body={k: v for k, v in BODY.items() if k != "sender_key"})),
            IncomingRequest(ME, "PHONE", "r1", SessionRef(REF.room_id, "SESSION", "")),
        ),
        (event(req(), kind="m.room_key"), None),
        (event(req(), sender=None), None),
        (event(req(action="share")), None),
        (event(req(body={**BODY, "algorithm": "m.olm.v1.curve25519-aes-sha2"})), None),
        (event(req(body={**BODY, "room_id": ""})), None),
        (event(req(body={**BODY, "session_id": 5})), None),
        (event(req(body="nope")), None),
        (event(req(requesting_device_id="")), None),
        (event(req(request_id=None)), None),
        ({"type": "m.room_key_request", "sender": ME, "content": []}, None),
    ],
)
def test_parse_key_request(raw: Any, expected: IncomingRequest | None) -> None:
    assert parse_key_request(raw) == expected


def test_parse_key_request_never_raises_on_random_input() -> None:
    rng = random.Random(7)
    values: list[Any] = [None, "", "x", 0, [], {}, {"a": 1}, MEGOLM, "request", ME]
    keys = ["type", "sender", "content", "action", "body", "request_id", "requesting_device_id"]
    keys += ["algorithm", "room_id", "session_id", "sender_key"]
    for _ in range(2000):
        content = {rng.choice(keys): rng.choice(values) for _ in range(rng.randint(0, 6))}
        if rng.random() < 0.5:
            content["body"] = {rng.choice(keys): rng.choice(values) for _ in range(4)}
        raw = {"type": "m.room_key_request", "sender": rng.choice(values), "content": content}
        parse_key_request(raw)


def test_what_is_sent_follows_the_spec() -> None:
    request = OutgoingRequest("abc", REF)
    assert request_content(request, "GATEWAY") == {
        "action": "request",
        "body": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": REF.room_id,
            "sender_key": "CURVEKEY",
            "session_id": "SESSION",
        },
        "request_id": "abc",
        "requesting_device_id": "GATEWAY",
    }
    assert cancellation_content("abc", "GATEWAY") == {
        "action": "request_cancellation",
        "request_id": "abc",
        "requesting_device_id": "GATEWAY",
    }


INCOMING = IncomingRequest(ME, "PHONE", "r1", REF)


@pytest.mark.parametrize(
    ("request_", "trust", "held", "verdict", "why"),
    [
        (INCOMING, "verified", True, "share", "is verified"),
        (INCOMING, "unverified", True, "hold", "not verified yet"),
        (INCOMING, "blacklisted", True, "ignore", "blacklisted"),
        (INCOMING, "unknown", True, "ignore", "unknown"),
        (INCOMING, "verified", False, "ignore", "does not have that session"),
        (IncomingRequest(OTHER, "PHONE", "r1", REF), "verified", True, "ignore", "another user"),
        (IncomingRequest(ME, "GATEWAY", "r1", REF), "verified", True, "ignore", "own request"),
    ],
)
def test_judge_request(
    request_: IncomingRequest, trust: Any, held: bool, verdict: str, why: str
) -> None:
    got, reason = judge_request(request_, ME, "GATEWAY", trust, held)
    assert (got, why in reason) == (verdict, True), reason


ASKED = OutgoingRequest("r1", REF)
GOOD: dict[str, Any] = {
    "sender": ME,
    "me": ME,
    "device_id": "PHONE",
    "trust": "verified",
    "asked": ASKED,
    "algorithm": MEGOLM,
    "room_id": REF.room_id,
}


@pytest.mark.parametrize(
    ("changes", "refused"),
    [
        ({}, None),
        ({"trust": "unverified"}, "PHONE, which is not verified"),
        ({"trust": "blacklisted"}, "not verified"),
        ({"trust": "unknown"}, "unknown device"),
        ({"device_id": None}, "unknown device"),
        ({"sender": OTHER}, "another user"),
        ({"sender": OTHER, "trust": "unverified"}, "another user"),
        ({"asked": None}, "did not ask"),
        ({"room_id": "!other:example.org"}, "another room"),
        ({"algorithm": "m.olm.v1.curve25519-aes-sha2"}, "not Megolm"),
    ],
)
def test_judge_forward(changes: dict[str, Any], refused: str | None) -> None:
    why = judge_forward(**{**GOOD, **changes})
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


def refs(n: int) -> list[SessionRef]:
    return [SessionRef("!r:x", f"S{i}", "K") for i in range(n)]


def requests(**limits: int) -> KeyRequests:
    ids = itertools.count()
    return KeyRequests(lambda: f"id{next(ids)}", **limits)


def test_one_request_per_session_then_cancelled_when_the_key_arrives() -> None:
    kr = requests()
    assert kr.want(REF) is True
    assert kr.want(REF) is False  # the same session again: nothing new
    (sent,) = kr.due(0.0)
    assert sent == OutgoingRequest("id0", REF)
    assert kr.want(REF) is False  # still waiting
    assert kr.due(1.0) == []
    assert kr.asked("SESSION") == sent
    assert kr.arrived(["OTHER"]) == []
    assert kr.arrived(["SESSION"]) == [sent]
    assert kr.asked("SESSION") is None and kr.waiting() == []
    assert kr.arrived(["SESSION"]) == []  # cancelled once


@pytest.mark.parametrize(
    ("wanted", "times", "sent_at_each"),
    [
        (5, [0.0], [5]),
        (30, [0.0], [20]),  # the burst
        (30, [0.0, 1.0, 30.0, 60.0], [20, 0, 10, 0]),  # then 20 a minute
        (30, [0.0, 3.0, 6.0], [20, 1, 1]),
    ],
)
def test_requests_are_rate_limited(
    wanted: int, times: list[float], sent_at_each: list[int]
) -> None:
    kr = requests()
    for ref in refs(wanted):
        kr.want(ref)
    assert [len(kr.due(t)) for t in times] == sent_at_each


def test_waiting_sessions_are_bounded_oldest_given_up() -> None:
    kr = requests(max_wanted=10, burst=5)
    for ref in refs(5):
        kr.want(ref)
    kr.due(0.0)
    for ref in refs(20)[5:]:
        kr.want(ref)
    assert len(kr.waiting()) + kr.queued == 10
    assert kr.waiting() == []  # the sent ones were the oldest: given up first
    assert [r.session.session_id for r in kr.due(1000.0)] == [f"S{i}" for i in range(10, 15)]


def test_a_request_waits_for_its_time_and_a_key_arriving_meanwhile_ends_it() -> None:
    kr = requests()
    late, missing = refs(2)
    kr.want(late, not_before=5.0)
    kr.want(missing, not_before=6.0)
    assert kr.next_due() == 5.0
    assert kr.due(4.9) == []
    assert kr.arrived(["S0"]) == []  # its key came first: nothing was sent, nothing to cancel
    assert kr.next_due() == 6.0
    assert kr.due(5.5) == []
    (sent,) = kr.due(6.0)
    assert sent.session == missing
    assert kr.next_due() is None


@pytest.mark.parametrize(
    ("burst", "per_minute", "due_after_the_burst"),
    [
        (1, 6, 110.0),  # one token every 10 s
        (2, 60, 101.0),
        (1, 0, None),  # no more requests, ever: no time to come back at
    ],
)
def test_the_next_request_is_due_when_the_rate_limit_allows(
    burst: int, per_minute: int, due_after_the_burst: float | None
) -> None:
    kr = requests(burst=burst, per_minute=per_minute)
    for ref in refs(burst + 1):
        kr.want(ref)
    assert len(kr.due(100.0)) == burst
    assert kr.next_due() == due_after_the_burst
    if due_after_the_burst is not None:
        assert kr.due(due_after_the_burst - 0.5) == []
        assert len(kr.due(due_after_the_burst)) == 1
