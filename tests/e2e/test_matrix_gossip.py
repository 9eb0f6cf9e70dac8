"""Secret sharing: alice's Element gives the gateway's device her secrets once it has
verified it, so she types no recovery key. A real Synapse and Prosody.

Her account is set up as Element sets up recovery (`backup_helpers`): a key backup
holding the keys of bob's room, cross-signing keys. Her "Element" is a matrix-nio session
(its SAS put right per the spec) that holds those secrets and answers ``m.secret.request``
as Element does: an Olm-encrypted ``m.secret.send`` to the requesting device, once it
has verified it. It does not forward room keys (today's Element relies on the backup).

bob writes twice before the gateway's device exists: the history holds two notices.
Element verifies the gateway's device with emoji; the gateway asks it for the key backup
key and the self-signing key. Refused, each said, nothing corrected: the backup key sent
under a request ID the gateway never used, sent unencrypted, sent by her phone (her
device, not verified), a key that is not the backup's, a self-signing key that is
not the account's. Then Element answers both requests: the notices are
corrected once, live and in the archive, /keys/query shows the self-signing key's
signature on the gateway's device, and both requests are cancelled at Element.

The other direction: alice verifies her Element session from XMPP; the gateway asks it
for her secrets all the same, and takes the backup key. That gateway logs at DEBUG: the
key is not in its output, and Element's own m.secret.request to it is logged, not
answered.
"""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import pytest
import vodozemac
from nio import ToDeviceMessage, ToDeviceResponse  # type: ignore[import-untyped]

from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.backup_helpers import ElementRecovery, b64
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import MatrixPeer, new_account
from tests.e2e.test_matrix_backup import debug_gateway
from tests.e2e.test_matrix_key_requests import (
    MakeVerifier,
    NewClient,
    ToDeviceLog,
    bob_writes_before_her_login,
    corrected_once,
    from_contact,
    from_gateway,
    gateway,
    gateway_login,
    join_with_history,
    sas_with_gateway,
    spec_nio,
    synapse,
    verifiers,
)
from tests.e2e.test_matrix_verification import Verifier

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
__all__ = [
    "debug_gateway",
    "gateway",
    "spec_nio",
    "synapse",
    "verifiers",
]  # fixtures, used here too
BACKUP, SELF_SIGNING = "m.megolm_backup.v1", "m.cross_signing.self_signing"


def secret_requests(log: ToDeviceLog, me: str) -> dict[str, list[dict[str, Any]]]:
    """The ``m.secret.request`` contents her session received from her devices, by
    action."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event in log.events:
        source = getattr(event, "source", {})
        if source.get("type") == "m.secret.request" and source.get("sender") == me:
            content = source["content"]
            found.setdefault(content.get("action", ""), []).append(content)
    return found


async def send_secret(peer: Verifier, gw: Any, request_id: str, secret: str) -> None:
    """``m.secret.send``, Olm-encrypted to the gateway's device, as Element sends it."""
    client, olm = peer.client, peer.client.olm
    if olm.session_store.get(gw.curve25519) is None:
        await client.keys_claim({gw.user_id: [gw.id]})
    session = olm.session_store.get(gw.curve25519)
    assert session is not None
    content = olm._olm_encrypt(
        session, gw, "m.secret.send", {"request_id": request_id, "secret": secret}
    )
    answer = await client.to_device(ToDeviceMessage("m.room.encrypted", gw.user_id, gw.id, content))
    assert isinstance(answer, ToDeviceResponse), answer


