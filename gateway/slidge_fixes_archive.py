"""The room archive written in batches, one transaction per tick.

This is slidge fix 8, and the hook of fix 53 (listed with the others in
:mod:`gateway.slidge_fixes`, whose :func:`~gateway.slidge_fixes.apply` installs it);
``tests/unit/test_slidge_fixes.py`` holds its detectors and tests,
``tests/unit/test_archive_order.py`` those of fix 53.

8. ``MessageArchive.add`` opens a session, looks for duplicates, inserts and commits for
   every room message: most of the CPU of a busy channel. :class:`ArchiveBatcher` queues
   the rows and writes them in one transaction per tick (:data:`ARCHIVE_TICK`, or every
   :data:`ARCHIVE_BATCH` messages), in order, with slidge's duplicate rules (a row with
   the same stanza id, or legacy id, in the same room is updated) in two indexed
   queries, and inserts the new ones with one Core ``executemany``. Every archive read
   goes through ``MAMStore``, whose read methods flush first, so nobody sees the
   archive without the queued rows; a clean exit (SIGTERM, or slidge exiting after an
   error) flushes at exit. A SIGKILL loses at most the rows
   of the last tick — messages already delivered live, missing from the room's history.
53. slidge orders and pages the room archive by time stamp alone, and legacy stamps are
    coarse (milliseconds, an email's seconds): messages with equal stamps came back in
    either order, and a page boundary between them skipped one. Fix 8's writer gives
    every new row a stamp of its own in its room (:mod:`gateway.archive_order`).
"""

from __future__ import annotations

import atexit
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import slidge_speed

ARCHIVE_TICK = 0.05
"""Seconds a room message may wait before its archive row is committed (fix 8)."""
ARCHIVE_BATCH = 200
"""Rows that make the archive commit at once, without waiting for the tick (fix 8)."""
MAM_READS = (
    "get_messages",
    "get_first",
    "get_last",
    "get_first_and_last",
    "get_most_recent_with_legacy_id",
    "get_least_recent_with_legacy_id_after",
    "get_by_legacy_id",
    "pop_unread_up_to",
    "is_displayed_by_user",
    "nuke_older_than",
)
"""``MAMStore`` methods that read (or delete) archived rows: they flush the queue first."""


@dataclass(frozen=True, slots=True)
class _ArchiveRow:
    archive: Any  # slidge's MessageArchive: its room (and id) may be filled in at flush
    message: slidge_speed.ArchiveCopy  # made when the message was sent
    archive_only: bool
    legacy_msg_id: str | None


class ArchiveBatcher(slidge_speed.TickBatcher[_ArchiveRow]):
    """Fix 8: room archive rows queued in order and written in one transaction per tick."""

    what = "room messages to the archive"

    def __init__(self, tick: float = ARCHIVE_TICK, batch: int = ARCHIVE_BATCH) -> None:
        super().__init__(tick, batch)

    def describe(self, row: _ArchiveRow) -> str:
        return f"a message of room {row.archive.room} to the archive"

    @staticmethod
    def _write(rows: list[_ArchiveRow]) -> None:
        """slidge's ``MAMStore.add_message`` for many rows: one query for the duplicates
        (same stanza id, or same legacy id, in the same room: the row is updated, as slidge
        does), one multi-row INSERT for the others, one commit."""
        import sqlalchemy as sa
        from slidge.db.models import ArchivedMessage, ArchivedMessageSource, Room

        from .archive_order import untie_new_rows

        mam = rows[0].archive._MessageArchive__store
        with mam.session(expire_on_commit=False) as orm:
            for row in rows:
                room = row.archive.room
                if room.id is None:  # as slidge does: the room was stored after the message
                    rooms = row.archive._MessageArchive__rooms_store
                    row.archive.room = rooms.get(orm, room.user_account_id, room.legacy_id)
            room_ids = {row.archive.room.id for row in rows}
            alive = set(orm.scalars(sa.select(Room.id).where(Room.id.in_(room_ids))))
            rows = [row for row in rows if row.archive.room.id in alive]  # else: room deleted
            stanza_ids = {row.message.id for row in rows}
            legacy_ids = {row.legacy_msg_id for row in rows if row.legacy_msg_id is not None}
            # Two queries, not one with OR: each uses an index (the stanza id's unique
            # one, fix 13's on legacy ids), where the OR read the whole room's archive.
            found = orm.scalars(
                sa.select(ArchivedMessage).where(
                    ArchivedMessage.room_id.in_(alive), ArchivedMessage.stanza_id.in_(stanza_ids)
                )
            ).all()
            if legacy_ids:
                found += orm.scalars(
                    sa.select(ArchivedMessage).where(
                        ArchivedMessage.room_id.in_(alive),
                        ArchivedMessage.legacy_id.in_(legacy_ids),
                    )
                ).all()
            by_stanza: dict[tuple[int, str], Any] = {(m.room_id, m.stanza_id): m for m in found}
            by_legacy: dict[tuple[int, str], Any] = {
                (m.room_id, m.legacy_id): m for m in found if m.legacy_id is not None
            }
            new: list[dict[str, Any]] = []
            for row in rows:
                room_id, message = row.archive.room.id, row.message
                values = {
                    "timestamp": message.when,
                    "stanza": message.serialize(),
                    "author_jid": message.author,
                    "source": ArchivedMessageSource.BACKFILL
                    if row.archive_only
                    else ArchivedMessageSource.LIVE,
                    "legacy_id": row.legacy_msg_id,
                }
                existing = by_stanza.get((room_id, message.id))
                if existing is None and row.legacy_msg_id is not None:
                    existing = by_legacy.get((room_id, row.legacy_msg_id))
                if existing is None:
                    existing = {"room_id": room_id, "stanza_id": message.id, **values}
                    new.append(existing)
                    by_stanza[(room_id, message.id)] = existing
                elif isinstance(existing, dict):
                    existing.update(values)
                else:
                    for key, value in values.items():
                        setattr(existing, key, value)
                if row.legacy_msg_id is not None:
                    by_legacy[(room_id, row.legacy_msg_id)] = existing
            untie_new_rows(orm, new)  # fix 53: a stamp of its own in its room
            if new:  # Core's executemany (column defaults included): the ORM's bulk
                # INSERT costs ~30 % more CPU and adds nothing for plain rows
                orm.execute(sa.insert(ArchivedMessage.__table__), new)  # type: ignore[arg-type]
            orm.commit()


