"""Stories of voice messages, stickers, group names and avatars between an XMPP user and
a default-settings Delta Chat user, through Passerelle's email network.

Each story starts from a verified pair (the Delta Chat user opened the XMPP user's
invite link), so everything travels end-to-end encrypted over a real Postfix + Dovecot.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import urllib.request
from pathlib import Path

import pytest
from PIL import Image
from slixmpp import JID
from slixmpp.xmlstream import ET

from tests.e2e.email_helpers import (
    WAIT,
    Pair,
    group_jid,
    mail_server_fixture,  # noqa: F401  (the mail_server fixture)
    verified_pair_fixture,  # noqa: F401  (the verified_pair fixture)
)
from tests.e2e.xmpp_client import Client, child, child_text, send_iq, submit_form

pytestmark = pytest.mark.e2e
OOB_URL = "{jabber:x:oob}x/{jabber:x:oob}url"
MEDIA_TYPE = ".//{urn:xmpp:file:metadata:0}media-type"
STICKER = "{urn:xmpp:stickers:0}sticker"
MUC_USER_STATUS = (
    "{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}status"
)
MUC_OWNER = "http://jabber.org/protocol/muc#owner"
# An Ogg page header and some bytes: enough for every side to take it for Ogg audio.
OGG = b"OggS\x00\x02" + bytes(22) + b"\x01\x13OpusHead" + bytes(64)


def png(color: str, size: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (size, size), color).save(out, format="PNG")
    return out.getvalue()


def content_type_at(url: str) -> str:
    """What the HTTP upload service says a file is (the client plays it by this)."""
    with urllib.request.urlopen(url, timeout=WAIT) as response:
        return str(response.headers.get("Content-Type", ""))


async def test_voice_messages_both_ways(verified_pair: Pair, tmp_path: Path) -> None:
    xmpp, dora, jid = verified_pair.xmpp, verified_pair.peer, verified_pair.peer_jid

    # Delta Chat → XMPP: a voice message is an audio file the client can play.
    recording = tmp_path / "recording.ogg"
    recording.write_bytes(OGG)
    await dora.send(verified_pair.peer_chat, "", file=str(recording), viewtype="Voice")
    got = await xmpp.email_next(jid, OOB_URL, timeout=40)
    url = child_text(got, OOB_URL)
    assert url.endswith(".ogg"), url
    assert child(got, MEDIA_TYPE).text == "audio/ogg"
    assert (await asyncio.to_thread(content_type_at, url)).startswith("audio/ogg")

    # XMPP → Delta Chat: Conversations records AAC in .m4a and sends it by HTTP upload.
    m4a = tmp_path / "VOICE_20261121_0930.m4a"
    m4a.write_bytes(b"\x00\x00\x00\x18ftypM4A " + bytes(200))
    if "xep_0363" not in xmpp.plugin:
        xmpp.register_plugin("xep_0363")
    m4a_url = await xmpp.plugin["xep_0363"].upload_file(
        m4a, domain=JID("upload.localhost"), content_type="audio/mp4", timeout=WAIT
    )
    xmpp.email_send_file(jid, m4a_url)
    voice = await dora.next_message(lambda m: m["file"] is not None, timeout=40)
    assert voice["viewType"] == "Voice", voice
    assert await asyncio.to_thread(Path(voice["file"]).read_bytes) == m4a.read_bytes()


async def test_stickers_both_ways(verified_pair: Pair, tmp_path: Path) -> None:
    xmpp, dora, jid = verified_pair.xmpp, verified_pair.peer, verified_pair.peer_jid

    # Delta Chat → XMPP: an image marked as a sticker (XEP-0449).
    sticker = tmp_path / "cat.png"
    sticker.write_bytes(png("orange"))
    await dora.send(verified_pair.peer_chat, "", file=str(sticker), viewtype="Sticker")
    got = await xmpp.email_next(jid, OOB_URL, timeout=40)
    assert child(got, MEDIA_TYPE).text == "image/png"
    assert got.xml.find(STICKER) is not None
    url = child_text(got, OOB_URL)
    assert (await asyncio.to_thread(content_type_at, url)) == "image/png"

    # XMPP → Delta Chat: a XEP-0449 sticker is a Delta Chat sticker.
    mine = tmp_path / "dog.png"
    mine.write_bytes(png("brown"))
    mine_url = await xmpp.email_upload(mine, "upload.localhost")
    msg = xmpp.make_message(mto=jid, mbody=mine_url, mtype="chat")
    oob = ET.SubElement(msg.xml, "{jabber:x:oob}x")
    ET.SubElement(oob, "{jabber:x:oob}url").text = mine_url
    ET.SubElement(msg.xml, STICKER)
    msg.send()
    received = await dora.next_message(lambda m: m["file"] is not None, timeout=40)
    assert received["viewType"] == "Sticker", received
    assert await asyncio.to_thread(Path(received["file"]).read_bytes) == mine.read_bytes()


async def _joined_group(pair: Pair, name: str) -> tuple[int, str]:
    """A group the Delta Chat user made with the XMPP user, joined from XMPP."""
    dora = pair.peer
    group = int(await dora.call("create_group_chat", name, False))
    await dora.call("add_contact_to_chat", group, await dora.contact_id(pair.address))
    await dora.send(group, f"Welcome to {name}")
    room = await group_jid(pair.xmpp, name)
    joined = await pair.xmpp.join_muc(room, "xena")
    assert joined["type"] != "error", joined
    return group, room


async def _room_name(xmpp: Client, room: str) -> str:
    info = await xmpp.plugin["xep_0030"].get_info(jid=JID(room), timeout=WAIT)
    names = [identity[3] for identity in info["disco_info"]["identities"]]
    return str(names[0]) if names else ""


async def _config_changed(xmpp: Client, room: str, timeout: float = WAIT) -> None:
    """The room's "configuration changed" notice (status 104)."""
    await xmpp.next_matching(
        lambda m: (
            m["from"].bare == room
            and any(s.get("code") == "104" for s in m.xml.findall(MUC_USER_STATUS))
        ),
        timeout=timeout,
    )


