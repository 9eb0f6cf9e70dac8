"""Undecryptable messages waiting for their keys: a real Synapse, Prosody, matrix-nio peers.

alice reads an encrypted group room from XMPP through the gateway's device; bob writes on
matrix-nio and her other session (matrix-nio, its SAS put right per the spec) holds the
keys the gateway lacks. Stories:

- across a ``kill -9`` of the gateway: bob's device withholds two Megolm sessions from
  the gateway's (two messages with one, a third with the other); alice sees three
  notices and the gateway asks her devices for both keys. The gateway is killed and
  comes back; then bob's device sends one key late (``m.room_key``) and alice verifies
  the gateway's device from her other session, which the gateway asks again with the
  request ID of before the restart, and which forwards the other key. Each notice is
  corrected with its text, once, live and in the room's archive (the notice once, one
  correction), and each request is cancelled under its ID.
- keys merely late: bob's device sends the key of a message a second after it (the
  gateway waits 20 s before asking): the notice is corrected and that key never asked
  for; the key of a second message never comes and is asked for, once the wait is over.
- encrypted edits and reactions in the back-fill: before the gateway's device exists,
  bob writes, edits his message and reacts to it, all encrypted (as Element does); alice
  joins the room's MUC: three notices. Once her verified session forwards the key, the
  message is corrected with its text, then with the edit, the reaction is put on it, and
  the notices of the edit and of the reaction are retracted, live and in the archive.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote

import nio  # type: ignore[import-untyped]
import pytest

from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    STARTED,
    EncryptedPeer,
    start_matrix_gateway,
    understand_features,
)
from tests.e2e.test_matrix_key_requests import (  # the same peers, fixtures, steps
    Inbox,
    alice_her_session_and_bob,
    bob_writes_before_her_login,
    client_put,
    corrected_once,
    from_contact,
    from_gateway,
    gateway,
    gateway_login,
    join_with_history,
    put_to_device,
    sas_with_gateway,
    send_withholding,
    spec_nio,
    synapse,
    verifiers,
)
from tests.e2e.test_matrix_verification import Verifier
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(500)]
NewClient = Callable[..., "asyncio.Future[Client]"]
MakeVerifier = Callable[..., Awaitable[Verifier]]
__all__ = ["gateway", "spec_nio", "synapse", "verifiers"]  # fixtures, used here too


@pytest.fixture
async def patient_gateway(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    """The gateway, waiting 20 s before it asks for a key (so that a key one second
    late beats it however slow this machine is)."""
    return await start_matrix_gateway(start_passerelle, key_request_delay=20)


async def lounge(bob: EncryptedPeer, alice: Client, inbox: Inbox, me: str) -> tuple[str, str]:
    """bob's encrypted group room with alice, its MUC joined, a first message read (bob's
    device knows all of hers): the room ID and the MUC's JID."""
    room = await bob.create_encrypted_room([me], direct=False)
    await bob.wait_for_member(room, me)  # the gateway accepts the invitation
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_with_history(alice, room_jid, "alice")
    await bob.send_text(room, "hello, all your devices can read this")
    await inbox.take(from_contact(room_jid, "hello, all your devices"))
    return room, room_jid


async def test_keys_arriving_after_a_kill_still_correct_each_notice_once(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id
    alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, other)

    room, room_jid = await lounge(bob, alice, inbox, me)

    # Two sessions the gateway's device does not get: one for two messages, one for one.
    forwarded = ["first secret, forwarded later", "second secret, forwarded later"]
    late = ["third secret, whose key comes late"]
    forwarded_ids, _ = await send_withholding(bob, room, forwarded, me, gw.id)
    late_ids, late_key = await send_withholding(bob, room, late, me, gw.id)
    assert late_key, "the test's premise: bob's device withheld a key from the gateway"
    sent = forwarded_ids + late_ids
    notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in sent]
    assert [n["id"] for n in notices] == sent
    await inbox.take(from_gateway("asked your other Matrix devices"))
    await other.sync_until(lambda: len(requests.of(nio.RoomKeyRequest, me)) >= 2)
    asked = {r.session_id: r.request_id for r in requests.of(nio.RoomKeyRequest, me)}
    assert len(asked) == 2, asked

    # The gateway is killed and comes back; alice's client joins the room again (slidge
    # forgets who was in its rooms when it starts; clients find out by XEP-0410 pings).
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(STARTED, after=mark, timeout=120)
    await join_with_history(alice, room_jid, "alice", history=0, within=120)

    # bob's device sends the withheld key late: the third notice becomes its text.
    await put_to_device(bob.client, "m.room.encrypted", late_key)
    third = await inbox.take(from_contact(room_jid, late[0]), timeout=60)
    assert third["replace"]["id"] == late_ids[0]
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequestCancellation, me))
    (cancel,) = requests.of(nio.RoomKeyRequestCancellation, me)
    late_session = next(s for s, r in asked.items() if r == cancel.request_id)

    # alice verifies the gateway's device: asked again under the same request ID, her
    # session forwards the key, the first two notices become their texts.
    await sas_with_gateway(other, gw, inbox)
    first, _ = await asyncio.gather(
        inbox.take(from_contact(room_jid, forwarded[0]), timeout=60),
        other.sync_until(lambda: len(requests.of(nio.RoomKeyRequestCancellation, me)) >= 2),
    )
    second = await inbox.take(from_contact(room_jid, forwarded[1]))
    assert [first["replace"]["id"], second["replace"]["id"]] == forwarded_ids
    (forwarded_session,) = set(asked) - {late_session}
    again = [r for r in requests.of(nio.RoomKeyRequest, me) if r.request_id not in asked.values()]
    assert again == [], "asked again under a new request ID"
    cancels = [c.request_id for c in requests.of(nio.RoomKeyRequestCancellation, me)]
    assert sorted(cancels) == sorted(asked.values())
    assert asked[forwarded_session] in cancels

    # Once, live and in the archive: each notice, then its one correction.
    await corrected_once(inbox, room_jid, sent, forwarded + late)
    assert not [line for line in gateway.lines if "Traceback" in line]