ARCHIVE = ArchiveBatcher()
"""The process's archive queue (fix 8)."""


def _archive_add(
    self: Any,
    msg: Any,
    participant: Any = None,
    archive_only: bool = False,
    legacy_msg_id: str | None = None,
) -> None:
    """Fix 8: slidge's ``MessageArchive.add``, queueing the row instead of committing it;
    the row's copy of the message made from its XML when fix 16 can."""
    from slidge.group.archive import archivable

    if not archivable(msg):
        return
    item: tuple[str, str, str] | None = None
    if participant and not participant.muc.is_anonymous:
        if participant.contact:
            jid = participant.contact.jid.bare
        elif participant.is_user:
            jid = participant.user_jid.bare
        elif participant.is_system:
            jid = str(participant.muc.jid)
        else:
            jid = None  # slidge's way warns and makes one up
        if jid is not None:
            item = (participant.role or "participant", participant.affiliation or "member", jid)
    message = None
    if item is not None or not participant or participant.muc.is_anonymous:
        message = slidge_speed.archive_copy(msg, item)
    if message is None:
        message = slidge_speed.ArchiveCopy.of(_history_message(self, msg, participant))
    if "replace" in msg:
        legacy_msg_id = None
    ARCHIVE.add(
        _ArchiveRow(
            self,
            message,
            archive_only,
            None if legacy_msg_id is None else str(legacy_msg_id),
        )
    )


def _history_message(self: Any, msg: Any, participant: Any) -> Any:
    """slidge's copy of a room message for its archive (``MessageArchive.add``)."""
    import uuid
    import warnings
    from copy import copy

    from slidge.util.archive_msg import HistoryMessage

    new_msg = copy(msg)
    if participant and not participant.muc.is_anonymous:
        new_msg["muc"]["role"] = participant.role or "participant"
        new_msg["muc"]["affiliation"] = participant.affiliation or "member"
        if participant.contact:
            new_msg["muc"]["jid"] = participant.contact.jid.bare
        elif participant.is_user:
            new_msg["muc"]["jid"] = participant.user_jid.bare
        elif participant.is_system:
            new_msg["muc"]["jid"] = participant.muc.jid
        else:
            warnings.warn(
                f"No real JID for participant '{participant.nickname}' in '{self.room.name}'",
                stacklevel=3,
            )
            new_msg["muc"]["jid"] = f"{uuid.uuid4()}@{participant.xmpp.boundjid.bare}"
    return HistoryMessage(new_msg)


def _flushing(read: Callable[..., Any]) -> Callable[..., Any]:
    return slidge_speed.flushing_first(ARCHIVE, read)


def batch_archive_writes() -> None:
    """Fix 8: queue room archive rows; flush before every archive read and at exit."""
    from slidge.db.store import MAMStore
    from slidge.group.archive import MessageArchive

    if MessageArchive.add is _archive_add:
        return
    MessageArchive.add = _archive_add  # type: ignore[method-assign]
    for name in MAM_READS:
        attribute = MAMStore.__dict__[name]
        if isinstance(attribute, staticmethod):
            setattr(MAMStore, name, staticmethod(_flushing(attribute.__func__)))
        else:
            setattr(MAMStore, name, _flushing(attribute))
    atexit.register(ARCHIVE.flush)
