"""`passerelle check` and `passerelle demo` against real servers, as an admin would use them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.localservers import Prosody
from tests.e2e.conftest import ECHO_JID, ECHO_SECRET, PasserelleProcess, write_config
from tests.e2e.irc_helpers import IrcPerson
from tests.e2e.xmpp_client import Client

pytestmark = pytest.mark.e2e


def check(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_check_passes_against_a_configured_server(prosody: Prosody, tmp_path: Path) -> None:
    result = check(write_config(tmp_path, prosody))
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"ok   networks.echo: component {ECHO_JID} at 127.0.0.1:{prosody.component_port}"
        in result.stdout
    )


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        (
            f'jid = "{ECHO_JID}"\nsecret = "wrong"',
            "refused (not-authorized) — the secret does not match",
        ),
        (
            'jid = "nosuch.localhost"\nsecret = "x"',
            'refused (host-unknown) — the XMPP server has no component with this JID: add `Component "nosuch.localhost"`',
        ),
    ],
)
def test_check_explains_what_is_wrong(
    prosody: Prosody, tmp_path: Path, section: str, expected: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[xmpp]\nport = {prosody.component_port}\n[networks.echo]\n{section}\n", encoding="utf-8"
    )
    result = check(config)
    assert result.returncode == 1
    assert expected in result.stdout, result.stdout


def test_check_explains_a_closed_port(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = tmp_path / "gateway.toml"
    config.write_text(
        f"[xmpp]\nport = {port}\n[networks.echo]\njid = '{ECHO_JID}'\nsecret = '{ECHO_SECRET}'\n",
        encoding="utf-8",
    )
    result = check(config)
    assert result.returncode == 1
    assert "cannot connect" in result.stdout
    assert "is the XMPP server running" in result.stdout


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


async def test_demo_lets_a_real_client_talk_to_the_echo_network(
    prosody: Prosody, tmp_path: Path
) -> None:
    demo_dir = tmp_path / "demo"
    process = DemoProcess(demo_dir)
    try:
        await process.wait_for(r"^echo \| .*Slidge has successfully started", timeout=90)
        login = json.loads((demo_dir / "login.json").read_text())
        assert f"password:  {login['password']}" in process.output()  # printed for the person
        client = Client(login["jid"], login["password"])
        await client.start(login["port"])
        try:
            await client.register(login["gateway"], nickname="Demo")
            echo = f"echo@{login['gateway']}"
            await client.next_roster_push(echo)
            client.send_chat(echo, "is this thing on?")
            assert (await client.next_message(echo))["body"] == "is this thing on?"

            # The printed IRC steps: register a nick, join #demo, meet someone on IRC there.
            await process.wait_for(r"^irc \| .*Slidge has successfully started", timeout=60)
            await client.register(login["irc_gateway"], nick="demo")
            channel = f"#demo%127.0.0.1@{login['irc_gateway']}"
            assert f"Join the group chat {channel}" in process.output()
            irc_user = await IrcPerson.connect(login["irc_port"], "visitor")
            try:
                await irc_user.join("#demo")
                pres = await client.join_muc(channel, "demo")
                assert pres["type"] != "error", pres
                irc_user.say("#demo", "hello from IRC")
                assert (await client.next_groupchat_text(channel, "hello from IRC"))[
                    "from"
                ].resource == "visitor"
                client.send_groupchat(channel, "hello from XMPP")
                assert await irc_user.heard("demo", "#demo") == "hello from XMPP"
            finally:
                await irc_user.close()
        finally:
            await client.stop()
        # Ctrl-C stops what the demo started (its Prosody, its ngircd), and nothing else (ours).
        assert process.interrupt() == 0, process.output()
        assert not _port_open(login["port"])
        assert not _port_open(login["irc_port"])
        assert _port_open(prosody.c2s_port)
    finally:
        process.stop()


class DemoProcess(PasserelleProcess):
    def __init__(self, directory: Path) -> None:
        super().__init__(
            directory / "gateway.toml",
            argv=[sys.executable, "-m", "gateway", "demo", "--dir", str(directory)],
        )

    def interrupt(self, timeout: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGINT)
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        return self.stop()


def test_check_covers_the_link_component(prosody: Prosody, tmp_path: Path) -> None:
    config = write_config(
        tmp_path, prosody, extra='[link]\njid = "nolink.localhost"\nsecret = "x"\n'
    )
    result = check(config)
    assert result.returncode == 1
    assert "ok   networks.echo" in result.stdout
    assert "FAIL link: component nolink.localhost" in result.stdout
    assert "refused (host-unknown)" in result.stdout
