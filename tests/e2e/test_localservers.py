"""The local servers really start, answer on loopback, and stop.

Raw sockets only: an XMPP stream header and SASL PLAIN against Prosody, a component
handshake (XEP-0114), and IRC registration against ngIRCd and InspIRCd.
"""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import sys
import time
from pathlib import Path

import pytest

from gateway.localservers import (
    ComponentSpec,
    InspIRCd,
    NgIrcd,
    Prosody,
    ServerStartError,
    free_port,
    wait_for_port,
)
from gateway.localservers._process import spawn, terminate

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

STREAM_NS = "xmlns:stream='http://etherx.jabber.org/streams'"


def recv_until(sock: socket.socket, pattern: bytes, timeout: float = 10.0) -> bytes:
    """Read until `pattern` (a regex) matches what was received, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    data = b""
    while not re.search(pattern, data):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"no {pattern!r} within {timeout} s; received {data!r}")
        sock.settimeout(remaining)
        chunk = sock.recv(65536)
        if not chunk:
            pytest.fail(f"connection closed before {pattern!r}; received {data!r}")
        data += chunk
    return data


def client_stream(domain: str) -> bytes:
    return (
        f"<?xml version='1.0'?><stream:stream to='{domain}' version='1.0' "
        f"xmlns='jabber:client' {STREAM_NS}>"
    ).encode()


def sasl_plain(port: int, domain: str, user: str, password: str) -> bytes:
    """Log in with SASL PLAIN over plain TCP; returns the server's answer."""
    token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(client_stream(domain))
        recv_until(sock, rb"</stream:features>")
        sasl = "urn:ietf:params:xml:ns:xmpp-sasl"
        sock.sendall(f"<auth xmlns='{sasl}' mechanism='PLAIN'>{token}</auth>".encode())
        return recv_until(sock, rb"<(success|failure)")


def irc_welcome(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"NICK t\r\nUSER t 0 * :t\r\n")
        data = recv_until(sock, rb" 001 t ")
        sock.sendall(b"QUIT :done\r\n")
        return data


def test_prosody_serves_clients_and_components(tmp_path: Path) -> None:
    component = ComponentSpec("echo.localhost", "s3cret")
    with Prosody(tmp_path, components=[component]) as prosody:
        prosody.register("alice", "pw")

        with socket.create_connection(("127.0.0.1", prosody.c2s_port), timeout=10) as sock:
            sock.sendall(client_stream(prosody.domain))
            features = recv_until(sock, rb"</stream:features>")
        assert b"from='localhost'" in features
        assert b"<mechanism>PLAIN</mechanism>" in features
        assert b"starttls" not in features

        assert b"<success" in sasl_plain(prosody.c2s_port, prosody.domain, "alice", "pw")
        assert b"<failure" in sasl_plain(prosody.c2s_port, prosody.domain, "alice", "wrong")

        with socket.create_connection(("127.0.0.1", prosody.component_port), timeout=10) as sock:
            sock.sendall(
                f"<stream:stream to='{component.jid}' xmlns='jabber:component:accept' "
                f"{STREAM_NS}>".encode()
            )
            header = recv_until(sock, rb"id='[^']+'")
            match = re.search(rb"id='([^']+)'", header)
            assert match is not None
            digest = hashlib.sha1(match[1] + component.secret.encode()).hexdigest()
            sock.sendall(f"<handshake>{digest}</handshake>".encode())
            recv_until(sock, rb"<handshake\s*/>")

        assert "Activated service 'c2s'" in prosody.log_tail(200)


def test_prosody_restart_keeps_ports_and_accounts(tmp_path: Path) -> None:
    with Prosody(tmp_path) as prosody:
        prosody.register("bob", "pw")
        ports = (prosody.c2s_port, prosody.component_port, prosody.http_port)
        prosody.restart()
        assert (prosody.c2s_port, prosody.component_port, prosody.http_port) == ports
        assert b"<success" in sasl_plain(prosody.c2s_port, prosody.domain, "bob", "pw")
        prosody.unregister("bob")
        assert b"<failure" in sasl_plain(prosody.c2s_port, prosody.domain, "bob", "pw")
    assert not prosody.running


def test_ngircd_welcomes(tmp_path: Path) -> None:
    with NgIrcd(tmp_path) as ngircd:
        assert b":irc.localhost 001 t " in irc_welcome(ngircd.port)
        ngircd.restart()
        assert b" 001 t " in irc_welcome(ngircd.port)
    assert not ngircd.running


def test_ngircd_bad_config_is_explained(tmp_path: Path) -> None:
    # ngIRCd insists on a dot in its server name.
    with pytest.raises(ServerStartError, match="configtest"):
        NgIrcd(tmp_path, server_name="nodot").start()


def test_inspircd_welcomes_with_ircv3(tmp_path: Path) -> None:
    with InspIRCd(tmp_path) as inspircd:
        with socket.create_connection(("127.0.0.1", inspircd.port), timeout=10) as sock:
            sock.sendall(b"CAP LS 302\r\n")
            caps = recv_until(sock, rb"CAP \* LS :[^\r\n]*\r\n")
            sock.sendall(b"QUIT\r\n")
        for cap in (b"echo-message", b"server-time", b"message-tags", b"multi-prefix"):
            assert cap in caps
        assert b":irc.localhost 001 t " in irc_welcome(inspircd.port)
    assert not inspircd.running


def test_wait_for_port_reports_early_exit(tmp_path: Path) -> None:
    output = tmp_path / "out.log"
    proc = spawn([sys.executable, "-c", "print('boom'); raise SystemExit(3)"], output, tmp_path)
    try:
        with pytest.raises(ServerStartError, match=r"(?s)exited with code 3.*boom"):
            wait_for_port("127.0.0.1", free_port(), 10, proc, logs=[output], name="fake")
    finally:
        terminate(proc, "fake")
