# The compiled core. Everything else is declared in pyproject.toml.
from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["kampx/include"]

# Cython sources written for C: no negative indices, no bounds checks.
EXTENSIONS = [
    Extension("kampx._cparse", ["kampx/_cparse.pyx"]),
    Extension("kampx._shm", ["kampx/_shm.pyx"], include_dirs=INCLUDE),
    Extension("kampx._records", ["kampx/_records.pyx"]),
    Extension("kampx.usrloc._store", ["kampx/usrloc/_store.pyx"], include_dirs=INCLUDE),
    Extension("kampx.transport._recv", ["kampx/transport/_recv.pyx"]),
    Extension("kampx.transport._send", ["kampx/transport/_send.pyx"]),
    Extension("kampx.tm.timers", ["kampx/tm/timers.pyx"]),
    Extension("kampx.auth._digest", ["kampx/auth/_digest.pyx"], include_dirs=INCLUDE),
]

# Python modules compiled as they are written, with the C types of the .pxd beside them
# (docs/development.md): Python's semantics kept, negative indices and bounds checks included.
PYTHON_COMPILED = [
    Extension("kampx.tm.manager", ["kampx/tm/manager.py"]),
    Extension("kampx.dialog", ["kampx/dialog.py"]),
    Extension("kampx.acc", ["kampx/acc.py"]),
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    )
    + cythonize(PYTHON_COMPILED, language_level=3)
)
