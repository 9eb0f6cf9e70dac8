"""slidge's database: its engine, its PostgreSQL schema and driver, its missing cascade.

These are slidge fixes 3, 5, 6 and 7 (listed with the others in
:mod:`gateway.slidge_fixes`): :mod:`gateway.child` calls :func:`postgres_driver` and
:func:`postgres_prepare` before slidge starts, :func:`gateway.slidge_fixes.apply` installs
the others. ``tests/unit/test_storage.py`` (3, 5, 6) and ``tests/unit/test_slidge_fixes.py``
(7) hold their detectors.

3. On PostgreSQL, migration 39ce1636571a calls SQLite's ``INSTR``: a fresh database fails
   to migrate (``function instr(text, unknown) does not exist``).
   :func:`postgres_prepare` creates an ``instr(text, text)`` function (wrapping ``strpos``)
   in the network's schema.
5. slidge's ``postgres`` extra installs psycopg2, but it allows SQLAlchemy 2.1, where a
   ``postgresql://`` URL means psycopg 3: slidge dies with ``No module named 'psycopg'``.
   :func:`postgres_driver` names the driver (``postgresql+psycopg2://``); it also accepts
   the ``postgres://`` spelling, which SQLAlchemy refuses.
6. ``Room`` has no relationship to ``GroupMessagesOrigin`` (the ids of the messages the
   user sent to a group), so deleting a room, or a user who ever posted in a group,
   leaves those rows behind: on PostgreSQL the delete fails with a foreign key violation
   (``group_msg_origin`` still references ``room``), on SQLite they become orphans.
   :func:`gateway.slidge_fixes.apply` adds the missing ``delete-orphan`` cascade.
7. slidge opens SQLite with the default rollback journal and ``synchronous=FULL``, and it
   commits once or more per message: every message waits for several fsyncs on the event
   loop (``bench/irc.py``: 37 to 98 msg/s IRC→XMPP on disk).
   :func:`gateway.slidge_fixes.apply` wraps the engine factory so each SQLite connection
   uses WAL with ``synchronous=NORMAL`` (163 to 192 msg/s in the same experiment); a crash
   may lose the last commits, never corrupt the database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)


POSTGRES_DRIVER = "postgresql+psycopg2"
"""The SQLAlchemy dialect and driver slidge's ``postgres`` extra installs."""


def postgres_driver(url: URL) -> URL:
    """Bug 5: name psycopg2 in a bare ``postgresql://`` (or ``postgres://``) URL."""
    if url.drivername in ("postgresql", "postgres"):
        return url.set(drivername=POSTGRES_DRIVER)
    return url


def postgres_prepare(url: str, schema: str) -> None:
    """Bug 3, and the per-network schema: create both before slidge migrates.

    Each is created only if missing, so a role that may not create schemas or functions
    works once an administrator has created them. Errors are SQLAlchemy's, for
    :mod:`gateway.child` to classify.
    """
    import sqlalchemy as sa

    engine = sa.create_engine(url, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            exists = conn.execute(
                sa.text("SELECT 1 FROM pg_namespace WHERE nspname = :schema"), {"schema": schema}
            ).scalar()
            if not exists:
                log.info("Creating schema %s", schema)
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            instr = conn.execute(
                sa.text("SELECT to_regprocedure(:sig)"), {"sig": f'"{schema}".instr(text, text)'}
            ).scalar()
            if instr is None:
                log.info("Creating function %s.instr(text, text) for slidge's migrations", schema)
                conn.execute(
                    sa.text(
                        f'CREATE FUNCTION "{schema}".instr(text, text) RETURNS integer '
                        "LANGUAGE sql IMMUTABLE AS 'SELECT strpos($1, $2)'"
                    )
                )
    finally:
        engine.dispose()


ORIGINS_RELATIONSHIP = "passerelle_origin_messages"
"""Name of the relationship :func:`cascade_room_origins` adds to slidge's ``Room``."""


def cascade_room_origins() -> None:
    """Bug 6: delete a room's ``group_msg_origin`` rows with the room (idempotent)."""
    from slidge.db.models import GroupMessagesOrigin, Room
    from sqlalchemy.orm import relationship

    if ORIGINS_RELATIONSHIP not in Room.__mapper__.relationships:
        Room.__mapper__.add_property(
            ORIGINS_RELATIONSHIP,
            relationship(GroupMessagesOrigin, cascade="all, delete-orphan"),
        )


def _sqlite_wal(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


def sqlite_wal_engine_factory(get_engine: Any) -> Any:
    """Fix 7: slidge's ``get_engine``, with WAL and ``synchronous=NORMAL`` on SQLite."""
    from sqlalchemy import event

    def wal_get_engine(*args: Any, **kwargs: Any) -> Any:
        engine = get_engine(*args, **kwargs)
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_wal)
        return engine

    return wal_get_engine
