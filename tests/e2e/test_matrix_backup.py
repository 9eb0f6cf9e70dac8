"""alice's Matrix recovery key opens her server-side key backup: a real Synapse, Prosody.

Her account is set up as Element sets up recovery (`backup_helpers`, through Synapse's
own endpoints): a secret storage key (her recovery key), a key backup whose private key
is in the secret storage, and the keys of her room in the backup, put there by her other
session (a matrix-nio client, as her Element would). Stories:

- bob writes twice in an encrypted group room before the gateway's device exists: when
  alice joins the room's MUC, its history holds two notices. A recovery key that is not
  hers is refused, saying so, and nothing changes; her own, given in the ad-hoc command's
  form, restores the key from the backup and both notices are corrected with the texts,
  once, live and in the archive; her cross-signing key signs the gateway's device, and
  /keys/query shows the signature; her Element session, which that key signed, is
  verified on the gateway's side. Then what she writes from XMPP reaches bob, and its
  Megolm session is in her backup, where another device reads it and decrypts her
  message with it; a new session of bob's, whose key his device gives the gateway's,
  goes into her backup too; after the gateway restarts, what she sends is still backed
  up. Her
  recovery key is not in the gateway's output (INFO).
- an account without secret storage, with one but no backup key in it, with a backup
  key but no backup, and a key typed into a chat message: each refused with a sentence
  that says what is missing; with a backup but no cross-signing key, or a self-signing
  key that is not the account's current one, the backup is restored and the rest said.
  This one runs the gateway at DEBUG: the keys given are not in its output.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import vodozemac
from slixmpp.exceptions import IqError

from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.backup_helpers import (
    OTHER_RECOVERY_KEY,
    RECOVERY_KEY,
    ElementRecovery,
    b64,
    megolm_decrypt,
)
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    STARTED,
    EncryptedPeer,
    MatrixPeer,
    log_in,
    new_account,
    start_matrix_gateway,
)
from tests.e2e.test_matrix_e2ee import gateway, synapse  # the same fixtures
from tests.e2e.test_matrix_key_requests import Inbox, from_contact, join_with_history
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
NewClient = Callable[..., "asyncio.Future[Client]"]
__all__ = ["gateway", "synapse"]
RECOVERY = "matrix/recovery"


async def recovery_answer(client: Client, key: str) -> tuple[bool, str]:
    """The recovery key command with ``key`` in its form: (done, what it says)."""
    try:
        result = await client.run_command(MATRIX_JID, RECOVERY, recovery_key=key)
    except IqError as e:
        return False, str(e.iq["error"]["text"])
    notes = result["command"]["notes"]
    return True, " ".join(text for _kind, text in notes)


async def element_trust(alice: Client, inbox: Inbox, me: str, device_id: str) -> str:
    """How the gateway trusts ``device_id`` of ``me``, as the ``device`` command says."""
    alice.send_chat(MATRIX_JID, f"device {me}")
    listed = await inbox.take(lambda m: f"Devices of {me}" in (m["body"] or ""))
    (line,) = [x for x in str(listed["body"]).splitlines() if x.startswith(device_id)]
    return line.split(", ")[1].split(":")[0]


@pytest.fixture
async def peers(synapse: Synapse, tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """``make(account, name)``: an encrypted nio session of ``account``, closed at the end."""
    made: list[EncryptedPeer | MatrixPeer] = []

    async def make(account: Any, name: str, *, encrypted: bool = True) -> Any:
        if not encrypted:
            plain = MatrixPeer(synapse, account)
            made.append(plain)
            return plain
        peer = EncryptedPeer(synapse, account, tmp_path / f"{name}-store")
        made.append(peer)
        await peer.start()
        return peer

    try:
        yield make
    finally:
        for peer in made:
            await peer.close()


async def test_her_recovery_key_restores_history_and_what_she_sends_is_backed_up(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[..., Any],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob_mx = await asyncio.to_thread(new_account, synapse, "bob")
    me = alice_mx.user_id
    element = await peers(alice_mx, "alice-element")
    bob = await peers(bob_mx, "bob")

    # Before the gateway's device exists: bob writes in a group room; her Element reads.
    room = await bob.create_encrypted_room([me], direct=False)
    await element.wait_for(lambda r, e: r == room and e == "invite")
    await element.join(room)
    await bob.wait_for_member(room, me)
    secrets = ["first secret from the backup", "second secret from the backup"]
    sent = [await bob.send_text(room, body) for body in secrets]
    for body in secrets:
        assert (await element.wait_for_text(room, body)).decrypted

    # Her Element set up recovery and backed her keys up.
    recovery = ElementRecovery(await peers(alice_mx, "alice-api", encrypted=False))
    await recovery.set_up()
    ssk = await recovery.set_up_cross_signing(alice_mx.password)
    await recovery.sign_device(element.client.device_id)  # her Element is verified
    held = list(element.client.olm.inbound_group_store[room].values())
    sessions = [s for by_sender in held for s in by_sender.values()]
    assert await recovery.back_up(room, sessions) == len(sessions) >= 1

    # The gateway logs in: the room's history shows two notices.
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    inbox = Inbox(alice)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_with_history(alice, room_jid, "alice")
    notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in secrets]
    assert [n["id"] for n in notices] == sent

    assert await element_trust(alice, inbox, me, element.client.device_id) == "unverified"

    # Someone else's recovery key: refused, saying so; nothing is corrected.
    done, said = await recovery_answer(alice, OTHER_RECOVERY_KEY)
    assert not done and "does not open your secret storage" in said, said
    await inbox.drain(2.0)
    assert not [m for m in inbox.kept if any(s in (m["body"] or "") for s in secrets)]

    # Hers: the key comes from the backup; both notices become the texts.
    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert done and f"Restored {len(sessions)} room keys" in said, said
    assert f"version {recovery.version}" in said
    assert "signed with your cross-signing key" in said and "Not done" not in said, said
    assert f"devices {element.client.device_id}, signed by your cross-signing key" in said
    first = await inbox.take(from_contact(room_jid, secrets[0]))
    second = await inbox.take(from_contact(room_jid, secrets[1]))
    assert [first["replace"]["id"], second["replace"]["id"]] == sent
    assert [first["body"], second["body"]] == secrets

    # Once, live and in the archive (each text once, as the correction of its notice).
    await inbox.drain(3.0)
    late = [m for m in inbox.kept if any(s in (m["body"] or "") for s in secrets)]
    assert late == [], late
    archived = [m for m in await alice.archive(room_jid) if m["body"] in secrets]
    assert [(m["body"], m["replace"]["id"]) for m in archived] == list(
        zip(secrets, sent, strict=True)
    )

    # What she writes from XMPP reaches bob, and its session is in her backup.
    alice.send_groupchat(room_jid, "written from XMPP, backed up")
    got = await bob.wait_for_text(room, "written from XMPP, backed up", timeout=60)
    assert got.decrypted
    path = f"/rooms/{quote(room, safe='')}/event/{quote(got.event_id, safe='')}"
    wire = (await recovery.peer.call("GET", path))["content"]  # as Synapse holds it
    backed = await recovery.read_backup(room)  # put there before the message was sent
    assert wire["session_id"] in backed, backed.keys()
    entry = backed[wire["session_id"]]
    assert entry["sender_key"] == wire["sender_key"]
    clear = megolm_decrypt(entry["session_key"], wire["ciphertext"])
    assert clear["content"]["body"] == "written from XMPP, backed up"

    # Her device here is cross-signed: /keys/query shows the self-signing key's
    # signature on its keys (Synapse checked it on upload; checked again here).
    known = {element.client.device_id, alice_mx.device_id}
    devices = (await recovery.peer.call("GET", "/devices"))["devices"]
    (gw_device,) = [d["device_id"] for d in devices if d["device_id"] not in known]
    query = await recovery.peer.call("POST", "/keys/query", {"device_keys": {me: []}})
    device_keys = query["device_keys"][me][gw_device]
    signature = device_keys["signatures"][me][f"ed25519:{ssk}"]
    signed = {k: v for k, v in device_keys.items() if k not in ("signatures", "unsigned")}
    canonical = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    vodozemac.Ed25519PublicKey.from_base64(ssk).verify_signature(
        canonical.encode(), vodozemac.Ed25519Signature.from_base64(signature)
    )

    # bob starts a new Megolm session: the key his device gives the gateway's goes into
    # her backup too (her Element here is a nio client, which backs nothing up).
    bob.client.olm.outbound_group_sessions.pop(room, None)
    new_id = await bob.send_text(room, "a new session of bob's after the restore")
    await inbox.take(from_contact(room_jid, "a new session of bob's after the restore"))
    path = f"/rooms/{quote(room, safe='')}/event/{quote(new_id, safe='')}"
    bobs = (await recovery.peer.call("GET", path))["content"]
    entry = (await recovery.read_backup(room))[bobs["session_id"]]
    assert entry["entry"]["is_verified"] is False
    clear = megolm_decrypt(entry["session_key"], bobs["ciphertext"])
    assert clear["content"]["body"] == "a new session of bob's after the restore"

    # Her Element session, which her cross-signing key signed, is verified here now.
    assert await element_trust(alice, inbox, me, element.client.device_id) == "verified"

    # The Matrix gateway dies and comes back: it goes on backing up what she sends (its
    # new Megolm session: nio does not keep the outbound one) without her key again.
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(r"matrix exited with code -9 .* restarting in", after=mark)
    await gateway.wait_for(STARTED, after=mark, timeout=90)
    await join_with_history(alice, room_jid, "alice")
    alice.send_groupchat(room_jid, "written after a restart, backed up")
    got = await bob.wait_for_text(room, "written after a restart, backed up", timeout=60)
    path = f"/rooms/{quote(room, safe='')}/event/{quote(got.event_id, safe='')}"
    later = (await recovery.peer.call("GET", path))["content"]
    assert later["session_id"] != wire["session_id"]
    entry = (await recovery.read_backup(room))[later["session_id"]]
    clear = megolm_decrypt(entry["session_key"], later["ciphertext"])
    assert clear["content"]["body"] == "written after a restart, backed up"

    # Her recovery key is nowhere in the gateway's output (at INFO, the default level).
    output = "\n".join(gateway.lines)
    assert "Traceback" not in output
    for shown in (RECOVERY_KEY, RECOVERY_KEY.replace(" ", ""), OTHER_RECOVERY_KEY):
        assert shown not in output


@pytest.fixture
async def debug_gateway(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    """The gateway logging at DEBUG: every stanza it receives is in its output."""
    return await start_matrix_gateway(start_passerelle, log_level="DEBUG")


async def test_what_is_missing_for_a_restore_is_said(
    synapse: Synapse,
    debug_gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[..., Any],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    recovery = ElementRecovery(await peers(alice_mx, "alice-api", encrypted=False))

    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert not done and "no secret storage" in said, said

    await recovery.set_up_storage()
    done, said = await recovery_answer(alice, "not a key at all")
    assert not done and "not a recovery key" in said, said
    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert not done and "holds no key for a key backup" in said, said

    await recovery.store_backup_key()
    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert not done and "no key backup on the homeserver" in said, said

    await recovery.create_backup()
    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert done and "Restored 0 room keys" in said, said
    assert "Not done: your secret storage holds no cross-signing keys" in said, said

    # Cross-signing reset elsewhere without updating the storage: not used, and said.
    await recovery.set_up_cross_signing(alice_mx.password)
    await recovery.store_secret("m.cross_signing.self_signing", b64(bytes(range(32))))
    done, said = await recovery_answer(alice, RECOVERY_KEY)
    assert done and "not your account's current one" in said, said

    # Typed into a chat message: refused, with the way to do it.
    alice.send_chat(MATRIX_JID, f"recovery {OTHER_RECOVERY_KEY}")
    answer = await alice.next_matching(
        lambda m: m["from"].bare == MATRIX_JID and "Not taken" in str(m)
    )
    assert "ad-hoc command" in str(answer), answer

    # The keys she gave in the form are not in the output, even at DEBUG where the forms
    # that carried them are (the field's value redacted).
    output = "\n".join(debug_gateway.lines)
    assert "recovery_key" in output
    assert RECOVERY_KEY not in output and "not a key at all" not in output