async def test_a_late_key_is_not_asked_for_a_missing_one_is_after_the_delay(
    synapse: Synapse,
    patient_gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id
    alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, other)
    room, room_jid = await lounge(bob, alice, inbox, me)

    # bob's device sends the key a little after the message: the notice is corrected,
    # and the gateway never asks for that key.
    (late_id,), late_key = await send_withholding(bob, room, ["a key a bit late"], me, gw.id)
    late_session = bob.client.olm.outbound_group_sessions[room].id
    await inbox.take(from_contact(room_jid, "cannot decrypt"))
    await put_to_device(bob.client, "m.room.encrypted", late_key)
    fixed = await inbox.take(from_contact(room_jid, "a key a bit late"))
    assert fixed["replace"]["id"] == late_id

    # A key that never comes is asked for, once its delay has passed.
    await send_withholding(bob, room, ["a key that never comes"], me, gw.id)
    missing_session = bob.client.olm.outbound_group_sessions[room].id
    await inbox.take(from_contact(room_jid, "cannot decrypt"))
    await inbox.take(from_gateway("asked your other Matrix devices"), timeout=90)
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequest, me), timeout=90)
    await other.peer._sync_once()
    asked = [r.session_id for r in requests.of(nio.RoomKeyRequest, me)]
    assert asked == [missing_session], (asked, late_session)
    assert requests.of(nio.RoomKeyRequestCancellation, me) == []
    assert not [line for line in patient_gateway.lines if "Traceback" in line]


async def send_encrypted(peer: EncryptedPeer, room: str, event_type: str, content: Any) -> str:
    """``event_type`` encrypted as Element sends it, its relation left in the clear (nio
    would send a reaction unencrypted): the event ID."""
    _type, encrypted = peer.client.encrypt(room, event_type, content)
    answer = await client_put(
        peer.client, f"/rooms/{quote(room, safe='')}/send/m.room.encrypted", encrypted
    )
    return str(answer["event_id"])


async def test_encrypted_edits_and_reactions_in_the_backfill_become_what_they_are(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id

    # Before the gateway's device exists, bob writes, edits and reacts, all encrypted.
    room, (original,) = await bob_writes_before_her_login(bob, other, me, ["bob's first go"])
    new = {"msgtype": "m.text", "body": "bob's second go"}
    edit = await send_encrypted(
        bob,
        room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* bob's second go",
            "m.new_content": new,
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    relation = {"rel_type": "m.annotation", "event_id": original, "key": "👍"}
    reaction = await send_encrypted(bob, room, "m.reaction", {"m.relates_to": relation})

    alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, other)
    alice.register_plugin("xep_0203")
    understand_features(alice)  # reactions and retractions (and bodyless messages) too
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_with_history(alice, room_jid, "alice")
    notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in range(3)]
    assert [n["id"] for n in notices] == [original, edit, reaction]
    kinds = ["encrypted message", "encrypted edit of a message", "encrypted reaction to a"]
    assert all(kind in n["body"] for n, kind in zip(notices, kinds, strict=True)), notices
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequest, me))

    # Her verified session forwards the key: the message is corrected, then edited; the
    # reaction is put on it; the edit's and the reaction's notices are retracted.
    await sas_with_gateway(other, gw, inbox)

    def corrects(body: str) -> Callable[[Any], bool]:
        return lambda m: m["replace"]["id"] == original and m["body"] == body

    await asyncio.gather(  # her session answers as it syncs
        inbox.take(corrects("bob's first go"), timeout=60),
        other.sync_until(lambda: requests.of(nio.RoomKeyRequestCancellation, me)),
    )
    second = await inbox.take(corrects("bob's second go"))
    assert second["id"] != edit  # the edit's notice keeps its ID (it is retracted)
    reacted = await inbox.take(lambda m: "reactions" in m)
    assert reacted["reactions"]["id"] == original
    assert {r["value"] for r in reacted["reactions"]} == {"👍"}
    retracted = [await inbox.take(lambda m: "retract" in m) for _ in range(2)]
    assert sorted(m["retract"]["id"] for m in retracted) == sorted([edit, reaction])

    # The archive holds the same: nothing there still says it cannot be read.
    archived = await alice.archive(room_jid)
    withdrawn = sorted(m["retract"]["id"] for m in archived if "retract" in m)
    assert withdrawn == sorted([edit, reaction])
    edits = [m["body"] for m in archived if m["replace"]["id"] == original and "retract" not in m]
    assert edits == ["bob's first go", "bob's second go"]
    (kept,) = [m for m in archived if "reactions" in m]
    assert kept["reactions"]["id"] == original
    unreadable = {m["id"] for m in archived if "cannot decrypt" in m["body"]}
    shown = [(m["id"], m["body"][:30], m["replace"]["id"]) for m in archived]
    assert unreadable == {original, edit, reaction}, shown  # corrected or retracted
    assert not [line for line in gateway.lines if "Traceback" in line]
