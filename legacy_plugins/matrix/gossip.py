"""Secret sharing (``m.secret.request`` / ``m.secret.send``): the user's other devices
give the gateway's device their secrets once they have verified it, as Element does for
a new session, so that the user need not type a recovery key.

When a device of the user's own is verified (emoji verification, either way), the
gateway asks the user's own verified devices for the key of the key backup
(``m.megolm_backup.v1``) and the self-signing key (``m.cross_signing.self_signing``):
one request per secret, under one request ID for every device asked. An answer is taken
only if it came Olm-encrypted (nio decrypts it; `capture_secrets` keeps it from nio,
which drops what it does not know), from a device of the user's own that is verified
here, and answers a request this device made and has not had answered yet
(`SecretRequests.judge`); anything else is refused and the user told why. A taken
secret goes through the recovery key's code (:mod:`.recovery`), which checks it against
what the account publishes (the backup's public key, the self-signing public key) before
using it, then the request is cancelled at the devices asked. The gateway holds no
secret to give: requests from other devices are never answered (DEBUG log only).

`SecretRequests` is pure bookkeeping; `SessionGossip` is the part of `Session` that
sends and takes.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from .backup import MEGOLM_BACKUP_V1
from .crosssign import SELF_SIGNING
from .errors import MatrixError
from .secrets import SecretStorageError

if TYPE_CHECKING:
    from .client import MatrixClient
    from .crypto import E2EE
    from .events import SyncBatch

__all__ = [
    "GOSSIP_REQUEST",
    "GOSSIP_SEND",
    "WANTED",
    "Received",
    "SecretRequests",
    "Sender",
    "SessionGossip",
    "capture_secrets",
    "parse_secret_send",
]

log = logging.getLogger(__name__)

GOSSIP_REQUEST = "m.secret.request"
GOSSIP_SEND = "m.secret.send"
WANTED = (MEGOLM_BACKUP_V1, SELF_SIGNING)
"""The secrets asked for: those the gateway uses (the master and user-signing keys
would only serve to verify other people, which it does not do)."""
WHAT = {MEGOLM_BACKUP_V1: "key backup key", SELF_SIGNING: "self-signing key"}
MAX_CAPTURED = 20
"""``m.secret.send`` events kept from one sync (the gateway asks for two secrets)."""
MAX_SAID = 20
"""Refusals told the user in one run; the rest are logged only."""

RECEIVED = "🔑 Your Matrix device {device} sent Passerelle your {what} (secret sharing)."
REFUSED = "🔑 Passerelle refused a secret sent by {sender}'s Matrix device {device}: {why}."
NOT_USED = "🔑 Passerelle did not use the {what} your Matrix device {device} sent: {why}."


@dataclass(frozen=True, slots=True)
class Received:
    """An ``m.secret.send`` as it reached this device."""

    sender: str
    sender_key: str
    """The Curve25519 key of the Olm session it came in; empty if it came unencrypted."""
    request_id: str
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Sender:
    """The device a secret came from, as this device knows it."""

    user: str
    device_id: str
    verified: bool


Verdict = tuple[Literal["take"], str] | tuple[Literal["refuse"], str]


def parse_secret_send(sender: str, sender_key: str, payload: object) -> Received | None:
    """The ``m.secret.send`` in a (decrypted) to-device payload, or None if malformed."""
    content = payload.get("content") if isinstance(payload, Mapping) else None
    if not isinstance(content, Mapping):
        return None
    request_id, secret = content.get("request_id"), content.get("secret")
    if not isinstance(request_id, str) or not request_id or not isinstance(secret, str):
        return None
    return Received(sender, sender_key, request_id, secret)


def request_content(name: str, request_id: str, device_id: str) -> dict[str, str]:
    return {
        "action": "request",
        "name": name,
        "request_id": request_id,
        "requesting_device_id": device_id,
    }


def cancellation_content(request_id: str, device_id: str) -> dict[str, str]:
    return {
        "action": "request_cancellation",
        "request_id": request_id,
        "requesting_device_id": device_id,
    }


@dataclass(slots=True)
class _Request:
    name: str
    request_id: str
    asked: set[str]


class SecretRequests:
    """The secrets this device asked for and has not got yet (one request per secret,
    bounded by `WANTED`). No I/O."""

    def __init__(self, new_id: Any = None) -> None:
        self._new_id = new_id or (lambda: secrets.token_urlsafe(12))
        self._open: dict[str, _Request] = {}
        """By request ID."""
        self._got: set[str] = set()
        """Secrets taken in this run: not asked again."""

    def ask(self, devices: Iterable[str]) -> list[tuple[str, str, list[str]]]:
        """(name, request ID, devices not asked yet) for each secret still wanted."""
        devices = sorted(set(devices))
        out = []
        for name in WANTED:
            if name in self._got:
                continue
            request = next((r for r in self._open.values() if r.name == name), None)
            if request is None:
                request = _Request(name, self._new_id(), set())
                self._open[request.request_id] = request
            new = [d for d in devices if d not in request.asked]
            if new:
                request.asked.update(new)
                out.append((name, request.request_id, new))
        return out

    def judge(self, received: Received, me: str, sender: Sender | None) -> Verdict:
        """Whether to take ``received``: ("take", its name) or ("refuse", why)."""
        if not received.sender_key:
            return "refuse", "it was not encrypted (secrets must come Olm-encrypted)"
        if received.sender != me or (sender is not None and sender.user != me):
            return "refuse", "only your own devices may send your secrets"
        if sender is None:
            return "refuse", "it comes from a device of yours the homeserver does not list"
        if not sender.verified:
            return "refuse", (
                f"the device {sender.device_id} is not verified here (verify it with "
                f"'verify {me} {sender.device_id}' first)"
            )
        request = self._open.get(received.request_id)
        if request is None:
            return "refuse", "it answers no request of Passerelle's (sent unasked, or again)"
        return "take", request.name

    def answered(self, request_id: str) -> tuple[str, list[str]] | None:
        """The request ``request_id`` got its secret: (name, the devices asked), and it
        is closed; None if it was not open."""
        request = self._open.pop(request_id, None)
        if request is None:
            return None
        self._got.add(request.name)
        return request.name, sorted(request.asked)


def capture_secrets(olm: Any, sink: list[tuple[str, str, dict[str, Any]]]) -> None:
    """Make nio's Olm machine hand the ``m.secret.send`` events it decrypts to ``sink``
    (sender, Olm sender key, payload) instead of dropping them, and leave encrypted
    ``m.secret.request`` alone (never answered)."""
    handle = olm._handle_olm_event

    def handle_olm_event(sender: str, sender_key: str, payload: dict[str, Any]) -> Any:
        kind = payload.get("type")
        if kind == GOSSIP_SEND:
            if len(sink) < MAX_CAPTURED:
                sink.append((sender, sender_key, payload))
            return None
        if kind == GOSSIP_REQUEST:
            log.debug("Not answering a secret request from %s: Passerelle gives none", sender)
            return None
        return handle(sender, sender_key, payload)

    olm._handle_olm_event = handle_olm_event


class SessionGossip:
    """Secret sharing for `Session` (a base class of it; not used alone)."""

    if TYPE_CHECKING:  # provided by Session, SessionE2EE and SessionRecovery
        matrix: MatrixClient
        e2ee: E2EE | None

        def send_gateway_message(self, text: str, **msg_kwargs: Any) -> None: ...
        async def _e2ee_after_batch(self, arrived: set[str]) -> None: ...
        async def _restore(self, backup_key: str) -> str: ...
        async def _cross_sign(self, seed: str) -> list[str]: ...

    _secret_requests: SecretRequests | None = None
    _captured: list[tuple[str, str, dict[str, Any]]] | None = None
    _refusals_said = 0
    """Refusals told the user in this run (past `MAX_SAID`, the log only)."""

    def _open_gossip(self) -> None:
        """Once the device is open: catch the secrets nio decrypts."""
        assert self.e2ee is not None
        self._secret_requests = SecretRequests()
        self._captured = []
        capture_secrets(self.e2ee._olm, self._captured)

    def _secret_events(self, batch: SyncBatch) -> tuple[SyncBatch, list[Received]]:
        """Take the unencrypted ``m.secret.*`` events out of a sync's to-device events:
        requests are not answered, secrets sent in the clear are refused."""
        rest: list[Mapping[str, Any]] = []
        clear: list[Received] = []
        for raw in batch.to_device:
            kind = raw.get("type")
            if kind == GOSSIP_REQUEST:
                log.debug(
                    "Not answering a secret request from %s: Passerelle gives none",
                    raw.get("sender"),
                )
            elif kind == GOSSIP_SEND:
                found = parse_secret_send(str(raw.get("sender")), "", raw)
                if found is not None and len(clear) < MAX_CAPTURED:
                    clear.append(found)
            else:
                rest.append(raw)
        if len(rest) == len(batch.to_device):
            return batch, clear
        return dataclasses.replace(batch, to_device=tuple(rest)), clear

    async def _device_verified(self) -> None:
        """A device was verified (emoji): keys as after a sync, then ask the user's own
        verified devices for the secrets not had yet."""
        await self._e2ee_after_batch(set())
        try:
            await self._ask_for_secrets()
        except MatrixError as e:
            log.warning("Secret requests of %s not sent: %s", self.matrix.me, e)

    async def _ask_for_secrets(self) -> None:
        if self.e2ee is None or self._secret_requests is None:
            return
        olm, me = self.e2ee._olm, self.matrix.me
        verified = [
            d.id
            for d in olm.device_store.active_user_devices(me)
            if d.id != olm.device_id and olm.is_device_verified(d)
        ]
        for name, request_id, devices in self._secret_requests.ask(verified):
            content = request_content(name, request_id, self.e2ee.device_id)
            await self.matrix.send_to_device(GOSSIP_REQUEST, {me: dict.fromkeys(devices, content)})
            log.info("Asked %s's devices %s for the %s", me, ", ".join(devices), WHAT[name])

    async def _take_secrets(self, clear: Sequence[Received] = ()) -> None:
        """After a sync: judge the secrets that came, use those taken."""
        if self.e2ee is None or self._secret_requests is None or self._captured is None:
            return
        found = list(clear)
        while self._captured:
            sender, sender_key, payload = self._captured.pop(0)
            received = parse_secret_send(sender, sender_key, payload)
            if received is None:
                log.debug("Skipped a malformed secret from %s", sender)
            else:
                found.append(received)
        for received in found:
            await self._take_secret(received)

    async def _take_secret(self, received: Received) -> None:
        assert self.e2ee is not None and self._secret_requests is not None
        olm, me = self.e2ee._olm, self.matrix.me
        device = None
        if received.sender_key and received.sender == me:
            device = olm.device_store.device_from_sender_key(me, received.sender_key)
            if device is None:  # a device of the user's this one has not seen yet
                await self.e2ee.devices(me)
                device = olm.device_store.device_from_sender_key(me, received.sender_key)
        sender = (
            None
            if device is None
            else Sender(device.user_id, device.id, bool(olm.is_device_verified(device)))
        )
        label = "?" if device is None else device.id
        verdict, what = self._secret_requests.judge(received, me, sender)
        if verdict == "refuse":
            log.warning("Refused a secret from %s's device %s: %s", received.sender, label, what)
            if self._refusals_said < MAX_SAID:  # anyone may send to-device events: no flood
                self._refusals_said += 1
                self.send_gateway_message(
                    REFUSED.format(sender=received.sender, device=label, why=what)
                )
            return
        name = what
        try:
            if name == MEGOLM_BACKUP_V1:
                done = [await self._restore(received.secret)]
            else:
                done = await self._cross_sign(received.secret)
        except SecretStorageError as e:  # not what the account publishes: not used
            log.warning("Did not use the %s from %s's device %s: %s", WHAT[name], me, label, e)
            self.send_gateway_message(NOT_USED.format(what=WHAT[name], device=label, why=e))
            return
        except MatrixError as e:
            log.warning("Could not use the %s from %s: %s", WHAT[name], me, e)
            self.send_gateway_message(NOT_USED.format(what=WHAT[name], device=label, why=e))
            return
        asked = self._secret_requests.answered(received.request_id)
        log.info("Took the %s from %s's device %s", WHAT[name], me, label)
        self.send_gateway_message(
            "\n".join([RECEIVED.format(device=label, what=WHAT[name]), *done])
        )
        if asked is not None:
            content = cancellation_content(received.request_id, self.e2ee.device_id)
            try:
                await self.matrix.send_to_device(
                    GOSSIP_REQUEST, {me: dict.fromkeys(asked[1], content)}
                )
            except MatrixError as e:
                log.warning("Could not cancel the secret request %s: %s", received.request_id, e)
