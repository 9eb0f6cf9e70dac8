"""XEP-0372 mentions for IRC: which words of a line are nicks, spans, URIs, and the way
back (references from a client → IRC nicks in the line)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from slixmpp import Message
from slixmpp.xmlstream import ET

from legacy_plugins.irc.events import casefold
from legacy_plugins.irc.mentions import (
    Mention,
    ReferenceStash,
    apply_references,
    find_mentions,
    find_mentions_by,
    mention_uri,
    references_of,
)

NICKS = ("alice", "Bob", "bob_", "[m]x", "zoé", "a")
ROOM = "#chan%127.0.0.1@irc.localhost"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("alice: hi", [(0, 5, "alice")]),
        ("alice, hi", [(0, 5, "alice")]),
        ("hi alice", [(3, 8, "alice")]),
        ("ALICE: case-mapped", [(0, 5, "alice")]),
        ("@alice look", [(1, 6, "alice")]),
        ("thanks bob and bob_!", [(7, 10, "Bob"), (15, 19, "bob_")]),
        ("BOB_ and bob", [(0, 4, "bob_"), (9, 12, "Bob")]),
        ("{M}X: rfc1459 folds [] to {}", [(0, 4, "[m]x")]),
        ("alice's turn", [(0, 5, "alice")]),
        ("alice- see", [(0, 5, "alice")]),
        ("alicexyz is someone else", []),
        ("malice is not a mention", []),
        ("see https://example.org/alice", []),
        ("mail alice@example.org", []),
        ("host alice.example.org", []),
        ("a is too short to be a mention", []),
        ("ça va zoé ?", [(6, 9, "zoé")]),
        ("💬 alice", [(2, 7, "alice")]),  # code points, not UTF-16 units or bytes
        ("", []),
    ],
)
def test_find_mentions(text: str, expected: list[tuple[int, int, str]]) -> None:
    found = find_mentions(text, NICKS, "rfc1459")
    assert [(m.begin, m.end, m.nick) for m in found] == expected
    for m in found:
        assert casefold(text[m.begin : m.end]) == casefold(m.nick)


def test_casemapping_ascii_does_not_fold_brackets() -> None:
    assert find_mentions("{m}x: hi", ["[m]x"], "ascii") == ()
    assert find_mentions("[M]X: hi", ["[m]x"], "ascii") == (Mention(0, 4, "[m]x"),)


@pytest.mark.parametrize(
    ("room", "nick", "uri"),
    [
        (ROOM, "bob", "xmpp:%23chan%25127.0.0.1@irc.localhost/bob"),
        (ROOM, "[m]x", "xmpp:%23chan%25127.0.0.1@irc.localhost/%5Bm%5Dx"),
        ("#c@irc.localhost", "a|b", "xmpp:%23c@irc.localhost/a%7Cb"),
    ],
)
def test_mention_uri_is_rfc5122(room: str, nick: str, uri: str) -> None:
    assert mention_uri(room, nick) == uri


@pytest.mark.parametrize(
    ("text", "mentions", "expected"),
    [
        ("Alice Liddell: hi", [Mention(0, 13, "alice")], "alice: hi"),
        ("hi Bob and Carol", [Mention(3, 6, "bob"), Mention(11, 16, "carol")], "hi bob and carol"),
        ("x", [Mention(0, 5, "out")], "x"),  # out of range: ignored
        ("abcdef", [Mention(0, 3, "X"), Mention(2, 4, "Y")], "Xdef"),  # overlap ignored
        ("no mentions", [], "no mentions"),
    ],
)
def test_apply_references(text: str, mentions: list[Mention], expected: str) -> None:
    assert apply_references(text, mentions) == expected


def message(body: str, *refs: dict[str, str], sender: str = "u@localhost/r") -> Message:
    msg = Message()  # type: ignore[no-untyped-call]  # slixmpp: unannotated __init__
    msg["from"], msg["to"], msg["type"], msg["body"] = sender, ROOM, "groupchat", body
    for attrs in refs:
        ET.SubElement(msg.xml, "{urn:xmpp:reference:0}reference", attrs)
    return msg


def mention(begin: int, end: int, uri: str, kind: str = "mention") -> dict[str, str]:
    return {"type": kind, "begin": str(begin), "end": str(end), "uri": uri}


def test_references_of_reads_encoded_and_raw_room_uris() -> None:
    msg = message(
        "Bobby B: and Carol",
        mention(0, 7, "xmpp:%23chan%25127.0.0.1@irc.localhost/bob"),
        mention(13, 18, f"xmpp:{ROOM}/carol"),
        mention(0, 3, "xmpp:other@irc.localhost/x"),  # another room
        mention(0, 3, "https://example.org", "data"),  # not a mention
        mention(5, 99, f"xmpp:{ROOM}/far"),  # beyond the body
        {"type": "mention", "begin": "x", "end": "2", "uri": f"xmpp:{ROOM}/bad"},
    )
    assert references_of(msg, ROOM) == (Mention(0, 7, "bob"), Mention(13, 18, "carol"))


def test_stash_gives_the_spans_of_the_body_slidge_kept() -> None:
    stash = ReferenceStash()
    stash.remember(message("> quoted\nBobby: yes", mention(9, 14, f"xmpp:{ROOM}/bob")))
    stash.remember(message("no references at all"))
    # slidge cut the reply fallback off: the span moves with the body.
    assert stash.take("u@localhost", ROOM, "Bobby: yes") == (Mention(0, 5, "bob"),)
    assert stash.take("u@localhost", ROOM, "Bobby: yes") == ()  # taken once
    assert stash.take("u@localhost", ROOM, "no references at all") == ()


def test_stash_is_bounded() -> None:
    stash = ReferenceStash()
    for i in range(100):
        stash.remember(message(f"Bobby {i}", mention(0, 5, f"xmpp:{ROOM}/bob")))
    assert stash.take("u@localhost", ROOM, "Bobby 0") == ()
    assert stash.take("u@localhost", ROOM, "Bobby 99") == (Mention(0, 5, "bob"),)


@given(st.text(), st.lists(st.text(min_size=1, max_size=12), max_size=8))
def test_find_mentions_never_raises_and_spans_are_nicks(text: str, nicks: list[str]) -> None:
    for m in find_mentions(text, nicks, "rfc1459"):
        assert 0 <= m.begin < m.end <= len(text)
        assert m.nick in nicks


@given(st.text(), st.lists(st.tuples(st.integers(-3, 40), st.integers(-3, 40), st.text())))
def test_apply_references_never_raises(text: str, spans: list[tuple[int, int, str]]) -> None:
    apply_references(text, [Mention(b, e, n) for b, e, n in spans])


@given(
    st.text(alphabet="ab[]{}|^~-:@ .xyAB", max_size=40),
    st.lists(st.text(alphabet="ab[]{}|^~-xyAB", min_size=1, max_size=5), max_size=8),
    st.text(alphabet="ab[]{}|^~AB", min_size=1, max_size=4),
    st.sampled_from(["rfc1459", "ascii", "strict-rfc1459"]),
)
def test_member_table_finds_what_the_nick_list_finds(
    text: str, nicks: list[str], own: str, casemapping: str
) -> None:
    """room_mentions reads the channel's member table (keyed by folded nick) instead of
    folding every member's nick for every line: the same mentions as the nick list."""
    from types import SimpleNamespace

    from legacy_plugins.irc.events import ISupport
    from legacy_plugins.irc.mentions import member_lookup

    isupport = ISupport(casemapping=casemapping)
    members = {isupport.casefold(n): SimpleNamespace(nick=n) for n in nicks}
    state = SimpleNamespace(members=members)
    client: Any = SimpleNamespace(
        nick=own,
        channels=SimpleNamespace(get=lambda name: state if name == "#c" else None),
        state=SimpleNamespace(isupport=isupport),
    )
    expected = find_mentions(text, [m.nick for m in members.values()] + [own], casemapping)
    assert find_mentions_by(text, member_lookup(client, "#c"), casemapping) == expected
    nobody = find_mentions_by(text, member_lookup(client, "#other"), casemapping)
    assert nobody == find_mentions(text, [own], casemapping)
