"""Stories of Matrix rooms seen from XMPP: joining, leaving and creating rooms,
invitations both ways, members coming and going, power levels, moderation, history and
the user's own messages from another Matrix client. A real Synapse, a real Prosody.

alice uses XMPP through Passerelle; bob, carol, dave and erin use Matrix directly.
"""

from __future__ import annotations

import asyncio
import re
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import quote

import pytest
from slixmpp import JID
from slixmpp.stanza import Message

from gateway.localservers.synapse import MatrixAccount, Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    MatrixPeer,
    jid_of,
    join_room_when_shown,
    log_in,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
)
from tests.e2e.xmpp_client import Client, muc_status, send_iq

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
NewClient = Callable[..., "asyncio.Future[Client]"]
Peers = Callable[[str], "asyncio.Future[MatrixPeer]"]
GROUPS = "https://slidge.im/command/core/groups"
CREATE_GROUP = GROUPS + "/create-group"


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@pytest.fixture
async def peers(synapse: Synapse) -> AsyncIterator[Peers]:
    async with peer_factory(synapse) as make:
        yield make


def muc_jid(matrix_id: str) -> str:
    return f"{id_to_localpart(matrix_id)}@{MATRIX_JID}"


async def occupant(
    client: Client, room: str, user_jid: str, ptype: str = "available", timeout: float = 30
) -> tuple[str, set[int], dict[str, str]]:
    """The next presence in ``room`` of the occupant who is ``user_jid``: its nick, status
    codes and item attributes."""
    async with asyncio.timeout(timeout):
        while True:
            pres = await client.presences.get()
            if pres["from"].bare != room or pres["type"] != ptype:
                continue
            codes, item = muc_status(pres)
            if JID(item.get("jid", "")).bare == user_jid:
                return pres["from"].resource, codes, item


def occupant_at_join(client: Client, room: str, user_jid: str) -> tuple[str, dict[str, str]]:
    for nick, pres in client.occupants[room].items():
        _codes, item = muc_status(pres)
        if JID(item.get("jid", "")).bare == user_jid:
            return nick, item
    raise AssertionError(f"{user_jid} is not among the occupants of {room}")


async def invitation(client: Client, timeout: float = 30) -> tuple[str, str]:
    """The next XEP-0249 invitation: (who invites, the room's JID)."""
    async with asyncio.timeout(timeout):
        while True:
            msg = await client.messages.get()
            x = msg.xml.find("{jabber:x:conference}x")
            if x is not None:
                return msg["from"].bare, str(x.get("jid"))


