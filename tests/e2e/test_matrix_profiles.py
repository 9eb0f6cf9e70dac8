"""Matrix profiles on the XMPP side: avatars of people and rooms, and presence.

bob (a `MatrixPeer`) changes his avatar and his room's; alice sees them as the vCard
photos of contact bob and of the group chat, each change too, also those made while
the gateway was stopped. bob's Matrix presence is contact bob's presence, and alice's
XMPP presence is her Matrix presence (Synapse with presence on).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from urllib.parse import quote

import pytest
from PIL import Image
from slixmpp import Presence

from gateway.localservers.synapse import MatrixAccount, Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    STARTED,
    WAIT,
    MatrixPeer,
    jid_of,
    join_room_when_shown,
    log_in,
    new_account,
    peer_factory,
    png,
    shared_synapse,
    start_matrix_gateway,
    wait_for_avatar,
)
from tests.e2e.xmpp_client import Client, send_iq

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NewClient = Callable[..., "asyncio.Future[Client]"]
RED, BLUE, GREEN, YELLOW = (255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 255, 0)


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


async def test_avatars_of_contacts_and_rooms_follow_matrix(
    synapse: Synapse, gateway: PasserelleProcess, pair: Pair
) -> None:
    alice, alice_mx, bob, bob_jid = pair.alice, pair.alice_mx, pair.bob, pair.bob_jid

    for color in (RED, BLUE):
        await set_profile_avatar(bob, color)
        await wait_for_avatar(alice, bob_jid, color)

    room = await bob.create_room("Gallery", invite=[alice_mx.user_id, "@nobody:localhost"])
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    for color in (GREEN, YELLOW):
        await set_room_avatar(bob, room, color)
        await wait_for_avatar(alice, room_jid, color)

    # Changes made while the gateway is stopped show once it is back.
    mark = len(gateway.lines)
    os.kill(gateway.child_pid("matrix"), signal.SIGKILL)
    await gateway.wait_for(r"matrix exited with code -9 .* restarting in", after=mark)
    await set_profile_avatar(bob, GREEN)
    await set_room_avatar(bob, room, RED)
    await gateway.wait_for(STARTED, after=mark, timeout=90)
    await wait_for_avatar(alice, bob_jid, GREEN)
    await wait_for_avatar(alice, room_jid, RED)


async def test_alices_avatars_from_xmpp_reach_matrix(
    synapse: Synapse, gateway: PasserelleProcess, pair: Pair
) -> None:
    alice, bob = pair.alice, pair.bob
    for plugin in ("xep_0084", "xep_0054"):
        if plugin not in alice.plugin:
            alice.register_plugin(plugin)
    picture = png(BLUE, 64)
    await alice.plugin["xep_0084"].publish_avatar(picture, timeout=WAIT)
    info = {"id": hashlib.sha1(picture).hexdigest(), "type": "image/png"}
    info |= {"bytes": str(len(picture)), "width": "64", "height": "64"}
    # slixmpp's AvatarMetadataItem says int for these, but its Info stanza stores them as
    # XML attributes unconverted, and only strings serialize.
    await alice.plugin["xep_0084"].publish_avatar_metadata([info], timeout=WAIT)  # type: ignore[list-item]

    profile = f"/profile/{quote(pair.alice_mx.user_id)}/avatar_url"
    mxc = None
    async with asyncio.timeout(WAIT):
        while not mxc:
            mxc = (await bob.call("GET", profile)).get("avatar_url")
            await asyncio.sleep(0.3)
    assert color_of(await bob.download(mxc)) == BLUE

    # As a moderator of bob's room, she sets its picture from XMPP (its vCard).
    room = await bob.create_room("Studio", invite=[pair.alice_mx.user_id, "@nobody:localhost"])
    await bob.wait_for_member(room, pair.alice_mx.user_id)
    await bob.set_power(room, pair.alice_mx.user_id, 50)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")
    iq = alice.make_iq_set(ito=room_jid)
    iq["vcard_temp"]["PHOTO"]["TYPE"] = "image/png"
    iq["vcard_temp"]["PHOTO"]["BINVAL"] = png(GREEN)
    await send_iq(iq, WAIT)
    event = await bob.wait_for(
        lambda e: e.get("room_id") == room and e.get("type") == "m.room.avatar"
    )
    assert event["sender"] == pair.alice_mx.user_id
    assert color_of(await bob.download(event["content"]["url"])) == GREEN


def color_of(image: bytes) -> object:
    return Image.open(io.BytesIO(image)).convert("RGB").getpixel((0, 0))


@dataclass
class Pair:
    """alice on XMPP, bob on Matrix, with a direct chat that has shown on XMPP."""

    alice: Client
    alice_mx: MatrixAccount
    bob: MatrixPeer
    bob_jid: str


@pytest.fixture
async def pair(
    synapse: Synapse,
    gateway: PasserelleProcess,
    new_client: NewClient,
    peers: Callable[[str], asyncio.Future[MatrixPeer]],
) -> Pair:
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    bob_jid = jid_of(bob.user_id)
    await bob.send_text(await bob.create_dm(alice_mx.user_id), "hi")
    await alice.next_message(bob_jid)
    return Pair(alice, alice_mx, bob, bob_jid)


async def set_profile_avatar(peer: MatrixPeer, color: tuple[int, int, int]) -> None:
    mxc = await peer.upload(png(color), "image/png", "me.png")
    await peer.call("PUT", f"/profile/{quote(peer.user_id)}/avatar_url", {"avatar_url": mxc})


async def set_room_avatar(peer: MatrixPeer, room: str, color: tuple[int, int, int]) -> None:
    mxc = await peer.upload(png(color), "image/png", "room.png")
    await peer.call("PUT", f"/rooms/{quote(room)}/state/m.room.avatar/", {"url": mxc})


async def test_presence_both_ways(synapse: Synapse, gateway: PasserelleProcess, pair: Pair) -> None:
    alice, alice_mx, bob, bob_jid = pair.alice, pair.alice_mx, pair.bob, pair.bob_jid

    # bob's Matrix presence is contact bob's presence.
    bob_presence = f"/presence/{quote(bob.user_id)}/status"
    await bob.call("PUT", bob_presence, {"presence": "online", "status_msg": "at my desk"})
    online = await next_status(alice, bob_jid, "at my desk")
    assert online["type"] == "available"
    await bob.call("PUT", bob_presence, {"presence": "unavailable", "status_msg": "lunch"})
    away = await next_status(alice, bob_jid, "lunch")
    assert away["type"] == "away"
    await bob.call("PUT", bob_presence, {"presence": "offline"})
    await alice.next_presence(bob_jid, ptype="unavailable")

    # alice's XMPP presence is her Matrix presence.
    alice.send_presence(pto=MATRIX_JID, pshow="away", pstatus="out for a walk")
    await matrix_presence(bob, alice_mx.user_id, "unavailable", "out for a walk")
    alice.send_presence(pto=MATRIX_JID, pstatus="back")
    await matrix_presence(bob, alice_mx.user_id, "online", "back")
    alice.send_presence(pto=MATRIX_JID, ptype="unavailable")
    await matrix_presence(bob, alice_mx.user_id, "offline", "")


async def next_status(client: Client, jid: str, status: str) -> Presence:
    """The next presence of ``jid`` whose status starts with ``status``."""
    async with asyncio.timeout(WAIT):
        while True:
            presence = await client.presences.get()
            if presence["from"].bare == jid and presence["status"].startswith(status):
                return presence


async def matrix_presence(peer: MatrixPeer, user: str, state: str, status: str) -> None:
    """Until the homeserver shows ``user`` with presence ``state`` and ``status``."""
    seen = None
    try:
        async with asyncio.timeout(WAIT):
            while True:
                seen = await peer.call("GET", f"/presence/{quote(user)}/status")
                if seen.get("presence") == state and (seen.get("status_msg") or "") == status:
                    return
                await asyncio.sleep(0.3)
    except TimeoutError:
        raise AssertionError(f"{user}'s Matrix presence is {seen}") from None
