"""Fix 53 (`gateway.archive_order`): every message of a room's archive has a stamp of its
own, so the archive's order is the order of arrival among equal legacy stamps and a page
boundary between them skips nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from gateway import slidge_fixes
from gateway.archive_order import MICROSECOND, untie
from tests.unit.slidge_db import slidge_store
from tests.unit.test_slidge_fixes import _message, _room
from tests.unit.test_slidge_fixes import batched as batched  # noqa: PLC0414 - fixture

T = datetime(2026, 11, 22, 2, 31, 52, 989000, tzinfo=UTC)
US = MICROSECOND


@pytest.mark.parametrize(
    ("rows", "taken", "stamps", "moved"),
    [
        ([(1, T), (1, T + 2 * US)], [], [T, T + 2 * US], 0),
        ([(1, T), (1, T), (1, T)], [], [T, T + US, T + 2 * US], 2),  # arrival order
        ([(1, T), (2, T)], [], [T, T], 0),  # rooms apart
        ([(1, T)], [(1, T), (1, T + US)], [T + 2 * US], 1),  # taken by earlier rows
        ([(1, T)], [(2, T)], [T], 0),
        ([(1, T), (1, T + US)], [], [T, T + US], 0),
        ([(1, T), (1, T), (1, T + US)], [], [T, T + US, T + 2 * US], 2),  # pushes on
        # a stored stamp reads back naive (UTC); other zones become UTC
        ([(1, T)], [(1, T.replace(tzinfo=None))], [T + US], 1),
        ([(1, T.astimezone(timezone(timedelta(hours=2))))], [(1, T)], [T + US], 1),
        ([(1, T.replace(tzinfo=None))], [], [T], 0),
    ],
)  # fmt: skip
def test_untie(
    rows: list[tuple[int, datetime]],
    taken: list[tuple[int, datetime]],
    stamps: list[datetime],
    moved: int,
) -> None:
    values: list[dict[str, Any]] = [
        {"room_id": room, "timestamp": when, "stanza_id": str(i)}
        for i, (room, when) in enumerate(rows)
    ]
    assert untie(values, taken) == moved
    assert [row["timestamp"] for row in values] == stamps
    assert all(row["timestamp"].tzinfo is UTC for row in values)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from slidge.core import config

    from gateway.slidge_speed import store_speedups

    monkeypatch.setattr(config, "HOME_DIR", tmp_path, raising=False)
    with slidge_store(tmp_path / "slidge.sqlite") as store:
        store_speedups(store)
        yield store


def _stamped(stanza_id: str, when: datetime) -> Any:
    msg = _message(stanza_id, f"said {stanza_id}")
    msg["delay"]["stamp"] = when
    return msg


def test_equal_stamps_keep_their_order_and_pages_skip_none(store: Any, batched: None) -> None:
    from slidge.group.archive import MessageArchive

    a = MessageArchive(_room(store, "#a"), store)
    b = MessageArchive(_room(store, "#b"), store)
    for i in "123":  # one batch: three lines of the same millisecond
        a.add(_stamped(i, T))
    b.add(_stamped("b", T))
    slidge_fixes.ARCHIVE.flush()
    a.add(_stamped("4", T))  # a later batch, the same millisecond again
    a.add(_stamped("5", T - timedelta(seconds=1)))  # older history, back-filled late
    slidge_fixes.ARCHIVE.flush()

    assert [m.id for m in a.get_all()] == ["5", "1", "2", "3", "4"]
    assert [m.id for m in a.get_all(after_id="2")] == ["3", "4"]
    assert [m.id for m in a.get_all(before_id="3")] == ["5", "1", "2"]
    assert [m.id for m in b.get_all()] == ["b"]
    stamps = [m.when.replace(tzinfo=UTC) for m in a.get_all()]
    assert stamps == [T - timedelta(seconds=1), T, T + US, T + 2 * US, T + 3 * US]


def test_the_archive_has_an_index_on_room_and_stamp(store: Any) -> None:
    import sqlalchemy as sa

    from gateway.archive_order import MAM_TIME_INDEX

    with store.session() as orm:
        plan = orm.execute(
            sa.text("EXPLAIN QUERY PLAN SELECT id FROM mam WHERE room_id = 1 ORDER BY timestamp")
        ).all()
    assert MAM_TIME_INDEX in " ".join(str(row) for row in plan), plan
