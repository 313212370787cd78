"""Everything the processes of one kampx instance share, created by the supervisor before
the first fork (anonymous MAP_SHARED mappings: inherited by every child and every respawned
child, gone when the last process exits, nothing to name or unlink).
"""

from __future__ import annotations

import os
import secrets

from kampx import stats as S
from kampx._shm import CounterRows, KeyIndex, NonceCounts, RateTable
from kampx.dialog import journal_pipe
from kampx.dialog_table import DialogTable
from kampx.dns.cache import DnsCache
from kampx.shared_snapshot import SharedBlob
from kampx.trace import SPEC_CAPACITY

MAX_WORKER_IDS = 256  # worker ids are one byte in our branches
TXN_COUNT, TXN_BYTES = 0, 1  # the columns of SharedState.txn_load
HELPER_ROWS = {
    "supervisor": 256,
    "timer": 257,
    "db writer": 258,
    "ctl": 259,
    "dispatcher prober": 260,
}
COUNTER_ROWS = 264


class SharedState:
    def __init__(self, cfg):
        seed = int.from_bytes(os.urandom(8), "little")
        self.instance = secrets.token_hex(4)  # names this instance's hand-off sockets
        self.tag_prefix = secrets.token_hex(16)  # To-tags of local replies (32 hex, as Kamailio)
        self.secret = secrets.token_bytes(32)  # digest nonces (valid in every worker)
        self.counters = CounterRows(COUNTER_ROWS, S.ncols())
        self.txn_index = KeyIndex(max(1024, cfg.tm.max_transactions * 2), seed)
        # the proxy's transactions and the bytes they hold (TXN_COUNT, TXN_BYTES), tested
        # against [tm] max_transactions / max_memory_mb by every worker
        self.txn_load = CounterRows(1, 2)
        self.dialogs = KeyIndex(max(1024, cfg.dialog.capacity), seed ^ 0x3)
        self.dialog_journal_r, self.dialog_journal_w = journal_pipe()
        self.dialog_table = DialogTable(cfg.dialog.tracked_capacity)  # dlg_manage()'s dialogs
        self.pike = RateTable(65536, seed ^ 0x1)
        self.auth_bans = RateTable(65536, seed ^ 0x2)
        self.nonces = NonceCounts(1 << 20)
        self.dns_cache = DnsCache(cfg.dns.cache_size, cfg.dns.cache_max_ttl)
        self.trace_spec = SharedBlob("trace", SPEC_CAPACITY)  # kampxctl trace's filter
        # TCP/TLS (kampx/transport/stream.py): who owns the connection to an address, and
        # each worker's count of open connections (column 0) and per source IP bucket
        self.stream_aliases = None
        self.stream_load = None
        # worker id -> 1 while that worker takes work (not retiring): where a busy stream
        # connection's reader spreads requests
        self.live_workers = CounterRows(1, MAX_WORKER_IDS)
        if any(a.proto != "udp" for a in cfg.core.listen_addrs()):
            from kampx.transport.stream import IP_BUCKETS

            self.stream_aliases = KeyIndex(max(1024, cfg.tcp.max_connections * 2), seed ^ 0x5)
            self.stream_load = CounterRows(MAX_WORKER_IDS, 1 + IP_BUCKETS)
        self.location = None  # usrloc store (kampx.usrloc), set by attach_state()
        self.permissions = None  # address table (kampx.permissions), set by attach_state()
        self.dispatcher = None  # dispatcher sets (kampx.dispatcher), set by attach_state()

    def nbytes(self) -> int:
        total = 0
        for x in (
            self.counters,
            self.txn_index,
            self.txn_load,
            self.dialogs,
            self.dialog_table,
            self.pike,
            self.auth_bans,
            self.nonces,
            self.dns_cache,
            self.trace_spec,
            self.stream_aliases,
            self.stream_load,
            self.live_workers,
            self.location,
            self.permissions,
            self.dispatcher,
        ):
            total += getattr(x, "nbytes", 0) or 0
        return total
