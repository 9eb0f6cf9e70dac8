"""Stories of the echo network with ``[storage] url`` on a real PostgreSQL on loopback.

The PostgreSQL server is started once per module; each test gets its own database, owned
by its own role that logs in with a password, as in a real deployment. A story therefore
starts from an empty database, and slidge runs every migration on it.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from gateway import slidge_fixes
from gateway.child import postgres_url
from gateway.localservers.ports import free_port
from gateway.localservers.postgres import PostgreSQL, find_bindir
from tests.e2e.conftest import ECHO_JID, PasserelleProcess
from tests.e2e.xmpp_client import Client

pytestmark = pytest.mark.e2e
ECHO = f"echo@{ECHO_JID}"
SCHEMA = "passerelle_echo"
NewClient = Callable[..., "asyncio.Future[Client]"]
StartPasserelle = Callable[..., PasserelleProcess]
_databases = itertools.count(1)


@dataclass(frozen=True, slots=True)
class Database:
    server: PostgreSQL
    name: str
    owner: str
    password: str

    def url(self, password: str | None = None) -> str:
        return self.server.url(
            self.name, self.owner, self.password if password is None else password
        )

    def sql(self, query: str) -> list[str]:
        return self.server.psql(query, self.name).splitlines()


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgreSQL]:
    if find_bindir() is None:
        pytest.skip("PostgreSQL binaries not found: apt-get install postgresql")
    with PostgreSQL(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture
def database(postgres: PostgreSQL) -> Database:
    n = next(_databases)
    db = Database(postgres, f"passerelle{n}", f"passerelle{n}", f"pa:ss@word/{n}")
    postgres.create_role(db.owner, db.password)
    postgres.create_database(db.name, owner=db.owner)
    return db


def storage(url: str) -> str:
    return f'[storage]\nurl = "{url}"\n'


async def test_register_talk_restart_unregister(
    database: Database, start_passerelle: StartPasserelle, new_client: NewClient
) -> None:
    passerelle = start_passerelle(extra=storage(database.url()), echo='log_level = "DEBUG"')
    alice = await new_client("alice")
    await alice.register(ECHO_JID, nickname="Alice")
    await alice.next_roster_push(ECHO)
    alice.send_chat(ECHO, "hello from postgres")
    assert (await alice.next_message(ECHO))["body"] == "hello from postgres"

    # Every table of the network lives in its own schema, none in public.
    tables = database.sql(
        "SELECT schemaname || '.' || tablename FROM pg_tables "
        "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"
    )
    assert {t.split(".")[0] for t in tables} == {SCHEMA}, tables
    assert {f"{SCHEMA}.user_account", f"{SCHEMA}.alembic_version"} <= set(tables)
    assert database.sql(f"SELECT jid FROM {SCHEMA}.user_account") == [alice.boundjid.bare]

    # A new Passerelle on the same configuration finds alice in the database and logs
    # her in again by itself.
    assert await asyncio.to_thread(passerelle.stop) == 0, passerelle.output()
    await alice.next_presence(ECHO_JID, ptype="unavailable")
    again = PasserelleProcess(passerelle.config)
    try:
        await again.wait_for("Slidge has successfully started")
        await alice.next_presence(ECHO)
        alice.send_chat(ECHO, "still here after a restart?")
        assert (await alice.next_message(ECHO))["body"] == "still here after a restart?"

        await alice.unregister(ECHO_JID)
        alice.send_chat(ECHO, "gone?")
        bounce = await alice.next_message(ECHO, with_body=False)
        assert bounce["error"]["condition"] == "registration-required"
        assert database.sql(f"SELECT count(*) FROM {SCHEMA}.user_account") == ["0"]
        assert again.proc.poll() is None, again.output()
    finally:
        assert await asyncio.to_thread(again.stop) == 0, again.output()
    output = passerelle.output() + again.output()
    # (At DEBUG, slidge logs tracebacks of stanza errors it handles; errors are what count.)
    assert not re.search(r"^echo \| (ERROR|CRITICAL) ", output, re.M), output
    # Even the DEBUG log, where slidge prints its settings, never shows the password.
    assert database.password not in output
    assert "pa%3Ass%40word" not in output


async def test_wrong_password_is_a_configuration_error(
    database: Database, start_passerelle: StartPasserelle
) -> None:
    passerelle = start_passerelle(extra=storage(database.url("not the password")), wait=False)
    await passerelle.wait_for(r"echo: configuration error .*not restarting it")
    out = passerelle.output()
    assert f'password authentication failed for user "{database.owner}"' in out
    assert "not the password" not in out
    assert "Traceback" not in out
    assert "restarting in" not in out


async def test_unreachable_database_is_retried_with_backoff(
    database: Database, start_passerelle: StartPasserelle
) -> None:
    # Nobody listens on this port: a database server that is down may come back.
    url = f"postgresql://{database.owner}@127.0.0.1:{free_port()}/{database.name}"
    passerelle = start_passerelle(extra=storage(url), wait=False)
    first = await passerelle.wait_for(r"cannot reach PostgreSQL at 127\.0\.0\.1")
    await passerelle.wait_for(r"echo exited with code 75 .* restarting in", after=first)
    assert "Traceback" not in passerelle.output()


def test_prepare_needs_no_create_privilege_once_the_schema_exists(database: Database) -> None:
    # A cautious administrator creates the schema and takes CREATE on the database away.
    database.server.psql(
        f'CREATE SCHEMA {SCHEMA} AUTHORIZATION "{database.owner}"; '
        f'REVOKE CREATE ON DATABASE "{database.name}" FROM "{database.owner}"',
        database.name,
    )
    url, password = postgres_url(database.url(), SCHEMA)
    assert password == database.password
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSWORD", password)
        slidge_fixes.postgres_prepare(url, SCHEMA)
        slidge_fixes.postgres_prepare(url, SCHEMA)  # idempotent
    assert database.sql(f"SELECT {SCHEMA}.instr('alice@example.org', '@')") == ["6"]


def test_deleting_a_user_who_posted_in_a_group(database: Database) -> None:
    """slidge bug 6: ``group_msg_origin`` rows kept the room, and so the user, alive."""
    import sqlalchemy as sa
    from slidge.db.meta import Base
    from slidge.db.models import GatewayUser, GroupMessagesOrigin, Room
    from slixmpp import JID

    slidge_fixes.cascade_room_origins()
    url, password = postgres_url(database.url(), SCHEMA)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PGPASSWORD", password or "")
        slidge_fixes.postgres_prepare(url, SCHEMA)
        engine = sa.create_engine(url, poolclass=sa.NullPool)
        try:
            Base.metadata.create_all(engine)
            with sa.orm.Session(engine) as orm:
                user = GatewayUser(jid=JID("alice@localhost"), legacy_module_data={})
                room = Room(user=user, legacy_id="#room", jid_localpart="room")
                orm.add_all([user, room])
                orm.flush()
                # What slidge stores when alice sends a message to the group.
                orm.add(GroupMessagesOrigin(foreign_key=room.id, legacy_id="1", xmpp_id="x"))
                orm.commit()
            with sa.orm.Session(engine) as orm:
                # What slidge does when alice unregisters (BaseSession.kill_by_jid).
                orm.delete(orm.scalars(sa.select(GatewayUser)).one())
                orm.commit()
                assert orm.scalar(sa.select(sa.func.count()).select_from(GroupMessagesOrigin)) == 0
        finally:
            engine.dispose()
