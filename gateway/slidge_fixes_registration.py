"""Registration, preferences and chat commands: where slidge loses what the user said.

These are slidge fixes 2, 10, 51 and 52 (listed with the others in
:mod:`gateway.slidge_fixes`, whose :func:`~gateway.slidge_fixes.apply` installs them).
``tests/unit/test_slidge_fixes.py`` and ``tests/unit/test_slidge_fix_preferences.py``
hold their detectors.

2. Re-submitting the registration form with two or more registered users crashes the
   gateway: ``_user_modify`` looks the user up without a filter.
   :func:`gateway.slidge_fixes.apply` replaces it.
10. A registration through XEP-0077 (and an ad-hoc registration whose preferences form
    timed out) stores no preferences: slidge reads the missing ones as off (*sync avatar*,
    *sync presence*, whatever the form shows as default), and its ``preferences`` command
    crashes on ``previous["sync_avatar"]``. :func:`gateway.slidge_fixes.apply` stores the
    form's defaults when the user registers, and fills the missing ones when a session is
    created for a user registered before (:func:`fill_preferences`).
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
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Iterable
from typing import Any

from . import redact

log = logging.getLogger(__name__)


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
