"""Slidge fixes 20-29 (`gateway/slidge_joins.py`): detectors that fail when slidge changes
the code under a fix, and tests of each fix."""

from __future__ import annotations

import importlib
import inspect
import logging
from typing import Any

import pytest
from slidge.contact.contact import LegacyContact
from slidge.group.participant import LegacyParticipant
from slidge.group.room import LegacyMUC

from gateway import slidge_joins


def test_fix20_slidge_still_names_a_logger_after_each_object() -> None:
    assert 'logging.getLogger(f"{self.user_jid.bare}:{self.jid}")' in inspect.getsource(
        LegacyParticipant.__init__
    )
    assert 'logging.getLogger(f"{self.user_jid.bare}:contact:{self}")' in inspect.getsource(
        LegacyContact._set_logger
    )
    assert 'logging.getLogger(f"{self.user_jid}:muc:{self}")' in inspect.getsource(
        LegacyMUC._set_logger
    )


def test_fix20_per_object_loggers_keep_nothing_and_say_the_same(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for name in slidge_joins.PER_OBJECT_LOGGERS:  # undone after the test
        monkeypatch.setattr(importlib.import_module(name), "logging", logging)
    slidge_joins.apply()
    slidge_joins.apply()  # idempotent
    participant: object = importlib.import_module("slidge.group.participant")
    proxy = participant.logging  # type: ignore[attr-defined]
    assert isinstance(proxy, slidge_joins.PerObjectLogging)
    assert proxy.DEBUG == logging.DEBUG  # the rest of `logging` as it is

    name = "romeo@example.org:#chan%irc.example.net@irc.example.org/ju.liet"
    before = set(logging.Logger.manager.loggerDict)
    log = proxy.getLogger(name)
    with caplog.at_level(logging.INFO):
        log.info("joined %s", "#chan")
        log.debug("not shown at INFO")
        log.warning("100% plain")
    assert set(logging.Logger.manager.loggerDict) - before <= {"slidge.group.participant"}
    assert [(r.name, r.levelno, r.getMessage()) for r in caplog.records] == [
        ("slidge.group.participant", logging.INFO, f"{name}: joined #chan"),
        ("slidge.group.participant", logging.WARNING, f"{name}: 100% plain"),
    ]
    assert proxy.getLogger("slidge.whatever") is logging.getLogger("slidge.whatever")


def test_fix21_slixmpp_still_records_every_presence_and_slidge_answers_probes() -> None:
    from slidge.core.gateway import BaseGateway
    from slixmpp.roster.multi import Roster

    original = slidge_joins._SLIXMPP.get("filter", Roster._save_last_status)
    assert "self[sfrom][sto].last_status = stanza" in inspect.getsource(original)
    assert "add_filter('out', self._save_last_status)" in inspect.getsource(Roster.__init__)
    # slidge takes the probe and subscription handlers (the readers of last_status) away
    events = inspect.getsource(BaseGateway._BaseGateway__register_slixmpp_events)  # type: ignore[attr-defined]
    for handler in ("presence_probe", "presence_subscribe", "roster_subscription_request"):
        assert f'"{handler}"' in events
    # the one reader left: XEP-0115's caps update, which slidge runs for its own JID
    assert "roster[jid][contact].send_last_presence()" in inspect.getsource(
        importlib.import_module("slixmpp.plugins.xep_0115.caps").XEP_0115.update_caps
    )


async def test_fix21_only_the_components_own_presences_are_kept() -> None:
    from slixmpp import ComponentXMPP

    slidge_joins.own_last_status_only()
    slidge_joins.own_last_status_only()  # idempotent
    xmpp = ComponentXMPP("irc.example.org", "secret", "127.0.0.1", 5347)  # type: ignore[no-untyped-call]
    _check_own_last_status_only(xmpp)


def _check_own_last_status_only(xmpp: Any) -> None:
    from slixmpp import Presence

    roster = xmpp.roster
    occupant = "#chan%irc.example.net@irc.example.org/alice"
    user = "romeo@example.org/phone"
    sent = Presence(stype="available")
    sent["from"], sent["to"] = occupant, user
    assert roster._save_last_status(sent) is sent  # passed on
    assert "#chan%irc.example.net@irc.example.org" not in roster._rosters  # no node made
    own = Presence(stype="available")
    own["from"], own["to"] = "irc.example.org", user
    assert roster._save_last_status(own) is own
    assert roster["irc.example.org"][user].last_status is own  # slixmpp's record, kept
