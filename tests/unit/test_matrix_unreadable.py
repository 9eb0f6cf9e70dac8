"""What the notice of an undecryptable Matrix event calls it (legacy_plugins/matrix/translate.py)."""

from __future__ import annotations

from typing import Any

import pytest

from legacy_plugins.matrix.events import Encrypted
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.translate import UNREADABLE, what_it_is


def encrypted(content: Any) -> Encrypted:
    raw = {"type": "m.room.encrypted", "content": content}
    return Encrypted(RoomId("!r:x"), EventId("$e"), UserId("@b:x"), 0, "S", raw=raw)


@pytest.mark.parametrize(
    ("content", "what"),
    [
        ({"ciphertext": "…"}, "message"),
        ({"m.relates_to": {"rel_type": "m.replace", "event_id": "$a"}}, "edit of a message"),
        ({"m.relates_to": {"rel_type": "m.annotation", "key": "👍"}}, "reaction to a message"),
        ({"m.relates_to": {"rel_type": "m.thread", "event_id": "$a"}}, "message"),
        ({"m.relates_to": {"m.in_reply_to": {"event_id": "$a"}}}, "message"),  # a reply
        ({"m.relates_to": {"rel_type": ["m.replace"]}}, "message"),  # malformed
        ({"m.relates_to": "m.replace"}, "message"),
        ("not an object", "message"),
    ],
)
def test_what_an_undecryptable_event_is_called(content: Any, what: str) -> None:
    assert what_it_is(encrypted(content)) == what
    notice = UNREADABLE.format(what=what_it_is(encrypted(content)), reason="no key")
    assert notice == f"🔒 [an end-to-end encrypted {what} Passerelle cannot decrypt: no key]"
