"""slidge's *preferences* command after a XEP-0077 registration (slidge fix 10), on IRC.

slidge 0.4.2 stores no preferences when someone registers with the XEP-0077 form: the
gateway reads "sync avatar" and "sync presence" as off, and the command crashes when the
form comes back. Passerelle stores the form's defaults at registration, and fills them
in for users registered without them, when the gateway starts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import pytest

from gateway.localservers import NgIrcd
from tests.e2e.conftest import IRC_JID, PasserelleProcess
from tests.e2e.irc_helpers import (  # noqa: F401  (fixture: ngircd)
    NewClient,
    ngircd_fixture,
    registered,
    start_with_irc,
)
from tests.e2e.xmpp_client import Client

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]

PREFERENCES = "https://slidge.im/command/core/preferences"
UNCHANGED = "No preference was changed"
UPDATED = "Your preferences have been updated."


async def preferences(client: Client, **changes: str) -> str:
    """Run the preferences command, changing ``changes`` and keeping every other value
    the form shows; the command's note."""
    result = await client.run_command(IRC_JID, PREFERENCES, **changes)
    assert result["command"]["status"] == "completed", result
    return "\n".join(text for _, text in result["command"]["notes"])


async def test_preferences_command_after_xep0077_registration(
    ngircd: NgIrcd, start_passerelle: Callable[..., PasserelleProcess], new_client: NewClient
) -> None:
    gateway = await start_with_irc(start_passerelle, ngircd.port)
    alice, _nick = await registered(new_client, "alice")

    # What the form shows as default is what was stored: submitting it changes nothing.
    assert await preferences(alice) == UNCHANGED
    assert await preferences(alice, sync_avatar="false") == UPDATED
    assert await preferences(alice) == UNCHANGED  # the form now shows her choice

    # A user registered before fix 10 has no preferences stored: filled at start-up.
    gateway.stop()
    database = gateway.config.parent / "data" / "irc" / "passerelle.sqlite"
    with sqlite3.connect(database) as db:
        wiped = db.execute("UPDATE user_account SET preferences = '{}'").rowcount
    assert wiped == 1
    again = PasserelleProcess(gateway.config)
    try:
        await again.wait_for(r"^irc \| .*Slidge has successfully started")
        assert await preferences(alice) == UNCHANGED
        assert await preferences(alice, sync_presence="false") == UPDATED
        assert again.proc.poll() is None
    finally:
        again.stop()
