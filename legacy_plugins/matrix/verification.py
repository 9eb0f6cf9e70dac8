"""Interactive verification of Matrix devices (SAS: seven emoji or three numbers).

The XMPP user verifies devices through the gateway's Matrix device: another device (their
own other session, or a contact's) asks to verify it, or the user asks with
``verify @bob:example.org DEVICE``. Both devices then show the same emoji (and numbers)
if nobody sits in between; the gateway sends them to the user, who compares and answers
``verify yes`` or ``verify no``. When both sides have confirmed, the other device is
marked verified in the device's store (it survives restarts; ``device @bob…`` shows it).

The SAS is :mod:`.sas` (on vodozemac). matrix-nio's own `Sas` is not used: in nio 0.26
it disagrees with other clients (see :mod:`.sas`), knows only the ``start``/``accept``/
``key``/``mac``/``cancel`` messages and cancels a verification one minute after it
began; Matrix clients such as Element first send ``request`` and wait for ``ready``, and
send ``done`` at the end. `Verifications` runs the whole to-device flow:

    request → ready → start → accept → key ⇄ key → (both users compare) → mac ⇄ mac → done

A device that sends ``start`` without a request (nio clients) is answered too. The
gateway answers ``ready`` and ``accept`` on its own: neither trusts anything, only the
user's ``verify yes`` does. A step that does not come within `TIMEOUT_S` cancels the
verification (checked at each sync); a cancel from the other side is told to the user.
Verification requests sent as room messages (Element's way of verifying *another user*,
which needs cross-signing) and QR codes are not supported: the other side is told so
with ``m.unknown_method`` where it asks by to-device message.

The pure part (`parse_verify`, `format_sas`, `cancel_text`) is tested as tables.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from .client import MatrixClient
from .crypto import E2EE
from .errors import MatrixError
from .ids import UserId, is_user_id
from .sas import Sas, SasError

__all__ = [
    "TIMEOUT_S",
    "Answer",
    "ListPending",
    "StartVerify",
    "VerificationError",
    "Verifications",
    "cancel_text",
    "format_sas",
    "is_verification",
    "parse_verify",
]

log = logging.getLogger(__name__)

PREFIX = "m.key.verification."
SAS = "m.sas.v1"
TIMEOUT_S = 600.0
"""A verification with no step for this long is cancelled (the spec's ten minutes)."""
_REQUEST_PAST_MS = 10 * 60 * 1000
_REQUEST_FUTURE_MS = 5 * 60 * 1000
"""Requests older or further in the future than these are ignored (spec)."""
_KEPT = 20
"""Verifications in progress at once; the oldest is cancelled past that."""

USAGE = (
    "Usage: 'verify @bob:example.org DEVICEID' to verify one of bob's devices (or one of "
    "your own), 'verify yes' or 'verify no' to answer whether the emoji match "
    "('verify yes DEVICEID' when several wait), 'verify list' to list those in progress."
)

_CANCEL_CODES = {
    "m.user": "cancelled by the user",
    "m.timeout": "it timed out",
    "m.mismatched_sas": "the emoji or numbers did not match",
    "m.key_mismatch": "the keys did not match (a different device, or someone in between)",
    "m.mismatched_commitment": "the keys did not match the commitment",
    "m.unknown_method": "no verification method in common (only emoji/numbers work here)",
    "m.unknown_transaction": "the other side did not know this verification",
    "m.unexpected_message": "a step came out of order",
    "m.user_error": "a message came from the wrong user",
    "m.invalid_message": "a malformed message",
    "m.accepted": "another device of that user answered",
}


class VerificationError(Exception):
    """Something the user asked cannot be done; the text says why and what next."""


# --- the pure part -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartVerify:
    """``verify @bob:example.org DEVICEID``."""

    user: UserId
    device: str


@dataclass(frozen=True, slots=True)
class Answer:
    """``verify yes|no [DEVICEID]``."""

    yes: bool
    device: str | None = None


@dataclass(frozen=True, slots=True)
class ListPending:
    """``verify list`` (or nothing after ``verify``)."""


_YES = frozenset({"yes", "y", "ok", "match", "confirm"})
_NO = frozenset({"no", "n", "cancel", "mismatch", "reject"})


def parse_verify(args: Sequence[str]) -> StartVerify | Answer | ListPending:
    """What ``verify …`` asks; `VerificationError` (with the usage) if nothing sensible."""
    words = [a for a in args if a.strip()]
    if not words or (len(words) == 1 and words[0].strip().lower() in ("list", "status")):
        return ListPending()
    first = words[0].strip()
    if first.lower() in _YES | _NO and len(words) <= 2:
        device = words[1].strip() if len(words) == 2 else None
        return Answer(first.lower() in _YES, device)
    if first.startswith("@"):
        if not is_user_id(first):
            raise VerificationError(f"{first!r} is not a Matrix ID (@bob:example.org). {USAGE}")
        if len(words) != 2:
            raise VerificationError(
                f"Which device of {first}? 'device {first}' lists them. {USAGE}"
            )
        return StartVerify(UserId(first), words[1].strip())
    raise VerificationError(f"I do not understand {' '.join(words)!r}. {USAGE}")


def format_sas(
    user: str, device: str, emoji: Sequence[tuple[str, str]], decimals: Sequence[int]
) -> str:
    """The message that shows the user what to compare."""
    shown = "  ".join(f"{symbol} {name}" for symbol, name in emoji)
    numbers = " ".join(str(n) for n in decimals)
    return (
        f"🔐 Verifying the device {device} of {user}. Check that it shows the same emoji, "
        f"in the same order:\n{shown}\n(or the numbers {numbers})\n"
        f"Same? Answer 'verify yes'. Different? Answer 'verify no'."
    )


def cancel_text(code: str, reason: str) -> str:
    """Why a verification was cancelled, in words."""
    known = _CANCEL_CODES.get(code)
    if known is not None:
        return known
    return f"{reason or 'no reason given'} ({code or 'no code'})"


def is_verification(event: Mapping[str, Any]) -> bool:
    """Whether a to-device event is a step of a key verification."""
    kind = event.get("type")
    return isinstance(kind, str) and kind.startswith(PREFIX)


# --- the flow --------------------------------------------------------------------------

Stage = Literal["requested", "ready", "started", "keys", "confirmed"]


@dataclass(slots=True)
class _Verification:
    txid: str
    user: UserId
    device: str
    ours: bool
    """Whether this gateway asked (request or start)."""
    stage: Stage
    last: float
    sas: Sas | None = None
    """From ``start`` on."""
    label: str = field(default="")

    def __post_init__(self) -> None:
        self.label = f"the device {self.device} of {self.user}"


class Verifications:
    """The verifications of one device. ``say`` tells the XMPP user something."""

    def __init__(
        self,
        e2ee: E2EE,
        matrix: MatrixClient,
        say: Callable[[str], None],
        clock: Callable[[], float] = time.monotonic,
        on_verified: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._on_verified = on_verified
        """Run once a device is verified (keys it asked for, keys to ask it for)."""
        self._e2ee = e2ee
        self._olm: Any = e2ee._olm  # nio's Olm machine: its device store and account
        self._matrix = matrix
        self._say = say
        self._clock = clock
        self._active: dict[str, _Verification] = {}
        self._lock = asyncio.Lock()

    @property
    def _me(self) -> tuple[str, str, str]:
        return self._matrix.me, self._e2ee.device_id, self._e2ee.ed25519

    # -- what the user does -------------------------------------------------------------

    async def command(self, args: Sequence[str]) -> str:
        """``verify …``: the answer to show; `VerificationError` for bad input."""
        what = parse_verify(args)
        async with self._lock:
            await self._expire()
            if isinstance(what, StartVerify):
                return await self._request(what.user, what.device)
            if isinstance(what, Answer):
                return await self._answer(what)
            return self.pending()

    def pending(self) -> str:
        if not self._active:
            return f"No verification in progress. {USAGE}"
        lines = ["Verifications in progress:"]
        for v in self._active.values():
            step = {
                "requested": "waiting for it to accept",
                "ready": "waiting for it to start",
                "started": "exchanging keys",
                "keys": "waiting for your answer (verify yes / verify no)",
                "confirmed": "you confirmed; waiting for it to confirm",
            }[v.stage]
            lines.append(f"{v.label}: {step}")
        return "\n".join(lines)

    async def _request(self, user: UserId, device_id: str) -> str:
        me, own_device, _key = self._me
        if user == me and device_id == own_device:
            raise VerificationError(f"{device_id} is this gateway's own device.")
        device = await self._device(user, device_id)
        if device is None:
            known = [d.device_id for d in await self._e2ee.devices(user)]
            listed = ", ".join(known) if known else "none with encryption keys"
            raise VerificationError(
                f"{user} has no device {device_id!r} (their devices: {listed})."
            )
        for v in self._active.values():
            if v.user == user and v.device == device_id:
                raise VerificationError(f"A verification with {v.label} is already in progress.")
        txid = uuid.uuid4().hex
        content = {
            "from_device": own_device,
            "methods": [SAS],
            "timestamp": int(time.time() * 1000),
            "transaction_id": txid,
        }
        await self._send("request", user, device_id, content)
        await self._keep(_Verification(txid, user, device_id, True, "requested", self._clock()))
        return (
            f"Asked the device {device_id} of {user} to verify this gateway's device: accept "
            "there; the emoji to compare follow here."
        )

    async def _answer(self, answer: Answer) -> str:
        v = self._answered(answer)
        v.last = self._clock()
        if not answer.yes:
            if v.stage in ("keys", "confirmed"):
                await self._cancel(v, "m.mismatched_sas", "Mismatched short authentication string")
                return f"Cancelled the verification of {v.label}: the emoji did not match."
            await self._cancel(v, "m.user", "Cancelled by the user")
            return f"Cancelled the verification of {v.label}."
        assert v.sas is not None  # the emoji were shown
        await self._send("mac", v.user, v.device, v.sas.mac_content())
        v.stage = "confirmed"
        if v.sas.their_mac_ok:
            return await self._verified(v)
        return f"Confirmed; waiting for {v.label} to confirm too."

    def _answered(self, answer: Answer) -> _Verification:
        """The verification an answer is for: 'no' cancels any, 'yes' needs the emoji."""
        candidates = [
            v
            for v in self._active.values()
            if (answer.device is None or v.device == answer.device)
            and (not answer.yes or v.stage == "keys")
        ]
        if not candidates:
            raise VerificationError(f"No verification waits for your answer. {self.pending()}")
        if len(candidates) > 1:
            yes = "yes" if answer.yes else "no"
            raise VerificationError(
                f"Several verifications are in progress: say 'verify {yes} DEVICEID' with "
                "one of " + ", ".join(v.device for v in candidates) + "."
            )
        return candidates[0]

    # -- what the other device does -------------------------------------------------------

    async def on_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        """Steps received by to-device message (see `is_verification`), in order."""
        async with self._lock:
            for raw in events:
                try:
                    await self._on_event(raw)
                except MatrixError as e:
                    log.warning(
                        "Could not answer a verification step from %s: %s", raw.get("sender"), e
                    )
            await self._expire()

    async def _on_event(self, raw: Mapping[str, Any]) -> None:
        kind = str(raw.get("type", "")).removeprefix(PREFIX)
        sender = UserId(str(raw.get("sender", "")))
        content = raw.get("content")
        if not isinstance(content, Mapping) or not isinstance(content.get("transaction_id"), str):
            log.debug("Ignored a verification %s without a transaction from %s", kind, sender)
            return
        txid = content["transaction_id"]
        if kind == "request":
            await self._on_request(sender, txid, content)
            return
        if kind == "start":
            await self._on_start(sender, txid, content)
            return
        v = self._active.get(txid)
        if v is None or v.user != sender:
            if kind not in ("cancel", "done"):
                log.info("Verification %s from %s for an unknown transaction", kind, sender)
            return
        v.last = self._clock()
        if kind == "cancel":
            del self._active[txid]
            code, reason = str(content.get("code", "")), str(content.get("reason", ""))
            self._say(
                f"❌ The verification of {v.label} was cancelled: {cancel_text(code, reason)}."
            )
        elif kind == "ready":
            await self._on_ready(v, content)
        elif kind in ("accept", "key", "mac"):
            await self._on_sas_step(v, kind, content)
        # "done" says nothing new: the MACs decided.

    async def _on_request(self, sender: UserId, txid: str, content: Mapping[str, Any]) -> None:
        device_id = content.get("from_device")
        methods = content.get("methods")
        stamp = content.get("timestamp")
        if not isinstance(device_id, str) or not isinstance(methods, list):
            return
        now_ms = time.time() * 1000
        if (
            not isinstance(stamp, int)
            or not -_REQUEST_FUTURE_MS < now_ms - stamp < _REQUEST_PAST_MS
        ):
            log.info("Ignored a stale verification request from %s", sender)
            return
        if txid in self._active:
            return
        v = _Verification(txid, sender, device_id, False, "ready", self._clock())
        if SAS not in methods:
            await self._cancel(v, "m.unknown_method", "Only m.sas.v1 is supported")
            return
        if await self._device(sender, device_id) is None:
            await self._cancel(v, "m.user_error", "Unknown device")
            self._say(f"❌ {v.label} asked to verify, but it publishes no keys.")
            return
        ready = {"from_device": self._me[1], "methods": [SAS], "transaction_id": txid}
        await self._send("ready", sender, device_id, ready)
        await self._keep(v)
        self._say(
            f"🔐 {v.label} asks to verify your Matrix device here. Start with emoji on it; "
            "the emoji to compare will follow here ('verify no' cancels)."
        )

    async def _on_ready(self, v: _Verification, content: Mapping[str, Any]) -> None:
        methods = content.get("methods")
        if v.stage != "requested" or content.get("from_device") != v.device:
            return
        if not isinstance(methods, list) or SAS not in methods:
            await self._cancel(v, "m.unknown_method", "Only m.sas.v1 is supported")
            self._say(f"❌ {v.label} cannot verify with emoji; nothing else works here.")
            return
        device = await self._device(v.user, v.device)
        v.sas = Sas(self._me, (v.user, v.device, device.ed25519), v.txid)
        v.stage = "started"
        await self._send("start", v.user, v.device, v.sas.start_content())

    async def _on_start(self, sender: UserId, txid: str, content: Mapping[str, Any]) -> None:
        from_device = content.get("from_device")
        if not isinstance(from_device, str):
            log.info("Ignored a verification start without a device from %s", sender)
            return
        v = self._active.get(txid)
        me, own_device, _key = self._me
        if v is not None and (v.user != sender or v.device != from_device):
            return
        if v is not None and v.sas is not None and v.sas.we_started:
            if (sender, from_device) > (me, own_device):
                return  # both started: the spec keeps the start of the smaller ID, ours
        if v is None:
            v = _Verification(txid, sender, from_device, False, "started", self._clock())
        device = await self._device(sender, from_device)
        if device is None:
            await self._cancel(v, "m.user_error", "Unknown device")
            return
        await self._keep(v)
        v.stage, v.last = "started", self._clock()
        try:
            v.sas = Sas.from_start(self._me, (sender, from_device, device.ed25519), content)
        except SasError as e:
            await self._fail(v, e)
            return
        await self._send("accept", v.user, v.device, v.sas.accept_content())

    async def _on_sas_step(self, v: _Verification, kind: str, content: Mapping[str, Any]) -> None:
        sas = v.sas
        try:
            if sas is None:
                raise SasError("m.unexpected_message", "Unexpected message")
            if kind == "accept":
                sas.on_accept(content)
                await self._send("key", v.user, v.device, sas.key_content())
            elif kind == "key":
                sas.on_key(content)
                if not sas.we_started:
                    await self._send("key", v.user, v.device, sas.key_content())
                v.stage = "keys"
                self._say(format_sas(v.user, v.device, sas.emoji(), sas.decimals()))
            else:
                sas.on_mac(content)
                if v.stage == "confirmed":
                    self._say(await self._verified(v))
        except SasError as e:
            await self._fail(v, e)

    # -- endings ------------------------------------------------------------------------

    async def _verified(self, v: _Verification) -> str:
        self._active.pop(v.txid, None)
        device = await self._device(v.user, v.device)
        self._olm.verify_device(device)
        await self._send("done", v.user, v.device, {"transaction_id": v.txid})
        log.info("%s verified %s's device %s", self._matrix.me, v.user, v.device)
        if self._on_verified is not None:
            await self._on_verified()
        return f"✅ {v.label} is verified."

    async def _fail(self, v: _Verification, error: SasError) -> None:
        """A step did not fit: tell the other side and the user."""
        await self._cancel(v, error.code, error.reason)
        self._say(
            f"❌ The verification of {v.label} failed: {cancel_text(error.code, error.reason)}."
        )

    async def _cancel(self, v: _Verification, code: str, reason: str) -> None:
        self._active.pop(v.txid, None)
        content = {"code": code, "reason": reason, "transaction_id": v.txid}
        await self._send("cancel", v.user, v.device, content)

    async def _expire(self) -> None:
        now = self._clock()
        for v in [v for v in self._active.values() if now - v.last > TIMEOUT_S]:
            try:
                await self._cancel(v, "m.timeout", "Timed out")
            except MatrixError as e:
                log.warning("Could not cancel the verification of %s: %s", v.label, e)
            self._say(f"❌ The verification of {v.label} was cancelled: it timed out.")

    async def _keep(self, v: _Verification) -> None:
        """Track ``v``; it replaces an older one with the same device (as the spec has
        a new request supersede), and the oldest goes past `_KEPT`."""
        for old in [o for o in self._active.values() if o.txid != v.txid]:
            if (old.user, old.device) == (v.user, v.device):
                await self._cancel(old, "m.user", "Superseded by a new verification")
        self._active[v.txid] = v
        while len(self._active) > _KEPT:
            oldest = next(iter(self._active))
            self._say(f"❌ The verification of {self._active.pop(oldest).label} was dropped.")

    # -- requests -----------------------------------------------------------------------

    async def _device(self, user: UserId, device_id: str) -> Any:
        """nio's `OlmDevice` of ``user``'s ``device_id`` (keys fetched if unknown)."""
        device = self._olm.device_store[user].get(device_id)
        if device is None or user in self._olm.users_for_key_query:
            await self._e2ee.devices(user)
            device = self._olm.device_store[user].get(device_id)
        return device

    async def _send(self, kind: str, user: UserId, device: str, content: Mapping[str, Any]) -> None:
        await self._matrix.send_to_device(PREFIX + kind, {user: {device: dict(content)}})
