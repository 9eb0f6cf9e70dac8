"""What the link component remembers across restarts: links admins added, paused links,
and how far each link has relayed each side.

The database is the one ``[storage] url`` names — PostgreSQL, in a schema of its own
(``passerelle_link``), as each network has — or by default one SQLite file,
``DATA_DIR/link/link.sqlite``. Links from ``[[links]]`` live in the config file, the ones
added with the ``add`` command live here, and the pause state of either kind too. Rows are
keyed by the link's id (:func:`gateway.link.bridge.link_id`), and a stored link is kept as
the JSON of its :class:`~gateway.config.LinkConfig`, validated again when read, so an
entry a newer version cannot read is skipped with a warning instead of stopping the
component.

A link's :class:`Position` is where each side's relaying stopped: the stanza-id of the
last room message it handled (the room's MAM archive is read after it on the next
join) and the msgid and server-time of the last channel line it handled (the IRC
server's history on join is read after it). They change with every message; the service
writes the latest values (:meth:`LinkStore.save_positions`) as soon as the event loop is
free. Every method is synchronous and takes a connection from the engine's pool.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from pydantic import ValidationError

from gateway.config import LinkConfig
from gateway.errors import PasserelleError

__all__ = ["LinkStore", "Position", "StoreError", "StoredLink", "link_db"]

log = logging.getLogger(__name__)

SCHEMA = "passerelle_link"
"""The PostgreSQL schema of the link component's tables."""

_meta = sa.MetaData()
_links = sa.Table(
    "links",
    _meta,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("added_by", sa.Text, nullable=False),
    sa.Column("added_at", sa.Text, nullable=False),
)
_paused = sa.Table(
    "paused",
    _meta,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("paused_by", sa.Text, nullable=False),
    sa.Column("paused_at", sa.Text, nullable=False),
)
_positions = sa.Table(
    "positions",
    _meta,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("room_id", sa.Text, nullable=True),
    sa.Column("irc_msgid", sa.Text, nullable=True),
    sa.Column("irc_time", sa.Text, nullable=True),
)


class StoreError(PasserelleError):
    """The database cannot be opened; `exit_code` says whether retrying may help."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class StoredLink:
    id: str
    spec: LinkConfig
    added_by: str


@dataclass(frozen=True, slots=True)
class Position:
    """How far a link relayed each side (None: nothing yet)."""

    room_id: str | None = None
    """The room's stanza-id of the last room message handled."""
    irc_msgid: str | None = None
    """The msgid of the last channel line handled, when the server tags lines."""
    irc_time: datetime | None = None
    """Its server-time, when the server sends it."""


def link_db(storage_url: str | None, data_dir: Any) -> tuple[str, dict[str, Any]]:
    """The SQLAlchemy URL and connect arguments of the link's database. With a
    PostgreSQL `storage_url`, the schema is :data:`SCHEMA` (set as ``search_path``) and
    the password travels in the connect arguments, not in the URL."""
    if storage_url is None:
        return f"sqlite:///{data_dir / 'link' / 'link.sqlite'}", {}
    from gateway.child import postgres_url

    url, password = postgres_url(storage_url, SCHEMA)
    return url, ({"password": password} if password is not None else {})


class LinkStore:
    """The link component's database."""

    def __init__(self, url: str, connect_args: dict[str, Any] | None = None) -> None:
        self.url = sa.make_url(url)
        if self.url.drivername.startswith("sqlite") and self.url.database:
            from pathlib import Path

            Path(self.url.database).parent.mkdir(parents=True, exist_ok=True)
        self._engine = sa.create_engine(self.url, connect_args=connect_args or {})
        if self._engine.dialect.name == "sqlite":
            # Positions are written with every message: WAL with synchronous=NORMAL
            # makes each write an append, as for the networks' databases.
            sa.event.listen(self._engine, "connect", _sqlite_wal)
        try:
            with self._engine.begin() as db:
                if self._engine.dialect.name == "postgresql":
                    db.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"'))
                _meta.create_all(db)
        except (sa.exc.SQLAlchemyError, ModuleNotFoundError) as exc:
            from gateway.child import describe_db_error

            self._engine.dispose()
            message, code = describe_db_error(exc, self.url.render_as_string())
            raise StoreError(message, code) from None

    def close(self) -> None:
        self._engine.dispose()

    # --- links -------------------------------------------------------------------------

    def links(self) -> list[StoredLink]:
        with self._engine.connect() as db:
            rows = db.execute(
                sa.select(_links.c.id, _links.c.spec, _links.c.added_by).order_by(
                    _links.c.added_at, _links.c.id
                )
            ).all()
        found = []
        for link_id, spec, added_by in rows:
            try:
                found.append(
                    StoredLink(
                        str(link_id), LinkConfig.model_validate_json(str(spec)), str(added_by)
                    )
                )
            except ValidationError as exc:
                log.warning("ignoring stored link %s: it is no longer valid (%s)", link_id, exc)
        return found

    def add(self, link_id: str, spec: LinkConfig, added_by: str) -> None:
        with self._engine.begin() as db:
            db.execute(sa.delete(_links).where(_links.c.id == link_id))
            db.execute(
                sa.insert(_links).values(
                    id=link_id,
                    spec=json.dumps(spec.model_dump(mode="json")),
                    added_by=added_by,
                    added_at=_now(),
                )
            )

    def remove(self, link_id: str) -> bool:
        with self._engine.begin() as db:
            removed = db.execute(sa.delete(_links).where(_links.c.id == link_id)).rowcount
            db.execute(sa.delete(_paused).where(_paused.c.id == link_id))
            db.execute(sa.delete(_positions).where(_positions.c.id == link_id))
        return bool(removed)

    def paused(self) -> set[str]:
        with self._engine.connect() as db:
            return {row[0] for row in db.execute(sa.select(_paused.c.id))}

    def set_paused(self, link_id: str, paused: bool, by: str) -> None:
        with self._engine.begin() as db:
            db.execute(sa.delete(_paused).where(_paused.c.id == link_id))
            if paused:
                db.execute(sa.insert(_paused).values(id=link_id, paused_by=by, paused_at=_now()))

    # --- positions ---------------------------------------------------------------------

    def position(self, link_id: str) -> Position:
        with self._engine.connect() as db:
            row = db.execute(
                sa.select(_positions.c.room_id, _positions.c.irc_msgid, _positions.c.irc_time)
                .where(_positions.c.id == link_id)
            ).first()  # fmt: skip
        if row is None:
            return Position()
        when = None
        if row[2]:
            try:
                when = datetime.fromisoformat(row[2])
            except ValueError:
                log.warning("ignoring the stored IRC time of %s: %r", link_id, row[2])
        return Position(row[0], row[1], when)

    def save_positions(self, positions: dict[str, Position]) -> None:
        """Write these positions (one transaction)."""
        with self._engine.begin() as db:
            for link_id, pos in positions.items():
                db.execute(sa.delete(_positions).where(_positions.c.id == link_id))
                db.execute(
                    sa.insert(_positions).values(
                        id=link_id,
                        room_id=pos.room_id,
                        irc_msgid=pos.irc_msgid,
                        irc_time=pos.irc_time.isoformat() if pos.irc_time else None,
                    )
                )


def _sqlite_wal(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")
