"""Every workaround for a slidge 0.4.2 bug: the list, and :func:`apply`, which installs them.

Each fix names the bug, and ``tests/unit/test_slidge_fixes.py`` (``tests/unit/test_storage.py``
for the PostgreSQL ones) has a *detector* test that asserts the bug is still there: the day
upstream fixes it, that test fails and tells us to delete the workaround. Verified bugs (see
``shared/NOTES.md``), each told in full in the docstring of the module that holds it: the
fixes live by theme in five modules, named below (slidge's classes are patched only by
:func:`apply`, so importing them imports neither slidge nor slixmpp), and the names other
code uses are importable from here too.

1. ``LegacyRoster._fill`` never pushes contacts to the roster: plugins call
   :func:`push_to_roster` (:mod:`gateway.slidge_fixes_presence`).
2. Re-submitting the registration form with two or more registered users crashes the
   gateway: ``_user_modify`` replaced (:mod:`gateway.slidge_fixes_registration`).
3. On PostgreSQL, a migration calls SQLite's ``INSTR``: :func:`postgres_prepare` creates an
   ``instr(text, text)`` function (:mod:`gateway.slidge_fixes_store`).
4. slidge's SIGTERM handler raises into whatever code runs: the handler stops the event
   loop instead (:mod:`gateway.slidge_fixes_loop`).
5. A bare ``postgresql://`` URL means psycopg 3, which slidge does not install:
   :func:`postgres_driver` names psycopg2 (:mod:`gateway.slidge_fixes_store`).
6. Deleting a room leaves its ``group_msg_origin`` rows: the missing cascade added
   (:mod:`gateway.slidge_fixes_store`).
7. SQLite with the rollback journal and ``synchronous=FULL``: WAL with
   ``synchronous=NORMAL`` (:mod:`gateway.slidge_fixes_store`).
8. A session, a duplicate query, an insert and a commit per room message:
   :class:`ArchiveBatcher` writes the archive once per tick
   (:mod:`gateway.slidge_fixes_archive`).
9. Any task that fails unobserved stops the gateway, also with a plugin's
   ``XMPPError``: such an error is logged (:mod:`gateway.slidge_fixes_loop`).
10. A registration through XEP-0077 stores no preferences: the form's defaults stored,
    and filled for users registered before (:mod:`gateway.slidge_fixes_registration`).
11-19. Per-message work made cheaper with the same results, in :mod:`gateway.slidge_speed`
    (its docstring lists them): 11, ``"name" in stanza`` without building the stanza's
    whole ``values``; 12, the message id map written once per tick; 13, no empty commit
    per message, and an index on the archive's legacy ids; 14, each incoming stanza
    matched once, not twice, against each handler's path; 15, stanzas other than
    presences filtered without a task and a timed wait per async filter; 16, a room
    message's archive copy made from its XML instead of through stanza plugins; 17, a
    room message sent as itself to the user's first resource instead of as a copy; 18,
    XML escaping with ``str.replace`` instead of a dictionary lookup per character.
20-29. What slidge keeps of every occupant and contact it ever built, in
    :mod:`gateway.slidge_joins` (its docstring lists them): 20, a logger per occupant,
    contact and room object, which the logging module keeps forever; 21, slixmpp's roster
    recording the last presence sent from every room and contact (only the component's
    own are kept).
30-39. More per-message work, also in :mod:`gateway.slidge_speed`: 30, slidge's echo of
    what the user sends to a room, its two ids added to the XML and the message itself
    sent to the first resource; 31, a plain message of an occupant built as XML, its
    plugins loaded as parsing it would.
50. slidge has no way for a plugin to see a presence before its own handlers:
    :func:`handle_before_slidge` (:mod:`gateway.slidge_fixes_presence`).
51. slidge's *register* command answers the plugin's own ``XMPPError`` with
    ``internal-server-error``: the plugin's error re-raised
    (:mod:`gateway.slidge_fixes_registration`).
52. A password answered in a chat command reaches slixmpp's DEBUG log: the log filter
    hides its body (:mod:`gateway.slidge_fixes_registration`).
53. Messages with equal legacy stamps came back in either order, and a page boundary
    between them skipped one: fix 8's writer gives every new row a stamp of its own in
    its room (:mod:`gateway.archive_order`; the hook in :mod:`gateway.slidge_fixes_archive`).
"""

from __future__ import annotations

from typing import Any

from . import slidge_joins, slidge_speed
from .slidge_fixes_archive import (
    ARCHIVE,
    ARCHIVE_BATCH,
    ARCHIVE_TICK,
    MAM_READS,
    ArchiveBatcher,
    batch_archive_writes,
)
from .slidge_fixes_loop import _stop_loop_on_sigterm, log_answerless_errors
from .slidge_fixes_presence import (
    SLIDGE_HANDLERS,
    SlidgeHandler,
    handle_before_slidge,
    push_to_roster,
)
from .slidge_fixes_registration import (
    _user_modify,
    default_preferences,
    fill_preferences,
    private_answers_redacted,
    registration_errors_keep_their_condition,
    store_default_preferences,
)
from .slidge_fixes_store import (
    ORIGINS_RELATIONSHIP,
    POSTGRES_DRIVER,
    cascade_room_origins,
    postgres_driver,
    postgres_prepare,
    sqlite_wal_engine_factory,
)

__all__ = [
    "ARCHIVE",
    "ARCHIVE_BATCH",
    "ARCHIVE_TICK",
    "MAM_READS",
    "ORIGINS_RELATIONSHIP",
    "POSTGRES_DRIVER",
    "SLIDGE_HANDLERS",
    "ArchiveBatcher",
    "SlidgeHandler",
    "apply",
    "batch_archive_writes",
    "cascade_room_origins",
    "default_preferences",
    "fill_preferences",
    "handle_before_slidge",
    "log_answerless_errors",
    "postgres_driver",
    "postgres_prepare",
    "private_answers_redacted",
    "push_to_roster",
    "registration_errors_keep_their_condition",
    "sqlite_wal_engine_factory",
    "store_default_preferences",
]


def apply() -> None:
    """Install the in-process fixes; call before slidge's ``main`` runs."""
    import slidge.main
    from slidge.core.dispatcher.registration import RegistrationMixin

    RegistrationMixin._user_modify = _user_modify  # type: ignore[method-assign]
    slidge.main.handle_sigterm = _stop_loop_on_sigterm
    cascade_room_origins()
    log_answerless_errors()
    # slidge.main imported get_engine by name; replace that name, where main() looks it up.
    main_module: Any = slidge.main
    main_module.get_engine = sqlite_wal_engine_factory(main_module.get_engine)
    batch_archive_writes()
    slidge_speed.apply()  # fixes 11-19 and 30-39
    slidge_joins.apply()  # fixes 20-29
    store_default_preferences()
    registration_errors_keep_their_condition()
    private_answers_redacted()
