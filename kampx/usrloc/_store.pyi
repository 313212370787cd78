"""Type stub for kampx/usrloc/_store.pyx: the shared-memory location table."""

from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Iterator

OK: int  # 0
ERR_CSEQ: int  # same Call-ID and a CSeq not higher than the stored binding's (RFC 3261 10.3/7)
ERR_FULL: int  # no room in the table for the new bindings
ERR_TOO_MANY: int  # max_contacts < 0 ("reject") and the AOR would grow beyond the limit
ERR_TOO_LARGE: int  # a binding's strings do not fit in a slot, or the request is too big
DEFAULT_SLOT_SIZE: int  # 768
SKIP_SAME: int  # sync_put: the table already holds exactly this binding
SKIP_DIRTY: int  # sync_put/sync_drop: ours has a change the database has not seen; left alone
SKIP_ABSENT: int  # sync_drop: no such binding (sync_put: an expired one, not added)

# (contact, expires_at, q, callid, cseq, received, path, socket, user_agent, instance, reg_id,
#  flags); expires_at absolute epoch seconds, 0 (or <= now) removes, math.inf is permanent
Op = tuple[str, float, int, str, int, str, str, str, str, str, int, int]

class LockError(RuntimeError):
    """A shared mutex is unusable (memory corrupted); the table cannot be trusted."""

class Binding:
    """One registered contact; immutable. Field order = kampx.db.base.LOCATION_FIELDS."""

    _fields: ClassVar[tuple[str, ...]]
    ruid: str
    aor: str
    contact: str
    received: str  # "" or "sip:IP:PORT" (the REGISTER's source)
    path: str  # "" or the Path header values joined by ","
    socket: str  # "udp:IP:PORT" the REGISTER arrived on
    user_agent: str  # may have been cut to fit the slot
    callid: str
    instance: str  # +sip.instance, "" if none
    reg_id: int  # 0 if none
    cseq: int
    q: int  # q * 1000, -1 when the contact gave none
    expires: float  # absolute; 0.0 = permanent
    last_modified: float
    flags: int

    def __init__(
        self,
        ruid: str,
        aor: str,
        contact: str,
        received: str = "",
        path: str = "",
        socket: str = "",
        user_agent: str = "",
        callid: str = "",
        instance: str = "",
        reg_id: int = 0,
        cseq: int = 0,
        q: int = -1,
        expires: float = 0.0,
        last_modified: float = 0.0,
        flags: int = 0,
    ) -> None: ...
    def as_tuple(self) -> tuple[Any, ...]: ...
    def as_dict(self) -> dict[str, Any]: ...
    def __eq__(self, other: object) -> bool: ...
    def __hash__(self) -> int: ...

class Change:
    """An unacknowledged change: unpacks as (ruid, Binding) or (ruid, None) for a deletion."""

    ruid: str
    binding: Binding | None
    token: int  # (slot << 64) | version; what ack_changes() needs
    removed: Binding | None  # a deletion's binding as it was (its last_modified: the version)
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...
    def __getitem__(self, i: int) -> Any: ...

class LocationStore:
    """Build before fork (anonymous MAP_SHARED mapping); every child process uses it."""

    def __init__(
        self, capacity: int, seed: int, *, slot_size: int = 768, track_changes: bool = True
    ) -> None: ...
    @property
    def capacity(self) -> int: ...
    @property
    def nbytes(self) -> int: ...
    @property
    def slot_size(self) -> int: ...
    @property
    def max_string_bytes(self) -> int: ...
    @property
    def track_changes(self) -> bool: ...
    @property
    def free_slots(self) -> int: ...
    @property
    def change_count(self) -> int: ...
    @property
    def recoveries(self) -> int: ...
    def lookup(self, aor: str, now: float) -> list[Binding]: ...
    def apply(
        self, aor: str, now: float, ops: Sequence[Op], max_contacts: int = 0
    ) -> tuple[int, list[Binding]]: ...
    def remove_all(
        self, aor: str, callid: str, cseq: int, now: float
    ) -> tuple[int, list[Binding]]: ...
    def delete(self, aor: str, contact: str | None = None) -> int: ...
    def expire(self, now: float) -> int: ...
    def stats(self, now: float) -> tuple[int, int]: ...
    def dump(
        self, cursor: int, limit: int, now: float
    ) -> tuple[int, list[tuple[str, list[Binding]]]]: ...
    def load(self, bindings: Iterable[Binding], now: float | None = None) -> int: ...
    def sync_put(self, bd: Binding, now: float) -> int: ...
    def sync_drop(self, aor: str, ruid: str) -> int: ...
    def pending_changes(self, max_items: int = 1000) -> list[Change]: ...
    def ack_changes(self, items: Iterable[Change | int]) -> None: ...
    def check(self) -> list[str]: ...

def _inject_fault(countdown: int) -> None: ...
