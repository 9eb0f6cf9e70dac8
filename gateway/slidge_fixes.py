"""Every workaround for a slidge 0.4.2 bug, in one place.

Each fix names the bug, and ``tests/unit/test_slidge_fixes.py`` has a *detector* test that
asserts the bug is still there: the day upstream fixes it, that test fails and tells us to
delete the workaround. Verified bugs (see ``shared/NOTES.md``):

1. ``LegacyRoster._fill`` never pushes contacts to the roster, because it tests
   ``hasattr(xmpp, "TEST_MODE")``, which is always true (a class attribute of
   ``SubclassableOnce``). Plugins call :func:`push_to_roster` instead.
2. Re-submitting the registration form with two or more registered users crashes the
   gateway: ``_user_modify`` looks the user up without a filter. :func:`apply` replaces it.
3. On PostgreSQL, a migration calls SQLite's ``INSTR``. :func:`postgres_prepare` creates an
   ``instr(text, text)`` function (wrapping ``strpos``) in the network's schema.
4. slidge's SIGTERM handler raises ``SigTermInterrupt`` from wherever the main thread is;
   inside a stanza handler slidge's own ``except Exception`` swallows it and the process
   keeps running until SIGKILL, without its clean shutdown. :func:`apply` replaces the
   handler with one that stops the event loop, after which slidge shuts down as usual.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from slidge.contact import LegacyContact

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
        await self.xmpp.user_prevalidate(ifrom, form_dict)
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
    user.legacy_module_data.update(form_dict)
    self.xmpp.store.users.update(user)


def _stop_loop_on_sigterm(_signum: int, _frame: object) -> None:
    """Bug 4: end ``loop.run_forever()`` instead of raising into whatever code runs."""
    import asyncio

    logging.getLogger("slidge.main").info("Caught SIGTERM, shutting down")
    loop = asyncio.get_event_loop()
    loop.call_soon_threadsafe(loop.stop)


def apply() -> None:
    """Install the in-process fixes; call before slidge's ``main`` runs."""
    import slidge.main
    from slidge.core.dispatcher.registration import RegistrationMixin

    RegistrationMixin._user_modify = _user_modify  # type: ignore[method-assign]
    slidge.main.handle_sigterm = _stop_loop_on_sigterm


def postgres_prepare(url: str, schema: str) -> None:
    """Bug 3, and the per-network schema: create both before slidge migrates."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
            conn.execute(
                sa.text(
                    f'CREATE OR REPLACE FUNCTION "{schema}".instr(text, text) RETURNS integer '
                    "LANGUAGE sql IMMUTABLE AS 'SELECT strpos($1, $2)'"
                )
            )
    finally:
        engine.dispose()
