# The compiled core. Everything else is declared in pyproject.toml.
from Cython.Build import cythonize
from setuptools import Extension, setup

INCLUDE = ["kampx/include"]

# Cython sources written for C: no negative indices, no bounds checks.
EXTENSIONS = [
    Extension("kampx._cparse", ["kampx/_cparse.pyx"]),
    Extension("kampx._shm", ["kampx/_shm.pyx"], include_dirs=INCLUDE),
    Extension("kampx._records", ["kampx/_records.pyx"]),
    Extension("kampx._clock", ["kampx/_clock.pyx"]),
    Extension("kampx._inet", ["kampx/_inet.pyx"]),
    Extension("kampx.usrloc._store", ["kampx/usrloc/_store.pyx"], include_dirs=INCLUDE),
    Extension("kampx.transport._recv", ["kampx/transport/_recv.pyx"]),
    Extension("kampx.transport._send", ["kampx/transport/_send.pyx"]),
    Extension("kampx.tm.timers", ["kampx/tm/timers.pyx"]),
    Extension("kampx.auth._digest", ["kampx/auth/_digest.pyx"], include_dirs=INCLUDE),
    Extension("kampx.routing._raise", ["kampx/routing/_raise.pyx"]),
    Extension("kampx.db._rows", ["kampx/db/_rows.pyx"]),
]

# Python modules compiled as they are written, with the C types of the .pxd beside them
# (kampx/include: a module that cimports kampx._shm's types includes its header)
# (docs/development.md). Python's semantics kept: negative indices and bounds checks, and
# annotations that only document (the script API takes what a script passes).
PYTHON_COMPILED = [
    Extension(path[:-3].replace("/", "."), [path], include_dirs=INCLUDE)
    for path in (
        "kampx/auth/authenticator.py",
        "kampx/auth/credentials.py",
        "kampx/auth/digest.py",
        "kampx/auth/nonce.py",
        "kampx/auth/subscribers.py",
        "kampx/dset.py",
        "kampx/forward.py",
        "kampx/maxfwd.py",
        "kampx/overload.py",
        "kampx/permissions.py",
        "kampx/registrar.py",
        "kampx/rr.py",
        "kampx/sanity.py",
        "kampx/security/guard.py",
        "kampx/security/limits.py",
        "kampx/security/scanner.py",
        "kampx/sl.py",
        "kampx/stats/family.py",
        "kampx/transport/sockets.py",
        "kampx/worker.py",
        "kampx/routing/auth.py",
        "kampx/routing/context.py",
        "kampx/routing/core.py",
        "kampx/routing/dialog.py",
        "kampx/routing/hooks.py",
        "kampx/routing/maxfwd.py",
        "kampx/routing/permissions.py",
        "kampx/routing/registrar.py",
        "kampx/routing/rr.py",
        "kampx/routing/sanity.py",
        "kampx/routing/security.py",
        "kampx/routing/sl.py",
        "kampx/routing/tm.py",
        # the db writer's per-record work: journal records into rows, rows into SQLite
        "kampx/dbwriter.py",
        "kampx/dialog_table.py",
        "kampx/db/base.py",
        "kampx/db/sqlite.py",
    )
]
# ... and these with their annotations as C types too (`t: ServerTxn` reads its fields
# directly): Cython then refuses what Python would take (a subclass where a builtin is
# annotated, a NamedTuple for `tuple`, None for `float`), so only modules that kampx alone
# calls, held to their annotations by the suite.
PYTHON_TYPED = [
    Extension(path[:-3].replace("/", "."), [path], include_dirs=INCLUDE)
    for path in ("kampx/tm/manager.py", "kampx/dialog.py", "kampx/acc.py")
]

setup(
    ext_modules=cythonize(
        EXTENSIONS,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False},
    )
    # nonecheck, in both groups: a None where a C type is declared (a `Message msg`, the
    # script API's `ctx.msg` read outside a route) raises instead of being read through as a
    # null pointer
    + cythonize(
        PYTHON_COMPILED,
        language_level=3,
        compiler_directives={"annotation_typing": False, "nonecheck": True},
    )
    + cythonize(PYTHON_TYPED, language_level=3, compiler_directives={"nonecheck": True})
)
