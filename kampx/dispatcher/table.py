"""The dispatcher sets in shared memory: the rows every worker selects from, and each
destination's run-time state, which the prober and ds_mark_dst() in any worker change.

- The rows: a SharedBlob (kampx/shared_snapshot.py) holding them as JSON; each process
  parses them into a `Sets` only when a reload published a new generation.
- The state: a CounterRows cell per (destination, column): its ds flags, consecutive probe
  failures and successes, probe counts, the last probe's reply code and time. Two banks,
  chosen by the generation's parity, as the rows' two copies are: a reload prepares the
  next generation's bank (a destination whose row did not change keeps its state) and
  only then publishes, so no reader sees a state that belongs to another row.
- Round-robin positions: one atomic counter per set (its ordinal in `Sets`), shared by the
  workers, so alg 4 turns over the whole proxy, not per worker.

Reads take no lock. A change of state (read-modify-write of several cells) is made under
the blob's writer lock, which also keeps a reload from running in between; changes are
rare (a probe round, a failed call), so a record lock's syscalls cost nothing that matters.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable

from kampx._shm import CounterRows
from kampx.dispatcher.destinations import (
    DISABLED,
    INACTIVE,
    PROBING,
    TRYING,
    UNUSABLE,
    Destination,
    DispatcherError,
    addresses_of,
    check_row,
    state_text,
)
from kampx.shared_snapshot import BlobTooLarge, ParsedSnapshot, SharedBlob

DEFAULT_CAPACITY = 4096  # destinations (every set together)
ROW_BYTES = 512  # room per row in the blob: a row's text columns are at most 384 bytes

# the state columns of a destination
FLAGS, FAILS, OKS, PROBES, PROBES_FAILED, LAST_CODE, LAST_PROBE_MS = range(7)
STATE_COLUMNS = 7


class Sets:
    """One published table, parsed: destinations by slot, each set's slots in Kamailio's
    order (priority descending, then load order), and the sources ds_is_from_list()
    matches."""

    __slots__ = ("generation", "destinations", "sets", "ordinal", "sources", "named")

    def __init__(self, generation: int, destinations: list[Destination]):
        self.generation = generation
        self.destinations = destinations
        by_set: dict[int, list[int]] = {}
        for slot, d in enumerate(destinations):
            by_set.setdefault(d.setid, []).append(slot)
        self.sets = {
            setid: sorted(slots, key=lambda s: -destinations[s].priority)
            for setid, slots in sorted(by_set.items())
        }
        self.ordinal = {setid: i for i, setid in enumerate(self.sets)}
        # (ip, port) -> setids; port 0 when the URI gives none or the default 5060
        self.sources: dict[tuple[str, int], set[int]] = {}
        # destinations given by name: (name, port, setid), matched through the DNS cache
        self.named: list[tuple[str, int, int]] = []
        for d in destinations:
            port = d.port if d.port not in (0, 5060) else 0
            ips = addresses_of(d.host)
            for ip in ips:
                self.sources.setdefault((ip, port), set()).add(d.setid)
            if not ips:
                self.named.append((d.host.rstrip(".").lower(), port, d.setid))

    def source_sets(self, ip: str, port: int) -> set[int]:
        """The sets with a destination at ip:port (or at ip, for a URI without a port)."""
        return self.sources.get((ip, port), set()) | self.sources.get((ip, 0), set())


def _parse(generation: int, blob: bytes) -> Sets:
    rows = json.loads(blob) if blob else []
    return Sets(generation, [check_row(r) for r in rows])


class DispatcherTable:
    """The shared dispatcher sets. Construct before fork; use in any process after."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._blob = SharedBlob("dispatcher", capacity * ROW_BYTES)
        self._state = CounterRows(2 * capacity, STATE_COLUMNS)
        self._rr = CounterRows(capacity, 1)
        self._snap = ParsedSnapshot(self._blob, _parse)

    @property
    def nbytes(self) -> int:
        return self._blob.nbytes + self._state.nbytes + self._rr.nbytes

    @property
    def generation(self) -> int:
        return self._blob.generation

    def sets(self) -> Sets:
        """The current table (parsed again only after a reload)."""
        return self._snap.get()

    # -- loading --------------------------------------------------------------------------

    def load(self, rows: Iterable) -> int:
        """Validate every row, then publish them (all or nothing: a bad row leaves the
        current table in place). A destination whose (setid, URI, flags) are unchanged
        keeps its run-time state; the others start from their row's flags. Returns the
        new generation."""
        dests = [check_row(r, f"dispatcher row {i + 1}") for i, r in enumerate(rows)]
        if len(dests) > self.capacity:
            raise DispatcherError(
                f"{len(dests)} dispatcher rows do not fit the table (capacity {self.capacity})"
            )
        blob = json.dumps([list(d[:7]) for d in dests], separators=(",", ":")).encode()
        with self._blob.writer():
            old = self.sets()
            kept = {(d.setid, d.uri, d.flags): s for s, d in enumerate(old.destinations)}
            bank = self._bank(old.generation + 1)
            for slot, d in enumerate(dests):
                src = kept.get((d.setid, d.uri, d.flags))
                if src is None:
                    values = [d.flags] + [0] * (STATE_COLUMNS - 1)
                else:
                    values = self._state.row(self._bank(old.generation) + src)
                self._write(bank + slot, values)
            try:
                return self._blob.publish(blob)
            except BlobTooLarge as e:
                raise DispatcherError(f"dispatcher rows: {e}") from None

    def reload_from(self, storage) -> int:
        """Load the dispatcher table of a kampx.db Storage; returns the number of rows."""
        rows = storage.dispatcher.list()
        self.load(rows)
        return len(rows)

    def _bank(self, generation: int) -> int:
        return (generation & 1) * self.capacity

    def _write(self, row: int, values: list[int]) -> None:
        """Set a state row (under the writer lock: every writer of these cells holds it)."""
        for col, v in enumerate(values):
            self._state.add(row, col, v - self._state.get(row, col))

    # -- readers --------------------------------------------------------------------------

    def flags(self, sets: Sets, slot: int) -> int:
        return self._state.get(self._bank(sets.generation) + slot, FLAGS)

    def usable(self, sets: Sets, slot: int) -> bool:
        """Not inactive, not disabled: ds_select_dst() may choose it."""
        return not self.flags(sets, slot) & UNUSABLE

    def next_round_robin(self, sets: Sets, setid: int) -> int:
        """The set's next round-robin position (shared by every worker), from 0."""
        return self._rr.add_get(sets.ordinal[setid] % self.capacity, 0, 1) - 1

    def state_of(self, sets: Sets, slot: int) -> list[int]:
        return self._state.row(self._bank(sets.generation) + slot)

    def dump(self) -> tuple[int, list[dict]]:
        """(generation, each destination set by set with its state), dispatcher.list."""
        sets = self.sets()
        out = []
        for slots in sets.sets.values():
            for slot in slots:
                d = sets.destinations[slot]
                st = self.state_of(sets, slot)
                out.append(
                    {
                        "setid": d.setid,
                        "uri": d.uri,
                        "flags": st[FLAGS],
                        "state": state_text(st[FLAGS]),
                        "priority": d.priority,
                        "attrs": d.attrs,
                        "description": d.description,
                        "id": d.id,
                        "probes": st[PROBES],
                        "probes_failed": st[PROBES_FAILED],
                        "last_code": st[LAST_CODE],
                        "last_probe": st[LAST_PROBE_MS] / 1000.0,
                    }
                )
        return sets.generation, out

    # -- state changes --------------------------------------------------------------------

    def set_state(self, setid: int, uri: str, flags: int) -> int:
        """Give the destinations `uri` of set `setid` (-1: of any set) the state `flags`
        (ds_mark_dst, dispatcher.set_state); their probe streaks start over. Returns how
        many destinations were changed."""
        n = 0
        with self._blob.writer():
            sets = self.sets()
            bank = self._bank(sets.generation)
            for slot, d in enumerate(sets.destinations):
                if d.uri == uri and setid in (-1, d.setid):
                    values = self._state.row(bank + slot)
                    values[FLAGS], values[FAILS], values[OKS] = flags, 0, 0
                    self._write(bank + slot, values)
                    n += 1
        return n

    def record_probe(
        self,
        generation: int,
        slot: int,
        ok: bool,
        code: int,
        probing_threshold: int,
        inactive_threshold: int,
    ) -> int:
        """One probe's outcome for `slot` of `generation` (dropped when a reload published
        another meanwhile). A failure below probing_threshold in a row makes the destination
        trying, at the threshold inactive and probing; inactive_threshold successes in a
        row make it active again (still probing). Disabled stays disabled. Returns the
        destination's flags after."""
        with self._blob.writer():
            sets = self.sets()
            if sets.generation != generation or slot >= len(sets.destinations):
                return -1
            row = self._bank(generation) + slot
            values = self._state.row(row)
            flags = values[FLAGS]
            values[PROBES] += 1
            values[LAST_CODE] = code
            values[LAST_PROBE_MS] = int(time.time() * 1000)
            if ok:
                values[FAILS], values[OKS] = 0, values[OKS] + 1
                if flags & (INACTIVE | TRYING) and values[OKS] >= inactive_threshold:
                    flags &= ~(INACTIVE | TRYING)
            else:
                values[PROBES_FAILED] += 1
                values[FAILS], values[OKS] = values[FAILS] + 1, 0
                if values[FAILS] >= probing_threshold:
                    flags = (flags | INACTIVE | PROBING) & ~TRYING
                elif not flags & INACTIVE:
                    flags |= TRYING
            if not values[FLAGS] & DISABLED:
                values[FLAGS] = flags
            self._write(row, values)
            return values[FLAGS]

    def close(self) -> None:
        """Unmap the rows (tests; a proxy keeps the table for its lifetime)."""
        self._blob.close()
