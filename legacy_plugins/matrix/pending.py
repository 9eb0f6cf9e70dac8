"""What waits for a room key, kept across restarts of the gateway.

An event the gateway's device cannot decrypt is shown (or archived) as a notice, and its
key asked for from the user's other devices; the key may come minutes or days later,
after a restart, even one by ``kill -9``. So that it still corrects the notice (once),
and the request is still cancelled with its ID or sent again to a device the user
verifies, three small tables live in the device's key store (nio's SQLite database, in
``DATA_DIR/matrix/e2ee/<JID>/``; deleted with it when the user unregisters):

- ``passerelle_undecrypted``: the events waiting (at most `Undecrypted.limit`, oldest
  dropped), with the encrypted event as the homeserver sent it;
- ``passerelle_key_request``: this device's requests, by Megolm session (the request ID
  once sent, none while the request waits for its delay);
- ``passerelle_held_request``: requests of the user's unverified devices, answered when
  the user verifies them (at most `.keyshare.MAX_HELD`).

Writes are made after each sync batch (and after a room's back-fill), before the sync
position is stored: should the process die in between, the batch is read again. A store
that cannot be written is logged and the gateway goes on (the keys then only correct
what it has in memory).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

from .events import Encrypted
from .ids import EventId, RoomId, UserId
from .keyshare import IncomingRequest, OutgoingRequest, SessionRef

__all__ = ["PendingStore", "Undecrypted"]

log = logging.getLogger(__name__)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS passerelle_undecrypted ("
    " event_id TEXT PRIMARY KEY, session_id TEXT NOT NULL, event TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS passerelle_key_request ("
    " session_id TEXT PRIMARY KEY, room_id TEXT NOT NULL, sender_key TEXT NOT NULL,"
    " request_id TEXT)",
    "CREATE TABLE IF NOT EXISTS passerelle_held_request ("
    " request_id TEXT PRIMARY KEY, user_id TEXT NOT NULL, device_id TEXT NOT NULL,"
    " room_id TEXT NOT NULL, session_id TEXT NOT NULL, sender_key TEXT NOT NULL)",
)


class PendingStore:
    """The three tables (see the module doc) in ``database``, a peewee database (nio's
    store's: it opens its connection again by itself when it was closed idle)."""

    def __init__(self, database: Any) -> None:
        self._db = database
        self.working = self._write(lambda: [self._db.execute_sql(sql) for sql in _SCHEMA])

    def _write(self, work: Any) -> bool:
        try:
            with self._db.atomic():
                work()
        except (sqlite3.Error, OSError, _peewee_error()) as e:
            log.warning("Could not store what waits for room keys: %s", e)
            return False
        return True

    def _read(self, sql: str) -> list[tuple[Any, ...]]:
        try:
            return list(self._db.execute_sql(sql).fetchall())
        except (sqlite3.Error, OSError, _peewee_error()) as e:
            log.warning("Could not read what waits for room keys: %s", e)
            return []

    # -- undecryptable events -------------------------------------------------------------

    def events(self) -> list[Encrypted]:
        """The events stored, oldest first (a malformed row is skipped)."""
        out = []
        rows = self._read("SELECT event FROM passerelle_undecrypted ORDER BY rowid")
        for (text,) in rows:
            try:
                out.append(_event_from_json(text))
            except (ValueError, TypeError, KeyError) as e:
                log.warning("Skipped a stored undecryptable event: %s", e)
        return out

    def save_events(self, added: Iterable[Encrypted], removed: Iterable[str]) -> bool:
        rows = [(e.event_id, e.session_id, _event_to_json(e)) for e in added]
        gone = [(event_id,) for event_id in removed]

        def work() -> None:
            cursor = self._db.cursor()
            cursor.executemany("DELETE FROM passerelle_undecrypted WHERE event_id = ?", gone)
            cursor.executemany(
                "INSERT OR REPLACE INTO passerelle_undecrypted VALUES (?, ?, ?)", rows
            )

        return self._write(work)

    # -- this device's requests -----------------------------------------------------------

    def requests(self) -> tuple[list[OutgoingRequest], list[SessionRef]]:
        """The requests sent (with their IDs) and the sessions still to be asked for."""
        sent, queued = [], []
        rows = self._read(
            "SELECT session_id, room_id, sender_key, request_id"
            " FROM passerelle_key_request ORDER BY rowid"
        )
        for session_id, room_id, sender_key, request_id in rows:
            ref = SessionRef(room_id, session_id, sender_key)
            if request_id is None:
                queued.append(ref)
            else:
                sent.append(OutgoingRequest(request_id, ref))
        return sent, queued

    def save_requests(self, changes: Mapping[str, OutgoingRequest | SessionRef | None]) -> bool:
        """Store `.keyshare.KeyRequests.take_changes`."""
        gone = [(s,) for s, now in changes.items() if now is None]
        rows: list[tuple[str, str, str, str | None]] = []
        for now in changes.values():
            if isinstance(now, OutgoingRequest):
                ref, request_id = now.session, now.request_id
                rows.append((ref.session_id, ref.room_id, ref.sender_key, request_id))
            elif isinstance(now, SessionRef):
                rows.append((now.session_id, now.room_id, now.sender_key, None))

        def work() -> None:
            cursor = self._db.cursor()
            cursor.executemany("DELETE FROM passerelle_key_request WHERE session_id = ?", gone)
            cursor.executemany(
                "INSERT OR REPLACE INTO passerelle_key_request VALUES (?, ?, ?, ?)", rows
            )

        return self._write(work)

    # -- requests of the user's unverified devices ------------------------------------------

    def held(self) -> list[IncomingRequest]:
        rows = self._read(
            "SELECT request_id, user_id, device_id, room_id, session_id, sender_key"
            " FROM passerelle_held_request ORDER BY rowid"
        )
        return [
            IncomingRequest(user, device, request_id, SessionRef(room, session, key))
            for request_id, user, device, room, session, key in rows
        ]

    def save_held(self, held: Iterable[IncomingRequest]) -> bool:
        """Store these requests in place of those stored (a hundred at most)."""
        rows = [
            (r.request_id, r.user_id, r.device_id, s.room_id, s.session_id, s.sender_key)
            for r in held
            if (s := r.session) is not None
        ]

        def work() -> None:
            cursor = self._db.cursor()
            cursor.execute("DELETE FROM passerelle_held_request")
            cursor.executemany(
                "INSERT OR REPLACE INTO passerelle_held_request VALUES (?, ?, ?, ?, ?, ?)", rows
            )

        return self._write(work)


class Undecrypted:
    """The events waiting for their keys, by event ID, oldest first (at most ``limit``:
    the oldest is given up), and what changed since `flush` stored it."""

    def __init__(self, events: Iterable[Encrypted] = (), limit: int = 1000) -> None:
        self.limit = limit
        self._events: OrderedDict[EventId, Encrypted] = OrderedDict()
        for event in events:
            self._events[event.event_id] = event
        self._added: dict[EventId, Encrypted] = {}
        self._removed: set[EventId] = set()
        self._trim()

    def __len__(self) -> int:
        return len(self._events)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._events

    def keep(self, event: Encrypted) -> None:
        if event.event_id in self._events:
            return
        self._events[event.event_id] = dataclasses.replace(event, reason="")
        self._added[event.event_id] = self._events[event.event_id]
        self._removed.discard(event.event_id)
        self._trim()

    def _trim(self) -> None:
        while len(self._events) > self.limit:
            event_id, _ = self._events.popitem(last=False)
            self._drop(event_id)

    def take(self, sessions: set[str]) -> list[Encrypted]:
        """The events waiting for one of these Megolm sessions, no longer kept."""
        found = [e for e in self._events.values() if e.session_id in sessions]
        for event in found:
            del self._events[event.event_id]
            self._drop(event.event_id)
        return found

    def _drop(self, event_id: EventId) -> None:
        if self._added.pop(event_id, None) is None:
            self._removed.add(event_id)

    def flush(self, store: PendingStore) -> None:
        """Store what changed (kept for the next flush if the store fails)."""
        if not self._added and not self._removed:
            return
        if store.save_events(self._added.values(), self._removed):
            self._added.clear()
            self._removed.clear()


def _event_to_json(event: Encrypted) -> str:
    return json.dumps(
        {
            "room_id": event.room_id,
            "event_id": event.event_id,
            "sender": event.sender,
            "ts": event.ts,
            "session_id": event.session_id,
            "raw": dict(event.raw),
        },
        separators=(",", ":"),
    )


def _event_from_json(text: str) -> Encrypted:
    data = json.loads(text)
    raw = data["raw"]
    if not isinstance(raw, dict) or not isinstance(data["ts"], int):
        raise ValueError("not an encrypted event")
    return Encrypted(
        RoomId(str(data["room_id"])),
        EventId(str(data["event_id"])),
        UserId(str(data["sender"])),
        data["ts"],
        str(data["session_id"]),
        raw=raw,
    )


def _peewee_error() -> type[Exception]:
    import peewee  # type: ignore[import-untyped]  # nio's store's, loaded with nio

    return peewee.PeeweeException  # type: ignore[no-any-return]
