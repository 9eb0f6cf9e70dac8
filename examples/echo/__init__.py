"""The echo network: a fake legacy network that talks back.

It is the demo's fallback, the core's test double in the end-to-end tests, and the
template for a new network plugin: every real plugin under ``legacy_plugins/`` has the same
files with the same roles. Copy this folder to start a new one.

The network has one contact, ``echo``, who repeats every message it is sent and corrects
its answer when the user corrects theirs.
"""
