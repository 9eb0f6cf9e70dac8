"""The IRC network: every channel a MUC, every nick a contact, every server a contact.

Biboumi-compatible addresses (`#chan%server@…`, `nick%server@…`, `server@…`); see
README.md for registration, settings and the status of each feature.
"""
