"""Detectors: each asserts a slidge 0.4.2 bug that gateway/slidge_fixes.py works around is
still there. When one fails, upstream fixed the bug: delete the workaround and the test."""

import inspect

import slidge.main
from slidge.contact.roster import LegacyRoster
from slidge.core.dispatcher.registration import RegistrationMixin
from slidge.core.gateway import BaseGateway

from gateway import slidge_fixes


def test_bug1_roster_fill_never_pushes_is_still_there() -> None:
    assert hasattr(BaseGateway, "TEST_MODE"), "fixed upstream? remove push_to_roster"
    assert 'hasattr(self.session.xmpp, "TEST_MODE")' in inspect.getsource(LegacyRoster._fill)


def test_bug2_user_modify_without_filter_is_still_there() -> None:
    original = RegistrationMixin.__dict__["_user_modify"]
    assert original is not slidge_fixes._user_modify
    assert "orm.query(GatewayUser).one_or_none()" in inspect.getsource(original)


def test_bug4_sigterm_raises_into_running_code_is_still_there() -> None:
    assert "raise SigTermInterrupt" in inspect.getsource(slidge.main.handle_sigterm)


def test_fixes_are_applied() -> None:
    original_modify = RegistrationMixin._user_modify
    original_sigterm = slidge.main.handle_sigterm
    try:
        slidge_fixes.apply()
        assert RegistrationMixin._user_modify is slidge_fixes._user_modify
        assert slidge.main.handle_sigterm is slidge_fixes._stop_loop_on_sigterm
    finally:
        RegistrationMixin._user_modify = original_modify  # type: ignore[method-assign]
        slidge.main.handle_sigterm = original_sigterm
