"""Which messages of a room's recent history go into its MUC archive (`backfill_messages`),
encrypted ones included (decrypted by a stand-in for the session's decryption)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import NamedTuple

import pytest

from gateway.formatting import StyledText
from legacy_plugins.matrix.events import Encrypted, Membership, Message, Reaction, TimelineEvent
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.translate import backfill_messages

ROOM = RoomId("!r:example.org")
BOB = UserId("@bob:example.org")


class Bound(NamedTuple):
    id: str
    timestamp: datetime


def msg(n: int, replaces: str | None = None, prefix: str = "$m") -> Message:
    return Message(
        ROOM,
        EventId(f"{prefix}{n}"),
        BOB,
        n * 1000,
        "text",
        StyledText.plain(f"message {n}"),
        replaces=EventId(replaces) if replaces else None,
    )


def at(n: float) -> datetime:
    return datetime.fromtimestamp(n, UTC)


def enc(n: int) -> Encrypted:
    return Encrypted(ROOM, EventId(f"$e{n}"), BOB, n * 1000, session_id="s")


CLEAR: dict[str, TimelineEvent | None] = {
    "$e6": msg(6, prefix="$e"),  # a message whose key is held
    "$e8": msg(8, replaces="$m5", prefix="$e"),  # an edit: left out as clear edits are
    "$e9": Reaction(ROOM, EventId("$e9"), BOB, 9000, EventId("$m1"), "👍"),
    "$e10": None,  # held nothing to show
}
"""What the stand-in decryption gives; events not here cannot be decrypted ($e7)."""


class Decrypt:
    """The session's decryption as `backfill_messages` sees it, recording its calls."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def __call__(self, event: Encrypted) -> TimelineEvent | None:
        self.asked.append(event.event_id)
        if event.event_id in CLEAR:
            return CLEAR[event.event_id]
        return dataclasses.replace(event, reason="no key")


HISTORY: list[TimelineEvent] = [
    Membership(ROOM, BOB, BOB, "join"),
    msg(1),
    msg(2),
    msg(3, replaces="$m2"),
    msg(4),
    msg(5),
    enc(6),
    enc(7),
    enc(8),
    enc(9),
    enc(10),
]

ENCRYPTED = ["$e6", "$e7", "$e8", "$e9", "$e10"]
LATEST = ["$m4", "$m5", "$e6", "$e7!"]
CASES = [
    # after, before, already delivered → archived: a message's event id, "!" after an
    # encrypted event archived as a notice; the encrypted events decryption was asked for
    (None, None, set(), ["$m1", "$m2", *LATEST], ENCRYPTED),
    (Bound("$m2", at(2)), None, set(), LATEST, ENCRYPTED),
    (None, Bound("$m4", at(4)), set(), ["$m1", "$m2"], []),
    (Bound("$m1", at(1)), Bound("$m5", at(5)), set(), ["$m2", "$m4"], []),
    (Bound("$gone", at(2.5)), None, set(), LATEST, ENCRYPTED),  # not in the page: by time
    (None, Bound("$gone", at(4)), set(), ["$m1", "$m2"], []),
    (None, None, {"$m4", "$m1", "$e7"}, ["$m2", "$m5", "$e6"], ["$e6", *ENCRYPTED[2:]]),
    (Bound("$e6", at(6)), Bound("$e8", at(8)), set(), ["$e7!"], ["$e7"]),
    (Bound("$e7", at(7)), None, set(), [], ENCRYPTED[2:]),  # edit, reaction, nothing
]


@pytest.mark.parametrize(("after", "before", "delivered", "expected", "asked"), CASES)
def test_backfill_messages(
    after: Bound | None,
    before: Bound | None,
    delivered: set[str],
    expected: list[str],
    asked: list[str],
) -> None:
    decrypt = Decrypt()
    got = backfill_messages(HISTORY, after, before, delivered.__contains__, decrypt)
    assert [m.event_id + ("!" if isinstance(m, Encrypted) else "") for m in got] == expected
    assert decrypt.asked == asked


def test_archived_notice_keeps_why() -> None:
    (notice,) = backfill_messages([enc(7)], None, None, lambda _e: False, Decrypt())
    assert isinstance(notice, Encrypted) and notice.reason == "no key" and notice.ts == 7000


def test_decrypted_message_is_the_clear_one() -> None:
    (clear,) = backfill_messages([enc(6)], None, None, lambda _e: False, Decrypt())
    assert clear == CLEAR["$e6"]


def test_empty_history() -> None:
    nothing = backfill_messages(
        [], Bound("$x", at(1)), Bound("$y", at(2)), lambda _e: False, Decrypt()
    )
    assert nothing == []
