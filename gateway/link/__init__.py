"""The channel ↔ room link: an IRC channel and an existing MUC room as one conversation.

Not a slidge network: a plain slixmpp component (:mod:`.component`) that joins rooms on
the XMPP server's MUC service as many occupants — a listener that reads the room and a
puppet per IRC user who speaks — and, per XMPP occupant who speaks, an IRC connection
of its own through the IRC plugin's client (:mod:`.ircside`). :mod:`.room` relays one
link both ways, in order and without echoes, with the IRC users' occupants kept by
:mod:`.occupants`; :mod:`.bridge` holds its pure rules;
:mod:`.service` runs it all; :mod:`.commands` are the admins' ad-hoc commands;
:mod:`.store` keeps admin-added and paused links. The supervisor runs it as
``python -m gateway.link -c FILE`` (:mod:`.__main__`) when ``[link]`` is enabled.

Errors::

    PasserelleError
    ├── service.LinkFatal   the XMPP server refuses the component (exit 78, not restarted)
    └── service.LinkError   an admin command cannot be done (shown to the admin)
"""
