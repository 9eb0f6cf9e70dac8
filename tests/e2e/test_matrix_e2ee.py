"""End-to-end encrypted Matrix chats through Passerelle: a real Synapse, a real Prosody.

alice logs in from XMPP; bob and carol use Matrix on matrix-nio with encryption and
stores of their own (`EncryptedPeer`), as Element users would. What alice writes must
reach them encrypted (nio marks what it decrypted), what they write must reach alice in
clear, before and after Passerelle restarts.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import nio  # type: ignore[import-untyped]
import pytest

from gateway.localservers.prosody import Prosody
from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.crypto import fingerprint
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    PNG,
    STARTED,
    EncryptedPeer,
    MatrixPeer,
    http_get,
    jid_of,
    join_room_when_shown,
    log_in,
    new_account,
    shared_synapse,
    start_matrix_gateway,
    understand_features,
    xmpp_upload,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
NewClient = Callable[..., "asyncio.Future[Client]"]
NewPeer = Callable[[str], "asyncio.Future[EncryptedPeer]"]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture
async def gateway(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    return await start_matrix_gateway(start_passerelle)


@pytest.fixture
async def encrypted_peers(synapse: Synapse, tmp_path: Path) -> AsyncIterator[NewPeer]:
    made: list[EncryptedPeer] = []

    async def make(name: str) -> EncryptedPeer:
        account = await asyncio.to_thread(new_account, synapse, name)
        peer = EncryptedPeer(synapse, account, tmp_path / f"{name}-e2ee-store")
        made.append(peer)
        await peer.start()
        return peer

    try:
        yield make  # type: ignore[misc]
    finally:
        for peer in made:
            await peer.close()


async def gateway_device(synapse: Synapse, user: object) -> str:
    """The device the gateway logged in as (the account's other device)."""
    myself = MatrixPeer(synapse, user)  # type: ignore[arg-type]
    try:
        devices = (await myself.call("GET", "/devices"))["devices"]
    finally:
        await myself.close()
    others = [d["device_id"] for d in devices if d["device_id"] != myself.account.device_id]
    assert len(others) == 1, devices
    return str(others[0])


async def test_an_encrypted_dm_both_ways_with_the_device_shown_and_across_a_restart(
    synapse: Synapse,
    prosody: Prosody,
    gateway: PasserelleProcess,
    new_client: NewClient,
    encrypted_peers: NewPeer,
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await encrypted_peers("bob")
    alice = await new_client("alice")
    understand_features(alice)
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)

    room = await bob.create_encrypted_room([alice_mx.user_id], direct=True)
    await bob.wait_for_member(room, alice_mx.user_id)
    notice = await alice.next_message(bob_jid)
    assert "end-to-end encrypted" in notice["body"]
    assert "cannot" not in notice["body"]

    await bob.send_text(room, "a secret for alice")
    assert (await alice.next_message(bob_jid))["body"] == "a secret for alice"
    sent = alice.send_chat(bob_jid, "a secret for bob")
    answer = await bob.wait_for_text(room, "a secret for bob")
    assert answer.decrypted and answer.sender == alice_mx.user_id

    # An edit and a reaction, encrypted too (their relation stays readable to servers).
    alice.send_chat(bob_jid, "a secret for bob, corrected", replace=sent["id"])
    edit = await bob.wait_for_text(room, "* a secret for bob, corrected")
    assert edit.decrypted
    assert edit.source["content"]["m.new_content"]["body"] == "a secret for bob, corrected"
    assert edit.source["content"]["m.relates_to"]["event_id"] == answer.event_id
    await bob.react(room, answer.event_id, "🔐")
    reaction = await alice.next_matching(lambda m: "reactions" in m)
    assert reaction["from"].bare == bob_jid and reaction["reactions"]["id"] == sent["id"]
    assert {r["value"] for r in reaction["reactions"]} == {"🔐"}

    # A key that arrives after its message: the notice shown meanwhile is corrected.
    send_key = await bob.send_text_key_later(room, "a secret with a late key")
    notice = await alice.next_message(bob_jid)
    assert "cannot decrypt" in notice["body"] and "key" in notice["body"]
    await send_key()
    late = await alice.next_message(bob_jid)
    assert late["body"] == "a secret with a late key"
    assert late["replace"]["id"] == notice["id"]

    # Files: encrypted on the homeserver, in clear on XMPP; a large one arrives whole.
    big = os.urandom(300_000)
    for data, name, ctype in ((PNG, "dot.png", "image/png"), (big, "big.bin", "text/x-big")):
        await bob.send_file(room, data, name, ctype)
        got = await alice.next_matching(
            lambda m: m["from"].bare == bob_jid and bool(m["oob"]["url"])
        )
        assert await http_get(got["oob"]["url"]) == data
    for data, name, ctype, kind in (
        (PNG, "pixel.png", "image/png", nio.RoomEncryptedImage),
        (big, "large.bin", "text/x-large", nio.RoomEncryptedFile),
    ):
        url = await xmpp_upload(alice, prosody.upload_domain, data, name, ctype)
        msg = alice.make_message(mto=bob_jid, mbody=url, mtype="chat")
        msg["oob"]["url"] = url
        msg.send()

        def is_file(r: str, e: Any, kind: Any = kind, name: str = name) -> bool:
            return r == room and isinstance(e, kind) and e.body == name

        file = await bob.wait_for(is_file)
        assert file.decrypted and await bob.fetch_file(file) == data

    # alice compares her gateway device's key with what the homeserver publishes.
    device = await gateway_device(synapse, alice_mx)
    alice.send_chat(MATRIX_JID, "device")
    shown = await alice.next_matching(
        lambda m: m["from"].bare == MATRIX_JID and "Matrix device" in m["body"]
    )
    assert device in shown["body"]
    assert fingerprint(await bob.device_key(alice_mx.user_id, device)) in shown["body"]
    alice.send_chat(MATRIX_JID, f"device {bob.user_id}")
    listed = await alice.next_matching(
        lambda m: m["from"].bare == MATRIX_JID and bob.user_id in m["body"]
    )
    bob_key = await bob.device_key(bob.user_id, bob.client.device_id)
    assert bob.client.device_id in listed["body"] and fingerprint(bob_key) in listed["body"]

    # The Matrix gateway dies; bob writes meanwhile; both ways still work afterwards.
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(r"matrix exited with code -9 .* restarting in", after=mark)
    await bob.send_text(room, "written while you were away")
    await gateway.wait_for(STARTED, after=mark, timeout=90)
    assert (await alice.next_message(bob_jid))["body"] == "written while you were away"
    alice.send_chat(bob_jid, "back, and still secret")
    answer = await bob.wait_for_text(room, "back, and still secret")
    assert answer.decrypted
    await bob.send_text(room, "welcome back")
    assert (await alice.next_message(bob_jid))["body"] == "welcome back"
    assert not [line for line in gateway.lines if "Traceback" in line]


async def test_an_encrypted_room_both_ways(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    encrypted_peers: NewPeer,
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await encrypted_peers("bob")
    carol = await encrypted_peers("carol")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)

    room = await bob.create_encrypted_room([alice_mx.user_id, carol.user_id], direct=False)
    await carol.join(room)
    await bob.wait_for_member(room, carol.user_id)
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")

    await bob.send_text(room, "secrets of the lounge")
    await alice.next_groupchat_text(room_jid, "secrets of the lounge")
    alice.send_groupchat(room_jid, "alice's secret for all")
    for peer in (bob, carol):
        got = await peer.wait_for_text(room, "alice's secret for all")
        assert got.decrypted and got.sender == alice_mx.user_id
    await carol.send_text(room, "carol's secret")
    await alice.next_groupchat_text(room_jid, "carol's secret")


async def test_a_device_of_another_client_says_why_it_cannot_decrypt(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    encrypted_peers: NewPeer,
) -> None:
    # alice gives the gateway the access token of her encrypted nio client: that device
    # has keys already, which the gateway must not replace.
    alice_elsewhere = await encrypted_peers("alice")
    bob = await encrypted_peers("bob")
    alice = await new_client("alice")
    await alice.register(
        MATRIX_JID,
        user_id=alice_elsewhere.user_id,
        token=alice_elsewhere.client.access_token,
        homeserver=synapse.url,
    )
    await alice.next_presence(MATRIX_JID, ptype="chat")
    bob_jid = jid_of(bob.user_id)

    room = await bob.create_encrypted_room([alice_elsewhere.user_id], direct=True)
    notice = await alice.next_message(bob_jid)
    assert "cannot decrypt" in notice["body"]
    assert "register with your password" in notice["body"]

    alice.send_chat(bob_jid, "can you read me?")
    bounce = await alice.next_message(bob_jid, with_body=False)
    assert bounce["type"] == "error"
    assert bounce["error"]["condition"] == "feature-not-implemented"
    assert "register with your password" in bounce["error"]["text"]
    assert room
