"""usrloc: the location table (registered contacts) in shared memory; see _store.pyx."""

from kampx import stats as S
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

EXPIRED_CONTACTS = S.family(
    "usrloc", "expired_contacts", S.KIND_COUNTER, "Bindings removed on expiry"
)
DB_WRITES = S.family(
    "usrloc", "db_writes", S.KIND_COUNTER, "Binding changes written behind to the database"
)
DB_ERRORS = S.family(
    "usrloc",
    "db_errors",
    S.KIND_COUNTER,
    "Write-behind rounds that failed (retried; the proxy answers from memory)",
)
STATISTICS = (EXPIRED_CONTACTS, DB_WRITES, DB_ERRORS)

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
