"""Shared-memory structures of kampx (compiled from _shm.pyx).

Every structure maps its own anonymous MAP_SHARED region when constructed. Build them in the
supervisor before fork; every child (and every respawned child) then uses the same memory.
Locks are robust process-shared mutexes: a process killed while holding one does not block the
others (see `recoveries`). Times are `time.monotonic()` seconds (CLOCK_MONOTONIC is system-wide).
"""

import mmap

class LockError(RuntimeError):
    """A shared mutex is unusable (memory corrupted); the structure cannot be trusted."""

class CounterRows:
    """Counters in the style of Kamailio's counters.c: one cache-line aligned row of int64 per
    process. A process adds to its own row; a reader (the metrics scrape) sums the rows.
    Adds are relaxed atomic adds (about 20 ns from Python), so a row used by two processes by
    mistake still sums exactly. Cython code can `from kampx._shm cimport CounterRows` and call
    `rows.c_add(row, col, n)` (returns -1 when out of range) without Python call overhead."""

    def __init__(self, nrows: int, ncols: int) -> None: ...
    @property
    def nbytes(self) -> int:
        """Size of the shared mapping in bytes."""
    @property
    def shape(self) -> tuple[int, int]:
        """(nrows, ncols)."""
    def inc(self, row: int, col: int) -> None:
        """Add 1 to (row, col). IndexError when out of range."""
    def add(self, row: int, col: int, n: int) -> None:
        """Add n (may be negative, for gauges held per row) to (row, col)."""
    def add_get(self, row: int, col: int, n: int) -> int:
        """Add n to (row, col) and return the new value, atomically (a shared total tested
        against a limit by several processes: add, then back out when over)."""
    def get(self, row: int, col: int) -> int:
        """One cell."""
    def column_sums(self) -> list[int]:
        """Per column, the sum over all rows (the process-wide total)."""
    def column_sum(self, col: int) -> int:
        """One column's sum over all rows (a shared total kept per process)."""
    def row(self, r: int) -> list[int]:
        """One process's values."""
    def zero_row(self, r: int) -> None:
        """Reset a row to 0 (for a row whose counts should be dropped)."""
    def fold_row(self, src: int, dst: int) -> None:
        """Move row src's counts into row dst and leave src at 0, so column sums never go
        backwards when a dead process's row is handed to its replacement."""

class CounterRow:
    """One process's row of a CounterRows for the hot path: inc/add one C call each,
    observe_us files a time into a histogram set with set_histogram."""

    def __init__(self, rows: CounterRows, row: int) -> None: ...
    @property
    def rows(self) -> CounterRows: ...
    @property
    def row(self) -> int: ...
    def inc(self, col: int) -> None: ...
    def add(self, col: int, n: int) -> None: ...
    def set_histogram(self, base: int, bounds: tuple[int, ...]) -> None:
        """Columns base.. : a bucket per bound, the overflow bucket, the sum, the count."""
    def observe_us(self, us: int) -> None:
        """One value into the histogram (first bound >= us)."""

class SharedMutex:
    """One robust process-shared mutex: `with mutex:` holds it. No system call when nobody
    else holds it; not re-entrant; a holder killed leaves it to the next (`recoveries`)."""

    def __init__(self) -> None: ...
    def __enter__(self) -> None: ...
    def __exit__(self, *exc: object) -> None: ...
    @property
    def recoveries(self) -> int:
        """How many times it was taken over from a process that died holding it."""
    def _test_hold_lock(self, stripe: int, seconds: float, notify_fd: int = -1) -> None: ...

class KeyIndex:
    """A shared key -> one-byte value (0..255) with an expiry. Two uses: the transaction
    index (RFC 3261 17.2.3 transaction key -> the owner worker's id) and the dialog index
    (Call-ID and the caller's tag -> the dialog's state). Only a 64-bit seeded hash of the
    key is stored (16-byte slots). Two candidate buckets of 8 slots per key inside one
    segment; one robust mutex per segment. An expired entry is a free slot: no sweeper
    needed."""

    def __init__(self, capacity: int, seed: int) -> None:
        """capacity: live entries to hold (the index allocates 2-4x that in slots).
        seed: random per proxy start, so senders cannot aim keys at one bucket."""
    @property
    def nbytes(self) -> int:
        """Size of the shared mapping in bytes."""
    @property
    def capacity(self) -> int: ...
    @property
    def slots_total(self) -> int:
        """Physical slots."""
    @property
    def stripes(self) -> int:
        """Number of lock stripes (segments)."""
    @property
    def recoveries(self) -> int:
        """Times a stripe lock was taken over from a process that died holding it."""
    def claim(self, key: bytes, owner: int, now: float, ttl: float) -> int:
        """Atomically: if key has an entry live at `now`, return its value; otherwise record
        key -> owner expiring at now + ttl and return `owner`. -2 when key's buckets are full
        of live entries. ValueError unless 0 <= owner <= 255 and ttl > 0."""
    def lookup(self, key: bytes, now: float) -> int:
        """Value of key's entry live at `now`, else -1."""
    def refresh(self, key: bytes, owner: int, expires_at: float) -> bool:
        """Set the expiry of key's entry if its value is `owner` (live, or expired and not
        yet reused). False when key is absent or holds another value."""
    def release(self, key: bytes, owner: int) -> bool:
        """Remove key's entry if its value is `owner`; True when removed."""
    def put(self, key: bytes, value: int, now: float, expires_at: float) -> bool:
        """Set key -> value expiring at expires_at, whatever the entry held before (in
        place when it exists). False when key's buckets are full of entries live at `now`."""
    def discard(self, key: bytes) -> bool:
        """Remove key's entry whatever its value; True when there was one."""
    def purge_owner(self, owner: int) -> int:
        """Remove every entry of `owner` (a worker that died); returns how many."""
    def count(self, now: float) -> int:
        """Entries live at `now` (walks the whole table, one stripe locked at a time)."""
    def _stripe_of(self, key: bytes) -> int:
        """Test hook: the stripe guarding key."""
    def _test_hold_lock(self, stripe: int, seconds: float, notify_fd: int = -1) -> None:
        """Test hook: lock `stripe`, write one byte to notify_fd, sleep, unlock."""

