"""Which messages of a room's recent history go into its MUC archive (`backfill_messages`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import NamedTuple

import pytest

from gateway.formatting import StyledText
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.translate import (
    Membership,
    Message,
    TimelineEvent,
    backfill_messages,
)

ROOM = RoomId("!r:example.org")
BOB = UserId("@bob:example.org")


class Bound(NamedTuple):
    id: str
    timestamp: datetime


def msg(n: int, replaces: str | None = None) -> Message:
    return Message(
        ROOM,
        EventId(f"$m{n}"),
        BOB,
        n * 1000,
        "text",
        StyledText(f"message {n}"),
        replaces=EventId(replaces) if replaces else None,
    )


def at(n: float) -> datetime:
    return datetime.fromtimestamp(n, UTC)


HISTORY: list[TimelineEvent] = [
    Membership(ROOM, BOB, BOB, "join"),
    msg(1),
    msg(2),
    msg(3, replaces="$m2"),
    msg(4),
    msg(5),
]

CASES = [
    # after, before, already delivered → event ids archived
    (None, None, set(), ["$m1", "$m2", "$m4", "$m5"]),
    (Bound("$m2", at(2)), None, set(), ["$m4", "$m5"]),
    (None, Bound("$m4", at(4)), set(), ["$m1", "$m2"]),
    (Bound("$m1", at(1)), Bound("$m5", at(5)), set(), ["$m2", "$m4"]),
    (Bound("$gone", at(2.5)), None, set(), ["$m4", "$m5"]),  # not in the page: by time
    (None, Bound("$gone", at(4)), set(), ["$m1", "$m2"]),
    (None, None, {"$m4", "$m1"}, ["$m2", "$m5"]),
]


@pytest.mark.parametrize(("after", "before", "delivered", "expected"), CASES)
def test_backfill_messages(
    after: Bound | None, before: Bound | None, delivered: set[str], expected: list[str]
) -> None:
    got = backfill_messages(HISTORY, after, before, delivered.__contains__)
    assert [m.event_id for m in got] == expected


def test_empty_history() -> None:
    assert backfill_messages([], Bound("$x", at(1)), Bound("$y", at(2)), lambda _e: False) == []
