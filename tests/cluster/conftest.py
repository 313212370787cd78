"""Fixtures of the cluster tests: one real PostgreSQL server per test process (session), an
empty kampx database for every test that asks for one (tests/cluster/pgserver.py)."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from pgserver import pg, pg_server  # noqa: E402,F401
