"""What the user or the admin reads when an IRC server's certificate is not trusted: the
hint names the config table the server comes from (an IRC server of the network, or a
channel link's), or what the server must fix when nobody configured it."""

from __future__ import annotations

import ssl

import pytest

from legacy_plugins.irc.config import ServerTarget
from legacy_plugins.irc.transport import describe


def untrusted() -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
    exc.verify_message = "unable to get local issuer certificate"
    return exc


def target(name: str, admin_defined: bool = True, section: str | None = None) -> ServerTarget:
    return ServerTarget(
        name, "irc.example.org", 6697, True, True, None, "latin-1", admin_defined,
        config_section=section,
    )  # fmt: skip


PREFIX = "TLS certificate not trusted (unable to get local issuer certificate); "


@pytest.mark.parametrize(
    ("server", "hint"),
    [
        (
            target("libera"),
            "the gateway's admin can trust the server's CA with ca_file "
            "(or set verify_certificate = false) in [networks.irc.servers.libera]",
        ),
        (
            target("irc.example.org"),
            "the gateway's admin can trust the server's CA with ca_file "
            '(or set verify_certificate = false) in [networks.irc.servers."irc.example.org"]',
        ),
        (
            target("irc.example.org", section="link"),
            "the gateway's admin can trust the server's CA with ca_file in [link] "
            "(or add it to the system's trust store)",
        ),
        (
            target("irc.example.org", admin_defined=False),
            "irc.example.org must present a certificate valid for that name",
        ),
    ],
)
def test_the_hint_names_where_the_server_is_configured(server: ServerTarget, hint: str) -> None:
    assert describe(untrusted(), server) == PREFIX + hint


def test_a_link_server_hint_never_names_the_irc_network() -> None:
    text = describe(untrusted(), target("libera", section="link"))
    assert "networks.irc" not in text
    assert "verify_certificate" not in text  # a link cannot turn verification off


def test_without_a_target_there_is_no_hint() -> None:
    assert (
        describe(untrusted())
        == "TLS certificate not trusted (unable to get local issuer certificate)"
    )
