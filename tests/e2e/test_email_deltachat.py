"""Stories of an XMPP user and a Delta Chat user, through Passerelle's email network.

The Delta Chat user has the app's default settings: encryption forced, so nothing
reaches them before a SecureJoin. The XMPP user starts one with the gateway's ``invite``
command, or accepts the Delta Chat user's link with ``join``; everything after that is
end-to-end encrypted between the gateway and the Delta Chat app.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.localservers.mail import MailServer
from tests.e2e.conftest import EMAIL_JID, PasserelleProcess
from tests.e2e.email_helpers import (
    Pair,
    contact_jid,
    create_group,
    delta_peer,
    group_jid,
    mail_server_fixture,  # noqa: F401  (the mail_server fixture)
    next_message_containing,
    signed_up_user,
    verified_pair_fixture,  # noqa: F401  (the verified_pair fixture)
)
from tests.e2e.xmpp_client import Client, child, child_text

pytestmark = pytest.mark.e2e
NewClient = Callable[..., "asyncio.Future[Client]"]
StartPasserelle = Callable[..., PasserelleProcess]
REPLY = "{urn:xmpp:reply:0}reply"
REACTIONS = "{urn:xmpp:reactions:0}reactions"
RETRACT = "{urn:xmpp:message-retract:1}retract"
DISPLAYED = "{urn:xmpp:chat-markers:0}displayed"
REPLACE = "{urn:xmpp:message-correct:0}replace"
OOB_URL = "{jabber:x:oob}x/{jabber:x:oob}url"


async def test_invite_link_gives_an_encrypted_chat_both_ways(verified_pair: Pair) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    await dora.send(verified_pair.peer_chat, "Hi from Delta Chat")
    got = await xmpp.next_message(verified_pair.peer_jid, timeout=30)
    assert got["body"] == "Hi from Delta Chat"

    xmpp.send_chat(verified_pair.peer_jid, "Hi from XMPP")
    msg = await dora.next_message(lambda m: m["text"] == "Hi from XMPP")
    assert msg["showPadlock"], "the Delta Chat user must see an encrypted message"
    assert msg["chatId"] == verified_pair.peer_chat


async def test_reply_edit_reaction_receipt_and_delete(verified_pair: Pair) -> None:
    xmpp, dora, jid = verified_pair.xmpp, verified_pair.peer, verified_pair.peer_jid
    chat = verified_pair.peer_chat

    # Delta Chat → XMPP: a message, then its edit, a reaction and its deletion.
    first = await dora.send(chat, "What time is the meeting?")
    got = await xmpp.next_message(jid, timeout=30)
    await dora.call("send_edit_request", first, "What time is the meeting tomorrow?")
    correction = await xmpp.email_next(jid, REPLACE)
    assert correction["replace"]["id"] == got["id"]
    assert correction["body"] == "What time is the meeting tomorrow?"

    # XMPP → Delta Chat: a reply quoting it.
    xmpp.send_reply(jid, "At ten.", got["id"], jid)
    reply = await dora.next_message(lambda m: m["text"] == "At ten.")
    assert reply["quote"] is not None and reply["quote"]["messageId"] == first

    # Delta Chat → XMPP: a reply and a reaction to the XMPP user's message.
    await dora.send(chat, "Thanks!", quotedMessageId=reply["id"])
    quoted = await xmpp.email_next(jid, REPLY)
    assert quoted["body"].endswith("Thanks!")
    await dora.call("send_reaction", reply["id"], ["👍"])
    reaction = await xmpp.email_next(jid, REACTIONS)
    emojis = [r.text for r in child(reaction, REACTIONS)]
    assert emojis == ["👍"]

    # Read receipt: the Delta Chat user reads the reply; the XMPP user sees "displayed".
    await dora.call("markseen_msgs", [reply["id"]])
    await xmpp.email_next(jid, DISPLAYED)

    # XMPP → Delta Chat: a correction, a reaction and a read marker.
    sent = xmpp.send_chat(jid, "See you thre")
    typo = await dora.next_message(lambda m: m["text"] == "See you thre")
    xmpp.send_chat(jid, "See you there", replace=sent["id"])
    await dora.next_event("MsgsChanged", lambda e: e.get("msgId") == typo["id"], timeout=30)
    for _ in range(50):
        if (await dora.call("get_message", typo["id"]))["text"] == "See you there":
            break
        await asyncio.sleep(0.2)
    assert (await dora.call("get_message", typo["id"]))["text"] == "See you there"
    xmpp.send_reactions(jid, quoted["id"], ["🎉"])
    await dora.next_event("ReactionsChanged", timeout=30)

    # Delta Chat deletes its first message for everyone: XMPP sees a retraction.
    await dora.call("delete_messages_for_all", [first])
    retraction = await xmpp.email_next(jid, RETRACT)
    assert child(retraction, RETRACT).get("id") == got["id"]


async def test_files_both_ways(verified_pair: Pair, tmp_path: Path) -> None:
    xmpp, dora, jid = verified_pair.xmpp, verified_pair.peer, verified_pair.peer_jid
    note = tmp_path / "notes.txt"
    note.write_text("minutes of the meeting\n")
    await dora.send(verified_pair.peer_chat, "the minutes", file=str(note), filename="notes.txt")
    got = await xmpp.email_next(jid, OOB_URL, timeout=40)
    assert child_text(got, OOB_URL).endswith("notes.txt")

    upload = tmp_path / "photo.txt"
    upload.write_text("pretend this is a photo\n")
    url = await xmpp.email_upload(upload, "upload.localhost")
    xmpp.email_send_file(jid, url)
    msg = await dora.next_message(lambda m: m["file"] is not None, timeout=40)
    assert await asyncio.to_thread(Path(msg["file"]).read_text) == "pretend this is a photo\n"


async def test_joining_the_peers_invite_link(
    start_passerelle: StartPasserelle,
    new_client: NewClient,
    mail_server: MailServer,
    tmp_path: Path,
) -> None:
    _, xmpp, _address, _password = await signed_up_user(
        start_passerelle, new_client, mail_server, "yuri"
    )
    async with delta_peer(mail_server, tmp_path, "emil") as emil:
        link = await emil.invite_link()
        xmpp.send_chat(EMAIL_JID, f"join {link}")
        await next_message_containing(xmpp, EMAIL_JID, "are end-to-end encrypted", timeout=60)
        emil_jid = contact_jid(emil.address)
        await xmpp.next_roster_push(emil_jid)
        xmpp.send_chat(emil_jid, "Hello Emil, I scanned your code")
        got = await emil.next_message(lambda m: m["text"] == "Hello Emil, I scanned your code")
        assert got["showPadlock"]
        await emil.send(got["chatId"], "Welcome!")
        assert (await xmpp.next_message(emil_jid, timeout=30))["body"] == "Welcome!"


async def test_group_created_by_the_delta_chat_user(verified_pair: Pair) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    group = await dora.call("create_group_chat", "Book club", False)
    await dora.call("add_contact_to_chat", group, await dora.contact_id(verified_pair.address))
    await dora.send(group, "Welcome to the book club")
    room = await group_jid(xmpp, "Book club")
    joined = await xmpp.join_muc(room, "xena")
    assert joined["type"] != "error", joined
    assert any("Dora" in nick for nick in xmpp.occupants[room]), xmpp.occupants[room]

    await dora.send(group, "This month: Dune")
    got = await xmpp.next_groupchat(room, timeout=30)
    while got["body"] != "This month: Dune":
        got = await xmpp.next_groupchat(room, timeout=30)
    assert "Dora" in got["from"].resource

    xmpp.send_groupchat(room, "Great choice")
    msg = await dora.next_message(lambda m: m["text"] == "Great choice")
    assert msg["chatId"] == group


async def test_group_created_from_xmpp(verified_pair: Pair) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    result = await create_group(xmpp, "Hiking", [verified_pair.peer_jid])
    assert result["command"]["status"] == "completed"
    room = await group_jid(xmpp, "Hiking")
    await xmpp.join_muc(room, "xena")
    xmpp.send_groupchat(room, "Saturday at eight?")
    msg = await dora.next_message(lambda m: m["text"] == "Saturday at eight?", timeout=40)
    chat = await dora.call("get_basic_chat_info", msg["chatId"])
    assert chat["chatType"] == "Group"
    assert chat["name"] == "Hiking"


async def test_members_removed_and_added_both_ways(verified_pair: Pair) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    group = await dora.call("create_group_chat", "Choir", False)
    await dora.call("add_contact_to_chat", group, await dora.contact_id(verified_pair.address))
    await dora.send(group, "Rehearsal on Monday")
    room = await group_jid(xmpp, "Choir")
    await xmpp.join_muc(room, "xena")
    dora_nick = next(n for n in xmpp.occupants[room] if "Dora" in n)

    # The XMPP user removes Dora (a kick), then invites her back.
    await xmpp.kick(room, dora_nick)
    removed = await dora.next_message(
        lambda m: m["isInfo"] and m["systemMessageType"] == "MemberRemovedFromGroup"
    )
    assert removed["chatId"] == group
    assert not (await dora.call("get_full_chat_by_id", group))["selfInGroup"]
    xmpp.send_direct_invite(verified_pair.peer_jid, room)
    added = await dora.next_message(
        lambda m: m["isInfo"] and m["systemMessageType"] == "MemberAddedToGroup", timeout=40
    )
    assert added["chatId"] == group

    # Dora leaves on her side: her occupant leaves the room.
    await dora.call("leave_group", group)
    await xmpp.next_occupant(room, dora_nick, ptype="unavailable", timeout=40)
