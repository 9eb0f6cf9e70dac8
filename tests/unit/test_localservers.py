"""Config rendering and the mod_privilege patch of gateway.localservers (no servers run)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.localservers import ComponentSpec, InspIRCd, NgIrcd, Prosody, patch_mod_privilege
from gateway.localservers.errors import ServerStartError
from gateway.localservers.prosody import (
    SYSTEM_MOD_PRIVILEGE,
    install_mod_privilege,
    lua_str,
)

# The advertise_perm loop as Debian bookworm ships it: each <namespace/> is left open.
BROKEN_SNIPPET = """\
    if iq_perm ~= nil then
        message:tag("perm", {access="iq"})
        for namespace, ns_perm in pairs(iq_perm) do
                local perm_type
                if ns_perm.set and ns_perm.get then
                    perm_type = "both"
                else
                    perm_type = nil
                end
                message:tag("namespace", {ns=namespace, type=perm_type})
        end
    end
    session.send(message)
"""

FIXED_LINE = '                message:tag("namespace", {ns=namespace, type=perm_type}):up()\n'


def make_prosody(tmp_path: Path, *components: ComponentSpec) -> Prosody:
    return Prosody(
        tmp_path,
        components=components,
        c2s_port=15222,
        component_port=15347,
        http_port=15280,
    )


# -- mod_privilege patch --------------------------------------------------------------


def test_patch_closes_each_namespace() -> None:
    patched, changed = patch_mod_privilege(BROKEN_SNIPPET)
    assert changed
    assert FIXED_LINE in patched
    # Only that line changes.
    assert patched.replace(":up()\n", "\n", 1) == BROKEN_SNIPPET


def test_patch_leaves_a_fixed_module_alone() -> None:
    fixed, _ = patch_mod_privilege(BROKEN_SNIPPET)
    again, changed = patch_mod_privilege(fixed)
    assert not changed
    assert again == fixed


def test_patch_leaves_unrelated_source_alone() -> None:
    source = 'local x = 1\nmessage:tag("perm", {access=perm}):up()\n'
    assert patch_mod_privilege(source) == (source, False)


@pytest.mark.skipif(not SYSTEM_MOD_PRIVILEGE.exists(), reason="prosody-modules not installed")
def test_patch_applies_to_the_installed_module() -> None:
    source = SYSTEM_MOD_PRIVILEGE.read_text(encoding="utf-8")
    patched, changed = patch_mod_privilege(source)
    if changed:
        assert ":up()" in patched.split('message:tag("namespace"', 1)[1].splitlines()[0]
    else:  # upstream fixed it: the namespace line already closes itself
        assert 'message:tag("namespace"' not in source or ":up()" in source


def test_install_copies_patched_module(tmp_path: Path) -> None:
    source = tmp_path / "mod_privilege.lua"
    source.write_text(BROKEN_SNIPPET, encoding="utf-8")
    dest = install_mod_privilege(tmp_path / "plugins", source)
    assert dest == tmp_path / "plugins" / "mod_privilege" / "mod_privilege.lua"
    assert FIXED_LINE in dest.read_text(encoding="utf-8")


def test_install_without_module_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(ServerStartError, match="prosody-modules"):
        install_mod_privilege(tmp_path / "plugins", tmp_path / "missing.lua")


# -- Prosody config ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "line",
    [
        "c2s_ports = { 15222 }",
        "component_ports = { 15347 }",
        "http_ports = { 15280 }",
        "s2s_ports = {}",
        "https_ports = {}",
        "c2s_direct_tls_ports = {}",
        "legacy_ssl_ports = {}",
        'interfaces = { "127.0.0.1" }',
        'modules_disabled = { "s2s", "tls" }',
        "c2s_require_encryption = false",
        "allow_unencrypted_plain_auth = true",
        'authentication = "internal_hashed"',
        "network_settings = { nagle = false }",
        'VirtualHost "localhost"',
        'Component "conference.localhost" "muc"',
        '  modules_enabled = { "muc_mam" }',
        'Component "upload.localhost" "http_file_share"',
        '  http_external_url = "http://127.0.0.1:15280/"',
    ],
)
def test_prosody_config_has(tmp_path: Path, line: str) -> None:
    assert line in make_prosody(tmp_path).render_config().splitlines()


def test_prosody_config_keeps_state_in_workdir(tmp_path: Path) -> None:
    config = make_prosody(tmp_path).render_config()
    assert f'data_path = "{tmp_path}/data"' in config
    assert f'pidfile = "{tmp_path}/prosody.pid"' in config
    assert f'plugin_paths = {{ "{tmp_path}/plugins" }}' in config
    assert f'filename = "{tmp_path}/prosody.log"' in config
    assert "daemonize" not in config
    assert ("run_as_root = true" in config) == (os.geteuid() == 0)


def test_prosody_config_enables_what_a_deployment_has(tmp_path: Path) -> None:
    line = next(
        x
        for x in make_prosody(tmp_path).render_config().splitlines()
        if x.startswith("modules_enabled")
    )
    for module in ("roster", "saslauth", "disco", "carbons", "mam", "ping", "register"):
        assert f'"{module}"' in line
    for module in ("presence", "vcard4", "vcard_legacy", "pep", "blocklist", "smacks"):
        assert f'"{module}"' in line


def test_prosody_config_privileged_component(tmp_path: Path) -> None:
    config = make_prosody(tmp_path, ComponentSpec("echo.localhost", "s3cret")).render_config()
    host_block = config.split('VirtualHost "localhost"')[1].split("Component")[0]
    assert '["echo.localhost"] = {' in host_block
    assert 'roster = "both"' in host_block
    assert 'message = "outgoing"' in host_block
    assert '["http://jabber.org/protocol/pubsub"] = "both"' in host_block
    assert '["http://jabber.org/protocol/pubsub#owner"] = "set"' in host_block
    assert '["urn:xmpp:http:upload:0"] = "get"' in host_block
    component_block = config.split('Component "echo.localhost"')[1]
    assert 'component_secret = "s3cret"' in component_block
    assert 'modules_enabled = { "privilege" }' in component_block


def test_prosody_config_unprivileged_component(tmp_path: Path) -> None:
    config = make_prosody(
        tmp_path, ComponentSpec("plain.localhost", "x", privileged=False)
    ).render_config()
    assert "privileged_entities" not in config
    assert config.split('Component "plain.localhost"')[1].strip() == 'component_secret = "x"'


def test_prosody_ports_are_unknown_before_start(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="start"):
        _ = Prosody(tmp_path).c2s_port


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("plain", '"plain"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("two\nlines", '"two\\nlines"'),
    ],
)
def test_lua_str(value: str, literal: str) -> None:
    assert lua_str(value) == literal


# -- IRC servers ------------------------------------------------------------------------


def test_ngircd_config(tmp_path: Path) -> None:
    config = NgIrcd(tmp_path, port=16667).render_config().splitlines()
    for line in (
        "\tName = irc.localhost",
        "\tListen = 127.0.0.1",
        "\tPorts = 16667",
        f"\tMotdFile = {tmp_path}/ngircd.motd",
        "\tMaxConnectionsIP = 0",
        "\tDNS = no",
        "\tIdent = no",
        "\tPAM = no",
        f"\tIncludeDir = {tmp_path}/conf.d",
    ):
        assert line in config
    assert "\tMaxPenaltyTime = 0" not in config
    assert not any(x.strip().startswith("[SSL]") for x in config)


def test_ngircd_flood_limit_flag(tmp_path: Path) -> None:
    config = NgIrcd(tmp_path, port=16667, no_flood_limit=True).render_config()
    assert "\tMaxPenaltyTime = 0\n" in config


def test_inspircd_config(tmp_path: Path) -> None:
    config = InspIRCd(tmp_path, port=16668).render_config()
    assert '<bind address="127.0.0.1" port="16668" type="clients">' in config
    assert 'resolvehostnames="no"' in config
    for module in ("cap", "ircv3", "ircv3_echomessage", "ircv3_servertime", "namesx"):
        assert f'<module name="{module}">' in config
    assert "sasl" not in config
    assert "ssl" not in config


def test_inspircd_quotes_attributes(tmp_path: Path) -> None:
    config = InspIRCd(tmp_path, port=16668, network='A "net"').render_config()
    assert "network='A \"net\"'" in config
