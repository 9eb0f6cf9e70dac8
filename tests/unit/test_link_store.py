"""The link component's database: admin-added links and paused links survive a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.config import LinkConfig
from gateway.link.store import LinkStore


def spec(muc: str = "lounge@conference.example.org", **options: object) -> LinkConfig:
    return LinkConfig(muc=muc, irc="ircs://irc.example.net/#lounge", **options)  # type: ignore[arg-type]


def test_links_are_kept_in_order_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "link" / "link.sqlite"
    store = LinkStore(path)
    store.add("one", spec("one@muc.example.org", double_puppet=False), "admin@example.org")
    store.add("two", spec("two@muc.example.org"), "admin@example.org")
    again = LinkStore(path)  # as after a restart
    assert [(s.id, s.spec.muc, s.spec.double_puppet) for s in again.links()] == [
        ("one", "one@muc.example.org", False),
        ("two", "two@muc.example.org", True),
    ]
    again.set_paused("two", True, "admin@example.org")
    assert again.paused() == {"two"}
    assert again.remove("two") and not again.remove("two")
    assert [s.id for s in again.links()] == ["one"] and again.paused() == set()


def test_pausing_is_kept_for_config_links_too(tmp_path: Path) -> None:
    store = LinkStore(tmp_path / "link.sqlite")
    store.set_paused("from-config", True, "admin@example.org")
    store.set_paused("from-config", True, "admin@example.org")
    assert store.paused() == {"from-config"}
    store.set_paused("from-config", False, "admin@example.org")
    assert store.paused() == set()


def test_an_unreadable_stored_link_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "link.sqlite"
    store = LinkStore(path)
    store.add("good", spec(), "admin@example.org")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO links VALUES ('bad', '{\"muc\": \"nope\"}', 'admin@example.org', 'z')"
        )
    assert [s.id for s in store.links()] == ["good"]
