"""The email network: every address an XMPP contact, every Delta Chat group a room.

The engine is Delta Chat's core (``deltachat-rpc-server``), one account per registered
user; see README.md for what correspondents see and what is encrypted where.
"""
