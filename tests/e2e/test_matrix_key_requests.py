"""Room keys asked for and forwarded between alice's devices: a real Synapse, Prosody.

alice reads Matrix from XMPP through the gateway's device; her other sessions and her
contact bob are matrix-nio clients with encryption and stores of their own, their SAS put
right per the spec (`spec_nio`, see test_matrix_verification.py). Stories:

- bob writes to alice twice with a Megolm session his device gives to her other session
  and withholds from the gateway's (a sender's device that never shared the key): alice
  sees two notices, the gateway asks her devices once for that session; a key her other
  session forwards before verification is refused (she is told); she verifies the
  gateway's device from that session, the gateway asks it again, the session answers as
  nio does, and alice gets both texts as corrections of the notices, once; the gateway
  cancels its request.
- bob writes twice in an encrypted group room before the gateway ever logs in (its
  device does not exist: no key for it): when alice joins the room's MUC, its history
  holds the two notices under their event IDs, at bob's times; the gateway asks her
  devices for the key at once; once she has verified the gateway's device from her other
  session, that session forwards the key and both texts arrive as corrections of the
  archived notices, each once, live and in the archive.
- the same, but bob goes on writing after the login with the same Megolm session and
  gives it to the gateway's device from there on, as Element does: his later message is
  text, the earlier ones are notices whose key is asked for all the same; the session
  her other session forwards, from its start, corrects them.
- alice writes from XMPP; her new session (logged in later) asks for the key: while
  unverified it gets nothing and alice is told; bob, another user, asks too and never
  gets it; once alice verified the new session from it, it gets the key and reads her
  message.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import nio  # type: ignore[import-untyped]
import pytest

from gateway.localservers.synapse import MatrixAccount, Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    EncryptedPeer,
    jid_of,
    log_in,
    new_account,
)
from tests.e2e.test_matrix_verification import (  # the same peers, fixtures, SAS steps
    Verifier,
    assert_same_sas,
    devices_of,
    gateway,
    spec_nio,
    synapse,
    verifiers,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(400)]
NewClient = Callable[..., "asyncio.Future[Client]"]
MakeVerifier = Callable[..., Awaitable[Verifier]]
__all__ = ["gateway", "spec_nio", "synapse", "verifiers"]  # fixtures, used here too


class Inbox:
    """alice's XMPP messages, kept until a wait takes them (the client's own waits drop
    what does not match, and gateway notices interleave with chat messages here)."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.kept: list[Any] = []

    async def take(self, match: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        async with asyncio.timeout(timeout):
            while True:
                for n, msg in enumerate(self.kept):
                    if match(msg):
                        return self.kept.pop(n)
                self.kept.append(await self.client.messages.get())

    async def drain(self, seconds: float) -> None:
        """Keep what arrives within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                while True:
                    self.kept.append(await self.client.messages.get())
        except TimeoutError:
            pass


class ToDeviceLog:
    """Every to-device event a nio peer receives, as its Olm machine sees it (nio shows
    its client neither key requests nor what it could not decrypt): a decrypted one in
    place of its ciphertext; an ``EncryptedToDeviceEvent`` that nio refused stays."""

    def __init__(self, client: Any) -> None:
        self.events: list[Any] = []
        olm = client.olm
        handle = olm.handle_to_device_event

        def record(event: Any) -> Any:
            result = handle(event)
            self.events.append(event if result is None else result)
            return result

        olm.handle_to_device_event = record

    def of(self, kind: Any, sender: str) -> list[Any]:
        return [e for e in self.events if isinstance(e, kind) and e.sender == sender]


def from_gateway(text: str) -> Callable[[Any], bool]:
    return lambda m: m["from"].bare == MATRIX_JID and text in m["body"]


def from_contact(jid: str, text: str = "") -> Callable[[Any], bool]:
    return lambda m: m["from"].bare == jid and text in m["body"]


async def client_put(client: Any, path: str, body: dict[str, Any]) -> Any:
    """A raw ``PUT`` of the client-server API as ``client`` (whatever nio would send);
    ``path`` after ``/v3``, a transaction ID appended."""
    url = f"{client.homeserver}/_matrix/client/v3{path}/k{time.time_ns()}"
    headers = {"Authorization": f"Bearer {client.access_token}"}
    async with (
        aiohttp.ClientSession() as http,
        http.put(url, json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def put_to_device(client: Any, event_type: str, messages: dict[str, Any]) -> None:
    """A raw ``sendToDevice`` (what a client sends, whatever nio would)."""
    await client_put(client, f"/sendToDevice/{event_type}", {"messages": messages})


async def send_withholding(
    peer: EncryptedPeer, room: str, bodies: list[str], user: str, device: str
) -> tuple[list[str], dict[str, Any]]:
    """Send ``bodies`` with a new Megolm session whose key goes to every device in the
    room but ``user``'s ``device``: their event IDs, and the key withheld (the to-device
    messages that would have carried it, to send late)."""
    client, olm = peer.client, peer.client.olm
    missing = client.get_missing_sessions(room)
    if missing:
        await client.keys_claim(missing)
    olm.outbound_group_sessions.pop(room, None)
    withheld: dict[str, Any] = {}
    for _with, to_device in olm.share_group_session_parallel(
        room, list(client.rooms[room].users), True
    ):
        messages = to_device["messages"]
        kept = messages.get(user, {}).pop(device, None)
        if kept is not None:
            withheld = {user: {device: kept}}
        await put_to_device(client, "m.room.encrypted", messages)
    olm.outbound_group_sessions[room].shared = True
    return [await peer.send_text(room, body) for body in bodies], withheld


async def share_on(peer: EncryptedPeer, room: str, user: str, device: str) -> None:
    """``user``'s new ``device`` gets the Megolm session ``peer`` sends with in ``room``
    from its current index on, as Element shares it (nio would start a new one)."""
    client, olm = peer.client, peer.client.olm
    kept = olm.outbound_group_sessions[room]
    async with asyncio.timeout(30):  # the new device's keys (nio drops the session then)
        while device not in client.device_store[user]:
            await peer._sync_once()
    missing = client.get_missing_sessions(room)
    if missing:
        await client.keys_claim(missing)
    olm.outbound_group_sessions[room] = kept
    kept.shared = False  # else nio makes a new session
    for _with, to_device in olm.share_group_session_parallel(room, [user], True):
        await put_to_device(client, "m.room.encrypted", to_device["messages"])
    kept.shared = True


async def sas_with_gateway(peer: Verifier, gw: Any, inbox: Inbox) -> None:
    """alice's session ``peer`` verifies the gateway's device as Element does; alice
    confirms from XMPP. Both ends end up trusting each other."""
    me, mine = peer.peer.user_id, peer.client.device_id
    txid = uuid.uuid4().hex
    content = {
        "from_device": mine,
        "methods": ["m.sas.v1"],
        "timestamp": int(time.time() * 1000),
        "transaction_id": txid,
    }
    await peer.send("request", gw, content)
    await asyncio.gather(
        inbox.take(from_gateway("asks to verify")),
        peer.sync_until(lambda: peer.step("ready", txid)),
    )
    sas = nio.crypto.Sas(me, mine, peer.client.olm.account.identity_keys["ed25519"], gw, txid)
    peer.client.olm.key_verifications[txid] = sas
    assert isinstance(await peer.client.to_device(sas.start_verification()), nio.ToDeviceResponse)
    shown, _ = await asyncio.gather(
        inbox.take(from_gateway("Verifying")),
        peer.sync_until(lambda: sas.established_sas is not None),
    )
    assert_same_sas(shown["body"], sas)
    assert isinstance(await peer.client.confirm_short_auth_string(txid), nio.ToDeviceResponse)
    inbox.client.send_chat(MATRIX_JID, "verify yes")
    await asyncio.gather(
        inbox.take(from_gateway("is verified")),
        peer.sync_until(lambda: sas.verified and peer.step("done", txid)),
    )
    assert peer.client.olm.is_device_verified(gw)


async def alice_her_session_and_bob(
    synapse: Synapse, verifiers: MakeVerifier
) -> tuple[MatrixAccount, Verifier, EncryptedPeer, ToDeviceLog]:
    """alice's account and her other session (its key requests logged), and bob."""
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    other = await verifiers(alice_mx, "alice-other-session")
    bob = (await verifiers(await asyncio.to_thread(new_account, synapse, "bob"), "bob")).peer
    return alice_mx, other, bob, ToDeviceLog(other.client)


