"""The link keeps its state in ``[storage] url``'s PostgreSQL, as the networks do: links
an admin added, and how far each side was relayed, in a schema of its own. A killed
Passerelle comes back from what PostgreSQL kept: the admin's link is there again, and
what was said in the room meanwhile reaches IRC once."""

from __future__ import annotations

import re
from urllib.parse import quote

import pytest

from gateway.localservers import NgIrcd
from gateway.localservers.ports import free_port
from tests.e2e.irc_helpers import (  # noqa: F401  (fixtures)
    People,
    irc_people_fixture,
    ngircd_fixture,
)
from tests.e2e.link_helpers import (  # noqa: F401  (fixtures)
    ADMIN,
    LINK_JID,
    StartLink,
    channel_texts,
    link_prosody_fixture,
    linked,
    people_fixture,
    room_jid,
    start_link_fixture,
)
from tests.e2e.link_helpers import People as XmppPeople
from tests.e2e.test_link_catchup import kill_passerelle
from tests.e2e.test_postgres import Database, database, postgres  # noqa: F401  (fixtures)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

SCHEMA = "passerelle_link"


async def test_links_and_positions_live_in_postgres(
    database: Database,  # noqa: F811  (the fixture)
    ngircd: NgIrcd,
    people: XmppPeople,
    irc_people: People,
    start_link: StartLink,
) -> None:
    room, channel = room_jid("pg1"), "#pg1"
    admin, alice = await people(ADMIN), await people("alice")
    await alice.link_create_room(room, "alice", persistentroom="1")
    dave = await irc_people("pgdave1")
    await dave.join(channel)
    gateway = start_link(link_extra="", links=f'[storage]\nurl = "{database.url()}"\n')
    await gateway.wait_for(rf"^link \| .*link component {LINK_JID} is connected")
    added = await admin.run_command(
        LINK_JID, "add", muc=room, irc=f"irc://127.0.0.1:{ngircd.port}/{channel}"
    )
    assert "Linked" in added["command"]["notes"][0][1], added
    await gateway.wait_for(linked(room, channel))

    alice.send_groupchat(room, "stored in postgres?")
    assert await channel_texts(dave, channel, 1) == [("alice[x]", "stored in postgres?")]
    dave.say(channel, "let us see")
    assert (await alice.link_room_texts(room, 2))[-1] == ("pgdave1", "let us see")

    # Every table is in the link's schema, none in public, and no SQLite file was made.
    tables = database.sql(
        "SELECT schemaname || '.' || tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    assert set(tables) == {f"{SCHEMA}.links", f"{SCHEMA}.paused", f"{SCHEMA}.positions"}
    assert database.sql(f"SELECT spec::json->>'muc' FROM {SCHEMA}.links") == [room]
    assert not (gateway.config.parent / "data" / "link" / "link.sqlite").exists()

    await kill_passerelle(gateway, dave, channel)
    (position,) = database.sql(f"SELECT room_id FROM {SCHEMA}.positions")
    assert position, "the room position was saved"
    alice.send_groupchat(room, "said while it was dead")
    assert (await alice.link_room_texts(room, 1)) == [("alice", "said while it was dead")]

    again = start_link(config=gateway.config)
    await again.wait_for(linked(room, channel), timeout=60)  # the admin's link, from PG
    assert await channel_texts(dave, channel, 1, timeout=30) == [
        ("alice[x]", "said while it was dead")
    ]
    output = gateway.output() + again.output()
    assert database.password not in output
    assert not re.search(r"^link \| (ERROR|CRITICAL) ", output, re.M), output
    await dave.close()


async def test_an_unreachable_database_is_retried_with_backoff(
    database: Database,  # noqa: F811  (the fixture)
    start_link: StartLink,
) -> None:
    # Nobody listens on this port: a database server that is down may come back.
    password = quote(database.password, safe="")
    url = f"postgresql://{database.owner}:{password}@127.0.0.1:{free_port()}/x"
    gateway = start_link(links=f'[storage]\nurl = "{url}"\n')
    first = await gateway.wait_for(r"^link \| ERROR .*cannot reach PostgreSQL at 127\.0\.0\.1")
    await gateway.wait_for(r"link exited with code 75 .* restarting in", after=first)
    assert database.password not in gateway.output() and password not in gateway.output()
    assert "Traceback" not in gateway.output()
