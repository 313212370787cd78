"""Fixtures of the accounting tests: the storage under test, SQLite and PostgreSQL alike.

The PostgreSQL server is tests/cluster/pgserver.py's, gated as the cluster tests gate it
(a machine without PostgreSQL fails them: tools/setup-system.sh installs it)."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster")
)

import pgserver  # noqa: E402


@pytest.fixture(scope="session")
def acc_pg_server():
    if pgserver.bindir() is None:
        pytest.fail("PostgreSQL is not installed: tools/setup-system.sh installs it")
    server = pgserver.PgServer()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


@pytest.fixture
def acc_pg(acc_pg_server):
    """The server, with an empty kampx database."""
    if not os.path.exists(os.path.join(acc_pg_server.data, "postmaster.pid")):
        acc_pg_server.start()
    acc_pg_server.reset()
    return acc_pg_server
