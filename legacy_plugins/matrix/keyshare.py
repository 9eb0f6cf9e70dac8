"""Room key requests and forwarded room keys: the pure rules (:mod:`.crypto` does the I/O).

A new Matrix device cannot read what was sent before it existed: the senders' devices
shared each Megolm session only with the devices present then. As Element does for its
own new sessions, the gateway's device asks the user's *own* other devices for the keys
of events it cannot decrypt (``m.room_key_request``, action ``request``, to ``*`` of the
user), and they answer with ``m.forwarded_room_key`` (Olm-encrypted) once they trust it.
It does not ask the senders' devices, although the spec allows it: a key forwarded by
another user's device is refused anyway (anyone could forward a key they made up), so
asking them would only leak which sessions the gateway lacks.

The rules kept here, each a table-tested function or a small state machine fed the time:

- `KeyRequests`: one request per Megolm session (deduplicated, its ``request_id`` reused
  when sent again, as the spec asks), sent only after a delay (a sender's key is often
  merely late: asking at once is wasted traffic, element-web#23766), at most
  `MAX_WANTED` waiting and `BURST` sent at once, then `PER_MINUTE` a minute; a request
  ends (``request_cancellation``) when the key arrives, however it arrives. What changed
  is told (`KeyRequests.take_changes`) so that :mod:`.pending` keeps it across restarts.
- `judge_forward`: a forwarded key is taken only for a session this device asked for,
  from one of the user's own devices that the user verified.
- `judge_request`: another device's request is answered only for the user's own verified
  devices and for sessions this device holds; an unverified own device's request is kept
  (at most `MAX_HELD`) until the user verifies that device; other users get nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "BURST",
    "MAX_HELD",
    "MAX_WANTED",
    "MEGOLM",
    "PER_MINUTE",
    "IncomingRequest",
    "KeyRequests",
    "OutgoingRequest",
    "SessionRef",
    "cancellation_content",
    "judge_forward",
    "judge_request",
    "parse_key_request",
    "request_content",
]

MEGOLM = "m.megolm.v1.aes-sha2"
KEY_REQUEST = "m.room_key_request"
MAX_WANTED = 500
"""Sessions waiting for a key at most (the oldest is given up beyond)."""
BURST = 20
"""Requests sent at once before the rate limit applies."""
PER_MINUTE = 20
"""Requests sent a minute after the burst."""
MAX_HELD = 100
"""Requests of unverified own devices kept until they are verified."""

Trust = Literal["verified", "unverified", "blacklisted", "unknown"]
Verdict = Literal["share", "hold", "ignore"]


@dataclass(frozen=True, slots=True)
class SessionRef:
    """A Megolm session: where it is used and who made it."""

    room_id: str
    session_id: str
    sender_key: str
    """The Curve25519 key of the device that made it (deprecated in requests by spec
    v1.3, still required by matrix-nio's parser, so sent)."""


@dataclass(frozen=True, slots=True)
class OutgoingRequest:
    request_id: str
    session: SessionRef


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """An ``m.room_key_request`` another device sent to this one."""

    user_id: str
    device_id: str
    request_id: str
    session: SessionRef | None
    """None for a cancellation."""


def request_content(request: OutgoingRequest, my_device: str) -> dict[str, Any]:
    """The content of the ``m.room_key_request`` asking for ``request``'s session."""
    ref = request.session
    return {
        "action": "request",
        "body": {
            "algorithm": MEGOLM,
            "room_id": ref.room_id,
            "sender_key": ref.sender_key,
            "session_id": ref.session_id,
        },
        "request_id": request.request_id,
        "requesting_device_id": my_device,
    }


def cancellation_content(request_id: str, my_device: str) -> dict[str, Any]:
    return {
        "action": "request_cancellation",
        "request_id": request_id,
        "requesting_device_id": my_device,
    }


def _text(value: object) -> str:
    """A non-empty string, or `ValueError`."""
    if not isinstance(value, str) or not value:
        raise ValueError(value)
    return value


def parse_key_request(raw: Mapping[str, Any]) -> IncomingRequest | None:
    """An ``m.room_key_request`` to-device event, or None if it is not one or is
    malformed (a request for another algorithm than Megolm is None too)."""
    content = raw.get("content")
    if raw.get("type") != KEY_REQUEST or not isinstance(content, Mapping):
        return None
    try:
        sender = _text(raw.get("sender"))
        device = _text(content.get("requesting_device_id"))
        request_id = _text(content.get("request_id"))
        action, body = content.get("action"), content.get("body")
        if action == "request_cancellation":
            return IncomingRequest(sender, device, request_id, None)
        if action != "request" or not isinstance(body, Mapping):
            return None
        if body.get("algorithm") != MEGOLM:
            return None
        room, session = _text(body.get("room_id")), _text(body.get("session_id"))
    except ValueError:
        return None
    sender_key = body.get("sender_key")  # optional since spec v1.3: found without it
    key = sender_key if isinstance(sender_key, str) else ""
    return IncomingRequest(sender, device, request_id, SessionRef(room, session, key))


def judge_request(
    request: IncomingRequest, me: str, my_device: str, trust: Trust, held: bool
) -> tuple[Verdict, str]:
    """What to do with another device's key request, and why (for the log):
    ``share`` the key, ``hold`` the request until the device is verified, or ``ignore``.
    ``trust`` is the requesting device's; ``held`` whether this device has the session."""
    device = request.device_id
    rules: tuple[tuple[bool, Verdict, str], ...] = (
        (
            request.user_id != me,
            "ignore",
            f"{request.user_id} is another user: keys go to the user's devices only",
        ),
        (device == my_device, "ignore", "it is this device's own request"),
        (not held, "ignore", "this device does not have that session"),
        (trust == "unknown", "ignore", f"the device {device} is unknown"),
        (trust == "blacklisted", "ignore", f"the device {device} is blacklisted"),
        (trust == "unverified", "hold", f"the device {device} is not verified yet"),
    )
    for applies, verdict, why in rules:
        if applies:
            return verdict, why
    return "share", f"the device {device} is verified"


def judge_forward(
    *,
    sender: str,
    me: str,
    device_id: str | None,
    trust: Trust,
    asked: OutgoingRequest | None,
    algorithm: str,
    room_id: str,
) -> str | None:
    """Why a forwarded room key must be refused, or None to accept it. ``device_id`` and
    ``trust`` are those of the device that sent it (found by its Curve25519 key),
    ``asked`` this device's request for the session, if any."""
    rules = (
        (algorithm != MEGOLM, f"its algorithm {algorithm!r} is not Megolm"),
        (sender != me, f"it comes from {sender}, another user"),
        (device_id is None or trust == "unknown", "it comes from an unknown device"),
        (trust != "verified", f"it comes from the device {device_id}, which is not verified"),
        (asked is None, "Passerelle did not ask for that session"),
        (
            asked is not None and asked.session.room_id != room_id,
            "it is for another room than the one Passerelle asked for",
        ),
    )
    return next((why for applies, why in rules if applies), None)


class KeyRequests:
    """The sessions this device asks keys for (sans I/O: fed the time, returns what to
    send). ``new_id`` makes request IDs."""

    def __init__(
        self,
        new_id: Callable[[], str],
        *,
        max_wanted: int = MAX_WANTED,
        burst: int = BURST,
        per_minute: int = PER_MINUTE,
    ) -> None:
        self._new_id = new_id
        self._max = max_wanted
        self._burst = burst
        self._rate = per_minute / 60.0
        self._tokens = float(burst)
        self._refilled: float | None = None
        self._queued: OrderedDict[str, tuple[SessionRef, float]] = OrderedDict()
        """Sessions waiting for their first request (the delay, the rate limit), with
        the time before which they are not asked for."""
        self._sent: OrderedDict[str, OutgoingRequest] = OrderedDict()
        """Requests sent, by session ID, waiting for a key."""
        self.changed: set[str] = set()
        """Sessions whose request was made, sent or ended since `take_changes`."""

    def want(self, ref: SessionRef, not_before: float = 0.0) -> bool:
        """Ask for ``ref``'s key, not before the time ``not_before`` (the sender's key
        may merely be late); False if it is already asked for (or waiting)."""
        if ref.session_id in self._sent or ref.session_id in self._queued:
            return False
        self._queued[ref.session_id] = (ref, not_before)
        self.changed.add(ref.session_id)
        while len(self._queued) + len(self._sent) > self._max:
            if self._sent:
                gone, _ = self._sent.popitem(last=False)  # given up: the oldest request
            else:
                gone, _ = self._queued.popitem(last=False)
            self.changed.add(gone)
        return True

    def due(self, now: float) -> list[OutgoingRequest]:
        """The requests to send now (their time come, rate-limited); they count as sent."""
        if self._refilled is not None:
            self._tokens = min(self._burst, self._tokens + (now - self._refilled) * self._rate)
        self._refilled = now
        out = []
        for session_id, (ref, not_before) in list(self._queued.items()):
            if self._tokens < 1:
                break
            if not_before > now:
                continue
            del self._queued[session_id]
            request = OutgoingRequest(self._new_id(), ref)
            self._sent[session_id] = request
            self.changed.add(session_id)
            out.append(request)
            self._tokens -= 1
        return out

    def next_due(self) -> float | None:
        """The time the next waiting request may go out at (its delay and the rate
        limit), if any waits."""
        if not self._queued:
            return None
        soonest = min(t for _ref, t in self._queued.values())
        if self._tokens < 1 and self._refilled is not None:
            if self._rate <= 0:
                return None  # no more requests, ever
            soonest = max(soonest, self._refilled + (1 - self._tokens) / self._rate)
        return soonest

    def take_changes(self) -> dict[str, OutgoingRequest | SessionRef | None]:
        """What became of each session `changed` names, to store: its request sent, a
        session waiting to be asked for, or None (given up, or its key arrived)."""
        out: dict[str, OutgoingRequest | SessionRef | None] = {}
        for session_id in sorted(self.changed):
            queued = self._queued.get(session_id)
            sent = self._sent.get(session_id)
            out[session_id] = sent if sent is not None else None if queued is None else queued[0]
        self.changed.clear()
        return out

    def restore(self, sent: Iterable[OutgoingRequest], queued: Iterable[SessionRef]) -> None:
        """Take back what was stored (after a restart): requests sent keep their IDs
        (for the cancellation, or to ask again), the others are due at once."""
        for request in sent:
            self._sent[request.session.session_id] = request
        for ref in queued:
            self._queued[ref.session_id] = (ref, 0.0)

    def asked(self, session_id: str) -> OutgoingRequest | None:
        """The request sent for ``session_id``, if it waits for a key."""
        return self._sent.get(session_id)

    def arrived(self, session_ids: Iterable[str]) -> list[OutgoingRequest]:
        """Keys arrived: the requests to cancel (those sent for these sessions)."""
        done = []
        for session_id in session_ids:
            if self._queued.pop(session_id, None) is not None:
                self.changed.add(session_id)
            request = self._sent.pop(session_id, None)
            if request is not None:
                self.changed.add(session_id)
                done.append(request)
        return done

    def waiting(self) -> list[OutgoingRequest]:
        """The requests sent that still wait for a key (oldest first)."""
        return list(self._sent.values())

    @property
    def queued(self) -> int:
        return len(self._queued)
