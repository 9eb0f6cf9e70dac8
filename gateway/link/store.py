"""What the link component remembers across restarts: links admins added, paused links.

One SQLite file, ``DATA_DIR/link/link.sqlite``, written only when an admin runs a command
(never per message): the links from ``[[links]]`` live in the config file, the ones added
with the ``add`` command live here, and the pause state of either kind too. Rows are keyed
by the link's id (:func:`gateway.link.bridge.link_id`), and a stored link is kept as the
JSON of its :class:`~gateway.config.LinkConfig`, validated again when read, so an entry
a newer version cannot read is skipped with a warning instead of stopping the component.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pydantic import ValidationError

from gateway.config import LinkConfig

__all__ = ["LinkStore", "StoredLink"]

log = logging.getLogger(__name__)

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS links (
        id TEXT PRIMARY KEY,
        spec TEXT NOT NULL,
        added_by TEXT NOT NULL,
        added_at TEXT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS paused (
        id TEXT PRIMARY KEY,
        paused_by TEXT NOT NULL,
        paused_at TEXT NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class StoredLink:
    id: str
    spec: LinkConfig
    added_by: str


class LinkStore:
    """The link component's database. Each call opens and closes its own connection:
    calls are rare (admin commands, start-up) and this keeps no file handle open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._db() as db:
            for statement in _SCHEMA:
                db.execute(statement)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path)) as db, db:
            yield db

    def links(self) -> list[StoredLink]:
        with self._db() as db:
            rows = db.execute("SELECT id, spec, added_by FROM links ORDER BY added_at").fetchall()
        found = []
        for link_id, spec, added_by in rows:
            try:
                found.append(StoredLink(link_id, LinkConfig.model_validate_json(spec), added_by))
            except ValidationError as exc:
                log.warning("ignoring stored link %s: it is no longer valid (%s)", link_id, exc)
        return found

    def add(self, link_id: str, spec: LinkConfig, added_by: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO links (id, spec, added_by, added_at) VALUES (?, ?, ?, ?)",
                (link_id, json.dumps(spec.model_dump(mode="json")), added_by, _now()),
            )

    def remove(self, link_id: str) -> bool:
        with self._db() as db:
            removed = db.execute("DELETE FROM links WHERE id = ?", (link_id,)).rowcount
            db.execute("DELETE FROM paused WHERE id = ?", (link_id,))
        return removed > 0

    def paused(self) -> set[str]:
        with self._db() as db:
            return {row[0] for row in db.execute("SELECT id FROM paused")}

    def set_paused(self, link_id: str, paused: bool, by: str) -> None:
        with self._db() as db:
            if paused:
                db.execute(
                    "INSERT OR REPLACE INTO paused (id, paused_by, paused_at) VALUES (?, ?, ?)",
                    (link_id, by, _now()),
                )
            else:
                db.execute("DELETE FROM paused WHERE id = ?", (link_id,))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