async def test_her_element_shares_her_secrets_once_it_verified_the_gateway(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    me = alice_mx.user_id
    element = await verifiers(alice_mx, "alice-element")
    bob = (await verifiers(await asyncio.to_thread(new_account, synapse, "bob"), "bob")).peer
    seen = ToDeviceLog(element.client)
    olm = element.client.olm  # no key forwarding: Element relies on the backup
    olm.collect_key_requests = lambda: olm.received_key_requests.clear() or []

    # bob writes before the gateway's device exists; her Element reads and backs up.
    texts = ["first secret shared", "second secret shared"]
    room, sent = await bob_writes_before_her_login(bob, element, me, texts)
    api = MatrixPeer(synapse, alice_mx)
    try:
        recovery = ElementRecovery(api)
        await recovery.set_up()
        ssk = await recovery.set_up_cross_signing(alice_mx.password)
        await recovery.sign_device(element.client.device_id)
        held = [s for by in olm.inbound_group_store[room].values() for s in by.values()]
        assert await recovery.back_up(room, held) == len(held) >= 1

        alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, element)
        phone = await verifiers(alice_mx, "alice-phone")  # a device of hers, unverified
        room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
        await join_with_history(alice, room_jid, "alice")
        notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in texts]
        assert [n["id"] for n in notices] == sent

        # Element verifies the gateway's device; the gateway asks it for the secrets.
        await sas_with_gateway(element, gw, inbox)
        asked = await element.sync_until(
            lambda: len(secret_requests(seen, me).get("request", [])) >= 2 and seen
        )
        assert asked
        requests = {r["name"]: r for r in secret_requests(seen, me)["request"]}
        assert set(requests) == {BACKUP, SELF_SIGNING}
        assert {r["requesting_device_id"] for r in requests.values()} == {gw.id}
        backup_id, ssk_id = requests[BACKUP]["request_id"], requests[SELF_SIGNING]["request_id"]
        backup_key = b64(recovery.backup_key.to_bytes())

        # Sent unasked: refused.
        await send_secret(element, gw, "never-asked", backup_key)
        said = await inbox.take(from_gateway("refused a secret"))
        assert "answers no request" in said["body"], said["body"]

        # Sent in the clear: refused.
        clear = {"request_id": backup_id, "secret": backup_key}
        answer = await element.client.to_device(ToDeviceMessage("m.secret.send", me, gw.id, clear))
        assert isinstance(answer, ToDeviceResponse), answer
        said = await inbox.take(from_gateway("refused a secret"))
        assert "not encrypted" in said["body"], said["body"]

        # Sent by her phone, which nobody verified: refused.
        gw_from_phone = await phone.device_of(me, gw.id)
        await send_secret(phone, gw_from_phone, backup_id, backup_key)
        said = await inbox.take(from_gateway("refused a secret"))
        assert f"{phone.client.device_id} is not verified" in said["body"], said["body"]

        # Not the backup's key: not used.
        other_key = vodozemac.Curve25519SecretKey.from_bytes(os.urandom(32))
        await send_secret(element, gw, backup_id, b64(other_key.to_bytes()))
        said = await inbox.take(from_gateway("did not use the key backup key"))
        assert "does not open the current key backup" in said["body"], said["body"]
        await inbox.drain(2.0)
        assert not [m for m in inbox.kept if any(t in (m["body"] or "") for t in texts)]

        # Her real secrets: the backup restored, the notices corrected once.
        await send_secret(element, gw, backup_id, backup_key)
        said = await inbox.take(from_gateway("sent Passerelle your key backup key"))
        assert f"Restored {len(held)} room keys" in said["body"], said["body"]
        corrected = [await inbox.take(from_contact(room_jid, t)) for t in texts]
        assert [c["replace"]["id"] for c in corrected] == sent
        await corrected_once(inbox, room_jid, sent, texts)

        wrong = b64(os.urandom(32))  # not the account's self-signing key: not used
        await send_secret(element, gw, ssk_id, wrong)
        said = await inbox.take(from_gateway("did not use the self-signing key"))
        assert "not your account's current one" in said["body"], said["body"]

        seed = b64(recovery.self_signing.private_bytes_raw())
        await send_secret(element, gw, ssk_id, seed)
        said = await inbox.take(from_gateway("sent Passerelle your self-signing key"))
        assert "signed with your cross-signing key" in said["body"], said["body"]
        query = await api.call("POST", "/keys/query", {"device_keys": {me: []}})
        keys = query["device_keys"][me][gw.id]
        signature = keys["signatures"][me][f"ed25519:{ssk}"]
        signed = {k: v for k, v in keys.items() if k not in ("signatures", "unsigned")}
        canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        vodozemac.Ed25519PublicKey.from_base64(ssk).verify_signature(
            canonical.encode(), vodozemac.Ed25519Signature.from_base64(signature)
        )

        # Both requests cancelled at her Element; an answer sent again is refused.
        cancelled = await element.sync_until(
            lambda: len(secret_requests(seen, me).get("request_cancellation", [])) >= 2 and seen
        )
        assert cancelled
        ids = {c["request_id"] for c in secret_requests(seen, me)["request_cancellation"]}
        assert ids == {backup_id, ssk_id}
        await send_secret(element, gw, backup_id, backup_key)
        said = await inbox.take(from_gateway("refused a secret"))
        assert "answers no request" in said["body"], said["body"]
        assert not [line for line in gateway.lines if "Traceback" in line]
        assert not [line for line in gateway.lines if backup_key in line or seed in line]
    finally:
        await api.close()


