"""What waits for Matrix room keys, kept across restarts (legacy_plugins/matrix/pending.py):
a real nio key store on disk, closed and opened again as a restart would."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

from legacy_plugins.matrix import crypto
from legacy_plugins.matrix.client import load_nio
from legacy_plugins.matrix.events import Encrypted
from legacy_plugins.matrix.ids import EventId, RoomId, UserId
from legacy_plugins.matrix.keyshare import IncomingRequest, KeyRequests, SessionRef
from legacy_plugins.matrix.pending import PendingStore, Undecrypted

ROOM = RoomId("!room:example.org")


def encrypted(n: int, session: str = "S1") -> Encrypted:
    raw = {"type": "m.room.encrypted", "event_id": f"$e{n}", "content": {"session_id": session}}
    return Encrypted(
        ROOM, EventId(f"$e{n}"), UserId("@bob:example.org"), 1000 + n, session, raw=raw
    )


async def open_store(path: Path) -> tuple[PendingStore, Any]:
    await load_nio()
    _olm, store = crypto._open_store("@alice:example.org", "DEVICE", path, "pickle key")
    return PendingStore(store.database), store


async def test_undecrypted_events_survive_a_restart_bounded_and_taken_once(tmp_path: Path) -> None:
    pending, store = await open_store(tmp_path)
    waiting = Undecrypted(limit=3)
    for n in range(5):  # the two oldest are given up
        waiting.keep(encrypted(n, "S1" if n % 2 else "S2"))
    waiting.keep(encrypted(4, "S2"))  # again: nothing new
    waiting.flush(pending)
    store.database.close()  # what a kill leaves: the rows already written

    pending, store = await open_store(tmp_path)
    again = Undecrypted(pending.events(), limit=3)
    assert [e.event_id for e in again.take({"S1"})] == ["$e3"]
    assert len(again) == 2 and "$e3" not in again
    restored = again.take({"S2"})
    assert restored == [encrypted(2, "S2"), encrypted(4, "S2")]  # raw event included
    assert [e.raw for e in restored] == [encrypted(2, "S2").raw, encrypted(4, "S2").raw]
    again.flush(pending)
    assert pending.events() == []


async def test_requests_sent_keep_their_ids_across_a_restart(tmp_path: Path) -> None:
    pending, store = await open_store(tmp_path)
    ids = (f"r{n}" for n in itertools.count())
    refs = [SessionRef(ROOM, f"S{n}", f"K{n}") for n in range(4)]
    before = KeyRequests(lambda: next(ids), burst=2)
    for ref in refs:
        before.want(ref)
    sent = before.due(0.0)  # two go out, two wait for the rate limit
    before.arrived(["S0"])  # one's key comes: it ends
    pending.save_requests(before.take_changes())
    assert before.take_changes() == {}
    store.database.close()

    pending, _ = await open_store(tmp_path)
    after = KeyRequests(lambda: next(ids), burst=5)
    after.restore(*pending.requests())
    assert after.asked("S1") == sent[1]  # the same request ID: cancelled or asked again
    assert after.asked("S0") is None
    assert [r.session for r in after.due(0.0)] == refs[2:]  # the others, at once
    assert [r.session.session_id for r in after.arrived(["S1", "S2", "S3"])] == [
        "S1",
        "S2",
        "S3",
    ]
    pending.save_requests(after.take_changes())
    assert pending.requests() == ([], [])


async def test_held_requests_are_stored_in_place_of_the_previous_ones(tmp_path: Path) -> None:
    pending, store = await open_store(tmp_path)
    held = [
        IncomingRequest("@alice:example.org", f"PHONE{n}", f"q{n}", SessionRef(ROOM, "S", "K"))
        for n in range(3)
    ]
    pending.save_held(held)
    pending.save_held(held[1:])
    store.database.close()
    pending, _ = await open_store(tmp_path)
    assert pending.held() == held[1:]


@pytest.mark.parametrize(
    "row",
    [
        "not json",
        '{"room_id": "!r", "event_id": "$e", "sender": "@b", "ts": "x", "session_id": "S",'
        ' "raw": {}}',
        '{"room_id": "!r", "event_id": "$e", "sender": "@b", "ts": 1, "session_id": "S",'
        ' "raw": []}',
        '{"event_id": "$e"}',
    ],
)
async def test_a_spoiled_stored_event_is_skipped(tmp_path: Path, row: str) -> None:
    pending, store = await open_store(tmp_path)
    Undecrypted([encrypted(1)]).flush(pending)  # nothing added through keep: not stored
    waiting = Undecrypted()
    waiting.keep(encrypted(1))
    waiting.flush(pending)
    store.database.execute_sql(
        "INSERT INTO passerelle_undecrypted VALUES ('$bad', 'S1', ?)", (row,)
    )
    assert [e.event_id for e in pending.events()] == ["$e1"]


async def test_a_store_that_cannot_be_written_is_said_and_kept_for_later(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pending, store = await open_store(tmp_path)
    waiting = Undecrypted()
    waiting.keep(encrypted(1))
    store.database.execute_sql("DROP TABLE passerelle_undecrypted")
    waiting.flush(pending)  # fails: logged, kept
    assert "Could not store what waits for room keys" in caplog.text
    PendingStore(store.database)  # the table again (as at the next start)
    waiting.flush(pending)
    assert [e.event_id for e in pending.events()] == ["$e1"]
