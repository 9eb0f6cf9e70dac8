"""Slidge fixes 20-29 (`gateway/slidge_joins.py`): detectors that fail when slidge changes
the code under a fix, and tests of each fix."""

from __future__ import annotations

import importlib
import inspect
import logging

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
