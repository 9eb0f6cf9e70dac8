"""The link's pure rules as tables: nicks, addresses, own occupants, text, self-pings."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.link.bridge import (
    OriginIds,
    OutgoingText,
    Recent,
    Reply,
    channel_localpart,
    irc_nick,
    is_own_occupant,
    link_id,
    looks_like_puppet,
    muc_nick,
    muc_nick_candidates,
    outgoing_text,
    puppet_localpart,
    relay_text,
    replay_after,
    self_ping_verdict,
    strip_fallback,
)
from legacy_plugins.irc.events import casefold
from legacy_plugins.irc.translate import nick_problem


@pytest.mark.parametrize(
    ("template", "occupant", "nicklen", "expected"),
    [
        ("{nick}[x]", "bob", None, "bob[x]"),
        ("{nick}[x]", "Bob Smith", None, "Bob_Smith[x]"),
        ("{nick}[x]", "Zoë", None, "Zoe[x]"),
        ("{nick}[x]", "李明", None, "xmpp[x]"),
        ("{nick}[x]", "3po", None, "x3po[x]"),
        ("{nick}[x]", "-dash", None, "x-dash[x]"),
        ("{nick}[x]", "a.b@c/d", None, "abcd[x]"),
        ("{nick}[x]", "aliceboboo", 9, "aliceb[x]"),
        ("{nick}[x]", "a" * 40, None, "a" * 27 + "[x]"),
        ("xmpp-{nick}", "bob", None, "xmpp-bob"),
        ("{nick} (x)", "bob", None, "bob_x"),
        ("{nick}", "bob\r\nQUIT", None, "bobQUIT"),
        ("{nick}|x", "b", 2, "b|"),
    ],
)
def test_irc_nick(template: str, occupant: str, nicklen: int | None, expected: str) -> None:
    assert irc_nick(template, occupant, nicklen) == expected


@given(
    st.sampled_from(["{nick}[x]", "{nick}", "x_{nick}", "{nick} on xmpp"]),
    st.text(),
    st.integers(1, 40),
)
def test_irc_nick_is_always_a_valid_nick(template: str, occupant: str, nicklen: int) -> None:
    nick = irc_nick(template, occupant, nicklen)
    assert nick_problem(nick) is None, nick
    assert len(nick) <= max(nicklen, 1)


def test_muc_nicks() -> None:
    assert muc_nick("{nick}", "alice") == "alice"
    assert muc_nick("{nick} (IRC)", "alice") == "alice (IRC)"
    candidates = list(muc_nick_candidates("alice"))
    assert candidates[:3] == ["alice", "alice[irc]", "alice[irc]2"]
    assert len(candidates) == len(set(candidates)) == 10


@pytest.mark.parametrize(
    ("server", "nick", "casemapping", "expected"),
    [
        ("127.0.0.1", "alice", "rfc1459", "alice%127.0.0.1"),
        ("irc.example.net", "Alice[m]", "rfc1459", "alice{m}%irc.example.net"),
        ("irc.example.net", "Alice[m]", "ascii", "alice[m]%irc.example.net"),
        ("IRC.Example.NET", "bob", "rfc1459", "bob%irc.example.net"),
    ],
)
def test_puppet_localpart(server: str, nick: str, casemapping: str, expected: str) -> None:
    assert puppet_localpart(server, nick, casemapping) == expected


def test_unmappable_nicks_get_a_stable_hash() -> None:
    first = puppet_localpart("irc.example.net", "Ärger")
    assert first == puppet_localpart("irc.example.net", "Ärger")
    assert first.startswith("~") and first.endswith("%irc.example.net")
    assert first == first.lower()
    assert first != puppet_localpart("irc.example.net", "Ölig")


@pytest.mark.parametrize(
    ("channel", "expected"),
    [
        ("#Lounge", "#lounge%irc.example.net"),
        ("&local", "\\26local%irc.example.net"),
    ],
)
def test_channel_localpart(channel: str, expected: str) -> None:
    assert channel_localpart("irc.example.net", channel) == expected


def test_link_id() -> None:
    assert link_id("a@b.c", "irc.x", 6697, True, "#y") == "a@b.c ↔ ircs://irc.x:6697/#y"
    assert link_id("a@b.c", "irc.x", 6667, False, "#y") == "a@b.c ↔ irc://irc.x:6667/#y"


OUR = "link.example.org"


@pytest.mark.parametrize(
    ("nick", "real_jid", "origin_id", "ours"),
    [
        ("alice", None, None, False),
        ("alice", "alice@example.org/phone", None, False),
        ("alice", f"dave%irc.example.net@{OUR}/irc", None, True),  # a puppet, seen by JID
        ("alice", f"{OUR}", None, True),
        ("alice", "link.example.org.evil.com", None, False),
        ("dave", None, None, True),  # a nick our occupants hold
        ("alice", None, "sent-by-us", True),  # an echo of what we sent
        ("alice", None, "sent-by-them", False),
    ],
)
def test_is_own_occupant(
    nick: str, real_jid: str | None, origin_id: str | None, ours: bool
) -> None:
    assert (
        is_own_occupant(
            nick=nick,
            real_jid=real_jid,
            origin_id=origin_id,
            our_domain=OUR,
            our_nicks={"dave", "#lounge"},
            our_ids={"sent-by-us"},
        )
        is ours
    )


@pytest.mark.parametrize(
    ("body", "ranges", "expected"),
    [
        ("> alice wrote\n> hi\nyes", [(0, 19)], "yes"),
        ("yes", [], "yes"),
        ("yes", [(10, 20)], "yes"),
        ("ab cd", [(0, 2), (2, 3)], "cd"),
    ],
)
def test_strip_fallback(body: str, ranges: list[tuple[int, int]], expected: str) -> None:
    assert strip_fallback(body, ranges) == expected


@pytest.mark.parametrize(
    ("body", "kwargs", "expected"),
    [
        ("hello", {}, OutgoingText("hello")),
        ("/me waves", {}, OutgoingText("waves", action=True)),
        ("*bold*", {}, OutgoingText("\x02bold")),
        ("   ", {}, None),
        ("", {"attachment": "https://up.example/a.png"}, OutgoingText("https://up.example/a.png")),
        (
            "https://up.example/a.png",
            {"attachment": "https://up.example/a.png"},
            OutgoingText("https://up.example/a.png"),
        ),
        (
            "look",
            {"attachment": "https://up.example/a.png"},
            OutgoingText("look https://up.example/a.png"),
        ),
        ("on Prosody 0.12", {"corrected": "on Prosody 0.11"}, OutgoingText("s/0.11/0.12/")),
        ("something else", {"corrected": ""}, OutgoingText("something else *")),
        ("yes", {"reply": Reply("dave")}, OutgoingText("dave: yes")),
        ("yes", {"reply": Reply("dave", "is it?")}, OutgoingText("dave: «is it?» yes")),
        (
            "yes",
            {"reply": Reply("dave", "a rather long question that goes on and on and on")},
            OutgoingText("dave: «a rather long question that goes on and…» yes"),
        ),
        ("/me nods", {"reply": Reply("dave")}, OutgoingText("nods", action=True)),
    ],
)
def test_outgoing_text(body: str, kwargs: dict[str, object], expected: OutgoingText | None) -> None:
    assert outgoing_text(body, **kwargs) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("nick", "out", "expected"),
    [
        ("bob", OutgoingText("hi"), "<bob> hi"),
        ("bob", OutgoingText("nods", action=True), "* bob nods"),
        ("bob", OutgoingText("one\ntwo\n\nthree"), "<bob> one\n<bob> two\n<bob> three"),
    ],
)
def test_relay_text(nick: str, out: OutgoingText, expected: str) -> None:
    assert relay_text(nick, out) == expected


@pytest.mark.parametrize(
    ("error", "verdict"),
    [
        (None, "joined"),
        ("service-unavailable", "joined"),
        ("feature-not-implemented", "joined"),
        ("not-acceptable", "rejoin"),
        ("item-not-found", "rejoin"),
        ("remote-server-timeout", "unknown"),
        ("remote-server-not-found", "unknown"),
        ("timeout", "unknown"),
    ],
)
def test_self_ping_verdict(error: str | None, verdict: str) -> None:
    assert self_ping_verdict(error) == verdict


def test_recent_forgets_the_oldest() -> None:
    recent: Recent[str, int] = Recent(2)
    recent.put("a", 1)
    recent.put("b", 2)
    recent.put("a", 3)  # refreshed: now the newest
    recent.put("c", 4)
    assert "b" not in recent and recent.get("a") == 3 and recent.get("c") == 4
    assert len(recent) == 2


def test_origin_ids_are_recognised_after_a_restart_and_not_forged() -> None:
    ids = OriginIds("component secret")
    made = ids.make("0123abcd")
    assert made.startswith("pl-0123abcd-")
    assert made in OriginIds("component secret")  # a new process, same secret
    assert made not in OriginIds("another secret")
    for other in ("", "pl-", "pl--", "pl-0123abcd-", "pl-0123abcd-0000000000000000", None, 3):
        assert other not in ids
    assert made.replace("0123abcd", "0123abce") not in ids


@given(st.text())
def test_origin_ids_never_raise(text: str) -> None:
    assert (text in OriginIds("s")) in (True, False)


@pytest.mark.parametrize(
    ("template", "nick", "expected"),
    [
        ("{nick}[x]", "bob[x]", True),
        ("{nick}[x]", "BOB[X]", True),
        ("{nick}[x]", "bob{x}", True),  # rfc1459: [] and {} are the same letters
        ("{nick}[x]", "[x]", False),  # nothing where {nick} is
        ("{nick}[x]", "bob", False),
        ("{nick}[x]", "bob[x]_", False),
        ("xmpp-{nick}", "xmpp-bob", True),
        ("xmpp-{nick}", "bob", False),
        ("{nick}", "anyone", False),  # no marker: nobody is recognised by shape
    ],
)
def test_looks_like_puppet(template: str, nick: str, expected: bool) -> None:
    assert looks_like_puppet(template, nick, casefold) is expected


T0 = datetime(2026, 11, 21, 12, 0, 0, 718000, tzinfo=UTC)  # the mark, said live
SAME_SECOND = datetime(2026, 11, 21, 12, 0, 0, tzinfo=UTC)  # history cuts to the second
LATER = datetime(2026, 11, 21, 12, 0, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("mark", "line", "passed", "expected"),
    [
        (("m1", T0), ("m0", SAME_SECOND), False, (False, False)),  # before the mark
        (("m1", T0), ("m1", SAME_SECOND), False, (False, True)),  # the mark itself
        (("m1", T0), ("m2", SAME_SECOND), True, (True, True)),  # after it, same second
        (("m1", T0), ("m2", LATER), False, (True, True)),  # the mark scrolled out
        ((None, T0), (None, LATER), False, (True, True)),  # no msgids: by time
        ((None, T0), (None, SAME_SECOND), False, (False, False)),  # same second: old
        ((None, None), ("m2", LATER), False, (False, False)),  # no mark: nothing is new
        (("m1", T0), ("m2", None), False, (False, False)),  # no time, not the mark
    ],
)
def test_replay_after(
    mark: tuple[str | None, datetime | None],
    line: tuple[str | None, datetime | None],
    passed: bool,
    expected: tuple[bool, bool],
) -> None:
    got = replay_after(
        mark_msgid=mark[0], mark_time=mark[1], msgid=line[0], time=line[1], passed=passed
    )
    assert got == expected