async def test_her_other_session_forwards_the_keys_the_gateway_lacks_once_verified(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    inbox = Inbox(alice)
    (gw_device,) = await devices_of(synapse, alice_mx) - {other.client.device_id}
    bob_jid = jid_of(bob.user_id)
    # nio drops a key request from a device it has not fetched yet (Element fetches it).
    gw = await other.device_of(me, gw_device)

    room = await bob.create_encrypted_room([me], direct=True)
    await bob.wait_for_member(room, me)
    await inbox.take(from_contact(bob_jid, "end-to-end encrypted"))
    await bob.send_text(room, "hello, all your devices can read this")
    await inbox.take(from_contact(bob_jid, "hello, all your devices"))

    # Two messages whose key bob's device gives her other session, not the gateway.
    secrets = ["first secret before the key", "second secret before the key"]
    await send_withholding(bob, room, secrets, me, gw_device)
    notices = [await inbox.take(from_contact(bob_jid, "cannot decrypt")) for _ in secrets]
    assert all("has not sent its key" in n["body"] for n in notices)
    asked = await inbox.take(from_gateway("asked your other Matrix devices"))
    assert gw_device in asked["body"]

    # The request, per spec, once for the one session, to her devices.
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequest, me))
    await other.peer._sync_once()
    (request,) = requests.of(nio.RoomKeyRequest, me)
    content = request.source["content"]
    assert content["action"] == "request" and content["requesting_device_id"] == gw_device
    assert content["body"]["algorithm"] == "m.megolm.v1.aes-sha2"
    assert content["body"]["room_id"] == room
    held = other.client.olm.inbound_group_store.get(room, request.sender_key, request.session_id)
    assert held is not None, "the test's premise: her other session has the key"

    # Her other session forwards the key before verification: refused, alice is told.
    if other.client.olm.session_store.get(gw.curve25519) is None:
        await other.client.keys_claim({me: [gw_device]})
    olm_session = other.client.olm.session_store.get(gw.curve25519)
    forward = other.client.olm._encrypt_forwarding_key(room, held, olm_session, gw)
    assert isinstance(await other.client.to_device(forward), nio.ToDeviceResponse)
    refused = await inbox.take(from_gateway("refused room keys"))
    assert other.client.device_id in refused["body"] and "not verified" in refused["body"]

    # She verifies the gateway's device from that session: asked again, it answers (nio's
    # own answering: verified, own user), and the notices become the texts.
    await sas_with_gateway(other, gw, inbox)
    first, _ = await asyncio.gather(
        inbox.take(from_contact(bob_jid, secrets[0])),
        other.sync_until(lambda: requests.of(nio.RoomKeyRequestCancellation, me)),
    )
    second = await inbox.take(from_contact(bob_jid, secrets[1]))
    assert first["replace"]["id"] == notices[0]["id"]
    assert second["replace"]["id"] == notices[1]["id"]
    (cancel,) = requests.of(nio.RoomKeyRequestCancellation, me)
    assert cancel.request_id == request.request_id
    assert cancel.requesting_device_id == gw_device

    # Once: what comes next from bob is his next message, nothing delivered twice.
    await bob.send_text(room, "and now a new one")
    await inbox.take(from_contact(bob_jid, "and now a new one"))
    await inbox.drain(3.0)
    again = [m for m in inbox.kept if m["from"].bare == bob_jid]
    assert again == [], [m["body"] for m in again]
    assert not [line for line in gateway.lines if "Traceback" in line]


