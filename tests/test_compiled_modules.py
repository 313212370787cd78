"""The Python modules setup.py compiles are the compiled ones that import (docs/development.md,
"The compiled modules"), and their classes with a .pxd are C types."""
import importlib
import os
import re

import pytest

from buildcheck import REPO, stale_compiled_modules


def compiled_paths() -> list[str]:
    with open(os.path.join(REPO, "setup.py")) as f:
        text = f.read()
    return re.findall(r'"(kampx/[\w/]+\.py)"', text)


def test_setup_lists_the_modules_a_datagram_goes_through():
    paths = compiled_paths()
    for must in ("kampx/tm/manager.py", "kampx/dialog.py", "kampx/worker.py",
                 "kampx/routing/core.py"):
        assert must in paths


@pytest.mark.parametrize("path", compiled_paths())
def test_each_listed_module_imports_compiled(path):
    module = importlib.import_module(path[:-3].replace("/", "."))
    assert module.__file__.endswith(".so"), f"{path} imports as Python: rebuild (pip install -e .)"


def test_classes_with_a_pxd_are_c_types():
    # a field declared in a .pxd is a C field behind a getset descriptor; the same class
    # uncompiled, with __slots__, would show a member descriptor
    from kampx.acc import Accounting
    from kampx.dialog import Dialogs, Journal
    from kampx.tm.manager import ClientTxn, ServerTxn, TransactionManager
    for cls, field in ((ServerTxn, "state"), (ClientTxn, "server"), (TransactionManager, "server"),
                       (Dialogs, "index"), (Journal, "pending"), (Accounting, "mask")):
        assert type(cls.__dict__[field]).__name__ == "getset_descriptor", cls


def test_a_stale_compiled_module_is_told(tmp_path):
    pkg = tmp_path / "kampx"
    pkg.mkdir()
    (pkg / "m.cpython-311-x86_64-linux-gnu.so").write_bytes(b"")
    (pkg / "m.py").write_text("")
    so, py = pkg / "m.cpython-311-x86_64-linux-gnu.so", pkg / "m.py"
    os.utime(so, (1000, 1000))
    os.utime(py, (2000, 2000))
    assert stale_compiled_modules(str(tmp_path)) == ["kampx/m.py"]
    os.utime(so, (3000, 3000))
    assert stale_compiled_modules(str(tmp_path)) == []
