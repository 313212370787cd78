"""Shared by every test folder: the helpers in tests/ (sipclient, proxyctl, kampxproc,
sipprun) are importable as top-level modules."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def stale_compiled_modules(root: str = REPO) -> list[str]:
    """The Python modules of kampx compiled by setup.py (a .py with a .so beside it: the
    .so is what imports) whose .py or .pxd changed after the .so was built."""
    stale = []
    for folder, _, files in os.walk(os.path.join(root, "kampx")):
        for name in files:
            if not name.endswith(".so"):
                continue
            stem = os.path.join(folder, name.split(".", 1)[0])
            built = os.path.getmtime(os.path.join(folder, name))
            sources = [stem + ext for ext in (".py", ".pxd") if os.path.exists(stem + ext)]
            if stem + ".py" in sources and any(os.path.getmtime(s) > built for s in sources):
                stale.append(os.path.relpath(stem + ".py", root))
    return stale


def pytest_configure(config):
    # an edited kampx/tm/manager.py does nothing until it is compiled again: say so, rather
    # than test the old code
    stale = stale_compiled_modules()
    if stale:
        import pytest
        pytest.exit(f"{', '.join(stale)} changed since it was compiled: "
                    f"run .venv/bin/pip install -e . (or make test) first", returncode=4)
