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
8. ``MessageArchive.add`` opens a session, looks for duplicates, inserts and commits for
   every room message: most of the CPU of a busy channel. :class:`ArchiveBatcher` queues
   the rows and writes them in one transaction per tick (:data:`ARCHIVE_TICK`, or every
   :data:`ARCHIVE_BATCH` messages), in order, with slidge's duplicate rules (a row with
   the same stanza id, or legacy id, in the same room is updated) in two indexed
   queries, and inserts the new ones with one Core ``executemany``. Every archive read
   goes through ``MAMStore``, whose read methods flush first, so nobody sees the
   archive without the queued rows; a clean exit (SIGTERM, or slidge exiting after an
   error) flushes at exit. A SIGKILL loses at most the rows
   of the last tick — messages already delivered live, missing from the room's history.
9. slidge's event loop exception handler stops the whole gateway (exit code 3: every
   user of the network logged out, until the supervisor restarts it) when any task it
   started fails unobserved, including with an ``XMPPError``: the error a plugin raises
   for the user, which in a background task (fetching the user's avatar at login, say)
   has no stanza to answer. :func:`apply` wraps the handler so such an error is logged
   and the gateway goes on; any other exception still stops it, as before.
10. A registration through XEP-0077 (and an ad-hoc registration whose preferences form
    timed out) stores no preferences: slidge reads the missing ones as off (*sync avatar*,
    *sync presence*, whatever the form shows as default), and its ``preferences`` command
    crashes on ``previous["sync_avatar"]``. :func:`apply` stores the form's defaults when
    the user registers, and fills the missing ones when a session is created for a user
    registered before (:func:`fill_preferences`).
50. slidge has no way for a plugin to see a presence before its own handlers do: they
    are methods of its session dispatcher, private to ``BaseGateway``
    (``_BaseGateway__dispatcher``). Its ``presence`` handler answers a MUC nick change with
    "Slidge does not let you change your nickname in groups", and its ``groupchat_join``
    handler answers an unregistered JID with ``registration-required``; IRC has nick
    changes and Biboumi-style auto-registration. :func:`handle_before_slidge` lets a
    plugin's handler stand in front of either, and hand the presence on (or not).
51. slidge's *register* command (ad-hoc and chat) answers every exception of the
    plugin's ``validate`` with ``internal-server-error``, also the ``XMPPError`` the
    plugin raised to say what went wrong (``not-authorized`` for a wrong password,
    ``resource-constraint`` when rate-limited...); XEP-0077's form keeps it.
    :func:`registration_errors_keep_their_condition` re-raises the plugin's own error.
52. slidge's chat commands ask a form's fields one by one in the chat, a password as any
    other field (``Password? (or 'abort')``), and slixmpp logs the answer at DEBUG as
    every stanza it receives (``RECV: <message …><body>the password</body>``).
    :func:`private_answers_redacted` tells :mod:`gateway.redact` whose next message
    answers a ``text-private`` field, so that the log filter hides its body.
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
53. slidge orders and pages the room archive by time stamp alone, and legacy stamps are
    coarse (milliseconds, an email's seconds): messages with equal stamps came back in
    either order, and a page boundary between them skipped one. Fix 8's writer gives
    every new row a stamp of its own in its room (:mod:`gateway.archive_order`).
"""

from __future__ import annotations

import atexit
import contextvars
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import redact, slidge_joins, slidge_speed

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


def _errors_keep_their_condition(register: Callable[..., Any]) -> Callable[..., Any]:
    """Fix 51: slidge's ``Register.register``, the plugin's ``XMPPError`` kept as it is."""
    from slixmpp.exceptions import XMPPError

    @functools.wraps(register)
    async def register_keeping_errors(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await register(self, *args, **kwargs)
        except XMPPError as e:
            # slidge raises its internal-server-error inside ``except Exception as e``:
            # what the plugin raised is the context of it.
            said = e.__context__
            if e.condition == "internal-server-error" and isinstance(said, XMPPError):
                raise said from None
            raise

    register_keeping_errors.passerelle_fix = True  # type: ignore[attr-defined]
    return register_keeping_errors


def registration_errors_keep_their_condition() -> None:
    """Fix 51: install :func:`_errors_keep_their_condition` (idempotent)."""
    from slidge.command.register import Register

    if not getattr(Register.register, "passerelle_fix", False):
        Register.register = _errors_keep_their_condition(Register.register)  # type: ignore[method-assign]


_PRIVATE_PROMPTS: contextvars.ContextVar[frozenset[str]] = contextvars.ContextVar(
    "private_prompts", default=frozenset()
)
"""Fix 52: the questions for private fields of the chat-command form being asked."""


def _private_prompts_known(handle_form: Callable[..., Any]) -> Callable[..., Any]:
    """Fix 52: slidge's ``ChatCommandProvider.__handle_form``, its private fields'
    questions (slidge's own wording) known to :func:`_private_answers_hidden`."""

    @functools.wraps(handle_form)
    async def handle_form_knowing_prompts(self: Any, result: Any, *args: Any, **kwargs: Any) -> Any:
        prompts = frozenset(
            f"{f.label or f.var}? (or 'abort')" for f in result.fields if f.type == "text-private"
        )
        token = _PRIVATE_PROMPTS.set(prompts)
        try:
            return await handle_form(self, result, *args, **kwargs)
        finally:
            _PRIVATE_PROMPTS.reset(token)

    return handle_form_knowing_prompts


def _private_answers_hidden(chat_input: Callable[..., Any]) -> Callable[..., Any]:
    """Fix 52: slidge's ``ChatCommandProvider.input``; while it waits for the answer to a
    private field's question, the log filter hides the bodies of the user's messages."""
    from slixmpp import JID

    @functools.wraps(chat_input)
    async def input_hiding_private_answers(
        self: Any, jid: Any, text: str | None = None, **kwargs: Any
    ) -> Any:
        if text is None or text not in _PRIVATE_PROMPTS.get() or not kwargs.get("blocking", True):
            return await chat_input(self, jid, text, **kwargs)
        with redact.private_answer_from(JID(jid).bare):
            return await chat_input(self, jid, text, **kwargs)

    return input_hiding_private_answers


def private_answers_redacted() -> None:
    """Fix 52: install :func:`_private_prompts_known` and :func:`_private_answers_hidden`
    (idempotent)."""
    from slidge.command.chat_command import ChatCommandProvider

    provider: Any = ChatCommandProvider
    if getattr(provider.input, "passerelle_fix", False):
        return
    provider._ChatCommandProvider__handle_form = _private_prompts_known(
        provider._ChatCommandProvider__handle_form
    )
    provider.input = _private_answers_hidden(provider.input)
    provider.input.passerelle_fix = True


def _stop_loop_on_sigterm(_signum: int, _frame: object) -> None:
    """Bug 4: end ``loop.run_forever()`` instead of raising into whatever code runs."""
    import asyncio

    logging.getLogger("slidge.main").info("Caught SIGTERM, shutting down")
    loop = asyncio.get_event_loop()
    loop.call_soon_threadsafe(loop.stop)


ORIGINS_RELATIONSHIP = "passerelle_origin_messages"
"""Name of the relationship :func:`cascade_room_origins` adds to slidge's ``Room``."""


def _answerless_errors_are_logged(handler: Callable[..., None]) -> Callable[..., None]:
    """Fix 9: slidge's loop exception handler, except for an ``XMPPError`` nobody can get."""
    from slixmpp.exceptions import XMPPError

    @functools.wraps(handler)
    def handle(self: Any, loop: Any, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, XMPPError):
            coro = getattr(context.get("future"), "get_coro", lambda: None)()
            where = getattr(coro, "__qualname__", "a task")
            log.warning("%s failed: %s (%s)", where, exc.condition, exc.text)
            return
        handler(self, loop, context)

    handle.passerelle_fix = True  # type: ignore[attr-defined]
    return handle


def log_answerless_errors() -> None:
    """Fix 9: install :func:`_answerless_errors_are_logged` (idempotent)."""
    from slidge.core.gateway import BaseGateway

    name = "_BaseGateway__exception_handler"
    current = getattr(BaseGateway, name)
    if not getattr(current, "passerelle_fix", False):
        setattr(BaseGateway, name, _answerless_errors_are_logged(current))


def cascade_room_origins() -> None:
    """Bug 6: delete a room's ``group_msg_origin`` rows with the room (idempotent)."""
    from slidge.db.models import GroupMessagesOrigin, Room
    from sqlalchemy.orm import relationship

    if ORIGINS_RELATIONSHIP not in Room.__mapper__.relationships:
        Room.__mapper__.add_property(
            ORIGINS_RELATIONSHIP,
            relationship(GroupMessagesOrigin, cascade="all, delete-orphan"),
        )


def default_preferences(fields: Iterable[Any]) -> dict[str, Any]:
    """Fix 10: what slidge's preferences form submits when the user changes nothing."""
    from slixmpp.exceptions import XMPPError

    defaults: dict[str, Any] = {}
    for field in fields:
        try:
            defaults[field.var] = field.validate(field.value)
        except XMPPError as e:  # none, or not one of its options: the user must choose
            log.debug("Preference %s has no usable default: %s", field.var, e)
    return defaults


def fill_preferences(xmpp: Any, user: Any) -> bool:
    """Fix 10: store the default of every preference ``user`` has no value for; whether
    anything was missing."""
    missing = {
        var: value
        for var, value in default_preferences(xmpp.PREFERENCES).items()
        if var not in user.preferences
    }
    if not missing:
        return False
    user.preferences = {**missing, **user.preferences}
    from sqlalchemy.exc import SQLAlchemyError

    try:
        xmpp.store.users.update(user)
    except SQLAlchemyError as e:  # the defaults still apply, for this session
        log.warning("Could not store the default preferences of %s: %s", user.jid, e)
    return True


def _validate_then_fill(validate: Callable[..., Any]) -> Callable[..., Any]:
    """Fix 10: slidge's XEP-0077 ``_user_validate``, then the defaults stored for the user."""

    @functools.wraps(validate)
    async def user_validate(self: Any, gateway_jid: Any, node: str, ifrom: Any, iq: Any) -> None:
        from slidge.db import GatewayUser

        await validate(self, gateway_jid, node, ifrom, iq)
        with self.xmpp.store.session(expire_on_commit=False) as orm:
            user = orm.query(GatewayUser).filter_by(jid=ifrom.bare).one_or_none()
        if user is not None:
            fill_preferences(self.xmpp, user)

    user_validate.passerelle_fix = True  # type: ignore[attr-defined]
    return user_validate


def _init_then_fill(init: Callable[..., None]) -> Callable[..., None]:
    """Fix 10: slidge's ``BaseSession.__init__``, then the user's missing defaults stored."""

    @functools.wraps(init)
    def session_init(self: Any, user: Any) -> None:
        init(self, user)
        fill_preferences(self.xmpp, user)

    session_init.passerelle_fix = True  # type: ignore[attr-defined]
    return session_init


def store_default_preferences() -> None:
    """Fix 10: preferences stored at registration, and filled for users without them
    (idempotent)."""
    from slidge.core.dispatcher.registration import RegistrationMixin
    from slidge.core.session import BaseSession

    if not getattr(RegistrationMixin._user_validate, "passerelle_fix", False):
        RegistrationMixin._user_validate = _validate_then_fill(  # type: ignore[method-assign]
            RegistrationMixin._user_validate
        )
    if not getattr(BaseSession.__init__, "passerelle_fix", False):
        BaseSession.__init__ = _init_then_fill(BaseSession.__init__)  # type: ignore[method-assign]


SLIDGE_HANDLERS = {"presence": "on_presence", "groupchat_join": "on_groupchat_join"}
"""Fix 50: the slixmpp events :func:`handle_before_slidge` can take, and the name of the
slidge dispatcher method that handles each."""

SlidgeHandler = Callable[[Any], Awaitable[None]]
"""Fix 50: slidge's own handler of a presence event, for a plugin's handler to call."""


def handle_before_slidge(
    xmpp: Any, handlers: Mapping[str, Callable[[Any, SlidgeHandler], Awaitable[None]]]
) -> bool:
    """Fix 50: for each ``event: handler`` of ``handlers`` (events of
    :data:`SLIDGE_HANDLERS`), run ``await handler(presence, slidge_handler)`` in place of
    slidge's handler of ``event``; ``handler`` decides whether to hand ``presence`` on.

    Call it from the plugin gateway's ``__init__``, after ``super().__init__()``. Returns
    False, changing nothing, if this slidge has not the handlers it expects.
    """
    dispatcher = getattr(xmpp, "_BaseGateway__dispatcher", None)
    originals: dict[str, SlidgeHandler] = {}
    for event in handlers:
        original = getattr(dispatcher, SLIDGE_HANDLERS[event], None)
        if original is None:
            return False
        originals[event] = original
    for event, handler in handlers.items():
        xmpp.del_event_handler(event, originals[event])
        xmpp.add_event_handler(event, _in_front(handler, originals[event]))
    return True


def _in_front(
    handler: Callable[[Any, SlidgeHandler], Awaitable[None]], slidge_handler: SlidgeHandler
) -> SlidgeHandler:
    async def in_front_of_slidge(presence: Any) -> None:
        await handler(presence, slidge_handler)

    return in_front_of_slidge


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


ARCHIVE_TICK = 0.05
"""Seconds a room message may wait before its archive row is committed (fix 8)."""
ARCHIVE_BATCH = 200
"""Rows that make the archive commit at once, without waiting for the tick (fix 8)."""
MAM_READS = (
    "get_messages",
    "get_first",
    "get_last",
    "get_first_and_last",
    "get_most_recent_with_legacy_id",
    "get_least_recent_with_legacy_id_after",
    "get_by_legacy_id",
    "pop_unread_up_to",
    "is_displayed_by_user",
    "nuke_older_than",
)
"""``MAMStore`` methods that read (or delete) archived rows: they flush the queue first."""


@dataclass(frozen=True, slots=True)
class _ArchiveRow:
    archive: Any  # slidge's MessageArchive: its room (and id) may be filled in at flush
    message: slidge_speed.ArchiveCopy  # made when the message was sent
    archive_only: bool
    legacy_msg_id: str | None


class ArchiveBatcher(slidge_speed.TickBatcher[_ArchiveRow]):
    """Fix 8: room archive rows queued in order and written in one transaction per tick."""

    what = "room messages to the archive"

    def __init__(self, tick: float = ARCHIVE_TICK, batch: int = ARCHIVE_BATCH) -> None:
        super().__init__(tick, batch)

    def describe(self, row: _ArchiveRow) -> str:
        return f"a message of room {row.archive.room} to the archive"

    @staticmethod
    def _write(rows: list[_ArchiveRow]) -> None:
        """slidge's ``MAMStore.add_message`` for many rows: one query for the duplicates
        (same stanza id, or same legacy id, in the same room: the row is updated, as slidge
        does), one multi-row INSERT for the others, one commit."""
        import sqlalchemy as sa
        from slidge.db.models import ArchivedMessage, ArchivedMessageSource, Room

        from .archive_order import untie_new_rows

        mam = rows[0].archive._MessageArchive__store
        with mam.session(expire_on_commit=False) as orm:
            for row in rows:
                room = row.archive.room
                if room.id is None:  # as slidge does: the room was stored after the message
                    rooms = row.archive._MessageArchive__rooms_store
                    row.archive.room = rooms.get(orm, room.user_account_id, room.legacy_id)
            room_ids = {row.archive.room.id for row in rows}
            alive = set(orm.scalars(sa.select(Room.id).where(Room.id.in_(room_ids))))
            rows = [row for row in rows if row.archive.room.id in alive]  # else: room deleted
            stanza_ids = {row.message.id for row in rows}
            legacy_ids = {row.legacy_msg_id for row in rows if row.legacy_msg_id is not None}
            # Two queries, not one with OR: each uses an index (the stanza id's unique
            # one, fix 13's on legacy ids), where the OR read the whole room's archive.
            found = orm.scalars(
                sa.select(ArchivedMessage).where(
                    ArchivedMessage.room_id.in_(alive), ArchivedMessage.stanza_id.in_(stanza_ids)
                )
            ).all()
            if legacy_ids:
                found += orm.scalars(
                    sa.select(ArchivedMessage).where(
                        ArchivedMessage.room_id.in_(alive),
                        ArchivedMessage.legacy_id.in_(legacy_ids),
                    )
                ).all()
            by_stanza: dict[tuple[int, str], Any] = {(m.room_id, m.stanza_id): m for m in found}
            by_legacy: dict[tuple[int, str], Any] = {
                (m.room_id, m.legacy_id): m for m in found if m.legacy_id is not None
            }
            new: list[dict[str, Any]] = []
            for row in rows:
                room_id, message = row.archive.room.id, row.message
                values = {
                    "timestamp": message.when,
                    "stanza": message.serialize(),
                    "author_jid": message.author,
                    "source": ArchivedMessageSource.BACKFILL
                    if row.archive_only
                    else ArchivedMessageSource.LIVE,
                    "legacy_id": row.legacy_msg_id,
                }
                existing = by_stanza.get((room_id, message.id))
                if existing is None and row.legacy_msg_id is not None:
                    existing = by_legacy.get((room_id, row.legacy_msg_id))
                if existing is None:
                    existing = {"room_id": room_id, "stanza_id": message.id, **values}
                    new.append(existing)
                    by_stanza[(room_id, message.id)] = existing
                elif isinstance(existing, dict):
                    existing.update(values)
                else:
                    for key, value in values.items():
                        setattr(existing, key, value)
                if row.legacy_msg_id is not None:
                    by_legacy[(room_id, row.legacy_msg_id)] = existing
            untie_new_rows(orm, new)  # fix 53: a stamp of its own in its room
            if new:  # Core's executemany (column defaults included): the ORM's bulk
                # INSERT costs ~30 % more CPU and adds nothing for plain rows
                orm.execute(sa.insert(ArchivedMessage.__table__), new)  # type: ignore[arg-type]
            orm.commit()


ARCHIVE = ArchiveBatcher()
"""The process's archive queue (fix 8)."""


def _archive_add(
    self: Any,
    msg: Any,
    participant: Any = None,
    archive_only: bool = False,
    legacy_msg_id: str | None = None,
) -> None:
    """Fix 8: slidge's ``MessageArchive.add``, queueing the row instead of committing it;
    the row's copy of the message made from its XML when fix 16 can."""
    from slidge.group.archive import archivable

    if not archivable(msg):
        return
    item: tuple[str, str, str] | None = None
    if participant and not participant.muc.is_anonymous:
        if participant.contact:
            jid = participant.contact.jid.bare
        elif participant.is_user:
            jid = participant.user_jid.bare
        elif participant.is_system:
            jid = str(participant.muc.jid)
        else:
            jid = None  # slidge's way warns and makes one up
        if jid is not None:
            item = (participant.role or "participant", participant.affiliation or "member", jid)
    message = None
    if item is not None or not participant or participant.muc.is_anonymous:
        message = slidge_speed.archive_copy(msg, item)
    if message is None:
        message = slidge_speed.ArchiveCopy.of(_history_message(self, msg, participant))
    if "replace" in msg:
        legacy_msg_id = None
    ARCHIVE.add(
        _ArchiveRow(
            self,
            message,
            archive_only,
            None if legacy_msg_id is None else str(legacy_msg_id),
        )
    )


def _history_message(self: Any, msg: Any, participant: Any) -> Any:
    """slidge's copy of a room message for its archive (``MessageArchive.add``)."""
    import uuid
    import warnings
    from copy import copy

    from slidge.util.archive_msg import HistoryMessage

    new_msg = copy(msg)
    if participant and not participant.muc.is_anonymous:
        new_msg["muc"]["role"] = participant.role or "participant"
        new_msg["muc"]["affiliation"] = participant.affiliation or "member"
        if participant.contact:
            new_msg["muc"]["jid"] = participant.contact.jid.bare
        elif participant.is_user:
            new_msg["muc"]["jid"] = participant.user_jid.bare
        elif participant.is_system:
            new_msg["muc"]["jid"] = participant.muc.jid
        else:
            warnings.warn(
                f"No real JID for participant '{participant.nickname}' in '{self.room.name}'",
                stacklevel=3,
            )
            new_msg["muc"]["jid"] = f"{uuid.uuid4()}@{participant.xmpp.boundjid.bare}"
    return HistoryMessage(new_msg)


def _flushing(read: Callable[..., Any]) -> Callable[..., Any]:
    return slidge_speed.flushing_first(ARCHIVE, read)


def batch_archive_writes() -> None:
    """Fix 8: queue room archive rows; flush before every archive read and at exit."""
    from slidge.db.store import MAMStore
    from slidge.group.archive import MessageArchive

    if MessageArchive.add is _archive_add:
        return
    MessageArchive.add = _archive_add  # type: ignore[method-assign]
    for name in MAM_READS:
        attribute = MAMStore.__dict__[name]
        if isinstance(attribute, staticmethod):
            setattr(MAMStore, name, staticmethod(_flushing(attribute.__func__)))
        else:
            setattr(MAMStore, name, _flushing(attribute))
    atexit.register(ARCHIVE.flush)


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