async def test_join_by_alias_with_history_and_by_id_then_leave(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    await start_matrix_gateway(start_passerelle, backfill_count=20)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alias_name = "Lounge" + bob.user_id[1:].split(":")[0]
    room = await bob.create_public_room("Lounge", alias=alias_name)
    for n in range(3):
        await bob.send_text(room, f"before alice came {n}")
    alice = await new_client("alice")
    alice.queue_bodyless_messages()
    await log_in(alice, synapse, alice_mx)

    # alice joins by the room's alias: a case-safe address that stays the room's.
    alias = f"#{alias_name}:{synapse.server_name}"
    room_jid = muc_jid(alias)
    assert room_jid.startswith("#_lounge") and room_jid == room_jid.lower()
    pres = await alice.join_muc(room_jid, "alice", timeout=60)
    assert pres["type"] != "error", pres
    await bob.wait_for_member(room, alice_mx.user_id)
    await bob.send_text(room, "welcome alice")
    assert (await alice.next_groupchat_text(room_jid, "welcome alice"))["body"]

    # The room's history went into the MUC archive once, in order, before the live one.
    bodies = [m["body"] for m in await alice.archive(room_jid) if m["body"]]
    history = [f"before alice came {n}" for n in range(3)]
    assert [b for b in bodies if b in history] == history, bodies
    assert bodies.count("welcome alice") == 1, bodies
    assert bodies.index("before alice came 2") < bodies.index("welcome alice")

    # And by the room's ID; then she leaves it from XMPP (XEP-0077 remove on the MUC).
    garden = await bob.create_public_room("Garden")
    garden_jid = muc_jid(garden)
    pres = await alice.join_muc(garden_jid, "alice", timeout=60)
    assert pres["type"] != "error", pres
    await bob.wait_for_member(garden, alice_mx.user_id)
    leave = alice.make_iq_set(ito=garden_jid)
    leave["register"]["remove"] = True
    await send_iq(leave, timeout=30)
    await bob.wait_for_member(garden, alice_mx.user_id, "leave")


async def test_invitations_both_ways_and_a_room_created_from_xmpp(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    await start_matrix_gateway(start_passerelle, auto_accept_invites=False)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob, carol = await peers("bob"), await peers("carol")
    alice = await new_client("alice")
    alice.queue_bodyless_messages()
    await log_in(alice, synapse, alice_mx)

    # bob invites alice on Matrix: she gets a XEP-0249 invitation from bob, not a join.
    room = await bob.create_room("Invitation only", invite=[alice_mx.user_id])
    inviter, room_jid = await invitation(alice)
    assert inviter == jid_of(bob.user_id)
    assert room_jid == muc_jid(room)
    pres = await alice.join_muc(room_jid, "alice", timeout=60)
    assert pres["type"] != "error", pres
    await bob.wait_for_member(room, alice_mx.user_id)

    # alice creates a room from XMPP (slidge's "create group" command) ...
    result = await alice.run_command(
        MATRIX_JID, GROUPS, command=CREATE_GROUP, group_name="Made on XMPP"
    )
    found = re.search(r"xmpp:([^?\s<\"]+)\?join", str(result))
    assert found, result
    made_jid = found.group(1)
    pres = await alice.join_muc(made_jid, "alice", timeout=60)
    assert pres["type"] != "error", pres

    # ... and invites carol into it with XEP-0249: a Matrix invite.
    alice.send_direct_invite(jid_of(carol.user_id), made_jid, "come in")
    made = await carol.wait_for_invite(timeout=30)
    assert muc_jid(made) == made_jid
    await carol.join(made)
    alice.send_groupchat(made_jid, "hello carol")
    got = await carol.wait_for_message(made, "hello carol")
    assert got["sender"] == alice_mx.user_id
    name = await carol.call("GET", f"/rooms/{made}/state/m.room.name/")
    assert name["name"] == "Made on XMPP"


async def test_members_power_levels_and_moderation(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob, carol, dave, erin = [await peers(n) for n in ("bob", "carol", "dave", "erin")]
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    invited = [alice_mx.user_id, carol.user_id, dave.user_id, erin.user_id]
    room = await bob.create_room("Court", invite=invited)
    await bob.set_power(room, alice_mx.user_id, 100)
    await carol.join(room)
    await bob.wait_for_member(room, alice_mx.user_id)
    room_jid = muc_jid(room)
    await join_room_when_shown(alice, room_jid, "alice")

    # Power levels as affiliations and roles: bob created the room (100), so is alice.
    _nick, item = occupant_at_join(alice, room_jid, jid_of(bob.user_id))
    assert (item["affiliation"], item["role"]) == ("owner", "moderator")
    carol_nick, item = occupant_at_join(alice, room_jid, jid_of(carol.user_id))
    assert (item["affiliation"], item["role"]) == ("member", "participant")

    # dave joins; alice makes him an admin from XMPP (power 50 on Matrix), bob makes him
    # an owner on Matrix (100); then he leaves by himself.
    await dave.join(room)
    dave_nick, codes, item = await occupant(alice, room_jid, jid_of(dave.user_id))
    assert item["affiliation"] == "member"
    await alice.set_affiliation(room_jid, "admin", nick=dave_nick)
    levels = await bob.wait_for(
        lambda e: (
            e.get("type") == "m.room.power_levels"
            and e["content"].get("users", {}).get(dave.user_id) == 50
        )
    )
    assert levels["sender"] == alice_mx.user_id
    while (item["affiliation"], item["role"]) != ("admin", "moderator"):
        _nick, codes, item = await occupant(alice, room_jid, jid_of(dave.user_id))
    await bob.set_power(room, dave.user_id, 100)
    while (item["affiliation"], item["role"]) != ("owner", "moderator"):
        _nick, codes, item = await occupant(alice, room_jid, jid_of(dave.user_id))
    await dave.leave(room)
    _nick, codes, item = await occupant(alice, room_jid, jid_of(dave.user_id), "unavailable")
    assert not codes & {301, 307}

    # alice kicks carol from XMPP: a Matrix kick, shown as a kick.
    await alice.kick(room_jid, carol_nick, "too loud")
    kicked = await bob.wait_for_member(room, carol.user_id, "leave")
    assert kicked["sender"] == alice_mx.user_id
    assert kicked["content"].get("reason") == "too loud"
    _nick, codes, _item = await occupant(alice, room_jid, jid_of(carol.user_id), "unavailable")
    assert 307 in codes

    # erin joins; alice bans her from XMPP (affiliation outcast): a Matrix ban.
    await erin.join(room)
    erin_nick, _codes, _item = await occupant(alice, room_jid, jid_of(erin.user_id))
    await alice.set_affiliation(room_jid, "outcast", nick=erin_nick, reason="spam")
    banned = await bob.wait_for_member(room, erin.user_id, "ban")
    assert banned["sender"] == alice_mx.user_id
    _nick, codes, _item = await occupant(alice, room_jid, jid_of(erin.user_id), "unavailable")
    assert 301 in codes


async def test_own_messages_from_another_matrix_client_show_as_hers(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    alice = await new_client("alice")
    alice.register_plugin("xep_0280")
    carbons: asyncio.Queue[Message] = asyncio.Queue()
    alice.add_event_handler("carbon_sent", carbons.put_nowait)
    await alice.plugin["xep_0280"].enable(timeout=20)  # as XMPP clients do
    await log_in(alice, synapse, alice_mx)
    phone = MatrixPeer(synapse, alice_mx)  # alice's other Matrix client, another device
    try:
        dm = await bob.create_dm(alice_mx.user_id)
        await bob.send_text(dm, "hi alice")
        assert (await alice.next_message(jid_of(bob.user_id)))["body"] == "hi alice"

        # In a direct chat: a carbon of a message she sent to bob (XEP-0280, privileged).
        await phone.send_text(dm, "sent from my phone")
        async with asyncio.timeout(30):
            carbon = await carbons.get()
        sent = carbon["carbon_sent"]
        assert sent["body"] == "sent from my phone"
        assert sent["to"].bare == jid_of(bob.user_id)
        assert carbon["from"].bare == alice.boundjid.bare

        # In a room: a message from her own occupant.
        room = await bob.create_public_room("Phone room")
        room_jid = muc_jid(room)
        pres = await alice.join_muc(room_jid, "alice", timeout=60)  # joins it on Matrix
        assert pres["type"] != "error", pres
        await phone.send_text(room, "room message from my phone")
        msg = await alice.next_groupchat_text(room_jid, "room message from my phone")
        assert msg["from"].resource == pres["from"].resource  # her own nick
    finally:
        await phone.close()


async def alice_bob_and_carol(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
    name: str,
) -> tuple[MatrixAccount, Client, MatrixPeer, MatrixPeer, str]:
    """The gateway, alice logged in to Matrix through it, and a room `name` that bob
    made and invited alice (joined: the gateway accepts) and carol (not yet) to."""
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    bob = await peers("bob")
    carol = await peers("carol")
    alice = await new_client("alice")
    await log_in(alice, synapse, alice_mx)
    room = await bob.create_room(name, invite=[alice_mx.user_id, carol.user_id])
    await bob.wait_for_member(room, alice_mx.user_id)
    return alice_mx, alice, bob, carol, room


def mentioned(event: dict[str, Any]) -> list[str]:
    mentions = event["content"].get("m.mentions")
    assert isinstance(mentions, dict), f"no m.mentions in {event['content']}"
    return list(mentions.get("user_ids", []))


async def test_names_in_the_text_are_mentions_also_of_someone_who_just_joined(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    # What the XMPP user writes: a member's name makes the event's m.mentions (Matrix
    # clients notify by it), no name mentions nobody, and someone who joined a moment
    # ago can be mentioned at once (the gateway reuses the names it read for a while).
    _alice_mx, alice, bob, carol, room = await alice_bob_and_carol(
        synapse, start_passerelle, new_client, peers, "Mentions"
    )
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")
    bob_nick = bob.user_id[1:].split(":")[0]  # no display name: the local part
    carol_nick = carol.user_id[1:].split(":")[0]

    alice.send_groupchat(room_jid, "nobody named here")
    assert mentioned(await bob.wait_for_message(room, "nobody named here")) == []
    alice.send_groupchat(room_jid, f"thanks {bob_nick}!")
    assert mentioned(await bob.wait_for_message(room, f"thanks {bob_nick}!")) == [bob.user_id]

    # carol was not in the room when the names were last read: her join is news.
    await carol.join(room)
    await alice.next_occupant(room_jid, carol_nick, timeout=60)
    alice.send_groupchat(room_jid, f"welcome {carol_nick}")
    assert mentioned(await bob.wait_for_message(room, f"welcome {carol_nick}")) == [carol.user_id]


REFERENCE_NS = "urn:xmpp:reference:0"


def references(msg: Message) -> list[tuple[int, int, str]]:
    """The XEP-0372 mention references of `msg`: (begin, end, uri)."""
    return [
        (int(ref.get("begin", "-1")), int(ref.get("end", "-1")), ref.get("uri", ""))
        for ref in msg.xml.findall(f"{{{REFERENCE_NS}}}reference")
        if ref.get("type") == "mention"
    ]


async def test_mentions_from_matrix_are_references_to_the_occupants(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    # Matrix -> XMPP: who an event mentions (m.mentions, or a pill in its HTML) becomes a
    # XEP-0372 reference at their nickname in the text, to their occupant (alice's own
    # nick for her); a name in the text of someone not mentioned is no reference.
    alice_mx, alice, bob, carol, room = await alice_bob_and_carol(
        synapse, start_passerelle, new_client, peers, "Pills"
    )
    await carol.join(room)
    room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
    await join_room_when_shown(alice, room_jid, "alice")
    carol_nick = carol.user_id[1:].split(":")[0]  # no display name: the local part
    alice_nick = alice_mx.user_id[1:].split(":")[0]  # hers in the room: the same
    await alice.next_occupant(room_jid, carol_nick, timeout=60)
    uri = f"xmpp:{room_jid}/"

    body = f"thanks {alice_nick} and {carol_nick}!"
    await bob.send_text(
        room, body, **{"m.mentions": {"user_ids": [alice_mx.user_id, carol.user_id]}}
    )
    msg = await alice.next_groupchat_text(room_jid, body)
    begin = body.index(carol_nick)
    assert references(msg) == [
        (7, 7 + len(alice_nick), uri + alice_nick),
        (begin, begin + len(carol_nick), uri + carol_nick),
    ]

    body = f"{carol_nick}: only a name, nobody mentioned"
    await bob.send_text(room, body, **{"m.mentions": {}})
    assert references(await alice.next_groupchat_text(room_jid, body)) == []

    # A client that writes only a pill (no m.mentions): the link names who is mentioned.
    body = f"ping {carol_nick}"
    pill = f'ping <a href="https://matrix.to/#/{quote(carol.user_id)}">{carol_nick}</a>'
    await bob.send_text(room, body, format="org.matrix.custom.html", formatted_body=pill)
    msg = await alice.next_groupchat_text(room_jid, body)
    assert references(msg) == [(5, 5 + len(carol_nick), uri + carol_nick)]


RETRACT_NS = "urn:xmpp:message-retract:1"
MODERATE_NS = "urn:xmpp:message-moderate:1"


def retraction_in(msg: Message) -> Any:
    """The XEP-0424 ``<retract/>`` element of `msg`, or None."""
    return msg.xml.find(f"{{{RETRACT_NS}}}retract")


async def test_moderators_retract_others_messages_both_ways(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    # XEP-0425: a Matrix moderator's redaction of someone else's message reaches the
    # XMPP user as a moderation by that occupant, with the reason; alice, a moderator,
    # moderates carol's message from XMPP: a Matrix redaction by her, with her reason.
    alice_mx, alice, bob, carol, room = await alice_bob_and_carol(
        synapse, start_passerelle, new_client, peers, "Moderated"
    )
    alice.register_plugin("xep_0359")  # stanza ids, which moderation refers to
    alice.queue_bodyless_messages()
    await bob.set_power(room, alice_mx.user_id, 50)
    await carol.join(room)
    room_jid = muc_jid(room)
    await join_room_when_shown(alice, room_jid, "alice")

    # Matrix → XMPP: bob (the room's creator) redacts carol's message.
    spam = await carol.send_text(room, "buy cheap watches")
    seen = await alice.next_groupchat_text(room_jid, "buy cheap watches")
    await bob.redact(room, spam, reason="spam")
    moderation = await alice.next_matching(
        lambda m: m["from"].bare == room_jid and retraction_in(m) is not None
    )
    retract = retraction_in(moderation)
    assert retract.get("id") in (seen["id"], seen["stanza_id"]["id"])
    moderated = retract.find(f"{{{MODERATE_NS}}}moderated")
    assert moderated is not None, "a plain retraction, not a moderation"
    bob_nick = JID(moderated.get("by")).resource
    assert JID(moderated.get("by")).bare == room_jid and bob_nick
    assert "spam" in [el.text for el in retract.iter() if el.tag.endswith("}reason")]

    # XMPP → Matrix: alice moderates carol's next message.
    spam2 = await carol.send_text(room, "more cheap watches")
    seen2 = await alice.next_groupchat_text(room_jid, "more cheap watches")
    iq = alice.make_iq_set(ito=room_jid)
    moderate = ET.SubElement(iq.xml, f"{{{MODERATE_NS}}}moderate", {"id": seen2["stanza_id"]["id"]})
    ET.SubElement(moderate, f"{{{RETRACT_NS}}}retract")
    ET.SubElement(moderate, f"{{{MODERATE_NS}}}reason").text = "spam again"
    answer = await send_iq(iq, timeout=60)
    assert answer["type"] == "result"
    redaction = await bob.wait_for(
        lambda e: e.get("type") == "m.room.redaction" and e.get("sender") == alice_mx.user_id
    )
    assert spam2 in (redaction.get("redacts"), redaction["content"].get("redacts"))
    assert redaction["content"].get("reason") == "spam again"
    # and alice's clients see the message moderated by her occupant
    mine = await alice.next_matching(
        lambda m: (
            m["from"].bare == room_jid
            and retraction_in(m) is not None
            and retraction_in(m).get("id") in (seen2["id"], seen2["stanza_id"]["id"])
        )
    )
    assert retraction_in(mine).find(f"{{{MODERATE_NS}}}moderated") is not None


async def topic_seen_by(peer: MatrixPeer, room: str) -> str | None:
    """The ``m.room.topic`` of `room` as `peer` reads it from the homeserver (None: no
    topic event yet)."""
    path = f"/rooms/{quote(room, safe='')}/state"
    for event in await peer.call("GET", path):
        if event.get("type") == "m.room.topic" and event.get("state_key") == "":
            return str(event["content"].get("topic"))
    return None


async def test_subject_set_from_xmpp_is_the_room_topic_if_power_allows(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
    peers: Peers,
) -> None:
    # Setting the MUC subject from XMPP changes the Matrix room's topic, and alice's
    # clients get the new subject; without the power to change it (bob's private room:
    # state_default 50, alice 0) she gets the homeserver's refusal and nothing changes.
    alice_mx, alice, bob, _carol, room = await alice_bob_and_carol(
        synapse, start_passerelle, new_client, peers, "Topics"
    )
    await bob.call("PUT", f"/rooms/{quote(room, safe='')}/state/m.room.topic/", {"topic": "Old"})
    room_jid = muc_jid(room)
    await join_room_when_shown(alice, room_jid, "alice")
    subjects = [(await alice.next_subject(room_jid))["subject"]]  # came with the join
    while "Old" not in subjects:
        subjects.append((await alice.next_subject(room_jid))["subject"])

    # Without power: an XMPP error with the reason, and the topic stays.
    alice.set_subject(room_jid, "Not allowed")
    error = await alice.next_matching(
        lambda m: m["from"].bare == room_jid and m["type"] == "error", timeout=60
    )
    assert error["error"]["condition"] == "forbidden", error
    assert "topic" in error["error"]["text"], error
    assert await topic_seen_by(bob, room) == "Old"

    # With power 50: bob sees alice's m.room.topic, alice's clients the new subject.
    await bob.set_power(room, alice_mx.user_id, 50)
    alice.set_subject(room_jid, "Release on Friday")
    event = await bob.wait_for(
        lambda e: e.get("type") == "m.room.topic" and e.get("sender") == alice_mx.user_id
    )
    assert event["content"]["topic"] == "Release on Friday"
    assert await topic_seen_by(bob, room) == "Release on Friday"
    while "Release on Friday" not in subjects:
        subjects.append((await alice.next_subject(room_jid, timeout=60))["subject"])
    assert "Not allowed" not in subjects, subjects
