"""Modern message features between alice (XMPP, through Passerelle) and bob (Matrix).

Edits (XEP-0308 ↔ m.replace), replies (XEP-0461 ↔ m.in_reply_to, fallbacks stripped),
reactions (XEP-0444 ↔ m.reaction), retractions (XEP-0424 ↔ redactions), formatting
(XEP-0393 ↔ org.matrix.custom.html), typing (XEP-0085 ↔ m.typing), read markers
(XEP-0333 ↔ m.read receipts) and files (HTTP upload ↔ the Matrix media repository), each
both ways, in one direct chat per test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from slixmpp.stanza import Message

from gateway.localservers.synapse import Synapse
from legacy_plugins.matrix.ids import id_to_localpart
from tests.e2e.conftest import MATRIX_JID, PasserelleProcess
from tests.e2e.matrix_helpers import (
    PNG,
    Event,
    MatrixPeer,
    http_get,
    jid_of,
    join_room_when_shown,
    log_in,
    new_account,
    peer_factory,
    shared_synapse,
    start_matrix_gateway,
    understand_features,
    xmpp_upload,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]
NewClient = Callable[..., "asyncio.Future[Client]"]


@pytest.fixture(scope="session")
def synapse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Synapse:
    return shared_synapse(request, tmp_path_factory)


@dataclass
class Chat:
    """alice on XMPP and bob on Matrix, in one direct chat."""

    alice: Client
    alice_id: str
    bob: MatrixPeer
    bob_jid: str
    room: str

    async def from_bob(self, body: str) -> tuple[str, Message]:
        """bob writes; alice receives. Returns the event ID and alice's message."""
        event_id = await self.bob.send_text(self.room, body)
        return event_id, await self.alice.next_message(self.bob_jid)

    async def from_alice(self, body: str) -> tuple[Message, Event]:
        """alice writes; bob receives. Returns alice's message and bob's event."""
        sent = self.alice.send_chat(self.bob_jid, body)
        return sent, await self.bob.wait_for_message(self.room, body)


