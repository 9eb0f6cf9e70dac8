"""IRCv3 chathistory back-fill as IRC lines in and out: the connection state machine
negotiates the capability and marks batch messages as history; `Backfill` asks once per
JOIN of ours and keeps out what the archive has. Against a real server (Ergo):
`tests/e2e/test_irc_ergo.py`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from legacy_plugins.irc import events as ev
from legacy_plugins.irc.chathistory import Anchor, Backfill, request, timestamp
from legacy_plugins.irc.connection import IrcConnectionState
from legacy_plugins.irc.events import Channel, ISupport
from legacy_plugins.irc.protocol import parse_line, serialize

T0 = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)


class Rig:
    """A connection that negotiated `caps`, a Backfill, and an archive (msgid -> time)."""

    def __init__(self, caps: str, count: int = 50, isupport: str = "") -> None:
        self.state = IrcConnectionState("me", "user", "Real")
        self.backfill = Backfill()
        self.count = count
        self.archive: dict[str, datetime] = {}
        self.kept: list[ev.MessageReceived] = []
        self.feed(f":srv CAP * LS :{caps}")
        self.sent = self.out()
        acked = self.sent[-1].removeprefix("CAP REQ :") if self.sent[-1:] else ""
        self.feed(f":srv CAP me ACK :{acked}", ":srv 001 me :Welcome")
        self.feed(f":srv 005 me CHANTYPES=# {isupport} :are supported")
        self.out()

    def out(self) -> list[str]:
        return [line.decode().removesuffix("\r\n") for line in self.state.data_to_send()]

    def last(self, channel: Channel) -> Anchor | None:
        if not self.archive:
            return None
        msgid, when = max(self.archive.items(), key=lambda kv: kv[1])
        return Anchor(when, msgid)

    def feed(self, *lines: str) -> list[str]:
        """Receive lines; return what the client sends back (state machine + backfill)."""
        sent: list[str] = []
        for line in lines:
            for event in self.state.receive(parse_line(line.encode())):
                for msg in self.backfill.on_event(
                    event,
                    caps=self.state.enabled_caps,
                    isupport=self.state.isupport,
                    count=self.count,
                    last_archived=self.last,
                ):
                    sent.append(serialize(msg).decode().removesuffix("\r\n"))
                if isinstance(event, ev.MessageReceived) and self.backfill.is_new(
                    event, self.state.isupport, self.archive.__contains__
                ):
                    self.kept.append(event)
                    if event.msgid:
                        self.archive[event.msgid] = event.time or T0
        return sent


JOIN = (":me!u@h JOIN #chan", ":srv 353 me = #chan :me @bob", ":srv 366 me #chan :End")


def test_the_capability_is_requested_when_offered() -> None:
    rig = Rig("batch server-time message-tags draft/chathistory sasl")
    assert rig.sent == ["CAP REQ :batch draft/chathistory message-tags server-time"]
    assert "draft/chathistory" in rig.state.enabled_caps


@pytest.mark.parametrize(
    ("caps", "isupport", "expected"),
    [
        # empty archive: the newest messages, as many as configured
        ("batch draft/chathistory", "", ["CHATHISTORY LATEST #chan * 50"]),
        ("batch chathistory", "", ["CHATHISTORY LATEST #chan * 50"]),
        # the server's limit wins when lower
        ("batch chathistory", "CHATHISTORY=20", ["CHATHISTORY LATEST #chan * 20"]),
        ("batch chathistory", "CHATHISTORY=0", ["CHATHISTORY LATEST #chan * 50"]),
        # a server without it: nothing is asked
        ("batch server-time", "", []),
    ],
)
def test_one_request_after_the_member_list(caps: str, isupport: str, expected: list[str]) -> None:
    rig = Rig(caps, isupport=isupport)
    assert rig.feed(*JOIN) == expected
    assert rig.feed(":srv 366 me #chan :End") == []  # a later NAMES: no second request


def test_count_zero_never_asks() -> None:
    assert Rig("batch chathistory", count=0).feed(*JOIN) == []


def test_a_rejoin_asks_for_what_came_after_the_archive() -> None:
    rig = Rig("batch server-time message-tags chathistory msgid")
    rig.archive["m1"] = T0
    assert rig.feed(*JOIN) == [
        "CHATHISTORY LATEST #chan timestamp=2024-01-02T03:03:35.678Z 50"  # 30 s earlier
    ]


def test_msgid_reference_where_the_server_takes_no_timestamps() -> None:
    rig = Rig("batch chathistory", isupport="MSGREFTYPES=msgid")
    rig.archive["m1"] = T0
    assert rig.feed(*JOIN) == ["CHATHISTORY LATEST #chan msgid=m1 50"]


def test_the_batch_fills_the_archive_once() -> None:
    rig = Rig("batch server-time message-tags chathistory")
    rig.archive["m1"] = T0
    rig.feed(*JOIN)
    rig.feed(
        ":srv BATCH +b1 chathistory #chan",
        "@batch=b1;time=2024-01-02T03:04:05.678Z;msgid=m1 :bob!b@h PRIVMSG #chan :had it",
        "@batch=b1;time=2024-01-02T03:05:00.000Z;msgid=m2 :bob!b@h PRIVMSG #chan :new",
        "@batch=b1;time=2024-01-02T03:06:00.000Z;msgid=m2 :bob!b@h PRIVMSG #chan :again",
        "@batch=b1;time=2024-01-02T03:00:00.000Z :bob!b@h PRIVMSG #chan :old, no msgid",
        "@batch=b1;time=2024-01-02T03:07:00.000Z :bob!b@h PRIVMSG #chan :new, no msgid",
        ":srv BATCH -b1",
        "@time=2024-01-02T03:08:00.000Z;msgid=m3 :bob!b@h PRIVMSG #chan :live",
    )
    assert [(e.text, e.history, e.msgid, e.time) for e in rig.kept] == [
        ("new", True, "m2", datetime(2024, 1, 2, 3, 5, tzinfo=UTC)),
        ("new, no msgid", True, None, datetime(2024, 1, 2, 3, 7, tzinfo=UTC)),
        ("live", False, "m3", datetime(2024, 1, 2, 3, 8, tzinfo=UTC)),
    ]


@pytest.mark.parametrize(
    ("line", "kept"),
    [
        # Ergo's summaries of history events, as it sends them (no draft/event-playback)
        ("@batch=1;msgid=_v6p;time=2026-11-22T02:31:52.989Z "
         ":HistServ!HistServ@localhost PRIVMSG #chan :bob joined the channel", False),
        ("@batch=1;msgid=_ef6;time=2026-11-22T02:31:53.485Z "
         ":histserv!histserv@localhost PRIVMSG #chan :al left the channel", False),
        # somebody's messages, also from a user who calls herself HistServ
        ("@batch=1;msgid=wwy;time=2026-11-22T02:31:52.989Z :bob!~bob@h PRIVMSG #chan :one",
         True),
        ("@batch=1;msgid=x1;time=2026-11-22T02:31:52.989Z :HistServ!~u@h PRIVMSG #chan :hi",
         True),
        # live, not history: a user may have that nick and user name
        ("@msgid=x2;time=2026-11-22T02:31:52.989Z :HistServ!HistServ@h PRIVMSG #chan :live",
         True),
    ],
)  # fmt: skip
def test_a_servers_summaries_of_events_are_not_messages(line: str, kept: bool) -> None:
    rig = Rig("batch server-time message-tags draft/chathistory")
    rig.feed(*JOIN)
    rig.feed(":srv BATCH +1 chathistory #chan", line, ":srv BATCH -1")
    assert [e.text for e in rig.kept] == ([line.rsplit(" :", 1)[1]] if kept else [])


def test_every_reconnection_asks_again() -> None:
    rig = Rig("batch chathistory")
    assert rig.feed(*JOIN) == ["CHATHISTORY LATEST #chan * 50"]
    # the connection drops; the new one negotiates again, the same Backfill goes on
    rig.state = IrcConnectionState("me", "user", "Real")
    rig.feed(":srv CAP * LS :batch chathistory", ":srv CAP me ACK :batch chathistory")
    rig.feed(":srv 001 me :Welcome")
    rig.archive["m9"] = T0
    assert rig.feed(*JOIN) == ["CHATHISTORY LATEST #chan timestamp=2024-01-02T03:03:35.678Z 50"]


def test_a_part_before_the_member_list_cancels_the_request() -> None:
    rig = Rig("batch chathistory")
    rig.feed(JOIN[0], ":me!u@h PART #chan")
    assert rig.feed(*JOIN[1:]) == []


@pytest.mark.parametrize(
    ("when", "text"),
    [
        (T0, "2024-01-02T03:04:05.678Z"),
        (datetime(2024, 1, 2, 4, 4, 5, tzinfo=UTC).astimezone(), "2024-01-02T04:04:05.000Z"),
    ],
)
def test_timestamps_are_utc_with_milliseconds(when: datetime, text: str) -> None:
    assert timestamp(when) == text


@pytest.mark.parametrize("msgid", ["x y", ":x", "", None])
def test_a_msgid_that_cannot_be_a_parameter_is_not_used(msgid: str | None) -> None:
    only_msgids = ISupport(raw={"MSGREFTYPES": "msgid"})
    line = request(Channel("#c"), Anchor(T0, msgid), 5, only_msgids)
    assert line is not None and line.params == ("LATEST", "#c", "*", "5")
    serialize(line)  # a valid line


def test_no_request_for_a_count_of_zero() -> None:
    assert request(Channel("#c"), None, 0, ISupport()) is None
