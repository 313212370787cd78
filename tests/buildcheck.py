"""Which compiled Python modules of kampx are older than their sources (tests/conftest.py
stops the suite on them; tests/test_compiled_modules.py checks this)."""
import os

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
