"""Per-message work of slidge 0.4.2 and slixmpp 1.17 made cheaper, without changing results.

These are slidge fixes 11-19 and 30-39 (listed with the others in :mod:`gateway.slidge_fixes`, which
installs them): each replaces a piece of per-message work that costs far more than what
it computes, and keeps what it computes — the same answers, the same rows, the same
stanzas. ``tests/unit/test_slidge_speed.py`` has, for each, a *detector* test that fails
when upstream changes the code under it, and tests that compare the fix with the code it
replaces. ``bench/irc.py`` measured each (``bench/README.md``).

They live by role in four modules, all installed by :func:`apply` (slidge's
classes are patched only then, so importing these modules imports neither slidge nor
slixmpp); the names other code uses are importable from here too:

- :mod:`gateway.slidge_speed_stanzas`: 11 (``name in stanza``), 14 (stanza paths
  matched once), 15 (outgoing filters without tasks), 18 (XML escaping);
- :mod:`gateway.slidge_speed_store`: 12 (the id map written once per tick, and the
  tick batcher fix 8 uses too), 13 (no empty commits, the archive's legacy id index);
- :mod:`gateway.slidge_speed_messages`: 16 (a room message's archive copy from its
  XML), 17 (a room message sent as itself to the first resource), 30 (the echo of
  what the user sends to a room), 31 (an occupant's plain message built as XML);
- :mod:`gateway.slidge_speed_presences`: 32 (an occupant's presence with its MUC
  ``<x>`` built as XML).
"""

from __future__ import annotations

from .slidge_speed_messages import (
    ArchiveCopy,
    archive_copy,
    echo_directly,
    participant_messages_from_xml,
    send_messages_uncopied,
)
from .slidge_speed_presences import participant_presences_from_xml
from .slidge_speed_stanzas import (
    PRESENCE_ONLY_FILTERS,
    fast_contains,
    fast_escape,
    match_once,
    send_without_tasks,
)
from .slidge_speed_store import (
    IDMAP,
    IDMAP_BATCH,
    IDMAP_READS,
    IDMAP_TICK,
    MAM_LEGACY_INDEX,
    IdMapBatcher,
    TickBatcher,
    batch_id_map_writes,
    flushing_first,
    speed_up_store,
    store_speedups,
)

__all__ = [
    "IDMAP",
    "IDMAP_BATCH",
    "IDMAP_READS",
    "IDMAP_TICK",
    "MAM_LEGACY_INDEX",
    "PRESENCE_ONLY_FILTERS",
    "ArchiveCopy",
    "IdMapBatcher",
    "TickBatcher",
    "apply",
    "archive_copy",
    "batch_id_map_writes",
    "echo_directly",
    "fast_contains",
    "fast_escape",
    "flushing_first",
    "match_once",
    "participant_messages_from_xml",
    "participant_presences_from_xml",
    "send_messages_uncopied",
    "send_without_tasks",
    "speed_up_store",
    "store_speedups",
]


def apply() -> None:
    """Install fixes 11-19 and 30-39 (called by :func:`gateway.slidge_fixes.apply`)."""
    fast_contains()
    batch_id_map_writes()
    speed_up_store()
    match_once()
    send_without_tasks()
    send_messages_uncopied()
    fast_escape()
    echo_directly()
    participant_messages_from_xml()
    participant_presences_from_xml()