@pytest.fixture
async def chat(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> AsyncIterator[Chat]:
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    async with peer_factory(synapse) as make:
        bob = await make("bob")
        alice = await new_client("alice")
        understand_features(alice)
        await log_in(alice, synapse, alice_mx)
        room = await bob.create_dm(alice_mx.user_id)
        await bob.send_text(room, "let's test")
        bob_jid = jid_of(bob.user_id)
        assert (await alice.next_message(bob_jid))["body"] == "let's test"
        yield Chat(alice, alice_mx.user_id, bob, bob_jid, room)


def relation(event: Event) -> dict[str, object]:
    return dict(event.get("content", {}).get("m.relates_to", {}))


async def test_emotes_both_ways_and_notices(chat: Chat) -> None:
    # bob's m.emote is alice's "/me" line; her "/me" line is his m.emote, without the
    # prefix; his bot's m.notice reaches her as its text.
    await chat.bob.send(chat.room, "m.room.message", {"msgtype": "m.emote", "body": "waves"})
    assert (await chat.alice.next_message(chat.bob_jid))["body"] == "/me waves"
    chat.alice.send_chat(chat.bob_jid, "/me waves back")
    emote = await chat.bob.wait_for_message(chat.room, "waves back")
    assert emote["content"]["msgtype"] == "m.emote", emote
    await chat.bob.send(
        chat.room, "m.room.message", {"msgtype": "m.notice", "body": "build 42 passed"}
    )
    assert (await chat.alice.next_message(chat.bob_jid))["body"] == "build 42 passed"


async def test_edits_both_ways(chat: Chat) -> None:
    original, first = await chat.from_bob("helo")
    await chat.bob.send(
        chat.room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": "* hello",
            "m.new_content": {"msgtype": "m.text", "body": "hello"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        },
    )
    correction = await chat.alice.next_message(chat.bob_jid)
    assert correction["body"] == "hello"
    assert correction["replace"]["id"] == first["id"]

    sent, event = await chat.from_alice("typo")
    chat.alice.send_chat(chat.bob_jid, "fixed", replace=sent["id"])
    edit = await chat.bob.wait_for_message(chat.room, "* fixed")
    assert relation(edit) == {"rel_type": "m.replace", "event_id": event["event_id"]}
    assert edit["content"]["m.new_content"]["body"] == "fixed"


async def test_replies_both_ways_without_fallbacks(chat: Chat) -> None:
    question, asked = await chat.from_bob("which one?")
    chat.alice.send_reply(chat.bob_jid, "the blue one", asked["id"], chat.bob_jid)
    answer = await chat.bob.wait_for_message(chat.room, "the blue one")
    assert relation(answer) == {"m.in_reply_to": {"event_id": question}}

    # bob replies as Element does, with the old-style fallback in front.
    sent, event = await chat.from_alice("lunch at noon?")
    await chat.bob.send(
        chat.room,
        "m.room.message",
        {
            "msgtype": "m.text",
            "body": f"> <{chat.alice_id}> lunch at noon?\n\nsure",
            "format": "org.matrix.custom.html",
            "formatted_body": (
                "<mx-reply><blockquote>In reply to lunch at noon?</blockquote></mx-reply>sure"
            ),
            "m.relates_to": {"m.in_reply_to": {"event_id": event["event_id"]}},
        },
    )
    reply = await chat.alice.next_message(chat.bob_jid)
    assert reply["body"] == "sure"
    assert reply["reply"]["id"] == sent["id"]


async def test_reactions_both_ways(chat: Chat) -> None:
    sent, event = await chat.from_alice("I passed the exam")
    await chat.bob.react(chat.room, event["event_id"], "🎉")
    reaction = await chat.alice.next_matching(lambda m: "reactions" in m)
    assert reaction["from"].bare == chat.bob_jid
    assert reaction["reactions"]["id"] == sent["id"]
    assert {r["value"] for r in reaction["reactions"]} == {"🎉"}

    bob_event, got = await chat.from_bob("look at this")
    chat.alice.send_reactions(chat.bob_jid, got["id"], ["❤"])
    added = await chat.bob.wait_for(
        lambda e: e.get("type") == "m.reaction" and e.get("sender") == chat.alice_id
    )
    assert relation(added) == {"rel_type": "m.annotation", "event_id": bob_event, "key": "❤"}
    chat.alice.send_reactions(chat.bob_jid, got["id"], [])
    removed = await chat.bob.wait_for(
        lambda e: e.get("type") == "m.room.redaction" and e.get("sender") == chat.alice_id
    )
    assert added["event_id"] in (removed.get("redacts"), removed["content"].get("redacts"))


async def test_retractions_both_ways(chat: Chat) -> None:
    bob_event, got = await chat.from_bob("oops, wrong chat")
    await chat.bob.redact(chat.room, bob_event)
    retraction = await chat.alice.next_matching(lambda m: "retract" in m)
    assert retraction["from"].bare == chat.bob_jid
    assert retraction["retract"]["id"] == got["id"]

    sent, event = await chat.from_alice("I should not have said that")
    chat.alice.send_retraction(chat.bob_jid, sent["id"])
    redaction = await chat.bob.wait_for(
        lambda e: e.get("type") == "m.room.redaction" and e.get("sender") == chat.alice_id
    )
    assert event["event_id"] in (redaction.get("redacts"), redaction["content"].get("redacts"))


async def test_formatting_both_ways_and_hostile_html_stays_text(chat: Chat) -> None:
    await chat.bob.send_text(
        chat.room,
        "bold and code",
        format="org.matrix.custom.html",
        formatted_body=(
            '<b>bold</b> and <code>code</code><script>alert("x")</script>'
            '<img src="https://example.org/x.png" onerror="alert(1)">'
        ),
    )
    assert (await chat.alice.next_message(chat.bob_jid))["body"] == "*bold* and `code`"

    _sent, event = await chat.from_alice("*really* _nice_ <b>")
    assert event["content"]["format"] == "org.matrix.custom.html"
    assert event["content"]["formatted_body"] == "<strong>really</strong> <em>nice</em> &lt;b&gt;"


async def test_typing_both_ways(chat: Chat) -> None:
    await chat.bob.typing(chat.room, True)
    composing = await chat.alice.next_matching(
        lambda m: m["from"].bare == chat.bob_jid and m["chat_state"] == "composing"
    )
    assert not composing["body"]

    chat.alice.send_chat_state(chat.bob_jid, "composing")
    typing = await chat.bob.wait_for(
        lambda e: (
            e.get("type") == "m.typing"
            and chat.alice_id in e.get("content", {}).get("user_ids", [])
        )
    )
    assert typing["room_id"] == chat.room


async def test_read_markers_both_ways(chat: Chat) -> None:
    sent, event = await chat.from_alice("did you read this?")
    await chat.bob.read(chat.room, event["event_id"])
    marker = await chat.alice.next_matching(
        lambda m: m["from"].bare == chat.bob_jid and m["displayed"]["id"] == sent["id"]
    )
    assert marker["displayed"]["id"] == sent["id"]

    bob_event, got = await chat.from_bob("and this?")
    chat.alice.send_displayed(chat.bob_jid, got["id"])
    receipt = await chat.bob.wait_for(
        lambda e: (
            e.get("type") == "m.receipt"
            and chat.alice_id in e.get("content", {}).get(bob_event, {}).get("m.read", {})
        )
    )
    assert receipt["room_id"] == chat.room


async def test_images_both_ways(chat: Chat, prosody_upload: str) -> None:
    mxc = await chat.bob.upload(PNG, "image/png", "dot.png")
    await chat.bob.send(
        chat.room,
        "m.room.message",
        {"msgtype": "m.image", "body": "dot.png", "url": mxc, "info": {"mimetype": "image/png"}},
    )
    got = await chat.alice.next_matching(
        lambda m: m["from"].bare == chat.bob_jid and bool(m["oob"]["url"])
    )
    assert await http_get(got["oob"]["url"]) == PNG

    url = await xmpp_upload(chat.alice, prosody_upload, PNG, "pixel.png", "image/png")
    msg = chat.alice.make_message(mto=chat.bob_jid, mbody=url, mtype="chat")
    msg["oob"]["url"] = url
    msg.send()
    image = await chat.bob.wait_for(
        lambda e: (
            e.get("type") == "m.room.message"
            and e.get("sender") == chat.alice_id
            and e["content"].get("msgtype") == "m.image"
        )
    )
    assert image["content"]["info"]["mimetype"] == "image/png"
    assert image["content"]["body"] == "pixel.png"
    assert await chat.bob.download(image["content"]["url"]) == PNG


@pytest.fixture
def prosody_upload(prosody: object) -> str:
    return str(prosody.upload_domain)  # type: ignore[attr-defined]


async def test_edits_reactions_and_retractions_in_a_room(
    synapse: Synapse,
    start_passerelle: Callable[..., PasserelleProcess],
    new_client: NewClient,
) -> None:
    await start_matrix_gateway(start_passerelle)
    alice_mx = await asyncio.to_thread(new_account, synapse, "alice")
    async with peer_factory(synapse) as make:
        bob = await make("bob")
        alice = await new_client("alice")
        understand_features(alice)
        await log_in(alice, synapse, alice_mx)
        room = await bob.create_room("Team", invite=[alice_mx.user_id, "@nobody:localhost"])
        await bob.wait_for_member(room, alice_mx.user_id)
        room_jid = f"{id_to_localpart(room)}@{MATRIX_JID}"
        await join_room_when_shown(alice, room_jid, "alice")

        # bob writes and corrects himself; alice sees the correction.
        first = await bob.send_text(room, "meeting at 10")
        seen = await alice.next_groupchat_text(room_jid, "meeting at 10")
        await bob.send(
            room,
            "m.room.message",
            {
                "msgtype": "m.text",
                "body": "* meeting at 11",
                "m.new_content": {"msgtype": "m.text", "body": "meeting at 11"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": first},
            },
        )
        fixed = await alice.next_groupchat_text(room_jid, "meeting at 11")
        assert fixed["replace"]["id"] == seen["id"]

        # alice reacts to it; bob sees the reaction.
        alice.send_reactions(room_jid, seen["stanza_id"]["id"], ["👍"], mtype="groupchat")
        reaction = await bob.wait_for(
            lambda e: e.get("type") == "m.reaction" and e.get("sender") == alice_mx.user_id
        )
        assert relation(reaction)["event_id"] == first

        # alice writes, then retracts; bob sees the redaction.
        alice.send_groupchat(room_jid, "wrong room, sorry")
        echo = await alice.next_groupchat_text(room_jid, "wrong room, sorry")
        said = await bob.wait_for_message(room, "wrong room, sorry")
        alice.send_retraction(room_jid, echo["stanza_id"]["id"], mtype="groupchat")
        redaction = await bob.wait_for(
            lambda e: e.get("type") == "m.room.redaction" and e.get("sender") == alice_mx.user_id
        )
        assert said["event_id"] in (redaction.get("redacts"), redaction["content"].get("redacts"))
