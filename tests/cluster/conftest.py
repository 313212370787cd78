"""Fixtures of the cluster tests: one real PostgreSQL server per test process (session), an
empty kampx database for every test that asks for one."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import pgserver  # noqa: E402


@pytest.fixture(scope="session")
def pg_server():
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
def pg(pg_server):
    """The server, with an empty kampx database (and running, whatever the last test did)."""
    if not os.path.exists(os.path.join(pg_server.data, "postmaster.pid")):
        pg_server.start()
    pg_server.reset()
    return pg_server
