"""The link component's database: admin-added links and paused links survive a restart."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import LinkConfig
from gateway.link.store import LinkStore, Position, link_db


def spec(muc: str = "lounge@conference.example.org", **options: object) -> LinkConfig:
    return LinkConfig(muc=muc, irc="ircs://irc.example.net/#lounge", **options)


def test_links_are_kept_in_order_and_removed(tmp_path: Path) -> None:
    path = tmp_path / "link" / "link.sqlite"
    store = LinkStore(f"sqlite:///{path}")
    store.add("one", spec("one@muc.example.org", double_puppet=False), "admin@example.org")
    store.add("two", spec("two@muc.example.org"), "admin@example.org")
    again = LinkStore(f"sqlite:///{path}")  # as after a restart
    assert [(s.id, s.spec.muc, s.spec.double_puppet) for s in again.links()] == [
        ("one", "one@muc.example.org", False),
        ("two", "two@muc.example.org", True),
    ]
    again.set_paused("two", True, "admin@example.org")
    assert again.paused() == {"two"}
    assert again.remove("two") and not again.remove("two")
    assert [s.id for s in again.links()] == ["one"] and again.paused() == set()


def test_pausing_is_kept_for_config_links_too(tmp_path: Path) -> None:
    store = LinkStore(f"sqlite:///{tmp_path / 'link.sqlite'}")
    store.set_paused("from-config", True, "admin@example.org")
    store.set_paused("from-config", True, "admin@example.org")
    assert store.paused() == {"from-config"}
    store.set_paused("from-config", False, "admin@example.org")
    assert store.paused() == set()


def test_an_unreadable_stored_link_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "link.sqlite"
    store = LinkStore(f"sqlite:///{path}")
    store.add("good", spec(), "admin@example.org")
    with sqlite3.connect(path) as db:
        db.execute(
            "INSERT INTO links VALUES ('bad', '{\"muc\": \"nope\"}', 'admin@example.org', 'z')"
        )
    assert [s.id for s in store.links()] == ["good"]


def test_positions_are_kept_per_link_and_go_with_the_link(tmp_path: Path) -> None:
    url, args = link_db(None, tmp_path)
    assert url == f"sqlite:///{tmp_path / 'link' / 'link.sqlite'}" and args == {}
    store = LinkStore(url)
    assert store.position("one") == Position()
    when = datetime(2026, 11, 21, 12, 0, 0, 718000, tzinfo=UTC)
    store.save_positions({"one": Position("stanza-1", "msg-1", when), "two": Position("s2")})
    store.save_positions({"one": Position("stanza-2", "msg-1", when)})
    again = LinkStore(url)
    assert again.position("one") == Position("stanza-2", "msg-1", when)
    assert again.position("two") == Position("s2", None, None)
    store.add("two", spec(), "admin@example.org")
    store.remove("two")
    assert again.position("two") == Position()


def test_postgres_urls_name_the_schema_and_keep_the_password_out() -> None:
    url, args = link_db("postgresql://link:s3cret@127.0.0.1:5433/passerelle", Path("/x"))
    assert "s3cret" not in url and args == {"password": "s3cret"}
    assert "search_path%3Dpasserelle_link" in url or "search_path=passerelle_link" in url