async def test_group_renamed_on_either_side(verified_pair: Pair) -> None:
    xmpp, dora = verified_pair.xmpp, verified_pair.peer
    group, room = await _joined_group(verified_pair, "Book club")

    # The Delta Chat user renames the group: the room's name follows.
    await dora.call("set_chat_name", group, "Readers")
    await _config_changed(xmpp, room, timeout=40)
    assert await _room_name(xmpp, room) == "Readers"
    # Delta Chat orders group-name changes by whole-second timestamps: a rename made in
    # the same second as the previous one loses against it on the other side.
    await asyncio.sleep(1.1)

    # The XMPP user renames the room the way clients do: its configuration form.
    iq = xmpp.make_iq_set(ito=room)
    query = ET.SubElement(iq.xml, f"{{{MUC_OWNER}}}query")
    values = {"muc#roomconfig_roomname": "Readers' corner"}
    form = submit_form(xmpp, values, "http://jabber.org/protocol/muc#roomconfig")
    query.append(form.xml)
    await send_iq(iq, WAIT)
    # Dora's own rename above left a GroupNameChanged notice too: wait for this one.
    info = await dora.next_message(
        lambda m: (
            m["isInfo"]
            and m["systemMessageType"] == "GroupNameChanged"
            and "Readers' corner" in m["text"]
        ),
        timeout=40,
    )
    assert info["chatId"] == group
    assert (await dora.call("get_basic_chat_info", group))["name"] == "Readers' corner"
    assert await _room_name(xmpp, room) == "Readers' corner"


async def _vcard_photo(xmpp: Client, jid: str) -> bytes | None:
    if "xep_0054" not in xmpp.plugin:
        xmpp.register_plugin("xep_0054")
    iq = await xmpp.plugin["xep_0054"].get_vcard(
        jid=JID(jid), local=False, cached=False, timeout=WAIT
    )
    photo = iq["vcard_temp"]["PHOTO"]["BINVAL"]
    return bytes(photo) if photo else None


async def _wait_for_photo(xmpp: Client, jid: str, timeout: float = 40) -> bytes:
    async with asyncio.timeout(timeout):
        while True:
            photo = await _vcard_photo(xmpp, jid)
            if photo:
                return photo
            await asyncio.sleep(0.5)


async def test_avatars(verified_pair: Pair, tmp_path: Path) -> None:
    xmpp, dora, jid = verified_pair.xmpp, verified_pair.peer, verified_pair.peer_jid

    # The Delta Chat user's profile image arrives with her next message: her avatar.
    selfie = tmp_path / "dora.png"
    selfie.write_bytes(png("purple", 64))
    await dora.call("set_config", "selfavatar", str(selfie))
    await dora.send(verified_pair.peer_chat, "new profile picture!")
    await xmpp.next_message(jid, timeout=30)
    assert await _wait_for_photo(xmpp, jid)

    # The XMPP user's own avatar (XEP-0084) becomes their Delta Chat profile image.
    if "xep_0084" not in xmpp.plugin:
        xmpp.register_plugin("xep_0084")
    mine = png("green", 64)
    avatar_id = hashlib.sha1(mine).hexdigest()
    await xmpp.plugin["xep_0084"].publish_avatar(mine, timeout=WAIT)
    await xmpp.plugin["xep_0084"].publish_avatar_metadata(
        [
            {
                "id": avatar_id,
                "type": "image/png",
                # slixmpp's TypedDict says int, but its Info stanza stores these as XML
                # attributes unconverted, and only strings serialize.
                "bytes": str(len(mine)),  # type: ignore[typeddict-item]
                "width": "64",  # type: ignore[typeddict-item]
                "height": "64",  # type: ignore[typeddict-item]
            }
        ],
        timeout=WAIT,
    )
    me = await dora.contact_id(verified_pair.address)
    for attempt in range(20):
        xmpp.send_chat(jid, f"do you see my picture? ({attempt})")
        await dora.next_message(lambda m: m["text"].startswith("do you see"), timeout=40)
        if (await dora.call("get_contact", me))["profileImage"]:
            break
        await asyncio.sleep(1)
    image = (await dora.call("get_contact", me))["profileImage"]
    assert image, "the Delta Chat user never got the XMPP user's avatar"

    # Group images both ways.
    group, room = await _joined_group(verified_pair, "Gardeners")
    flower = tmp_path / "flower.png"
    flower.write_bytes(png("yellow", 64))
    await dora.call("set_chat_profile_image", group, str(flower))
    assert await _wait_for_photo(xmpp, room)

    iq = xmpp.make_iq_set(ito=room)
    iq["vcard_temp"]["PHOTO"]["TYPE"] = "image/png"
    iq["vcard_temp"]["PHOTO"]["BINVAL"] = png("blue", 64)
    await send_iq(iq, WAIT)
    changed = await dora.next_message(
        lambda m: m["isInfo"] and m["systemMessageType"] == "GroupImageChanged", timeout=40
    )
    assert changed["chatId"] == group
    assert (await dora.call("get_full_chat_by_id", group))["profileImage"]
