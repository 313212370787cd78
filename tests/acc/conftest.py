"""Fixtures of the accounting tests: the storage under test, SQLite and PostgreSQL alike.

The PostgreSQL server is tests/cluster/pgserver.py's (`pg`), gated as the cluster tests
gate it (a machine without PostgreSQL fails them: tools/setup-system.sh installs it)."""

from __future__ import annotations

import os
import sys

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "cluster")
)

from pgserver import pg, pg_server  # noqa: E402,F401
