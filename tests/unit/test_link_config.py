"""``[link]`` and ``[[links]]``: the channel ↔ room link's configuration contract."""

from __future__ import annotations

from pathlib import Path

import pytest

import gateway.config as config_mod
from gateway.config import IrcChannelUrl, load, parse_irc_url
from gateway.errors import ConfigError

ECHO = "[networks.echo]\njid = 'echo.example.org'\nsecret = 's'\n"
LINK = "[link]\njid = 'link.example.org'\nsecret = 'l'\n"


@pytest.mark.parametrize(
    ("url", "parsed"),
    [
        (
            "ircs://irc.libera.chat:6697/#lounge",
            IrcChannelUrl("irc.libera.chat", 6697, True, "#lounge"),
        ),
        ("ircs://irc.libera.chat/#lounge", IrcChannelUrl("irc.libera.chat", 6697, True, "#lounge")),
        ("irc://127.0.0.1:16667/#test", IrcChannelUrl("127.0.0.1", 16667, False, "#test")),
        ("irc://irc.example.net/%23chan", IrcChannelUrl("irc.example.net", 6667, False, "#chan")),
        ("irc://irc.example.net/chan", IrcChannelUrl("irc.example.net", 6667, False, "#chan")),
        ("irc://irc.example.net/&local", IrcChannelUrl("irc.example.net", 6667, False, "&local")),
        ("IRCS://IRC.Example.NET/#Chan", IrcChannelUrl("irc.example.net", 6697, True, "#Chan")),
        ("irc://[::1]:6667/#v6", IrcChannelUrl("::1", 6667, False, "#v6")),
    ],
)
def test_irc_urls(url: str, parsed: IrcChannelUrl) -> None:
    assert parse_irc_url(url) == parsed


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://irc.libera.chat/#x", "not an irc:// or ircs:// URL"),
        ("irc:///#x", "has no IRC server host"),
        ("irc://host:99999/#x", "invalid port"),
        ("irc://host/", "names no valid channel"),
        ("irc://host/#", "names no valid channel"),
        ("irc://host/%23a%20b", "names no valid channel"),
        ("irc://host/%23a%0D%0AQUIT", "names no valid channel"),
    ],
)
def test_bad_irc_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_irc_url(url)


@pytest.fixture
def link_available(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config_mod, "_has_link_component", lambda: True)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load(path)
    return [p.split(": ", 1)[1] for p in err.value.problems]


def test_link_only_configuration_is_valid(tmp_path: Path, link_available: None) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(
        LINK
        + "[[links]]\nmuc = 'Lounge@Conference.example.org'\nirc = 'ircs://irc.libera.chat/#lounge'\n",
        encoding="utf-8",
    )
    cfg = load(path)
    assert cfg.settings.link is not None and cfg.settings.link.max_irc_connections == 50
    (spec,) = cfg.settings.links
    assert spec.muc == "lounge@conference.example.org"
    assert spec.channel.channel == "#lounge"
    assert spec.irc_nick_template == "{nick}[x]"
    assert not spec.relay_joins_parts and spec.double_puppet


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            ECHO + "[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\n",
            "links: there are [[links]] but no [link] section",
        ),
        (
            ECHO + LINK.replace("link.example.org", "echo.example.org"),
            "link.jid: 'echo.example.org' is also the JID of networks.echo",
        ),
        (
            LINK
            + "[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\n[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\n",
            "links.1: a@b.c ↔ irc://h/#c is listed twice",
        ),
        (
            LINK + "[[links]]\nmuc = 'lounge'\nirc = 'irc://h/#c'\n",
            "links.0.muc: 'lounge' is not a room JID",
        ),
        (
            LINK + "[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\nirc_nick_template = 'x'\n",
            "links.0.irc_nick_template: 'x' must contain {nick}",
        ),
        (
            LINK
            + "[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\nxmpp_nick_template = '{nick}{other}'\n",
            "only {nick} may be used",
        ),
        (
            LINK + "[[links]]\nmuc = 'a@b.c'\nirc = 'irc://h/#c'\ncolour = 1\n",
            "links.0.colour: Extra inputs are not permitted",
        ),
        (
            LINK.replace("[link]\n", "[link]\nca_file = '/nonexistent/ca.pem'\n"),
            "link.ca_file:",
        ),
    ],
)
def test_link_mistakes(tmp_path: Path, link_available: None, text: str, expected: str) -> None:
    found = problems(tmp_path, text)
    assert any(expected in p for p in found), found


def test_link_section_refused_while_not_implemented(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_mod, "_has_link_component", lambda: False)
    assert problems(tmp_path, ECHO + LINK) == [
        "link: the link component is not implemented in this version of Passerelle yet "
        "(see README status); remove [link] and [[links]]"
    ]


def test_link_section_accepted_now_that_the_component_exists(tmp_path: Path) -> None:
    path = tmp_path / "gateway.toml"
    path.write_text(LINK, encoding="utf-8")
    assert load(path).settings.link is not None
