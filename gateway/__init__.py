"""Passerelle: an XMPP gateway that puts IRC, Matrix and email contacts into any XMPP client.

The ``gateway`` package is the core: configuration, the process supervisor that runs one
slidge child per network, the ``passerelle`` command line, and the pieces every network
plugin shares. Network plugins live in ``legacy_plugins/`` and translate; the core routes.
"""

__version__ = "0.1.0"
