"""Every workaround for a slidge 0.4.2 bug, in one place.

Each fix names the bug, and ``tests/unit/test_slidge_fixes.py`` (``tests/unit/test_storage.py``
for the PostgreSQL ones) has a *detector* test that asserts the bug is still there: the day
upstream fixes it, that test fails and tells us to delete the workaround. Verified bugs (see
``shared/NOTES.md``):

1. ``LegacyRoster._fill`` never pushes contacts to the roster, because it tests
   ``hasattr(xmpp, "TEST_MODE")``, which is always true (a class attribute of
   ``SubclassableOnce``). Plugins call :func:`push_to_roster` instead.
2. Re-submitting the registration form with two or more registered users crashes the
   gateway: ``_user_modify`` looks the user up without a filter. :func:`apply` replaces it.
3. On PostgreSQL, migration 39ce1636571a calls SQLite's ``INSTR``: a fresh database fails
   to migrate (``function instr(text, unknown) does not exist``).
   :func:`postgres_prepare` creates an ``instr(text, text)`` function (wrapping ``strpos``)
   in the network's schema.
4. slidge's SIGTERM handler raises ``SigTermInterrupt`` from wherever the main thread is;
   inside a stanza handler slidge's own ``except Exception`` swallows it and the process
   keeps running until SIGKILL, without its clean shutdown. :func:`apply` replaces the
   handler with one that stops the event loop, after which slidge shuts down as usual.
5. slidge's ``postgres`` extra installs psycopg2, but it allows SQLAlchemy 2.1, where a
   ``postgresql://`` URL means psycopg 3: slidge dies with ``No module named 'psycopg'``.
   :func:`postgres_driver` names the driver (``postgresql+psycopg2://``); it also accepts
   the ``postgres://`` spelling, which SQLAlchemy refuses.
6. ``Room`` has no relationship to ``GroupMessagesOrigin`` (the ids of the messages the
   user sent to a group), so deleting a room, or a user who ever posted in a group,
   leaves those rows behind: on PostgreSQL the delete fails with a foreign key violation
   (``group_msg_origin`` still references ``room``), on SQLite they become orphans.
   :func:`apply` adds the missing ``delete-orphan`` cascade.
7. slidge opens SQLite with the default rollback journal and ``synchronous=FULL``, and it
   commits once or more per message: every message waits for several fsyncs on the event
   loop (``bench/irc.py``: 37 to 98 msg/s IRC→XMPP on disk). :func:`apply` wraps the engine
   factory so each SQLite connection uses WAL with ``synchronous=NORMAL`` (163 to 192 msg/s in
   the same experiment); a crash may lose the last commits, never corrupt the database.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slidge.contact import LegacyContact
    from sqlalchemy.engine import URL

log = logging.getLogger(__name__)


async def push_to_roster(contact: LegacyContact) -> None:
    """Bug 1: put a friend into the user's roster through the XEP-0356 privilege."""
    contact.is_friend = True
    await contact.add_to_roster()


async def _user_modify(
    self: Any,
    _gateway_jid: Any,
    _node: str,
    ifrom: Any,
    form_dict: dict[str, str | None],
) -> None:
    """Bug 2: slidge's ``RegistrationMixin._user_modify``, looking up the right user."""
    from slidge.db import GatewayUser
    from slixmpp.exceptions import XMPPError

    try:
        data = await self.xmpp.user_prevalidate(ifrom, form_dict)
    except ValueError as e:
        raise XMPPError("bad-request", str(e)) from e
    except XMPPError:
        raise
    except Exception as e:
        raise XMPPError("internal-server-error", str(e)) from e
    with self.xmpp.store.session() as orm:
        user = orm.query(GatewayUser).filter_by(jid=ifrom.bare).one_or_none()
    if user is None:
        raise XMPPError("item-not-found", "You are not registered to this gateway.")
    # Store what the plugin's validate() returned, as a first registration does: the raw
    # form may hold a password the plugin traded for a token.
    user.legacy_module_data.update(data if isinstance(data, dict) else form_dict)
    self.xmpp.store.users.update(user)


def _stop_loop_on_sigterm(_signum: int, _frame: object) -> None:
    """Bug 4: end ``loop.run_forever()`` instead of raising into whatever code runs."""
    import asyncio

    logging.getLogger("slidge.main").info("Caught SIGTERM, shutting down")
    loop = asyncio.get_event_loop()
    loop.call_soon_threadsafe(loop.stop)


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


def apply() -> None:
    """Install the in-process fixes; call before slidge's ``main`` runs."""
    import slidge.main
    from slidge.core.dispatcher.registration import RegistrationMixin

    RegistrationMixin._user_modify = _user_modify  # type: ignore[method-assign]
    slidge.main.handle_sigterm = _stop_loop_on_sigterm
    cascade_room_origins()
    # slidge.main imported get_engine by name; replace that name, where main() looks it up.
    main_module: Any = slidge.main
    main_module.get_engine = sqlite_wal_engine_factory(main_module.get_engine)


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
