"""Benchmarks of Passerelle against the gateways it replaces, on loopback (see README.md)."""