async def test_she_verifies_her_element_from_xmpp_and_it_shares_the_backup_key(
    synapse: Synapse,
    debug_gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    """The other direction: alice verifies her Element session from XMPP (``verify``);
    once both sides confirmed, the gateway asks it for her secrets. The gateway logs at
    DEBUG: the secret is not in its output, and a request for its own secrets is only
    logged, never answered."""
    gateway = debug_gateway
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    me = alice_mx.user_id
    element = await verifiers(alice_mx, "alice-element")
    seen = ToDeviceLog(element.client)
    api = MatrixPeer(synapse, alice_mx)
    try:
        recovery = ElementRecovery(api)
        await recovery.set_up()
        alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, element)
        mine = element.client.device_id

        alice.send_chat(MATRIX_JID, f"verify {me} {mine}")
        _, request = await asyncio.gather(
            inbox.take(from_gateway("Asked the device")),
            element.sync_until(lambda: element.step("request")),
        )
        txid = request.source["content"]["transaction_id"]
        ready = {"from_device": mine, "methods": ["m.sas.v1"], "transaction_id": txid}
        await element.send("ready", gw, ready)
        await element.sync_until(lambda: txid in element.client.key_verifications)
        assert isinstance(await element.client.accept_key_verification(txid), ToDeviceResponse)
        sas = element.client.key_verifications[txid]
        await asyncio.gather(
            inbox.take(from_gateway("Verifying")),
            element.sync_until(lambda: sas.established_sas is not None),
        )
        assert isinstance(await element.client.confirm_short_auth_string(txid), ToDeviceResponse)
        alice.send_chat(MATRIX_JID, "verify yes")
        await asyncio.gather(
            inbox.take(from_gateway("is verified")),
            element.sync_until(lambda: sas.verified),
        )

        await element.sync_until(lambda: len(secret_requests(seen, me).get("request", [])) >= 2)
        requests = {r["name"]: r for r in secret_requests(seen, me)["request"]}
        assert set(requests) == {BACKUP, SELF_SIGNING}
        backup_key = b64(recovery.backup_key.to_bytes())
        await send_secret(element, gw, requests[BACKUP]["request_id"], backup_key)
        said = await inbox.take(from_gateway("sent Passerelle your key backup key"))
        assert f"(version {recovery.version})" in said["body"], said["body"]

        # Her Element asks the gateway for the backup key: logged, not answered.
        mark = len(gateway.lines)
        ask = {
            "action": "request",
            "name": BACKUP,
            "request_id": "element-asks",
            "requesting_device_id": mine,
        }
        answer = await element.client.to_device(ToDeviceMessage("m.secret.request", me, gw.id, ask))
        assert isinstance(answer, ToDeviceResponse), answer
        await gateway.wait_for("Not answering a secret request", after=mark, timeout=60)
        before = len(seen.events)
        await element.sync_until(lambda: True)
        await asyncio.sleep(2)
        await element.peer._sync_once()
        came = [e for e in seen.events[before:] if getattr(e, "sender", "") == me]
        kinds = [getattr(e, "source", {}).get("type") for e in came]
        assert set(kinds) <= {"m.secret.request"}, came  # the cancellation, nothing sent
        # (at DEBUG slidge logs tracebacks of its own for stray stanzas: none of ours)
        assert not [line for line in gateway.lines if "matrix/gossip.py" in line]
        assert not [line for line in gateway.lines if backup_key in line]
    finally:
        await api.close()
