"""Shared by every test folder: the helpers in tests/ (sipclient, proxyctl, kampxproc,
sipprun) are importable as top-level modules."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from buildcheck import stale_compiled_modules  # noqa: E402


def pytest_configure(config):
    # an edited kampx/tm/manager.py does nothing until it is compiled again: say so, rather
    # than test the old code
    stale = stale_compiled_modules()
    if stale:
        import pytest
        pytest.exit(f"{', '.join(stale)} changed since it was compiled: "
                    f"run .venv/bin/pip install -e . (or make test) first", returncode=4)
