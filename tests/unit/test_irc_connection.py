"""The sans-IO registration/CAP/SASL state machine and its event stream."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.irc import events as ev
from legacy_plugins.irc.connection import IrcConnectionState, nick_candidate
from legacy_plugins.irc.events import Channel, ISupport, Member, ModeChange, Nick, Prefix, casefold
from legacy_plugins.irc.protocol import Message, parse_line


def feed(state: IrcConnectionState, *lines: str) -> list[ev.Event]:
    return [event for line in lines for event in state.receive(parse_line(line.encode()))]


def sent(state: IrcConnectionState) -> list[str]:
    return [line.decode().removesuffix("\r\n") for line in state.data_to_send()]


def registered(**kwargs: object) -> IrcConnectionState:
    state = IrcConnectionState("me", "user", "Real Name", **kwargs)  # type: ignore[arg-type]
    feed(
        state,
        ":srv 001 me :Welcome",
        ":srv 005 me CHANTYPES=# PREFIX=(qaohv)~&@%+ STATUSMSG=~&@%+ :are supported",
    )
    state.data_to_send()
    return state


# --- registration --------------------------------------------------------------------


def test_initial_lines() -> None:
    state = IrcConnectionState("me", "user", "Real Name", password="pw")
    assert state.initial_lines() == [
        b"CAP LS 302\r\n",
        b"PASS pw\r\n",
        b"NICK me\r\n",
        b"USER user 0 * :Real Name\r\n",
    ]


def test_server_without_cap_registers_directly() -> None:
    state = IrcConnectionState("me", "user", "Real")
    events = feed(state, ":srv 421 me CAP :Unknown command", ":srv 001 me_ :Welcome me_")
    assert events[-1] == ev.Registered(Nick("me_"), "srv", "Welcome me_")
    assert state.registered and state.nick == "me_" and state.server_name == "srv"


def test_cap_negotiation_with_multiline_ls() -> None:
    state = IrcConnectionState(
        "me", "u", "r", wanted_caps=frozenset({"server-time", "multi-prefix", "absent"})
    )
    assert feed(state, ":srv CAP * LS * :multi-prefix sasl=PLAIN") == []
    assert sent(state) == []
    feed(state, ":srv CAP * LS :server-time away-notify")
    assert sent(state) == ["CAP REQ :multi-prefix server-time"]
    events = feed(state, ":srv CAP * ACK :multi-prefix server-time")
    assert sent(state) == ["CAP END"]
    assert events == [ev.CapsChanged(frozenset({"multi-prefix", "server-time"}))]
    assert state.available_caps == {
        "multi-prefix": "",
        "sasl": "PLAIN",
        "server-time": "",
        "away-notify": "",
    }


def test_cap_nak_still_ends_negotiation() -> None:
    state = IrcConnectionState("me", "u", "r", wanted_caps=frozenset({"server-time"}))
    feed(state, ":srv CAP * LS :server-time")
    sent(state)
    assert feed(state, ":srv CAP * NAK :server-time") == [ev.CapsChanged(frozenset())]
    assert sent(state) == ["CAP END"]


def test_no_wanted_caps_ends_at_once() -> None:
    state = IrcConnectionState("me", "u", "r", wanted_caps=frozenset())
    feed(state, ":srv CAP * LS :server-time")
    assert sent(state) == ["CAP END"]


def _sasl_until_authenticate(user: str, password: str) -> IrcConnectionState:
    state = IrcConnectionState("me", "u", "r", sasl_plain=(user, password), wanted_caps=frozenset())
    feed(state, ":srv CAP * LS :sasl=PLAIN,EXTERNAL")
    assert sent(state) == ["CAP REQ sasl"]
    feed(state, ":srv CAP me ACK :sasl")
    assert sent(state) == ["AUTHENTICATE PLAIN"]
    feed(state, "AUTHENTICATE +")
    return state


def test_sasl_plain_success() -> None:
    state = _sasl_until_authenticate("alice", "secret")
    assert sent(state) == ["AUTHENTICATE " + base64.b64encode(b"alice\0alice\0secret").decode()]
    events = feed(state, ":srv 900 me me!u@h alice :You are now logged in", ":srv 903 me :SASL ok")
    assert events[1:] == [
        ev.SaslResult(True, "903", "SASL ok"),
        ev.CapsChanged(frozenset({"sasl"})),
    ]
    assert sent(state) == ["CAP END"]


@pytest.mark.parametrize(
    ("password_len", "chunks"),
    [
        (10, 1),
        (294, 1),  # a payload of exactly 400 base64 bytes: a lone "+" must follow
        (295, 2),
        (700, 3),
    ],
)
def test_sasl_payload_is_chunked_by_400(password_len: int, chunks: int) -> None:
    state = _sasl_until_authenticate("al", "p" * password_len)
    lines = sent(state)
    payload = base64.b64encode(b"al\0al\0" + b"p" * password_len).decode()
    data = [line.removeprefix("AUTHENTICATE ") for line in lines]
    assert len([d for d in data if d != "+"]) == chunks
    assert "".join(d for d in data if d != "+") == payload
    assert all(len(d) <= 400 for d in data)
    assert (data[-1] == "+") == (len(payload) % 400 == 0)


@pytest.mark.parametrize("code", ["904", "905", "906"])
def test_sasl_failure_ends_negotiation(code: str) -> None:
    state = _sasl_until_authenticate("alice", "wrong")
    sent(state)
    events = feed(state, f":srv {code} me :SASL failed")
    assert events[0] == ev.SaslResult(False, code, "SASL failed")
    assert sent(state) == ["CAP END"]


def test_sasl_unavailable_is_reported() -> None:
    state = IrcConnectionState("me", "u", "r", sasl_plain=("a", "b"), wanted_caps=frozenset())
    events = feed(state, ":srv CAP * LS :sasl=EXTERNAL")
    assert events[0] == ev.SaslResult(False, "", "the server offers no SASL PLAIN")
    assert sent(state) == ["CAP END"]


@pytest.mark.parametrize(
    ("attempt", "expected"),
    [(1, "bob_"), (2, "bob__"), (3, "bob1"), (4, "bob2"), (11, "bob9")],
)
def test_nick_candidates(attempt: int, expected: str) -> None:
    assert nick_candidate("bob", attempt) == expected


def test_nick_in_use_during_registration_retries_then_gives_up() -> None:
    state = IrcConnectionState("bob", "u", "r")
    events = feed(state, ":srv 433 * bob :Nickname is already in use")
    assert events == [ev.NickRetry(Nick("bob"), Nick("bob_"), "433", "in use")]
    assert sent(state) == ["NICK bob_"]
    events = feed(state, ":srv 432 * bob_ :Erroneous", ":srv 436 * bob__ :Collision")
    assert [e.retry for e in events if isinstance(e, ev.NickRetry)] == ["bob__", "bob1"]
    for _ in range(8):
        feed(state, ":srv 433 * x :in use")
    assert sent(state)[-1] == "NICK bob9"
    assert feed(state, ":srv 433 * bob9 :in use") == [
        ev.RegistrationFailed("nick 'bob' and its variants refused")
    ]


def test_nick_in_use_after_registration_is_a_reply() -> None:
    state = registered()
    assert feed(state, ":srv 433 me taken :in use") == [
        ev.ServerReply("433", ("taken", "in use"), "srv")
    ]
    assert sent(state) == []


def test_ping_pong_and_error() -> None:
    state = IrcConnectionState("me", "u", "r")
    assert feed(state, "PING :cookie 1") == []
    assert sent(state) == ["PONG :cookie 1"]
    assert feed(state, ":srv PONG srv :tok") == [ev.PongReceived("tok")]
    assert feed(state, "ERROR :Closing link") == [ev.ServerError("Closing link")]
    assert state.phase == "closed"


# --- ISUPPORT and names --------------------------------------------------------------


def test_isupport() -> None:
    state = IrcConnectionState("me", "u", "r")
    feed(
        state,
        ":srv 005 me CHANTYPES=#& PREFIX=(qov)~@+ NICKLEN=30 :are supported",
        ":srv 005 me CASEMAPPING=ascii NETWORK=Example\\x20Net CHANMODES=beI,k,l,imnst :ok",
    )
    info = state.isupport
    assert info.prefix == (("q", "~"), ("o", "@"), ("v", "+"))
    assert (info.chantypes, info.nicklen, info.casemapping) == ("#&", 30, "ascii")
    assert (info.network, info.chanmodes) == ("Example Net", ("beI", "k", "l", "imnst"))
    feed(state, ":srv 005 me -NICKLEN -PREFIX :ok")
    assert state.isupport.nicklen is None and state.isupport.prefix == ISupport().prefix


@pytest.mark.parametrize(
    ("name", "casemapping", "expected"),
    [
        ("Nick[A]\\~", "rfc1459", "nick{a}|^"),
        ("Nick[A]\\~", "strict-rfc1459", "nick{a}|~"),
        ("Nick[A]\\~", "ascii", "nick[a]\\~"),
        ("#CAFÉ", "ascii", "#cafÉ"),
        ("#CAFÉ", "rfc8265", "#café"),
        ("#Chan", "unknown", "#chan"),
    ],
)
def test_casefold(name: str, casemapping: str, expected: str) -> None:
    assert casefold(name, casemapping) == expected


def test_own_nick_comparison_uses_casemapping() -> None:
    state = registered()
    assert state.is_own("ME") and not state.is_own("me_")


# --- the event stream ----------------------------------------------------------------

T0 = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
ALICE = Prefix("alice", "a", "host")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            ":alice!a@host PRIVMSG #chan :hi all",
            ev.MessageReceived(ALICE, "#chan", "hi all", "privmsg", Channel("#chan")),
        ),
        (
            ":alice!a@host PRIVMSG me :psst",
            ev.MessageReceived(ALICE, "me", "psst", "privmsg", None),
        ),
        (":alice!a@host NOTICE me :note", ev.MessageReceived(ALICE, "me", "note", "notice", None)),
        (
            ":alice!a@host PRIVMSG #chan :\x01ACTION waves\x01",
            ev.MessageReceived(ALICE, "#chan", "waves", "action", Channel("#chan")),
        ),
        (
            ":alice!a@host PRIVMSG #chan :\x01ACTION no end",
            ev.MessageReceived(ALICE, "#chan", "no end", "action", Channel("#chan")),
        ),
        (
            ":alice!a@host PRIVMSG @#chan :ops",
            ev.MessageReceived(ALICE, "@#chan", "ops", "privmsg", Channel("#chan")),
        ),
        (
            ":me!u@h PRIVMSG #chan :echo",
            ev.MessageReceived(
                Prefix("me", "u", "h"), "#chan", "echo", "privmsg", Channel("#chan"), own=True
            ),
        ),
        (
            "@time=2024-01-02T03:04:05.678Z;msgid=abc;account=al :alice!a@host PRIVMSG #chan :t",
            ev.MessageReceived(
                ALICE, "#chan", "t", "privmsg", Channel("#chan"), time=T0, msgid="abc", account="al"
            ),
        ),
        (
            "@time=garbage :alice!a@host PRIVMSG #chan :t",
            ev.MessageReceived(ALICE, "#chan", "t", "privmsg", Channel("#chan")),
        ),
        (":alice!a@host NOTICE me :\x01VERSION irssi\x01", ev.CtcpReply(ALICE, "VERSION", "irssi")),
        (
            ":alice!a@host PRIVMSG me :\x01TIME\x01",
            ev.CtcpRequest(ALICE, "me", "TIME", "", answered=False),
        ),
        (":alice!a@host JOIN #chan", ev.Joined(Channel("#chan"), Nick("alice"), ALICE)),
        (
            "@account=al :alice!a@host JOIN :#chan",
            ev.Joined(Channel("#chan"), Nick("alice"), ALICE, account="al"),
        ),
        (
            ":alice!a@host JOIN #chan al :Alice A",
            ev.Joined(Channel("#chan"), Nick("alice"), ALICE, "al", "Alice A"),
        ),
        (
            ":alice!a@host JOIN #chan * :Alice A",
            ev.Joined(Channel("#chan"), Nick("alice"), ALICE, None, "Alice A"),
        ),
        (
            ":me!u@h JOIN #chan",
            ev.Joined(Channel("#chan"), Nick("me"), Prefix("me", "u", "h"), own=True),
        ),
        (":alice!a@host PART #chan :bye", ev.Parted(Channel("#chan"), Nick("alice"), "bye")),
        (":alice!a@host PART #chan", ev.Parted(Channel("#chan"), Nick("alice"), "")),
        (":alice!a@host QUIT :Quit: zzz", ev.Quit(Nick("alice"), "Quit: zzz")),
        (
            ":alice!a@host KICK #chan me :spam",
            ev.Kicked(Channel("#chan"), Nick("me"), Nick("alice"), "spam", own=True),
        ),
        (
            ":alice!a@host KICK #chan bob",
            ev.Kicked(Channel("#chan"), Nick("bob"), Nick("alice"), ""),
        ),
        (":alice!a@host NICK :alicia", ev.NickChanged(Nick("alice"), Nick("alicia"))),
        (
            ":alice!a@host TOPIC #chan :new topic",
            ev.Topic(Channel("#chan"), "new topic", "alice", live=True),
        ),
        (":srv 332 me #chan :the topic", ev.Topic(Channel("#chan"), "the topic")),
        (
            ":srv 333 me #chan alice!a@host 1704164645",
            ev.TopicSetBy(Channel("#chan"), "alice", datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        ),
        (":srv 333 me #chan alice", ev.TopicSetBy(Channel("#chan"), "alice", None)),
        (
            ":alice!a@host INVITE me :#secret",
            ev.Invited(Channel("#secret"), Nick("alice"), Nick("me")),
        ),
        (":me MODE me :+iw", ev.UserModeChanged(Nick("me"), "+iw")),
        (":srv 372 me :- motd line", ev.ServerReply("372", ("- motd line",), "srv")),
        (
            ":srv 401 me ghost :No such nick",
            ev.ServerReply("401", ("ghost", "No such nick"), "srv"),
        ),
        (":alice!a@host AWAY :gone", ev.AwayChanged(Nick("alice"), "gone")),
        (":alice!a@host AWAY", ev.AwayChanged(Nick("alice"), None)),
        (":me!u@h AWAY :brb", ev.AwayChanged(Nick("me"), "brb", own=True)),
        (
            ":srv 352 me #chan bob b.host srv bob G@ :0 Bob Smith",
            ev.WhoEntry("#chan", Prefix("bob", "bob", "b.host"), True, "Bob Smith"),
        ),
        (
            ":srv 352 me * carol c.host srv carol H :0 Carol",
            ev.WhoEntry("*", Prefix("carol", "carol", "c.host"), False, "Carol"),
        ),
        (":srv 352 me #chan bob", ev.Unhandled("352", ("me", "#chan", "bob"), "srv")),
        (
            ":alice!a@host CHGHOST new host",
            ev.Unhandled("CHGHOST", ("new", "host"), "alice!a@host"),
        ),
        (":alice!a@host PRIVMSG #chan", ev.Unhandled("PRIVMSG", ("#chan",), "alice!a@host")),
        (":srv 332 me", ev.Unhandled("332", ("me",), "srv")),
    ],
)
def test_events(line: str, expected: ev.Event) -> None:
    assert feed(registered(), line) == [expected]


@pytest.mark.parametrize(
    ("request_text", "reply"),
    [
        ("\x01VERSION\x01", "NOTICE alice :\x01VERSION Passerelle 1.0\x01"),
        ("\x01PING 12345\x01", "NOTICE alice :\x01PING 12345\x01"),
        ("\x01ping 1\x01", "NOTICE alice :\x01PING 1\x01"),
    ],
)
def test_ctcp_requests_are_answered(request_text: str, reply: str) -> None:
    state = registered(version="Passerelle 1.0")
    [event] = feed(state, f":alice!a@host PRIVMSG me :{request_text}")
    assert isinstance(event, ev.CtcpRequest) and event.answered
    assert sent(state) == [reply]


def test_ctcp_ping_echo_is_bounded() -> None:
    state = registered()
    feed(state, ":alice!a@host PRIVMSG me :\x01PING " + "x" * 400 + "\x01")
    [reply] = sent(state)
    assert len(reply) < 400


def test_own_nick_change_is_tracked() -> None:
    state = registered()
    assert feed(state, ":me!u@h NICK :me2") == [ev.NickChanged(Nick("me"), Nick("me2"), own=True)]
    assert state.nick == "me2"


def test_names_are_collected_until_end_of_names() -> None:
    state = registered()
    assert (
        feed(
            state, ":srv 353 me = #Chan :~@owner +voiced plain", ":srv 353 me = #chan :%half!h@host"
        )
        == []
    )
    [event] = feed(state, ":srv 366 me #chan :End of /NAMES list.")
    assert event == ev.ChannelMembers(
        Channel("#Chan"),
        (
            Member(Nick("owner"), "~@"),
            Member(Nick("voiced"), "+"),
            Member(Nick("plain")),
            Member(Nick("half"), "%"),
        ),
        (Prefix("half", "h", "host"),),  # userhost-in-names
    )
    assert feed(state, ":srv 366 me #empty :End") == [ev.ChannelMembers(Channel("#empty"), ())]


def test_messages_in_a_history_batch_are_history() -> None:
    state = registered()
    assert feed(state, ":srv BATCH +h1 chathistory :#chan", ":srv BATCH +o1 other") == []
    old, other = feed(
        state,
        "@batch=h1;time=2024-01-02T03:04:05.000Z;msgid=m1 :bob!b@h PRIVMSG #chan :old",
        "@batch=o1 :bob!b@h PRIVMSG #chan :not history",
    )
    assert isinstance(old, ev.MessageReceived) and old.history and old.msgid == "m1"
    assert old.time == datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert isinstance(other, ev.MessageReceived) and not other.history
    feed(state, ":srv BATCH -h1")
    [live] = feed(state, "@batch=h1 :bob!b@h PRIVMSG #chan :live")
    assert isinstance(live, ev.MessageReceived) and not live.history


def test_open_batches_are_bounded() -> None:
    state = registered()
    for n in range(1000):
        feed(state, f":srv BATCH +b{n} chathistory #chan")
    assert len(state._batches) <= 64


@pytest.mark.parametrize(
    ("line", "changes"),
    [
        (":op MODE #chan +o alice", (ModeChange(True, "o", "alice", "member"),)),
        (
            ":op MODE #chan +qaohv a b c d e",
            tuple(ModeChange(True, m, n, "member") for m, n in zip("qaohv", "abcde", strict=True)),
        ),
        (
            ":op MODE #chan +ov-b alice bob *!*@spam",
            (
                ModeChange(True, "o", "alice", "member"),
                ModeChange(True, "v", "bob", "member"),
                ModeChange(False, "b", "*!*@spam", "list"),
            ),
        ),
        (
            ":op MODE #chan +kl-l key 10",
            (
                ModeChange(True, "k", "key", "param"),
                ModeChange(True, "l", "10", "param"),
                ModeChange(False, "l", None, "flag"),
            ),
        ),
        (
            ":op MODE #chan +mnt",
            (ModeChange(True, "m"), ModeChange(True, "n"), ModeChange(True, "t")),
        ),
        (":op MODE #chan +o", (ModeChange(True, "o", None, "member"),)),
    ],
)
def test_channel_modes(line: str, changes: tuple[ModeChange, ...]) -> None:
    [event] = feed(registered(), line)
    assert event == ev.ChannelModeChanged(Channel("#chan"), "op", changes)


_COMMANDS = ["CAP", "AUTHENTICATE", "PING", "PONG", "ERROR", "PRIVMSG", "NOTICE", "JOIN", "PART",
             "QUIT", "KICK", "NICK", "TOPIC", "MODE", "INVITE", "AWAY", "BATCH", "001", "005",
             "332", "333", "352", "353", "366", "432", "433", "903", "904", "999", "FOO"]  # fmt: skip
_PARAM = st.lists(
    st.sampled_from(["\x01", "ACTION", "PING", " ", "*", "#", "@", "+o", "me", "x", "5", "\0"]),
    max_size=6,
).map("".join)


@given(
    st.lists(
        st.builds(
            Message,
            st.sampled_from(_COMMANDS),
            st.lists(_PARAM, max_size=5).map(tuple),
            st.none() | st.sampled_from(["srv", "me!u@h", "a!b@c", "!@", ""]),
            st.dictionaries(
                st.sampled_from(["time", "msgid", "account", "batch"]), _PARAM, max_size=2
            ),
        ),
        max_size=20,
    ),
    st.booleans(),
)
def test_receive_never_raises(messages: list[Message], with_sasl: bool) -> None:
    state = IrcConnectionState("me", "u", "r", sasl_plain=("a", "b") if with_sasl else None)
    for msg in messages:
        state.receive(msg)
        for line in state.data_to_send():
            assert line.endswith(b"\r\n") and b"\n" not in line[:-1] and len(line) <= 512
