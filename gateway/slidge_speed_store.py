"""Slidge speed fixes for the store: id map rows written once per tick, no empty
commits, an index for the archive's legacy ids; and the tick batcher that fix 8's
archive rows use too (:mod:`gateway.slidge_fixes`). Part of :mod:`gateway.slidge_speed`,
which installs them and says what they have in common.

12. ``IdMapStore._set`` (the map from legacy message ids to XMPP ids) runs a query, a
    flush and, from its caller, a commit for every message the user sends (twice in a
    group: the message id and the stanza id): ~40 % of the CPU of a line to IRC.
    :class:`IdMapBatcher` queues the rows and writes them once per tick in one transaction,
    with slidge's rule (a legacy id set again replaces its rows), new rows in one Core
    ``executemany``; every read of the map
    flushes first, so nobody sees it without the queued rows, and a clean exit flushes.
    A SIGKILL loses at most the last tick's rows: corrections of those messages then go
    out as new lines.

13. slidge commits a session for every message the user sends even when, as with fix 12,
    nothing was written in it: SQLAlchemy then begins and ends an empty transaction
    (~10 % of a line to IRC). :class:`LazyCommitSession` skips a commit when no
    transaction was begun and nothing is pending, which is all that commit did. And the
    room archive (``mam``) has no index on its legacy ids, which slidge and fix 8 look
    up for every message that has one: every tick read the whole room's archive.
    :func:`store_speedups` adds the index ``ix_passerelle_mam_room_legacy_id`` (and fix
    53's on stamps, ``gateway.archive_order``).
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from .archive_order import MAM_TIME_INDEX

T = TypeVar("T")

log = logging.getLogger(__name__)


# --- fix 12: the id map written once per tick ------------------------------------------

IDMAP_TICK = 0.05
"""Seconds an id map row may wait before it is committed (fix 12)."""
IDMAP_BATCH = 400
"""Rows that make the id map commit at once, without waiting for the tick (fix 12)."""
IDMAP_READS = ("_get", "_get_legacy", "was_sent_by_user")
"""``IdMapStore`` methods that read the map (every public read goes through one)."""


@dataclass(frozen=True, slots=True)
class _IdRows:
    bind: Any  # the engine of the session slidge passed
    type_: Any  # GroupMessages, GroupMessagesOrigin, DirectMessages, …Threads
    foreign_key: int
    legacy_id: str
    xmpp_ids: tuple[str, ...]


class TickBatcher(Generic[T]):
    """Rows queued in order and written in one transaction per tick (`tick` seconds after
    the first, or at once when `batch` wait), by :meth:`_write`; when that fails, one by
    one, so one bad row costs only itself. Fixes 8 and 12."""

    def __init__(self, tick: float, batch: int) -> None:
        self.tick = tick
        self.batch = batch
        self._rows: list[T] = []
        self._timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, row: T) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.batch:
            self.flush()
            return
        if self._timer is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no event loop (a script, a test): write now
                self.flush()
                return
            self._timer = loop.call_later(self.tick, self.flush)

    def flush(self) -> None:
        """Write every queued row now (in one transaction if all goes well)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rows, self._rows = self._rows, []
        if not rows:
            return
        from sqlalchemy.exc import SQLAlchemyError

        try:
            self._write(rows)
        except SQLAlchemyError:
            log.warning("Writing %d %s at once failed; one by one", len(rows), self.what)
            for row in rows:
                try:
                    self._write([row])
                except SQLAlchemyError as e:
                    log.error("Could not write %s: %s", self.describe(row), e)

    what = "rows"
    """What the rows are, for the log."""

    def describe(self, row: T) -> str:
        """One row, for the log."""
        return repr(row)

    def _write(self, rows: list[T]) -> None:
        raise NotImplementedError


class IdMapBatcher(TickBatcher[_IdRows]):
    """Fix 12: id map rows queued in order and written in one transaction per tick."""

    what = "message id mappings"

    def __init__(self, tick: float = IDMAP_TICK, batch: int = IDMAP_BATCH) -> None:
        super().__init__(tick, batch)

    def describe(self, row: _IdRows) -> str:
        return f"the ids of message {row.legacy_id}"

    @staticmethod
    def _write(sets: list[_IdRows]) -> None:
        """slidge's ``IdMapStore._set`` for many calls: the last call for a (table, key,
        legacy id) wins, its rows replace whatever the table had for it; rows of a room
        or contact deleted meanwhile are dropped."""
        import sqlalchemy as sa
        from slidge.db.models import Contact, Room
        from sqlalchemy.orm import Session

        last: dict[tuple[Any, int, str], _IdRows] = {}
        for one in sets:
            key = (one.type_, one.foreign_key, one.legacy_id)
            last.pop(key, None)  # re-inserted: its rows come in the order of its last call
            last[key] = one
        by_bind: dict[Any, list[_IdRows]] = {}
        for one in last.values():
            by_bind.setdefault(one.bind, []).append(one)
        for bind, todo in by_bind.items():
            with Session(bind) as orm:
                owners: dict[Any, set[int]] = {}
                for one in todo:
                    owners.setdefault(_owner(one.type_, Room, Contact), set()).add(one.foreign_key)
                alive: dict[Any, set[int]] = {
                    owner: set(orm.scalars(sa.select(owner.id).where(owner.id.in_(keys))))
                    for owner, keys in owners.items()
                }
                by_type: dict[Any, list[_IdRows]] = {}
                for one in todo:
                    if one.foreign_key in alive[_owner(one.type_, Room, Contact)]:
                        by_type.setdefault(one.type_, []).append(one)
                for type_, rows in by_type.items():
                    keys: dict[int, list[str]] = {}
                    for one in rows:
                        keys.setdefault(one.foreign_key, []).append(one.legacy_id)
                    orm.execute(
                        sa.delete(type_).where(
                            sa.or_(
                                *(
                                    sa.and_(type_.foreign_key == fk, type_.legacy_id.in_(ids))
                                    for fk, ids in keys.items()
                                )
                            )
                        )
                    )
                    new = [
                        {"foreign_key": one.foreign_key, "legacy_id": one.legacy_id, "xmpp_id": x}
                        for one in rows
                        for x in one.xmpp_ids
                    ]
                    if new:  # Core's executemany: the ORM's bulk INSERT adds nothing here
                        orm.execute(sa.insert(type_.__table__), new)
                orm.commit()


