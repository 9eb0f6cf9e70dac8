"""A real slidge 0.4.2 store on SQLite for unit tests of the slidge fixes: one user,
romeo@example.org, with the rooms ``#a`` and ``#b`` and the given contacts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def slidge_store(path: Path, contacts: Iterable[str] = ()) -> Iterator[Any]:
    """A `SlidgeStore` on a new SQLite file at `path`, disposed of on exit."""
    import sqlalchemy as sa
    from slidge.db.meta import Base
    from slidge.db.models import Contact, GatewayUser, Room
    from slidge.db.store import SlidgeStore
    from slixmpp import JID

    engine = sa.create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    store = SlidgeStore(engine)
    with store.session() as orm:
        user = GatewayUser(jid=JID("romeo@example.org"), legacy_module_data={})
        orm.add(user)
        for name in ("#a", "#b"):
            orm.add(Room(user=user, legacy_id=name, jid_localpart=name, name=name))
        for legacy_id in contacts:
            orm.add(Contact(user=user, legacy_id=legacy_id, jid_localpart=legacy_id))
        orm.commit()
    try:
        yield store
    finally:
        engine.dispose()
