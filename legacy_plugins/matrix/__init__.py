"""The Matrix network: a slidge legacy module on matrix-nio.

Direct chats are 1:1 contacts, other rooms are MUCs. The folder has the rooms every
network has: ``config.py``, ``translate.py`` (Matrix JSON to the values of ``events.py``;
with ``contents.py`` for what goes to Matrix, ``mentions.py``, ``ids.py`` for addresses,
``html.py`` for formatting and ``rooms.py`` for room state, all pure), ``client.py`` (the
only module that imports nio, with ``sync.py`` and ``keysapi.py`` as parts of its client;
``login.py`` logs in, ``net.py`` holds the HTTP policy, ``crypto.py`` the encryption
device), ``gateway.py``, ``session.py`` (with parts of its own: ``incoming.py``
for what sync brings, ``outgoing.py`` for what the user sends, ``joins.py`` for rooms
coming and going, ``e2ee.py`` and ``profiles.py``), ``contact.py``, ``group.py`` and
``errors.py``. See ``README.md`` for what users get.
"""