async def test_her_new_session_gets_what_the_gateway_sent_only_once_verified(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    me = alice_mx.user_id
    bob_v = await verifiers(await asyncio.to_thread(new_account, synapse, "bob"), "bob")
    bob = bob_v.peer
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    inbox = Inbox(alice)
    (gw_device,) = await devices_of(synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)

    room = await bob.create_encrypted_room([me], direct=True)
    await bob.wait_for_member(room, me)
    await inbox.take(from_contact(bob_jid, "end-to-end encrypted"))
    alice.send_chat(bob_jid, "written from XMPP before the new session")
    seen = await bob.wait_for_text(room, "written from XMPP before the new session")
    assert seen.decrypted

    # Her new session logs in later: the gateway's message is unreadable to it.
    new = await verifiers(alice_mx, "alice-new-session")
    received = ToDeviceLog(new.client)
    answer = await new.client.room_get_event(room, seen.event_id)
    assert isinstance(answer, nio.RoomGetEventResponse), answer
    megolm = answer.event
    assert isinstance(megolm, nio.MegolmEvent), megolm

    # bob (another user) asks the gateway's device for that key, then the new session
    # asks alice's devices (nio's request): neither gets it; alice is told of hers.
    bob_got = ToDeviceLog(bob.client)
    bob_request = {
        "action": "request",
        "body": {
            "algorithm": "m.megolm.v1.aes-sha2",
            "room_id": room,
            "sender_key": megolm.sender_key,
            "session_id": megolm.session_id,
        },
        "request_id": uuid.uuid4().hex,
        "requesting_device_id": bob.client.device_id,
    }
    await put_to_device(bob.client, "m.room_key_request", {me: {gw_device: bob_request}})
    sent = await new.client.request_room_key(megolm)
    assert isinstance(sent, nio.RoomKeyRequestResponse), sent
    told = await inbox.take(from_gateway("asks Passerelle for the keys"))
    assert new.client.device_id in told["body"] and "not verified" in told["body"]
    await new.peer._sync_once()
    assert not received.of(nio.EncryptedToDeviceEvent, me) + received.of(
        nio.ForwardedRoomKeyEvent, me
    ), "an unverified device got something from the gateway"

    # Verified from that session: the held request is answered; the new session reads it.
    gw = await new.device_of(me, gw_device)
    await sas_with_gateway(new, gw, inbox)
    await new.sync_until(lambda: received.of(nio.ForwardedRoomKeyEvent, me))
    (forwarded,) = received.of(nio.ForwardedRoomKeyEvent, me)
    assert forwarded.session_id == megolm.session_id and forwarded.room_id == room
    clear = new.client.decrypt_event(megolm)
    assert isinstance(clear, nio.RoomMessageText), clear
    assert clear.body == "written from XMPP before the new session"

    # bob's request came first: it was handled, and bob got nothing from the gateway.
    await bob._sync_once()
    from_alice = [e for e in bob_got.events if e.sender == me]
    assert from_alice == [], from_alice
    assert not [line for line in gateway.lines if "Traceback" in line]


async def join_with_history(
    client: Client, room_jid: str, nick: str, history: int = 20, within: float = 60.0
) -> None:
    """Join the MUC asking for its history, as soon as the gateway shows the room."""
    async with asyncio.timeout(within):
        while True:
            answer = await client.join_muc(room_jid, nick, timeout=within, history=history)
            if answer["type"] != "error":
                return
            await asyncio.sleep(0.3)


async def gateway_login(
    new_client: NewClient, synapse: Synapse, alice_mx: MatrixAccount, other: Verifier
) -> tuple[Client, Inbox, Any]:
    """alice registers with the gateway (its device is new); her other session fetches
    that device's keys: her client, its inbox, the gateway's device (nio's)."""
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    (gw_device,) = await devices_of(synapse, alice_mx) - {other.client.device_id}
    return alice, Inbox(alice), await other.device_of(alice_mx.user_id, gw_device)


async def bob_writes_before_her_login(
    bob: EncryptedPeer, other: Verifier, me: str, bodies: list[str]
) -> tuple[str, list[str]]:
    """bob's new encrypted group room, alice in it from her other session (which reads
    ``bodies`` as bob sends them, before the gateway's device exists): the room and the
    event IDs."""
    room = await bob.create_encrypted_room([me], direct=False)
    await other.peer.wait_for(lambda r, e: r == room and e == "invite")
    await other.peer.join(room)
    await bob.wait_for_member(room, me)
    sent = [await bob.send_text(room, body) for body in bodies]
    for body in bodies:
        assert (await other.peer.wait_for_text(room, body)).decrypted
    return room, sent


async def corrected_once(inbox: Inbox, room_jid: str, sent: list[str], texts: list[str]) -> None:
    """Each notice of the events ``sent`` was corrected with its text, once: nothing
    more comes live, and the room's archive holds the notice, then its one correction."""
    await inbox.drain(3.0)
    again = [m["body"] for m in inbox.kept if m["from"].bare == room_jid and m["body"]]
    assert not [b for b in again if any(t in b for t in texts)], again
    archived = [m for m in await inbox.client.archive(room_jid) if m["body"]]
    for event_id, body in zip(sent, texts, strict=True):
        (notice,) = [m for m in archived if m["id"] == event_id]
        assert "cannot decrypt" in notice["body"]
        (text,) = [m for m in archived if body in m["body"]]
        assert text["replace"]["id"] == event_id
        assert archived.index(notice) < archived.index(text)


async def test_encrypted_history_from_before_the_login_is_archived_then_corrected_once(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id

    # Before the gateway's device exists: bob writes in a group room; her session reads.
    secrets = ["older secret in the lounge", "newer secret in the lounge"]
    room, sent = await bob_writes_before_her_login(bob, other, me, secrets)
    logged_in = datetime.now(UTC)

    alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, other)
    gw_device = gw.id
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"

    # Her join's history: the two notices, oldest first, under bob's event IDs and times.
    alice.register_plugin("xep_0203")  # delayed delivery: the history's time stamps
    await join_with_history(alice, room_jid, "alice")
    notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in secrets]
    assert [n["id"] for n in notices] == sent
    assert all("has not sent its key" in n["body"] for n in notices)
    stamps = [n["delay"]["stamp"] for n in notices]
    assert stamps[0] <= stamps[1] < logged_in, stamps
    asked = await inbox.take(from_gateway("asked your other Matrix devices"))
    assert gw_device in asked["body"]
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequest, me))
    (request,) = requests.of(nio.RoomKeyRequest, me)
    assert request.room_id == room and request.requesting_device_id == gw_device

    # Verified from her other session: it forwards the key; the notices become the texts.
    await sas_with_gateway(other, gw, inbox)
    first, _ = await asyncio.gather(
        inbox.take(from_contact(room_jid, secrets[0]), timeout=60),
        other.sync_until(lambda: requests.of(nio.RoomKeyRequestCancellation, me)),
    )
    second = await inbox.take(from_contact(room_jid, secrets[1]))
    assert [first["replace"]["id"], second["replace"]["id"]] == sent
    assert [first["body"], second["body"]] == secrets

    await corrected_once(inbox, room_jid, sent, secrets)
    assert not [line for line in gateway.lines if "Traceback" in line]


