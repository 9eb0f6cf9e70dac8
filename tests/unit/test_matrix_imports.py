"""What the Matrix network's process loads, and when (legacy_plugins/matrix/client.py).

matrix-nio is imported at the first login, not with the network's modules, and without
psycopg2 (which peewee, under nio's key store, would import for nothing); psycopg2 stays
importable for a PostgreSQL database. Each check runs in a fresh interpreter, since this
test session may have imported nio already.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def _run(code: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_nio_not_loaded_with_the_network_modules() -> None:
    _run(
        """
        import sys
        import legacy_plugins.matrix.gateway, legacy_plugins.matrix.session
        assert "nio" not in sys.modules, "nio imported at start-up"
        """
    )


def test_load_nio_imports_it_without_psycopg2_which_stays_importable() -> None:
    pytest.importorskip("psycopg2")
    _run(
        """
        import asyncio, sys
        from legacy_plugins.matrix.client import load_nio, nio
        asyncio.run(load_nio())
        assert "nio" in sys.modules and nio.AsyncClient.__name__ == "AsyncClient"
        assert "psycopg2" not in sys.modules, "psycopg2 loaded with nio"
        import psycopg2, sqlalchemy.dialects.postgresql.psycopg2 as dialect
        assert dialect.PGDialect_psycopg2.import_dbapi() is psycopg2
        """
    )


def test_a_first_use_without_load_nio_imports_it_on_the_spot() -> None:
    _run(
        """
        import sys
        from legacy_plugins.matrix.crypto import encrypt_file, decrypt_file
        ciphertext, keys = encrypt_file(b"hello")
        assert "nio" in sys.modules
        """
    )