@functools.cache
def _owner(type_: Any, room: Any, contact: Any) -> Any:
    """The table a map's ``foreign_key`` points to (asked twice a row: worked out once
    per table, 1.4 % of a line to IRC otherwise)."""
    (fk,) = type_.__table__.c.foreign_key.foreign_keys
    return room if fk.column.table is room.__table__ else contact


IDMAP = IdMapBatcher()
"""The process's id map queue (fix 12)."""


def _set(session: Any, foreign_key: int, legacy_id: str, xmpp_ids: list[str], type_: Any) -> None:
    """Fix 12: slidge's ``IdMapStore._set``, queueing the rows instead of writing them."""
    IDMAP.add(_IdRows(session.get_bind(), type_, foreign_key, legacy_id, tuple(xmpp_ids)))


def flushing_first(batcher: TickBatcher[Any], read: Callable[..., Any]) -> Callable[..., Any]:
    """`read`, after `batcher` wrote what it holds: nobody reads without the queued rows."""

    @functools.wraps(read)
    def flushed_first(*args: Any, **kwargs: Any) -> Any:
        batcher.flush()
        return read(*args, **kwargs)

    flushed_first.passerelle_fix = True  # type: ignore[attr-defined]
    return flushed_first


def batch_id_map_writes() -> None:
    """Fix 12: queue id map rows; flush before every read of the map and at exit."""
    from slidge.db.store import IdMapStore

    if IdMapStore.__dict__["_set"].__func__ is _set:
        return
    IdMapStore._set = staticmethod(_set)  # type: ignore[method-assign]
    for name in IDMAP_READS:
        read = IdMapStore.__dict__[name]
        setattr(IdMapStore, name, staticmethod(flushing_first(IDMAP, read.__func__)))
    atexit.register(IDMAP.flush)


# --- fix 13: no empty commits, an index for the archive's legacy ids --------------------

MAM_LEGACY_INDEX = "ix_passerelle_mam_room_legacy_id"
"""Fix 13: the index on the room archive's (room, legacy id)."""


def _lazy_commit_session() -> type[Any]:
    from sqlalchemy.orm import Session

    class LazyCommitSession(Session):
        """Fix 13: a commit with no transaction begun and nothing pending does nothing
        (SQLAlchemy would begin a transaction, flush nothing and end it)."""

        def commit(self) -> None:
            if (
                self._transaction is None
                and not self._new
                and not self._deleted
                and not self.identity_map._modified
            ):
                return
            super().commit()

    return LazyCommitSession


def store_speedups(store: Any) -> None:
    """Fix 13 for a ``SlidgeStore``: its sessions skip empty commits, and the archive has
    the legacy id index (created if missing)."""
    import sqlalchemy as sa
    from slidge.db.models import ArchivedMessage

    maker = store.session
    if not issubclass(maker.class_, LAZY_COMMIT_SESSION):
        maker.class_ = type(maker.class_.__name__, (LAZY_COMMIT_SESSION, maker.class_), {})
    # Plain DDL: an sa.Index on the model's columns would join slidge's metadata.
    table = ArchivedMessage.__tablename__
    with maker.kw["bind"].begin() as conn:
        conn.execute(
            sa.text(
                f"CREATE INDEX IF NOT EXISTS {MAM_LEGACY_INDEX} ON {table} (room_id, legacy_id)"
            )
        )
        conn.execute(  # fix 53 (gateway.archive_order)
            sa.text(f"CREATE INDEX IF NOT EXISTS {MAM_TIME_INDEX} ON {table} (room_id, timestamp)")
        )


LAZY_COMMIT_SESSION: type[Any] = object
"""The session class of fix 13 (made when installed, so that importing this module does
not import SQLAlchemy)."""


def _init_then_speedups(init: Callable[..., None]) -> Callable[..., None]:
    @functools.wraps(init)
    def store_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        store_speedups(self)

    store_init.passerelle_fix = True  # type: ignore[attr-defined]
    return store_init


def speed_up_store() -> None:
    """Fix 13: every ``SlidgeStore`` made from now on gets :func:`store_speedups`."""
    global LAZY_COMMIT_SESSION  # noqa: PLW0603 - made once, on first use
    from slidge.db.store import SlidgeStore

    if LAZY_COMMIT_SESSION is object:
        LAZY_COMMIT_SESSION = _lazy_commit_session()
    if not getattr(SlidgeStore.__init__, "passerelle_fix", False):
        SlidgeStore.__init__ = _init_then_speedups(SlidgeStore.__init__)  # type: ignore[method-assign]
