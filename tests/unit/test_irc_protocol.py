"""The IRC line codec and message splitting: tables, then properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from legacy_plugins.irc.protocol import (
    IrcProtocolError,
    LocalProtocolError,
    Message,
    loggable,
    parse_line,
    serialize,
    split_message,
)


def M(command: str, *params: str, source: str | None = None, **tags: str) -> Message:
    return Message(command, params, source, tags)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"PING :irc.example\r\n", M("PING", "irc.example")),
        (b"ping token", M("PING", "token")),
        (
            b":n!u@h PRIVMSG #chan :hello world\r\n",
            M("PRIVMSG", "#chan", "hello world", source="n!u@h"),
        ),
        (b":srv 001 me :Welcome home\n", M("001", "me", "Welcome home", source="srv")),
        (b"PRIVMSG #a :", M("PRIVMSG", "#a", "")),
        (b"PRIVMSG #a ::)", M("PRIVMSG", "#a", ":)")),
        (b"PRIVMSG  #a   b  ", M("PRIVMSG", "#a", "b")),
        (b"   :src   MODE #a +o   nick", M("MODE", "#a", "+o", "nick", source="src")),
        (
            b"CAP * LS * :sasl=PLAIN multi-prefix",
            M("CAP", "*", "LS", "*", "sasl=PLAIN multi-prefix"),
        ),
        (
            b"@time=2024-01-02T03:04:05.678Z :n PRIVMSG me :x",
            M("PRIVMSG", "me", "x", source="n", time="2024-01-02T03:04:05.678Z"),
        ),
        (b"@a;b=;c=1 PING", M("PING", a="", b="", c="1")),
        (b"@k=semi\\:space\\sback\\\\cr\\rlf\\n PING", M("PING", k="semi;space back\\cr\rlf\n")),
        (b"@k=\\x\\ PING", M("PING", k="x")),
        (b"@=v;k=1;k=2 PING", M("PING", k="2")),
        (b"PRIVMSG #a :caf\xc3\xa9", M("PRIVMSG", "#a", "caf\u00e9")),
        (b"PRIVMSG #a :caf\xe9", M("PRIVMSG", "#a", "caf\u00e9")),
        (b"PRIVMSG #a :tab\there", M("PRIVMSG", "#a", "tab\there")),
    ],
)
def test_parse_line(raw: bytes, expected: Message) -> None:
    assert parse_line(raw) == expected


def test_parse_line_fallback_encoding() -> None:
    assert parse_line(b"PRIVMSG #a :\x80uro", "cp1252").params[1] == "\u20acuro"
    assert parse_line(b"PRIVMSG #a :\xff", "ascii").params[1] == "\ufffd"


@pytest.mark.parametrize(
    "raw",
    [b"", b"\r\n", b"   ", b":src", b":src ", b": PING", b"@a=b", b"@a=b ", b"@a=b :src"],
)
def test_parse_line_rejects_non_messages(raw: bytes) -> None:
    with pytest.raises(IrcProtocolError):
        parse_line(raw)


@given(st.binary(max_size=600))
def test_parse_line_raises_nothing_but_protocol_errors(raw: bytes) -> None:
    try:
        msg = parse_line(raw)
    except IrcProtocolError:
        return
    assert msg.command and msg.command == msg.command.upper()


@pytest.mark.parametrize(
    ("msg", "expected"),
    [
        (M("PING", "token"), b"PING token\r\n"),
        (M("PRIVMSG", "#a", "hello world"), b"PRIVMSG #a :hello world\r\n"),
        (M("PRIVMSG", "#a", ":)"), b"PRIVMSG #a ::)\r\n"),
        (M("PRIVMSG", "#a", ""), b"PRIVMSG #a :\r\n"),
        (M("QUIT"), b"QUIT\r\n"),
        (M("NOTICE", "b", "x", source="a!u@h"), b":a!u@h NOTICE b x\r\n"),
        (M("TAGMSG", "#a", **{"+typing": "active"}), b"@+typing=active TAGMSG #a\r\n"),
        (M("PING", k="a;b c\\\r\n", flag=""), b"@k=a\\:b\\sc\\\\\\r\\n;flag PING\r\n"),
        (M("PRIVMSG", "#a", "\u00e9"), "PRIVMSG #a \u00e9\r\n".encode()),
    ],
)
def test_serialize(msg: Message, expected: bytes) -> None:
    assert serialize(msg) == expected


@pytest.mark.parametrize(
    "msg",
    [
        M("PRIVMSG", "#a", "hi\r\nQUIT :bye"),
        M("PRIVMSG", "#a", "hi\nQUIT"),
        M("PRIVMSG", "#a", "hi\rQUIT"),
        M("PRIVMSG", "#a", "nul\0"),
        M("PRIVMSG", "#a\r\nQUIT", "x"),
        M("PRIVMSG", "#a b", "x"),
        M("PRIVMSG", ":a", "x"),
        M("PRIVMSG", "", "x"),
        M("PRIV MSG", "x"),
        M("PRIVMSG\r\nQUIT", "x"),
        M("", "x"),
        M("12", "x"),
        M("PING", "x", source="a b"),
        M("PING", "x", source=""),
        M("PING", **{"a b": "1"}),
        M("PING", **{"a=b": "1"}),
        M("PING", **{"a;b": "1"}),
        M("PING", **{"": "1"}),
        M("PRIVMSG", "#a", "x" * 500),
        M("PING", k="x" * 8200),
        M("PRIVMSG", "#a", "\ud800"),
    ],
)
def test_serialize_refuses_invalid_lines(msg: Message) -> None:
    with pytest.raises(LocalProtocolError):
        serialize(msg)


def test_serialize_line_limit_is_512_bytes_with_crlf_and_excludes_tags() -> None:
    text = "a " + "x" * (512 - len("PRIVMSG #a :a \r\n"))
    assert len(serialize(M("PRIVMSG", "#a", text, k="v" * 4000))) > 512
    with pytest.raises(LocalProtocolError):
        serialize(M("PRIVMSG", "#a", text + "x"))


_TOKEN = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0 "), min_size=1)
_TOKEN = _TOKEN.filter(lambda t: not t.startswith(":"))
_TRAILING = st.text(st.characters(codec="utf-8", exclude_characters="\r\n\0"))
_MESSAGES = st.builds(
    lambda command, middle, trailing, source: Message(command, (*middle, *trailing), source),
    st.sampled_from(["PRIVMSG", "NOTICE", "001", "MODE", "JOIN"]),
    st.lists(_TOKEN, max_size=4),
    st.lists(_TRAILING, max_size=1),
    st.none() | _TOKEN,
)


@given(_MESSAGES)
def test_serialize_then_parse_round_trips(msg: Message) -> None:
    try:
        line = serialize(msg)
    except LocalProtocolError:  # only for being over 512 bytes
        assert len(" ".join(msg.params).encode()) > 400
        return
    assert parse_line(line) == msg


# --- split_message -------------------------------------------------------------------

PREFIX = len("nick!user@host.example")
LIMIT = 512 - len(f":{'x' * PREFIX} PRIVMSG #chan :\r\n")  # 471 bytes of text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", ["hello"]),
        ("", []),
        ("\n\n  \n", []),
        ("one\ntwo", ["one", "two"]),
        ("one\r\ntwo\rthree\n\nfour", ["one", "two", "three", "four"]),
        ("hi\r\nQUIT :bye", ["hi", "QUIT :bye"]),
        ("hi\x00QUIT\x01ACTION x\x01", ["hiQUITACTION x"]),
        ("tab\there", ["tab here"]),
        ("line\u2028sep", ["line", "sep"]),
        (
            "\x02bold\x02 \x0304red\x03 \x1ditalic\x1d",
            ["\x02bold\x02 \x0304red\x03 \x1ditalic\x1d"],
        ),
        ("x" * LIMIT, ["x" * LIMIT]),
        ("x" * (LIMIT + 1), ["x" * LIMIT, "x"]),
        ("x" * 2000, ["x" * LIMIT] * 4 + ["x" * (2000 - 4 * LIMIT)]),
        ("a " * 300, ["a " * 235 + "a", "a " * 64]),
        ("word " + "x" * LIMIT, ["word", "x" * LIMIT]),
        ("x" * (LIMIT - 1) + " y", ["x" * (LIMIT - 1), "y"]),
        ("\u00e9" * 300, ["\u00e9" * (LIMIT // 2), "\u00e9" * (300 - LIMIT // 2)]),
        ("\u20ac" * 200, ["\u20ac" * (LIMIT // 3), "\u20ac" * (200 - LIMIT // 3)]),
        ("\U0001f600" * 150, ["\U0001f600" * (LIMIT // 4), "\U0001f600" * (150 - LIMIT // 4)]),
        ("x" * (LIMIT - 1) + "e\u0301", ["x" * (LIMIT - 1), "e\u0301"]),
        (
            "x" * (LIMIT - 5) + "\U0001f469\u200d\U0001f4bb",
            ["x" * (LIMIT - 5), "\U0001f469\u200d\U0001f4bb"],
        ),
        (
            "x" * (LIMIT - 10) + "\U0001f1eb\U0001f1f7\U0001f1e9\U0001f1ea",
            ["x" * (LIMIT - 10) + "\U0001f1eb\U0001f1f7", "\U0001f1e9\U0001f1ea"],
        ),
        ("x" * (LIMIT - 6) + "\U0001f1eb\U0001f1f7", ["x" * (LIMIT - 6), "\U0001f1eb\U0001f1f7"]),
        ("x" * (LIMIT - 2) + "\x0304red", ["x" * (LIMIT - 2), "\x0304red"]),
    ],
)
def test_split_message(text: str, expected: list[str]) -> None:
    assert split_message("#chan", text, prefix_len=PREFIX) == expected


def test_split_message_accounts_for_command_and_action() -> None:
    notice = split_message("#chan", "x" * 500, command="NOTICE", prefix_len=PREFIX)
    assert [len(chunk) for chunk in notice] == [LIMIT + 1, 500 - LIMIT - 1]
    action = split_message("#chan", "waves " * 100, prefix_len=PREFIX, action=True)
    assert all(chunk.startswith("\x01ACTION waves") and chunk.endswith("\x01") for chunk in action)
    assert max(len(chunk.encode()) for chunk in action) <= LIMIT


@pytest.mark.parametrize(
    ("target", "command", "prefix_len"),
    [
        ("#a b", "PRIVMSG", 10),
        ("#a\r\nQUIT", "PRIVMSG", 10),
        ("", "PRIVMSG", 10),
        (":a", "PRIVMSG", 10),
        ("#a", "PRIV MSG", 10),
        ("#a", "PRIVMSG", 500),
    ],
)
def test_split_message_refuses(target: str, command: str, prefix_len: int) -> None:
    with pytest.raises(LocalProtocolError):
        split_message(target, "x", command=command, prefix_len=prefix_len)


_TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=3000) | st.text(
    "ab \n\u00e9\U0001f600\u200d\u0301", max_size=3000
)


def _visible(text: str) -> str:
    return "".join(char for char in text if not char.isspace() and char >= " ")


_TARGET = st.text(st.characters(codec="ascii", min_codepoint=0x21), max_size=50).map("#".__add__)


@given(_TEXT, _TARGET, st.integers(1, 100))
def test_split_chunks_fit_and_keep_every_character(text: str, target: str, prefix_len: int) -> None:
    chunks = split_message(target, text, prefix_len=prefix_len)
    for chunk in chunks:
        line = serialize(Message("PRIVMSG", (target, chunk), "n" * prefix_len))
        assert len(line) <= 512
        assert chunk.strip()
    dropped = "\x00\x01\x05\x06\x07\x08\x0b\x0c\x0e\x10\x12\x13\x14\x15\x17\x18\x19\x1a\x1b\x1c"
    assert _visible("".join(chunks)) == _visible(text.translate(dict.fromkeys(map(ord, dropped))))


@given(st.lists(st.text("abcdé€😀", min_size=1, max_size=40), max_size=200))
def test_split_rejoins_to_the_original_words(words: list[str]) -> None:
    text = " ".join(words)
    chunks = split_message("#chan", text, prefix_len=PREFIX)
    assert [word for chunk in chunks for word in chunk.split(" ")] == words


@pytest.mark.parametrize(
    ("line", "logged"),
    [
        (b"PASS hunter2\r\n", "PASS [redacted]"),
        (b"AUTHENTICATE PLAIN\r\n", "AUTHENTICATE PLAIN"),
        (b"AUTHENTICATE Zm9vAGZvbwBiYXI=\r\n", "AUTHENTICATE [redacted]"),
        (b":srv AUTHENTICATE +\r\n", ":srv AUTHENTICATE +"),
        (b"@a=b :x!y@z pass secret", "@a=b :x!y@z pass [redacted]"),
        (b"PRIVMSG NickServ :IDENTIFY alice hunter2\r\n", "PRIVMSG NickServ :[redacted]"),
        (b"PRIVMSG #chan :hello\r\n", "PRIVMSG #chan :hello"),
        (b"", ""),
    ],
)
def test_loggable_redacts_secrets(line: bytes, logged: str) -> None:
    assert loggable(line) == logged


@given(st.binary(max_size=600))
def test_loggable_never_raises(line: bytes) -> None:
    assert isinstance(loggable(line), str)
