"""slidge fix 10: the preferences a XEP-0077 registration never stores.

The detectors fail the day slidge stores preferences at registration itself (then delete
fix 10 and these tests); the others check the defaults and the filling on a real SQLite
store. ``tests/e2e/test_preferences.py`` proves the ``preferences`` command works.
"""

from __future__ import annotations

import inspect
from types import SimpleNamespace
from typing import Any

import pytest
from slidge.command.base import FormField
from slidge.command.user import Preferences
from slidge.core.dispatcher.registration import RegistrationMixin
from slidge.core.gateway import BaseGateway
from slidge.core.session import BaseSession
from slidge.db.models import GatewayUser

from gateway import slidge_fixes
from tests.unit.test_slidge_fixes import store  # noqa: F401  (fixture: a real SQLite store)


def test_bug10_xep0077_registration_stores_no_preferences_is_still_there() -> None:
    validate = inspect.unwrap(RegistrationMixin._user_validate)
    source = inspect.getsource(validate)
    assert "GatewayUser(" in source
    assert "preferences" not in source, "fixed upstream? remove fix 10"
    assert GatewayUser.__table__.c.preferences.default.arg == {}


def test_bug10_preferences_command_needs_every_stored_preference_is_still_there() -> None:
    assert 'previous["sync_avatar"]' in inspect.getsource(Preferences.finish)


def test_defaults_are_what_the_untouched_form_submits() -> None:
    defaults = slidge_fixes.default_preferences(BaseGateway.PREFERENCES)
    assert set(defaults) == {f.var for f in BaseGateway.PREFERENCES}
    assert defaults["sync_avatar"] is True
    assert defaults["sync_presence"] is True
    assert defaults["reaction_fallback"] is False


def test_a_preference_with_an_unusable_default_is_left_to_the_user() -> None:
    fields = [
        FormField("lang", type="list-single", value="xx", options=[{"label": "en", "value": "en"}]),
        FormField("quiet", type="boolean", value="0", required=True),
        FormField("signature"),
    ]
    assert slidge_fixes.default_preferences(fields) == {"quiet": False, "signature": ""}


@pytest.fixture
def gateway(store: Any) -> Any:  # noqa: F811  (the imported fixture)
    """The two things of a gateway that fix 10 uses: its preferences form and a real store."""
    from slixmpp import JID

    with store.session() as orm:
        orm.add(GatewayUser(jid=JID("new@example.org"), legacy_module_data={}))
        orm.add(
            GatewayUser(
                jid=JID("picky@example.org"),
                legacy_module_data={},
                preferences={"sync_avatar": False},
            )
        )
        orm.commit()
    return SimpleNamespace(PREFERENCES=BaseGateway.PREFERENCES, store=store)


def _stored(gateway: Any, jid: str) -> dict[str, Any]:
    with gateway.store.session() as orm:
        return dict(orm.query(GatewayUser).filter_by(jid=jid).one().preferences)


def _user(gateway: Any, jid: str) -> Any:
    with gateway.store.session(expire_on_commit=False) as orm:
        return orm.query(GatewayUser).filter_by(jid=jid).one()


def test_missing_preferences_are_stored_and_chosen_ones_kept(gateway: Any) -> None:
    defaults = slidge_fixes.default_preferences(BaseGateway.PREFERENCES)
    assert _stored(gateway, "new@example.org") == {}  # what slidge 0.4.2 leaves

    assert slidge_fixes.fill_preferences(gateway, _user(gateway, "new@example.org"))
    assert _stored(gateway, "new@example.org") == defaults

    assert slidge_fixes.fill_preferences(gateway, _user(gateway, "picky@example.org"))
    assert _stored(gateway, "picky@example.org") == {**defaults, "sync_avatar": False}

    # Nothing missing any more: nothing written.
    assert not slidge_fixes.fill_preferences(gateway, _user(gateway, "picky@example.org"))


def test_installed_once_on_registration_and_session_creation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RegistrationMixin, "_user_validate", RegistrationMixin._user_validate)
    monkeypatch.setattr(BaseSession, "__init__", BaseSession.__init__)
    original_validate = RegistrationMixin._user_validate
    original_init = BaseSession.__init__
    slidge_fixes.store_default_preferences()
    slidge_fixes.store_default_preferences()  # idempotent
    assert RegistrationMixin._user_validate.__wrapped__ is original_validate  # type: ignore[attr-defined]
    assert BaseSession.__init__.__wrapped__ is original_init  # type: ignore[attr-defined]


def test_a_database_error_is_logged_and_the_defaults_still_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import sqlalchemy.exc
    from slixmpp import JID

    class DownStore:
        def update(self, _user: Any) -> None:
            raise sqlalchemy.exc.OperationalError("UPDATE user_account", {}, Exception("gone"))

    gateway = SimpleNamespace(
        PREFERENCES=BaseGateway.PREFERENCES, store=SimpleNamespace(users=DownStore())
    )
    user = GatewayUser(jid=JID("down@example.org"), legacy_module_data={}, preferences={})
    assert slidge_fixes.fill_preferences(gateway, user)
    assert user.preferences["sync_presence"] is True
    assert "Could not store the default preferences of down@example.org" in caplog.text
