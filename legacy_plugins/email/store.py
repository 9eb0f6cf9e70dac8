"""What the gateway remembers per account, next to the account: a small SQLite file.

slidge keeps the map between XMPP stanza ids and legacy ids (here: the core's message ids,
as strings). What slidge cannot know, and the core forgets, is kept here:

* ``delivered``: each message handed to XMPP — its chat, its sender's address (:data:`USER`
  for what the user sent from another device) and the text the user saw. A
  ``Chat-Edit`` is only a correction if the text differs from what was shown; a deletion
  (``MsgDeleted``) arrives after the core has dropped the message, so who retracts it
  and where comes from this table.
* ``notices``: contact requests the user was already told about, so a restart doesn't
  repeat the notice.

The watermark of delivered messages (``last_msg_id``) lives in the core's own database,
so that it moves in the same place as the messages do.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from .translate import ChatId, MsgId

SCHEMA = """
CREATE TABLE IF NOT EXISTS delivered (
    msg_id INTEGER PRIMARY KEY,
    chat_id INTEGER NOT NULL,
    sender TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS notices (
    chat_id INTEGER PRIMARY KEY
);
"""
USER = ""
"""``delivered.sender`` of the user's own messages from another device of the account."""
KEEP_DELIVERED = 20_000
"""Rows kept in ``delivered``: edits and deletions of older messages are not shown."""


@dataclass(frozen=True, slots=True)
class Delivered:
    msg_id: MsgId
    chat_id: ChatId
    sender: str
    body: str


class AccountStore:
    """The gateway's per-account memory (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None)
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def remember(self, msg_id: MsgId, chat_id: ChatId, sender: str, body: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO delivered VALUES (?, ?, ?, ?)",
            (int(msg_id), int(chat_id), sender, body),
        )
        if int(msg_id) % 1000 == 0:
            self._db.execute(
                "DELETE FROM delivered WHERE msg_id <= ?", (int(msg_id) - KEEP_DELIVERED,)
            )

    def delivered(self, msg_id: MsgId) -> Delivered | None:
        row = self._db.execute(
            "SELECT msg_id, chat_id, sender, body FROM delivered WHERE msg_id = ?",
            (int(msg_id),),
        ).fetchone()
        if row is None:
            return None
        return Delivered(MsgId(row[0]), ChatId(row[1]), row[2], row[3])

    def forget(self, msg_id: MsgId) -> None:
        self._db.execute("DELETE FROM delivered WHERE msg_id = ?", (int(msg_id),))

    def noticed(self, chat_id: ChatId) -> bool:
        """Record that the user heard of contact request ``chat_id``; False if new."""
        cursor = self._db.execute("INSERT OR IGNORE INTO notices VALUES (?)", (int(chat_id),))
        return cursor.rowcount == 0