class RateTable:
    """Per-source-IP event counters with bans, shared by all workers: flood limits (Kamailio
    pike) and failed-authentication bans (fail2ban-like); use one table per purpose.
    Keys are packed IPs (socket.inet_pton: 4 or 16 bytes). A fixed window per IP starts at
    its first event; when a ban lapses the source starts a fresh window."""

    def __init__(self, capacity: int, seed: int) -> None: ...
    @property
    def nbytes(self) -> int:
        """Size of the shared mapping in bytes."""
    @property
    def capacity(self) -> int: ...
    @property
    def stripes(self) -> int: ...
    @property
    def recoveries(self) -> int:
        """Times a stripe lock was taken over from a process that died holding it."""
    @property
    def overflows(self) -> int:
        """Events let through (fail open) or bans not recorded because no slot was free."""
    def hit(self, ip: bytes, now: float, window_s: float, limit: int, ban_s: float) -> int:
        """Count one event from ip. 0 allowed; 1 blocked: ip is banned (the event is not
        counted), or this event makes the window's count exceed `limit`, which bans ip until
        now + ban_s. When the table is full (no empty or expired slot): 0, and `overflows`
        grows."""
    def blocked(self, ip: bytes, now: float) -> bool:
        """Whether ip is banned at `now` (counts nothing)."""
    def ban(self, ip: bytes, now: float, ban_s: float) -> bool:
        """Ban ip until now + ban_s. False when the table had no room."""
    def unban(self, ip: bytes) -> bool:
        """Forget ip entirely (count and ban). True when it had a ban on record."""
    def expire(self, now: float) -> int:
        """Remove entries whose window and ban are both over; returns how many."""
    def dump(self, now: float) -> list[tuple[bytes, int, float]]:
        """(ip, count in the current window, banned_until or 0.0) for each live entry."""
    def banned_count(self, now: float) -> int:
        """Sources banned at `now`."""
    def _stripe_of(self, ip: bytes) -> int:
        """Test hook: the stripe guarding ip."""
    def _test_hold_lock(self, stripe: int, seconds: float, notify_fd: int = -1) -> None:
        """Test hook: lock `stripe`, write one byte to notify_fd, sleep, unlock."""

class NonceCounts:
    """Digest qop nonce-count replay protection across workers (lock-free): each slot holds
    (generation << 32 | highest nc seen), updated with compare-and-swap. A nonce carries its
    (index, generation); when the slot is reused for a newer nonce the old one turns stale."""

    def __init__(self, size: int) -> None:
        """size: nonces tracked at once; the (size+1)-th newest nonce is stale."""
    @property
    def nbytes(self) -> int:
        """Size of the shared mapping in bytes."""
    @property
    def size(self) -> int: ...
    def new_index(self) -> tuple[int, int]:
        """Take the next slot (wrapping) with a new generation (1..2**32-1); its nc starts
        at 0."""
    def check(self, index: int, generation: int, nc: int) -> int:
        """1 accept (nc above the last seen; stored), 0 replay (nc <= last seen),
        -1 stale (slot reused for another nonce, or an index/generation never issued).
        nc must be 0..0xffffffff (RFC 7616: 8 hex digits), else ValueError."""

class DialogSlots:
    def __init__(
        self,
        mm: mmap.mmap,
        mutex: SharedMutex,
        capacity: int,
        nslots: int,
        header: int,
        slot: int,
        setup_at: int,
        answer_at: int,
        probe: int,
    ) -> None: ...
    def create(self, h: int, state: int, expires: float, data: bytes, direction: int) -> bool: ...
    def set_state(self, h: int, state: int, expires: float) -> bool: ...
    def answer(
        self, h: int, state: int, expires: float, data: bytes, session_s: int, answered: float
    ) -> bool: ...
    def refresh(
        self, h: int, now: float, lifetime: float, caller: bool, cseq: int, session: bool
    ) -> bool: ...
    def take(self, h: int) -> tuple[int, int, float, bytes, bytes] | None: ...
