"""Matrix events → neutral events, and XMPP input → Matrix contents (the Matrix plugin's
translate.py, contents.py and mentions.py)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.formatting import StyledText, to_plain, to_xep0393
from legacy_plugins.matrix.contents import (
    edit_content,
    media_content,
    presence_for_xmpp_show,
    reaction_content,
    text_content,
)
from legacy_plugins.matrix.events import (
    Encrypted,
    Media,
    Membership,
    Message,
    Reaction,
    Receipt,
    Redaction,
    StateChange,
    Typing,
    UserPresence,
)
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.mentions import MAX_MENTIONS, mention_spans, mentioned
from legacy_plugins.matrix.translate import (
    parse_direct,
    parse_event,
    parse_members,
    parse_messages,
    parse_sync,
    strip_reply_fallback,
)

ROOM = RoomId("!room:example.org")
BOB = UserId("@bob:example.org")
ME = UserId("@alice:example.org")


def ev(etype: str, content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": etype,
        "sender": BOB,
        "event_id": "$e1",
        "origin_server_ts": 1000,
        "content": content,
        **extra,
    }


def msg(content: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return ev("m.room.message", content, **extra)


def text_of(event: object) -> str:
    assert isinstance(event, Message)
    return to_xep0393(event.text)


# --- incoming, one case per line ------------------------------------------------------

# fmt: off
TEXTS = [
    ({"msgtype": "m.text", "body": "hi"}, "hi"),
    ({"msgtype": "m.notice", "body": "bot says"}, "bot says"),
    ({"msgtype": "m.emote", "body": "waves"}, "waves"),
    ({"msgtype": "m.text", "body": "*b*", "format": "org.matrix.custom.html", "formatted_body": "<i>b</i>"}, "_b_"),
    ({"msgtype": "m.text", "body": "x", "format": "other", "formatted_body": "<b>x</b>"}, "x"),
    ({"msgtype": "m.text", "body": "plain", "format": "org.matrix.custom.html", "formatted_body": "<mx-reply>q</mx-reply>"}, "plain"),
    ({"msgtype": "com.example.custom", "body": "unknown type"}, "unknown type"),
    ({"msgtype": "m.text", "body": "> <@bob:x> q\n\nanswer", "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}}}, "answer"),
    ({"msgtype": "m.text", "body": "> a quote I typed\nnot a reply"}, "> a quote I typed\nnot a reply"),
]
# fmt: on


@pytest.mark.parametrize(("content", "expected"), TEXTS)
def test_message_texts(content: dict[str, Any], expected: str) -> None:
    assert text_of(parse_event(ROOM, msg(content))) == expected


def test_message_fields() -> None:
    event = parse_event(
        ROOM,
        msg(
            {
                "msgtype": "m.emote",
                "body": "hops",
                "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
            },
            unsigned={"transaction_id": "t1"},
        ),
    )
    assert event == Message(
        ROOM, EventId("$e1"), BOB, 1000, "emote", StyledText.plain("hops"),
        reply_to=EventId("$q"), own_device=True,
    )  # fmt: skip


def test_edit_uses_the_new_content() -> None:
    event = parse_event(
        ROOM,
        msg({
            "msgtype": "m.text",
            "body": "* fixed",
            "m.new_content": {"msgtype": "m.text", "body": "fixed"},
            "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"},
        }),
    )  # fmt: skip
    assert isinstance(event, Message)
    assert event.replaces == "$orig" and to_plain(event.text) == "fixed"


# fmt: off
MEDIA = [
    ({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/1", "info": {"mimetype": "image/png", "size": 3}}, Media("mxc://x/1", "cat.png", "image/png", 3), ""),
    ({"msgtype": "m.file", "body": "see this", "filename": "a.pdf", "url": "mxc://x/2"}, Media("mxc://x/2", "a.pdf"), "see this"),
    ({"msgtype": "m.video", "body": "v.mp4", "file": {"url": "mxc://x/3"}}, Media("mxc://x/3", "v.mp4", encrypted=True), ""),
]
# fmt: on


@pytest.mark.parametrize(("content", "media", "caption"), MEDIA)
def test_media(content: dict[str, Any], media: Media, caption: str) -> None:
    event = parse_event(ROOM, msg(content))
    assert isinstance(event, Message)
    assert event.media == media
    assert to_plain(event.text) == caption


def test_media_without_url_is_shown_as_text() -> None:
    event = parse_event(ROOM, msg({"msgtype": "m.image", "body": "lost.png"}))
    assert isinstance(event, Message) and event.kind == "text" and event.media is None


OTHERS = [
    (ev("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}}),
     Reaction(ROOM, EventId("$e1"), BOB, 1000, EventId("$t"), "👍")),
    (ev("m.room.redaction", {"reason": "spam"}, redacts="$t"),
     Redaction(ROOM, EventId("$e1"), BOB, 1000, EventId("$t"), "spam")),
    (ev("m.room.redaction", {"redacts": "$t"}),
     Redaction(ROOM, EventId("$e1"), BOB, 1000, EventId("$t"))),
    (ev("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2"}),
     Encrypted(ROOM, EventId("$e1"), BOB, 1000)),
    (ev("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2", "session_id": "S"},
        unsigned={"transaction_id": "t1"}),
     Encrypted(ROOM, EventId("$e1"), BOB, 1000, "S", own_device=True)),
    (ev("m.room.member", {"membership": "invite", "is_direct": True, "displayname": "Al"}, state_key=ME),
     Membership(ROOM, BOB, ME, "invite", displayname="Al", is_direct=True)),
    (ev("m.room.topic", {"topic": "news"}, state_key=""),
     StateChange(ROOM, BOB, "m.room.topic", "", {"topic": "news"})),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "expected"), OTHERS)
def test_other_events(raw: dict[str, Any], expected: object) -> None:
    assert parse_event(ROOM, raw) == expected


MALFORMED: list[object] = [
    None,
    "not an event",
    [],
    {},
    {"type": "m.room.message"},
    ev("m.room.message", {"msgtype": "m.text", "body": "x"}, sender="bob"),
    ev("m.room.message", {"msgtype": "m.text", "body": "x"}, event_id=None),
    ev("m.room.message", {}),  # redacted
    ev("m.room.message", {"body": "no msgtype"}),
    ev("m.room.message", {"msgtype": "m.text", "body": "e", "m.relates_to": {"rel_type": "m.replace", "event_id": "$o"}}),
    ev("m.reaction", {"m.relates_to": {"rel_type": "m.annotation", "event_id": "$t"}}),
    ev("m.reaction", {"m.relates_to": "nope"}),
    ev("m.room.redaction", {}),
    ev("m.room.member", {"membership": "join"}, state_key="not a user"),
    ev("m.call.invite", {}),
]  # fmt: skip


@pytest.mark.parametrize("raw", MALFORMED)
def test_malformed_or_uninteresting_events_are_dropped(raw: object) -> None:
    assert parse_event(ROOM, raw) is None


def test_reply_fallback_stripping() -> None:
    assert strip_reply_fallback("> <@a:b> q\n> more\n\nanswer") == "answer"
    assert strip_reply_fallback("> not a fallback\ntext") == "> not a fallback\ntext"
    assert strip_reply_fallback("plain") == "plain"


def test_parse_sync() -> None:
    body = {
        "next_batch": "s2",
        "account_data": {
            "events": [{"type": "m.direct", "content": {BOB: ["!dm:example.org", 7]}}]
        },
        "rooms": {
            "join": {
                ROOM: {
                    "summary": {"m.joined_member_count": 3, "m.heroes": [BOB]},
                    "state": {"events": [ev("m.room.name", {"name": "Room"}, state_key="")]},
                    "timeline": {
                        "limited": True,
                        "prev_batch": "p1",
                        "events": [msg({"msgtype": "m.text", "body": "hi"}), {"bad": 1}],
                    },
                    "ephemeral": {
                        "events": [
                            {"type": "m.typing", "content": {"user_ids": [BOB]}},
                            {"type": "m.receipt", "content": {"$e1": {"m.read": {BOB: {"ts": 1}}}}},
                        ]
                    },
                },
                "not a room": {},
            },
            "invite": {
                "!inv:example.org": {
                    "invite_state": {
                        "events": [
                            ev(
                                "m.room.member",
                                {"membership": "invite", "is_direct": True},
                                state_key=ME,
                            ),
                            ev("m.room.encryption", {}, state_key=""),
                        ]
                    }
                }
            },
            "leave": {"!gone:example.org": {}},
        },
    }
    batch = parse_sync(body, ME)
    assert batch.next_batch == "s2"
    assert batch.direct == {BOB: ("!dm:example.org",)}
    (room,) = batch.joined
    assert room.limited and room.prev_batch == "p1" and room.joined_count == 3
    assert room.heroes == (BOB,) and len(room.state) == 1 and len(room.timeline) == 1
    assert room.ephemeral == (Typing(ROOM, frozenset({BOB})), Receipt(ROOM, BOB, EventId("$e1")))
    (invite,) = batch.invited
    assert invite.inviter == BOB and invite.is_direct and invite.encrypted
    assert batch.left == ("!gone:example.org",)


def test_parse_sync_without_next_batch_is_an_error() -> None:
    with pytest.raises(ValueError, match="next_batch"):
        parse_sync({"rooms": {}}, ME)


def test_an_encrypted_event_keeps_what_decryption_needs() -> None:
    raw = ev("m.room.encrypted", {"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "c"})
    event = parse_event(ROOM, raw)
    assert isinstance(event, Encrypted) and event.raw == raw and event.reason == ""


def test_parse_sync_reads_encryption_keys_and_device_changes() -> None:
    key_event = {"type": "m.room.encrypted", "sender": BOB, "content": {"algorithm": "x"}}
    batch = parse_sync(
        {
            "next_batch": "s1",
            "to_device": {"events": [key_event, {"type": "m.dummy"}, "junk", {"sender": BOB}]},
            "device_lists": {"changed": [BOB, "not an id", 3], "left": [ME]},
            "device_one_time_keys_count": {"signed_curve25519": 42},
        },
        ME,
    )
    assert batch.to_device == (key_event,)
    assert batch.device_lists_changed == frozenset({BOB})
    assert batch.one_time_keys == 42
    empty = parse_sync({"next_batch": "s2", "device_one_time_keys_count": {"x": 1}}, ME)
    assert (empty.to_device, empty.device_lists_changed, empty.one_time_keys) == (
        (),
        frozenset(),
        None,
    )


def test_parse_sync_reads_presence() -> None:
    def presence(content: object, sender: str = BOB, etype: str = "m.presence") -> object:
        return {"type": etype, "sender": sender, "content": content}

    events = [
        presence({"presence": "online", "status_msg": "here", "last_active_ago": 5}),
        presence({"presence": "unavailable", "status_msg": ""}),
        presence({"presence": "offline"}, sender=ME),
        presence({"presence": "busy"}),  # not a Matrix state
        presence({"presence": "online"}, sender="nobody"),
        presence({"presence": "online"}, etype="m.typing"),
        presence("junk"),
        "junk",
    ]
    batch = parse_sync({"next_batch": "s", "presence": {"events": events}}, ME)
    assert batch.presence == (
        UserPresence(BOB, "online", "here", 5),
        UserPresence(BOB, "unavailable"),
        UserPresence(ME, "offline"),
    )


@pytest.mark.parametrize(
    ("show", "state"),
    [("", "online"), (None, "online"), ("chat", "online"), ("dnd", "online"),
     ("away", "unavailable"), ("xa", "unavailable"), ("unavailable", "offline")],
)  # fmt: skip
def test_presence_for_xmpp_show(show: str | None, state: str) -> None:
    assert presence_for_xmpp_show(show) == state


def test_parse_members() -> None:
    chunk = [
        ev("m.room.member", {"membership": "join"}, state_key=BOB),
        ev("m.room.member", {"membership": "invite"}, state_key=ME),
        ev("m.room.member", {"membership": "join"}, state_key="not a user"),
        ev("m.room.topic", {"topic": "x"}, state_key=""),
    ]
    members = parse_members(ROOM, {"chunk": chunk})
    assert [(m.user, m.membership) for m in members] == [(BOB, "join"), (ME, "invite")]
    assert parse_members(ROOM, {"chunk": "junk"}) == []


def test_parse_messages_and_direct() -> None:
    events, end = parse_messages(
        ROOM, {"chunk": [msg({"msgtype": "m.text", "body": "x"})], "end": "t9"}
    )
    assert len(events) == 1 and end == "t9"
    assert parse_messages(ROOM, {"chunk": []}) == ([], None)
    assert parse_direct({"@x:y": "not a list", "nobody": ["!a:b"]}) == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=6)
    ),
    max_leaves=30,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "type": st.sampled_from(["m.room.message", "m.reaction", "m.room.redaction", "m.room.member", "m.room.encrypted", "m.sticker"]) | st.text(max_size=10),
        "sender": st.sampled_from([BOB, "x"]) | st.text(max_size=10),
        "event_id": st.text(max_size=10) | json_values,
        "state_key": st.sampled_from(["", ME]) | json_values,
        "content": json_values | st.fixed_dictionaries({}, optional={"msgtype": st.sampled_from(["m.text", "m.image", "m.emote"]) | json_values, "body": json_values, "format": st.just("org.matrix.custom.html"), "formatted_body": json_values, "m.relates_to": json_values, "m.new_content": json_values, "url": json_values, "info": json_values}),
        "unsigned": json_values,
        "origin_server_ts": json_values,
        "redacts": json_values,
    },
)  # fmt: skip


@given(event_like | json_values)
def test_parse_event_never_raises(raw: object) -> None:
    parse_event(ROOM, raw)


@given(json_values)
def test_parse_sync_raises_only_value_error(raw: object) -> None:
    try:
        parse_sync(raw, ME)
    except ValueError:
        pass


# --- outgoing ---------------------------------------------------------------------------


def test_text_content() -> None:
    assert text_content("hello") == {"msgtype": "m.text", "body": "hello", "m.mentions": {}}
    assert text_content("/me waves") == {"msgtype": "m.emote", "body": "waves", "m.mentions": {}}
    styled = text_content("*hi*", reply_to=EventId("$q"), mentions=[BOB, BOB])
    assert styled == {
        "msgtype": "m.text",
        "body": "*hi*",
        "format": "org.matrix.custom.html",
        "formatted_body": "<strong>hi</strong>",
        "m.relates_to": {"m.in_reply_to": {"event_id": "$q"}},
        "m.mentions": {"user_ids": [BOB]},
    }


def test_edit_content() -> None:
    assert edit_content(EventId("$o"), "*new*") == {
        "msgtype": "m.text",
        "body": "* *new*",
        "format": "org.matrix.custom.html",
        "formatted_body": "* <strong>new</strong>",
        "m.new_content": {
            "msgtype": "m.text",
            "body": "*new*",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>new</strong>",
        },
        "m.relates_to": {"rel_type": "m.replace", "event_id": "$o"},
    }


def test_reaction_and_media_content() -> None:
    assert reaction_content(EventId("$t"), "👍") == {
        "m.relates_to": {"rel_type": "m.annotation", "event_id": "$t", "key": "👍"}
    }
    assert media_content("mxc://x/1", "a.png", "image/png", 5)["msgtype"] == "m.image"
    assert media_content("mxc://x/1", "a.ogg", "audio/ogg", 5)["msgtype"] == "m.audio"
    assert media_content("mxc://x/1", "a.bin", None, 5) == {
        "msgtype": "m.file",
        "body": "a.bin",
        "filename": "a.bin",
        "url": "mxc://x/1",
        "info": {"size": 5},
    }
    keys = {"v": "v2", "key": {"k": "secret"}, "iv": "i", "hashes": {"sha256": "h"}}
    encrypted = media_content("mxc://x/2", "a.png", "image/png", 5, file=keys)
    assert "url" not in encrypted
    assert encrypted["file"] == {**keys, "url": "mxc://x/2"}
    assert encrypted["info"] == {"size": 5, "mimetype": "image/png"}
    back = parse_event(ROOM, msg(encrypted))
    assert isinstance(back, Message) and back.media is not None
    assert (
        back.media.encrypted
        and back.media.url == "mxc://x/2"
        and back.media.file == encrypted["file"]
    )


# --- mentions, Matrix -> XMPP ---------------------------------------------------------

BOB, CAROL = UserId("@bob:example.org"), UserId("@carol:example.org")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ({"body": "hi"}, ()),
        ({"body": "hi", "m.mentions": {}}, ()),
        ({"body": "hi bob", "m.mentions": {"user_ids": [BOB]}}, (BOB,)),
        # each once, in order; not user IDs and other types dropped
        (
            {"m.mentions": {"user_ids": [CAROL, BOB, CAROL, "bob", 7, "!room:x"]}},
            (CAROL, BOB),
        ),
        ({"m.mentions": {"user_ids": "@bob:example.org"}}, ()),  # not a list
        ({"m.mentions": ["@bob:example.org"]}, ()),  # not an object
        # pills, as Element writes them and percent-encoded; only in HTML content
        (
            {
                "format": "org.matrix.custom.html",
                "formatted_body": '<a href="https://matrix.to/#/@bob:example.org">Bob</a> and '
                "<a href='https://matrix.to/#/%40carol%3Aexample.org'>Carol</a>",
            },
            (BOB, CAROL),
        ),
        (
            {"formatted_body": '<a href="https://matrix.to/#/@bob:example.org">Bob</a>'},
            (),  # no format: not HTML
        ),
        (
            {
                "format": "org.matrix.custom.html",
                "formatted_body": '<a href="https://matrix.to/#/!room:example.org">a room</a>'
                '<a href="https://matrix.to/#/#alias:example.org">an alias</a>'
                '<a href="https://example.org/#/@bob:example.org">elsewhere</a>',
            },
            (),
        ),
        # m.mentions and a pill for the same user: once
        (
            {
                "m.mentions": {"user_ids": [BOB]},
                "format": "org.matrix.custom.html",
                "formatted_body": '<a href="https://matrix.to/#/@bob:example.org">Bob</a>',
            },
            (BOB,),
        ),
        (
            {"m.mentions": {"user_ids": [f"@u{n}:x.org" for n in range(50)]}},
            tuple(UserId(f"@u{n}:x.org") for n in range(MAX_MENTIONS)),
        ),
    ],
)
def test_who_a_message_mentions(content: dict[str, Any], expected: tuple[UserId, ...]) -> None:
    assert mentioned(content) == expected


@pytest.mark.parametrize(
    ("text", "names", "expected"),
    [
        ("thanks bob!", {BOB: "bob"}, [(7, 10, BOB)]),
        ("bob: hi, bob", {BOB: "bob"}, [(0, 3, BOB), (9, 12, BOB)]),  # every time
        ("bobby and kabob", {BOB: "bob"}, []),  # inside a word: no
        ("Bob", {BOB: "bob"}, []),  # as the room shows the name
        ("hi Bob Smith", {BOB: "Bob Smith", CAROL: "Bob"}, [(3, 12, BOB)]),  # longer wins
        ("hi Bob and Bob Smith", {BOB: "Bob Smith", CAROL: "Bob"}, [(3, 6, CAROL), (11, 20, BOB)]),
        ("é carol ü", {CAROL: "carol"}, [(2, 7, CAROL)]),  # code points
        ("[c.a+rol] x", {CAROL: "c.a+rol"}, [(1, 8, CAROL)]),  # regex characters are text
        ("nobody", {BOB: ""}, []),
    ],
)
def test_where_mentioned_names_stand(
    text: str, names: dict[UserId, str], expected: list[tuple[int, int, UserId]]
) -> None:
    spans = mention_spans(text, names)
    assert [(s.begin, s.end, s.user) for s in spans] == expected
    for span in spans:
        assert text[span.begin : span.end] == names[span.user]