async def test_history_older_than_the_key_the_gateway_got_is_asked_for_too(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    verifiers: MakeVerifier,
) -> None:
    alice_mx, other, bob, requests = await alice_her_session_and_bob(synapse, verifiers)
    me = alice_mx.user_id

    # bob writes before the gateway's login, and again after it with the same Megolm
    # session, as Element does: his device gives the gateway's that session from his
    # third message on (nio would start a new session for a new device).
    early = ["early one", "early two"]
    room, sent = await bob_writes_before_her_login(bob, other, me, early)
    alice, inbox, gw = await gateway_login(new_client, synapse, alice_mx, other)
    gw_device = gw.id
    await share_on(bob, room, me, gw_device)
    await bob.send_text(room, "after the login")
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"

    # Her join: the two early ones are notices (the key's first index is later) and
    # asked for; the later one is text.
    alice.register_plugin("xep_0203")
    await join_with_history(alice, room_jid, "alice")
    await inbox.take(from_contact(room_jid, "after the login"))
    notices = [await inbox.take(from_contact(room_jid, "cannot decrypt")) for _ in early]
    assert sorted(n["id"] for n in notices) == sorted(sent)
    await other.sync_until(lambda: requests.of(nio.RoomKeyRequest, me))

    # Verified: her session forwards the session from its start; the early ones appear.
    await sas_with_gateway(other, gw, inbox)
    first, _ = await asyncio.gather(
        inbox.take(from_contact(room_jid, early[0]), timeout=60),
        other.sync_until(lambda: requests.of(nio.RoomKeyRequestCancellation, me)),
    )
    second = await inbox.take(from_contact(room_jid, early[1]))
    assert [first["replace"]["id"], second["replace"]["id"]] == sent
    assert not [line for line in gateway.lines if "Traceback" in line]
