"""Stories of a person using Matrix through Passerelle: a real Synapse, a real Prosody.

alice logs in from XMPP with her Matrix account; bob uses Matrix directly (a
`MatrixPeer`). Each test has its own Passerelle, its own XMPP account and its own
Matrix users.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Callable
from urllib.parse import quote

import pytest
from slixmpp.exceptions import IqError

from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    PASSWORD,
    STARTED,
    MatrixPeer,
    jid_of,
    join_room_when_shown,
    log_in,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
)
from tests.e2e.xmpp_client import Client, registration_form

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
NewClient = Callable[..., "asyncio.Future[Client]"]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture
async def gateway(start_passerelle: Callable[..., PasserelleProcess]) -> PasserelleProcess:
    return await start_matrix_gateway(start_passerelle)


@pytest.fixture
async def peers(synapse: Synapse) -> AsyncIterator[Callable[[str], asyncio.Future[MatrixPeer]]]:
    async with peer_factory(synapse) as make:
        yield make


async def test_bob_sends_a_dm_and_alice_sees_it_from_contact_bob(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)

    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "hello alice, it's bob")

    await alice.next_roster_push(jid_of(bob.user_id))
    msg = await alice.next_message(jid_of(bob.user_id))
    assert msg["body"] == "hello alice, it's bob"
    assert msg["type"] == "chat"

    # alice answers from XMPP; bob reads it in the same Matrix room.
    alice.send_chat(jid_of(bob.user_id), "hi bob, alice here")
    answer = await bob.wait_for_message(room, "hi bob, alice here")
    assert answer["sender"] == alice_mx.user_id
    assert gateway.proc.poll() is None


async def test_alice_writes_first_and_a_direct_chat_is_created(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)

    alice.send_chat(jid_of(bob.user_id), "bob, are you there?")
    room = await bob.wait_for_invite()
    await bob.join(room)
    msg = await bob.wait_for_message(room, "bob, are you there?")
    assert msg["sender"] == alice_mx.user_id

    await bob.send_text(room, "yes!")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "yes!"


async def test_wrong_password_is_refused_and_nothing_is_stored(
    synapse: Synapse, gateway: PasserelleProcess, new_client: NewClient
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    with pytest.raises(IqError) as err:
        await alice.register(
            MATRIX_JID, user_id=alice_mx.user_id, password="not " + PASSWORD, homeserver=synapse.url
        )
    assert err.value.condition == "not-authorized"
    assert "password" in err.value.text.lower()
    # Nothing was stored: the form she gets again is a new user's (no "remove" field).
    form = await registration_form(alice, MATRIX_JID)
    assert "remove" not in form["register"]["form"]["fields"]
    await log_in(alice, synapse, alice_mx)


async def test_an_access_token_logs_in_and_a_wrong_or_foreign_one_is_refused(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    # The form's "Access token (instead of the password)": a token that is no one's and
    # bob's token given with alice's Matrix ID are refused with the reason, nothing
    # stored; her own token logs her in, and her chats work.
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    other = await asyncio.to_thread(new_account, synapse, "other")
    alice = await new_client("alice")
    fields = {"user_id": alice_mx.user_id, "homeserver": synapse.url}
    with pytest.raises(IqError) as err:
        await alice.register(MATRIX_JID, token="syt_no_such_token", **fields)
    assert err.value.condition == "not-authorized", err.value.text
    with pytest.raises(IqError) as err:
        await alice.register(MATRIX_JID, token=other.access_token, **fields)
    assert other.user_id in err.value.text and alice_mx.user_id in err.value.text
    form = await registration_form(alice, MATRIX_JID)
    assert "remove" not in form["register"]["form"]["fields"]

    await alice.register(MATRIX_JID, token=alice_mx.access_token, **fields)
    await alice.next_presence(MATRIX_JID, ptype="chat")
    bob = await peers("bob")
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "a token is enough")
    assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "a token is enough"


async def test_unreachable_homeserver_is_refused_with_a_reason(
    gateway: PasserelleProcess, new_client: NewClient
) -> None:
    alice = await new_client("alice")
    with pytest.raises(IqError) as err:
        await alice.register(
            MATRIX_JID,
            user_id="@alice:localhost",
            password=PASSWORD,
            homeserver="http://127.0.0.1:9",
        )
    assert err.value.condition == "remote-server-not-found"
    assert "127.0.0.1:9" in err.value.text


async def test_restart_neither_loses_nor_repeats_messages(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "before the crash")
    assert (await alice.next_message(bob_jid))["body"] == "before the crash"

    # The Matrix gateway dies; bob goes on writing while it is down.
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(r"matrix exited with code -9 .* restarting in", after=mark)
    for n in range(1, 4):
        await bob.send_text(room, f"while down {n}")
    await gateway.wait_for(STARTED, after=mark, timeout=90)
    await bob.send_text(room, "after the restart")

    bodies: list[str] = []
    while not bodies or bodies[-1] != "after the restart":
        bodies.append((await alice.next_message(bob_jid))["body"])
    assert bodies == ["while down 1", "while down 2", "while down 3", "after the restart"]


async def test_room_messages_both_ways(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    carol = await peers("carol")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)

    room = await bob.create_room("Lounge", invite=[alice_mx.user_id, carol.user_id])
    await carol.join(room)
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    assert room_jid == room_jid.lower() and room != room.lower()  # case-safe address
    await join_room_when_shown(alice, room_jid, "alice")

    await bob.send_text(room, "hello room")
    msg = await alice.next_groupchat_text(room_jid, "hello room")
    assert msg["from"].resource == bob.user_id[1:].split(":")[0]  # display name: localpart

    alice.send_groupchat(room_jid, "hi all, alice here")
    got = await carol.wait_for_message(room, "hi all, alice here")
    assert got["sender"] == alice_mx.user_id


async def test_a_burst_from_xmpp_reaches_the_room_whole_and_in_order(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    # 150 messages written at once: most wait in the gateway's inbox as text
    # (legacy_plugins/matrix/inbox.py) and go out one by one as earlier ones are sent.
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    room = await bob.create_room("Burst", invite=[alice_mx.user_id])
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")

    sent = [f"burst {n}" for n in range(150)]
    for body in sent:
        alice.send_groupchat(room_jid, body)
    await bob.wait_for_message(room, sent[-1], timeout=120)
    history = await bob.call(
        "GET", f"/rooms/{quote(room, safe='')}/messages", params={"dir": "b", "limit": "1000"}
    )
    got = [
        e["content"]["body"]
        for e in reversed(history["chunk"])
        if e["sender"] == alice_mx.user_id and e["type"] == "m.room.message"
    ]
    assert got == sent
    assert not any("finished in" in line for line in gateway.lines)  # no watchdog release


async def test_an_unreadable_encrypted_message_shows_as_a_notice(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    # bob's client has no encryption: what he sends into the encrypted chat cannot be
    # decrypted, and what alice sends him stays encrypted (he has no device keys).
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)

    encryption = {"type": "m.room.encryption", "state_key": "", "content": ENCRYPTION}
    room = await bob.call(
        "POST",
        "/createRoom",
        {
            "is_direct": True,
            "invite": [alice_mx.user_id],
            "preset": "trusted_private_chat",
            "initial_state": [encryption],
        },
    )
    notice = await alice.next_message(bob_jid)
    assert "end-to-end encrypted" in notice["body"]
    bogus = {**ENCRYPTION, "ciphertext": "AwgA", "sender_key": "x", "session_id": "y"}
    await bob.send(room["room_id"], "m.room.encrypted", {**bogus, "device_id": "Z"})
    unreadable = await alice.next_message(bob_jid)
    assert "cannot decrypt" in unreadable["body"]
    assert "key" in unreadable["body"]  # the reason: no key for it

    alice.send_chat(bob_jid, "only for your devices")
    sent = await bob.wait_for(
        lambda e: e.get("type") == "m.room.encrypted" and e.get("sender") == alice_mx.user_id
    )
    assert "only for your devices" not in str(sent)


ENCRYPTION = {"algorithm": "m.megolm.v1.aes-sha2"}


async def test_room_topic_becomes_the_subject(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    room = await bob.create_room("News", invite=[alice_mx.user_id, "@nobody:localhost"])
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")

    path = f"/rooms/{quote(room, safe='')}/state/m.room.topic/"
    await bob.call("PUT", path, {"topic": "Today: the release"})
    subjects = []
    while "Today: the release" not in subjects:  # the first one came with the join
        subjects.append((await alice.next_subject(room_jid))["subject"])


async def test_unregistering_logs_the_matrix_device_out(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    myself = MatrixPeer(synapse, alice_mx)
    try:
        devices = (await myself.call("GET", "/devices"))["devices"]
        assert len(devices) == 2  # this test's session and the gateway's
        await alice.unregister(MATRIX_JID)
        for _ in range(100):
            if len((await myself.call("GET", "/devices"))["devices"]) == 1:
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError("the gateway's Matrix device is still there")
    finally:
        await myself.close()


async def test_a_burst_larger_than_a_sync_arrives_whole(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    # With 10 events per sync, 60 messages written while the gateway is down come back
    # as a "limited" timeline: the gateway must read the gap from /messages.
    gateway = await start_matrix_gateway(start_passerelle, timeline_limit=10)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "burst ahead")
    assert (await alice.next_message(bob_jid))["body"] == "burst ahead"

    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(r"matrix exited with code -9 .* restarting in", after=mark)
    sent = [f"burst {n}" for n in range(60)]
    for body in sent:
        await bob.send_text(room, body)
    await gateway.wait_for(STARTED, after=mark, timeout=90)

    received = [(await alice.next_message(bob_jid))["body"] for _ in sent]
    assert received == sent


async def test_homeserver_outage_shows_as_presence_and_heals(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> None:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)
    room = await bob.create_dm(alice_mx.user_id)
    await bob.send_text(room, "before the outage")
    assert (await alice.next_message(bob_jid))["body"] == "before the outage"

    await asyncio.to_thread(synapse.stop)
    try:
        down = await alice.next_presence(MATRIX_JID, ptype="dnd", timeout=90)
        assert "retrying in" in down["status"]
    finally:
        await asyncio.to_thread(synapse.start)
    await alice.next_presence(MATRIX_JID, ptype="chat", timeout=120)
    await bob.send_text(room, "after the outage")
    assert (await alice.next_message(bob_jid))["body"] == "after the outage"
