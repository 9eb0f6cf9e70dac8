"""Fix 53: no two messages of a room's archive share a time stamp.

slidge's room archive (``mam``) is ordered by time stamp alone, and pages by it
(``before``/``after`` an id: ``timestamp < stamp``). Messages stamped by a legacy server
share stamps: IRC's server-time and Matrix's ``origin_server_ts`` count milliseconds,
an email's Date header seconds, so two lines said in the same millisecond — a
back-fill from IRCv3 ``chathistory`` has them — came back from the archive in either
order (seen against Ergo), and a page boundary between them would skip one.

Fix 8 writes the archive rows (:class:`gateway.slidge_fixes_archive.ArchiveBatcher`);
before its INSERT, :func:`untie_new_rows` moves a new row whose stamp is taken in its room
(by a row written earlier, or one before it in the same batch) on by a microsecond
until it is free: the order of arrival among equal stamps is kept, and no stamp moves
by more than a microsecond per message sharing it (a millisecond holds a thousand).
One query per batch reads the stamps already taken in its span, through the index
:data:`MAM_TIME_INDEX` on (room, stamp), which the archive's reads, ordered by stamp
within a room, use too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = ["MAM_TIME_INDEX", "MICROSECOND", "untie", "untie_new_rows"]

MAM_TIME_INDEX = "ix_passerelle_mam_room_timestamp"
MICROSECOND = timedelta(microseconds=1)
READ_AGAIN_MAX = 100
"""How many times :func:`untie_new_rows` reads further stamps before it gives up."""


def _utc(when: datetime) -> datetime:
    """`when` as an aware UTC time (a naive one is UTC already: that is how it is stored)."""
    return when.astimezone(UTC) if when.tzinfo is not None else when.replace(tzinfo=UTC)


def untie(rows: Sequence[dict[str, Any]], taken: Iterable[tuple[int, datetime]]) -> int:
    """Give each row (``room_id``, ``timestamp``) a stamp no other row of its room has,
    in order: a taken one moves on by a microsecond until free. Returns how many moved;
    the rows' stamps become aware UTC times."""
    used = {(room, _utc(when)) for room, when in taken}
    moved = 0
    for row in rows:
        room, when = row["room_id"], _utc(row["timestamp"])
        if (room, when) in used:
            moved += 1
            while (room, when) in used:  # ends: `used` is finite
                when += MICROSECOND
        used.add((room, when))
        row["timestamp"] = when
    return moved


def untie_new_rows(orm: Any, rows: Sequence[dict[str, Any]]) -> int:
    """:func:`untie` the new archive rows about to be inserted in `orm`'s transaction,
    against the stamps the archive has from their earliest to the latest they may move
    to (read again further on, in the rare case a run of taken stamps pushes a row past
    what was read). Returns how many moved."""
    if not rows:
        return 0
    import sqlalchemy as sa
    from slidge.db.models import ArchivedMessage

    rooms = {row["room_id"] for row in rows}

    def stamps_between(low: datetime, high: datetime) -> list[tuple[int, datetime]]:
        query = sa.select(ArchivedMessage.room_id, ArchivedMessage.timestamp).where(
            ArchivedMessage.room_id.in_(rooms),
            ArchivedMessage.timestamp >= low.replace(tzinfo=None),
            ArchivedMessage.timestamp <= high.replace(tzinfo=None),
        )
        return [(room, when) for room, when in orm.execute(query)]

    given = [_utc(row["timestamp"]) for row in rows]
    read_to = max(given) + len(rows) * MICROSECOND
    taken = stamps_between(min(given), read_to)
    for _ in range(READ_AGAIN_MAX):
        for row, when in zip(rows, given, strict=True):
            row["timestamp"] = when
        moved = untie(rows, taken)
        latest = max(row["timestamp"] for row in rows)
        if latest <= read_to:
            return moved
        taken += stamps_between(read_to + MICROSECOND, latest + len(rows) * MICROSECOND)
        read_to = latest + len(rows) * MICROSECOND
    return moved  # (a run of over READ_AGAIN_MAX x rows equal stamps: not seen)
