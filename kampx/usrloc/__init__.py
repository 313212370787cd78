"""usrloc: the location table (registered contacts) in shared memory; see _store.pyx."""

from kampx.usrloc._store import (
    ERR_CSEQ,
    ERR_FULL,
    ERR_TOO_LARGE,
    ERR_TOO_MANY,
    OK,
    SKIP_ABSENT,
    SKIP_DIRTY,
    SKIP_SAME,
    Binding,
    Change,
    LocationStore,
    LockError,
)

__all__ = [
    "OK",
    "ERR_CSEQ",
    "ERR_FULL",
    "ERR_TOO_MANY",
    "ERR_TOO_LARGE",
    "SKIP_SAME",
    "SKIP_DIRTY",
    "SKIP_ABSENT",
    "Binding",
    "Change",
    "LocationStore",
    "LockError",
]
