# The compiled core. Everything else is declared in pyproject.toml.
from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["kampx/include"]

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

setup(ext_modules=cythonize(EXTENSIONS, language_level=3,
                            compiler_directives={"boundscheck": False, "wraparound": False}))
