"""The email plugin's pure translation: addresses ↔ JIDs, group ids, messages, events."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.email.translate import (
    ChatId,
    ContactId,
    MalformedEvent,
    MsgId,
    address_to_localpart,
    body_of,
    correction_needed,
    delivery,
    group_localpart,
    invite_link,
    localpart_to_address,
    localpart_to_group,
    normalize_address,
    parse_event,
    parse_message,
    reactions_of,
    upload_file_name,
    view_type_of_upload,
)

# -- addresses as JID localparts --------------------------------------------------------------

ADDRESSES = [
    # address                       localpart
    ("alice@example.org", "alice\\40example.org"),
    ("Alice.B@Example.ORG", "alice.b\\40example.org"),
    ("o'brien@example.org", "o\\27brien\\40example.org"),
    ("a&b@example.org", "a\\26b\\40example.org"),
    ("x/y@example.org", "x\\2fy\\40example.org"),
    ("back\\slash@example.org", "back\\5cslash\\40example.org"),
    ("plus+tag@mail.example.co.uk", "plus+tag\\40mail.example.co.uk"),
    ("  spaced@example.org ", "spaced\\40example.org"),
    ("mailto:bob@example.org", "bob\\40example.org"),
]


@pytest.mark.parametrize(("address", "localpart"), ADDRESSES)
def test_address_to_localpart(address: str, localpart: str) -> None:
    assert address_to_localpart(address) == localpart
    assert localpart_to_address(localpart) == normalize_address(address)


def test_localpart_is_case_safe() -> None:
    # XMPP servers and slixmpp lower-case localparts; the address survives that.
    lp = address_to_localpart("Bob@Example.org")
    assert lp == "bob\\40example.org"
    assert localpart_to_address("BOB\\40EXAMPLE.ORG") == "bob@example.org"


@pytest.mark.parametrize(
    "bad",
    ["", "bob", "bob@", "@example.org", "bob@localhost", "a@b@example.org", "x y@example.org",
     "bob@-example.org", "a" * 65 + "@example.org"],
)  # fmt: skip
def test_not_addresses(bad: str) -> None:
    with pytest.raises(ValueError):
        normalize_address(bad)


@pytest.mark.parametrize("localpart", ["group-12", "bob", "bob\\40", "\\40example.org"])
def test_localparts_that_name_no_address(localpart: str) -> None:
    with pytest.raises(ValueError, match="names no email address"):
        localpart_to_address(localpart)


GROUPS = [
    # chat id  localpart
    (10, "group-10"),
    (12345, "group-12345"),
]


@pytest.mark.parametrize(("chat_id", "localpart"), GROUPS)
def test_group_localparts(chat_id: int, localpart: str) -> None:
    assert group_localpart(ChatId(chat_id)) == localpart
    assert localpart_to_group(localpart) == chat_id
    assert localpart_to_group(localpart.upper()) == chat_id


@pytest.mark.parametrize(
    "bad", ["group-", "group-9", "group-x", "groupe-12", "12", "alice\\40example.org",
            "group-99999999999"],
)  # fmt: skip
def test_not_groups(bad: str) -> None:
    with pytest.raises(ValueError):
        localpart_to_group(bad)


@given(st.text(max_size=80))
def test_address_parsing_never_raises_anything_but_valueerror(text: str) -> None:
    try:
        lp = address_to_localpart(text)
    except ValueError:
        return
    assert localpart_to_address(lp) == normalize_address(text)
    assert "@" not in lp and " " not in lp


@given(st.text(max_size=80))
def test_localpart_parsing_never_raises_anything_but_valueerror(text: str) -> None:
    for parse in (localpart_to_address, localpart_to_group):
        try:
            parse(text)
        except ValueError:
            pass


# -- messages ----------------------------------------------------------------------------------


def raw_message(**overrides: Any) -> dict[str, Any]:
    message: dict[str, Any] = {
        "id": 42,
        "chatId": 12,
        "fromId": 10,
        "sender": {"address": "Bob@Example.org", "displayName": "Bob"},
        "text": "hello",
        "subject": "",
        "viewType": "Text",
        "isInfo": False,
        "systemMessageType": "Unknown",
        "file": None,
        "fileName": None,
        "fileMime": None,
        "quote": None,
        "isEdited": False,
        "showPadlock": True,
        "downloadState": "Done",
        "timestamp": 1_700_000_000,
    }
    message.update(overrides)
    return message


def test_parse_a_text_message() -> None:
    msg = parse_message(raw_message())
    assert (msg.id, msg.chat_id, msg.from_id) == (42, 12, 10)
    assert msg.sender_address == "Bob@Example.org"
    assert msg.encrypted and not msg.outgoing and not msg.has_file
    assert delivery(msg) == "deliver"
    assert body_of(msg) == "hello"


KINDS = [
    # overrides                                                    delivery   body
    ({}, "deliver", "hello"),
    ({"fromId": 1}, "skip", "hello"),  # sent from XMPP through the gateway
    ({"fromId": 1, "receivedTimestamp": 0}, "skip", "hello"),
    ({"fromId": 1, "receivedTimestamp": 1_700_000_005}, "deliver", "hello"),  # other device
    ({"fromId": 10, "receivedTimestamp": 1_700_000_005}, "deliver", "hello"),
    ({"downloadState": "Available"}, "wait", "hello"),
    ({"downloadState": "InProgress"}, "wait", "hello"),
    (
        {"downloadState": "Undecipherable", "text": ""},
        "deliver",
        "[This message could not be decrypted. It may have been sent to another device.]",
    ),
    (
        {"downloadState": "Failure"},
        "deliver",
        "[This message could not be downloaded from the mail server.]",
    ),
    ({"isInfo": True, "systemMessageType": "ChatE2ee"}, "skip", "hello"),
    ({"isInfo": True, "systemMessageType": "SecurejoinWait"}, "skip", "hello"),
    (
        {"isInfo": True, "systemMessageType": "MemberAddedToGroup", "text": "Member x added"},
        "deliver",
        "Member x added",
    ),
    (
        {"subject": "Quarterly report", "text": "Quarterly report \u2013 numbers"},
        "deliver",
        "Quarterly report \u2013 numbers",
    ),
    ({"subject": "Only a subject", "text": ""}, "deliver", "Only a subject"),
    ({"viewType": "File", "file": "/blobs/a.pdf", "fileName": "a.pdf", "text": ""}, "deliver", ""),
    ({"viewType": "Image", "file": "/blobs/a.png", "text": "look"}, "deliver", "look"),
    ({"viewType": "Voice", "file": "/blobs/a.opus", "text": ""}, "deliver", ""),
    ({"viewType": "Sticker", "file": "/blobs/s.webp", "text": ""}, "deliver", ""),
]


@pytest.mark.parametrize(("overrides", "verdict", "body"), KINDS)
def test_each_message_kind(overrides: dict[str, Any], verdict: str, body: str) -> None:
    msg = parse_message(raw_message(**overrides))
    assert delivery(msg) == verdict
    assert body_of(msg) == body


def test_quote_is_kept() -> None:
    quote = {"kind": "WithMessage", "messageId": 7, "text": "earlier", "chatId": 12}
    msg = parse_message(raw_message(quote=quote))
    assert (msg.quoted_id, msg.quoted_text) == (7, "earlier")
    just_text = parse_message(raw_message(quote={"kind": "JustText", "text": "> old"}))
    assert (just_text.quoted_id, just_text.quoted_text) == (None, "> old")


MALFORMED: list[object] = [
    None,
    [],
    "text",
    {},
    raw_message(id="42"),
    raw_message(id=True),
    raw_message(chatId=None),
    raw_message(sender=None),
    raw_message(text=None),
    {k: v for k, v in raw_message().items() if k != "fromId"},
]


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_messages(raw: Any) -> None:
    with pytest.raises(MalformedEvent):
        parse_message(raw)


@given(st.dictionaries(st.sampled_from(list(raw_message())), st.none() | st.integers() | st.text()))
def test_parse_message_never_raises_anything_but_malformed(fields: dict[str, Any]) -> None:
    try:
        parse_message(raw_message(**fields))
    except MalformedEvent:
        pass


def test_corrections_only_when_the_text_changed() -> None:
    edited = parse_message(raw_message(isEdited=True, text="new"))
    assert correction_needed(edited, "old")
    assert not correction_needed(edited, "new")
    assert not correction_needed(edited, None)  # never delivered
    assert not correction_needed(parse_message(raw_message(text="new")), "old")


def test_reactions_of_one_contact() -> None:
    raw = {"reactions": [], "reactionsByContact": {"11": ["👍", "🎉"], "12": ["❤️"]}}
    assert reactions_of(raw, ContactId(11)) == ["👍", "🎉"]
    assert reactions_of(raw, ContactId(13)) == []
    assert reactions_of(None, ContactId(11)) == []
    assert reactions_of({"reactionsByContact": {"11": "👍"}}, ContactId(11)) == []


# -- events --------------------------------------------------------------------------------------

EVENTS = [
    # raw event                                                              kind / fields
    ({"kind": "IncomingMsg", "chatId": 12, "msgId": 42}, ("IncomingMsg", 12, 42, None)),
    ({"kind": "MsgsChanged", "chatId": 0, "msgId": 0}, ("MsgsChanged", 0, 0, None)),
    (
        {"kind": "ReactionsChanged", "chatId": 12, "msgId": 42, "contactId": 11},
        ("ReactionsChanged", 12, 42, 11),
    ),
    ({"kind": "MsgRead", "chatId": 12, "msgId": 42}, ("MsgRead", 12, 42, None)),
    ({"kind": "MsgDeleted", "chatId": 12, "msgId": 42}, ("MsgDeleted", 12, 42, None)),
    (
        {"kind": "SecurejoinJoinerProgress", "contactId": 10, "progress": 1000},
        ("SecurejoinJoinerProgress", None, None, 10),
    ),
    ({"kind": "ChatModified", "chatId": 13}, ("ChatModified", 13, None, None)),
]


@pytest.mark.parametrize(("event", "expected"), EVENTS)
def test_parse_events(event: dict[str, Any], expected: tuple[Any, ...]) -> None:
    parsed = parse_event({"contextId": 1, "event": event})
    assert parsed is not None
    assert (parsed.kind, parsed.chat_id, parsed.msg_id, parsed.contact_id) == expected
    assert parsed.account == 1


@pytest.mark.parametrize("kind", ["Info", "ImapInboxIdle", "NewBlobFile", "Unheard-of"])
def test_ignored_events(kind: str) -> None:
    assert parse_event({"contextId": 1, "event": {"kind": kind}}) is None


@pytest.mark.parametrize(
    "raw",
    [None, {}, {"contextId": 1}, {"contextId": "1", "event": {"kind": "MsgRead"}},
     {"contextId": 1, "event": {"kind": "MsgRead", "msgId": "7"}},
     {"contextId": 1, "event": {"kind": "MsgRead", "msgId": True}}],
)  # fmt: skip
def test_malformed_events(raw: Any) -> None:
    with pytest.raises(MalformedEvent):
        parse_event(raw)


@given(st.dictionaries(st.text(max_size=10), st.none() | st.integers() | st.text(max_size=10)))
def test_parse_event_never_raises_anything_but_malformed(body: dict[str, Any]) -> None:
    try:
        parse_event({"contextId": 1, "event": body})
    except MalformedEvent:
        pass


def test_message_ids_are_integers() -> None:
    assert MsgId(5) == 5


# -- invite links ----------------------------------------------------------------------------------

LINKS = [
    ("https://i.delta.chat/#ABCD&a=x%40y.org", "https://i.delta.chat/#ABCD&a=x%40y.org"),
    ("  <https://i.delta.chat/#ABCD>  ", "https://i.delta.chat/#ABCD"),
    ("OPENPGP4FPR:ABCDEF#a=x%40y.org", "OPENPGP4FPR:ABCDEF#a=x%40y.org"),
    ("openpgp4fpr:abcdef", "openpgp4fpr:abcdef"),
]


@pytest.mark.parametrize(("text", "link"), LINKS)
def test_invite_links(text: str, link: str) -> None:
    assert invite_link(text) == link


@pytest.mark.parametrize(
    "bad", ["", "https://example.org/#x", "http://i.delta.chat/#x", "OPENPGP4FPR:", "hello"]
)
def test_not_invite_links(bad: str) -> None:
    with pytest.raises(ValueError):
        invite_link(bad)


# -- files from XMPP ------------------------------------------------------------------------

UPLOADS = [
    # file name, Content-Type from the upload service       view type
    ("VOICE_20261121_0930.m4a", "audio/mp4", "Voice"),  # Conversations, Monal
    ("recording.ogg", "audio/ogg", "Voice"),  # Gajim, Dino
    ("recording.oga", None, "Voice"),
    ("memo.opus", "application/octet-stream", "Voice"),
    ("memo.aac", "audio/aac; charset=binary", "Voice"),
    ("song.mp3", "audio/mpeg", None),  # music stays an audio file
    ("song.flac", "audio/flac", None),
    ("clip.ogg", "video/ogg", None),
    ("clip.webm", "video/webm", None),
    ("photo.jpg", "image/jpeg", None),
    ("notes.txt", "text/plain", None),
    ("report.m4a", "image/png", None),  # the service's type wins over the name
    ("file", None, None),
]


@pytest.mark.parametrize(("name", "content_type", "view_type"), UPLOADS)
def test_view_type_of_upload(name: str, content_type: str | None, view_type: str | None) -> None:
    assert view_type_of_upload(name, content_type) == view_type


FILE_NAMES = [
    ("https://upload.example/abc/VOICE%20one.m4a", None, "VOICE one.m4a"),
    ("https://upload.example/abc/photo.jpg?token=1", "image/jpeg", "photo.jpg"),
    ("https://upload.example/abc/blob", "image/png", "blob.png"),
    ("https://upload.example/abc/blob", None, "blob"),
    ("https://upload.example/", None, "file"),
]


@pytest.mark.parametrize(("url", "content_type", "name"), FILE_NAMES)
def test_upload_file_name(url: str, content_type: str | None, name: str) -> None:
    assert upload_file_name(url, content_type) == name


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=40)))
def test_upload_helpers_never_raise(name: str, content_type: str | None) -> None:
    assert view_type_of_upload(name, content_type) in (None, "Voice")
    assert upload_file_name("https://x.example/" + name, content_type)
