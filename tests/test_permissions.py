"""kampx.permissions: Kamailio's address table in shared memory."""
import os
import select
import signal
import time

import pytest

from kampx import permissions
from kampx.db.sqlite import SqliteStorage
from kampx.permissions import AddressTable, PermissionsError, check_row

ROWS = [
    (200, "127.0.0.3", 32, 0, "carrier"),
    (200, "10.0.0.0", 8, 0, "net8"),
    (200, "10.1.0.0", 16, 5060, "net16-sip"),
    (200, "10.1.2.0", 24, 0, ""),
    (1, "2001:db8::", 32, 0, "v6net"),
    (1, "::1", 128, 5070, "v6host"),
    (1, "0.0.0.0", 0, 0, "any-v4"),
]


@pytest.fixture
def table():
    t = AddressTable(capacity=64)
    yield t
    t.close()


def _wait(pid, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    raise AssertionError(f"child {pid} did not finish within {timeout} s")


# -- validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("row,reason", [
    ((1, "10.0.0.300", 32, 0, ""), "is not an IP address"),
    ((1, "example.com", 32, 0, ""), "is not an IP address"),
    ((1, 167772160, 32, 0, ""), "is not an IP address"),
    ((1, "fe80::1%eth0", 128, 0, ""), "is not an IP address"),
    ((1, "10.0.0.1", 33, 0, ""), "mask 33 is not 0..32"),
    ((1, "::1", 129, 0, ""), "mask 129 is not 0..128"),
    ((1, "10.0.0.1", -1, 0, ""), "mask -1"),
    ((1, "10.0.0.1", 32, 65536, ""), "port 65536"),
    ((-1, "10.0.0.1", 32, 0, ""), "group -1"),
    ((True, "10.0.0.1", 32, 0, ""), "group True"),
    ((1, "10.0.0.1", 32, 0, "x" * 65), "tag is longer than 64 bytes"),
    ((1, "::ffff:10.0.0.1", 128, 0, ""), "as 10.0.0.1"),
    ((1, "10.0.0.1", 32), "expected \\(grp, ip_addr, mask, port, tag\\)"),
])
def test_check_row_rejects(row, reason):
    with pytest.raises(PermissionsError, match=reason):
        check_row(row)


def test_check_row_normalises():
    assert check_row((5, " 2001:DB8:0:0::1 ", None, None, None)) == \
        (5, "2001:db8::1", 128, 0, "")
    assert check_row((5, "10.0.0.1", None, 0, "t")).mask == 32


def test_bad_row_keeps_the_current_table(table):
    table.load(ROWS)
    gen = table.generation
    with pytest.raises(PermissionsError, match="address row 2: '1.2.3' is not an IP address"):
        table.load([(1, "1.1.1.1", 32, 0, ""), (1, "1.2.3", 32, 0, "")])
    assert table.generation == gen
    assert table.match(200, "127.0.0.3", 5060) == "carrier"


def test_capacity(table):
    rows = [(1, f"10.0.{i // 256}.{i % 256}", 32, 0, "") for i in range(65)]
    with pytest.raises(PermissionsError, match="65 address rows do not fit"):
        table.load(rows)
    table.load(rows[:64])
    assert len(table.rows()) == 64


# -- matching -------------------------------------------------------------------------------

def test_empty_table(table):
    assert table.generation == 0
    assert table.rows() == []
    assert table.match(200, "127.0.0.3", 5060) is None
    assert not table.allow(200, "127.0.0.3", 5060)


@pytest.mark.parametrize("group,ip,port,expected", [
    (200, "127.0.0.3", 5060, "carrier"),
    (200, "127.0.0.3", 1, "carrier"),         # port 0 in the row: any port
    (200, "127.0.0.4", 5060, None),
    (200, "10.9.9.9", 5060, "net8"),
    (200, "10.1.9.9", 5060, "net16-sip"),     # /16 beats /8 ...
    (200, "10.1.9.9", 5070, "net8"),          # ... but only for its port
    (200, "10.1.2.3", 5060, ""),              # /24 beats /16; matched, no tag
    (200, "11.0.0.1", 5060, None),
    (7, "127.0.0.3", 5060, None),             # another group
    (1, "2001:db8:1::5", 9, "v6net"),
    (1, "2001:db9::5", 9, None),
    (1, "::1", 5070, "v6host"),
    (1, "::1", 5071, None),
    (1, "192.0.2.1", 9, "any-v4"),            # mask 0 matches every IPv4 source ...
    (1, "2001:db9::1", 9, None),              # ... but never an IPv6 one
    (200, "::ffff:10.2.3.4", 5060, "net8"),   # an IPv4-mapped source is IPv4
    (200, "[::ffff:127.0.0.3]", 5060, "carrier"),
    (200, "not-an-ip", 5060, None),
    (200, "", 5060, None),
])
def test_match(table, group, ip, port, expected):
    table.load(ROWS)
    assert table.match(group, ip, port) == expected
    assert table.allow(group, ip, port) is (expected is not None)


def test_ipv4_source_never_matches_ipv6_rows(table):
    table.load([(1, "::", 0, 0, "all-v6")])
    assert table.match(1, "127.0.0.1", 5060) is None
    assert table.match(1, "::2", 5060) == "all-v6"


def test_exact_port_beats_any_port_at_equal_prefix(table):
    table.load([(1, "10.0.0.1", 32, 0, "any"), (1, "10.0.0.1", 32, 5060, "sip")])
    assert table.match(1, "10.0.0.1", 5060) == "sip"
    assert table.match(1, "10.0.0.1", 5080) == "any"


def test_first_row_wins_a_tie(table):
    table.load([(1, "10.0.0.1", 32, 0, "first"), (1, "10.0.0.1", 32, 0, "second")])
    assert table.match(1, "10.0.0.1", 1) == "first"


def test_host_bits_beyond_the_mask_are_ignored(table):
    table.load([(1, "10.0.0.77", 24, 0, "net")])
    assert table.match(1, "10.0.0.5", 1) == "net"
    assert table.rows()[0].ip_addr == "10.0.0.77"  # shown as configured


def test_rows_and_generation(table):
    assert table.load(ROWS) == 1
    assert table.generation == 1
    assert [tuple(r) for r in table.rows()] == ROWS
    assert table.load(ROWS[:2]) == 2
    assert [tuple(r) for r in table.rows()] == ROWS[:2]
    assert table.match(1, "::1", 5070) is None


def test_unicode_tag(table):
    table.load([(1, "10.0.0.1", 32, 0, "trunk-é")])
    assert table.match(1, "10.0.0.1", 5) == "trunk-é"


def test_reload_from_storage(table, tmp_path):
    with SqliteStorage(str(tmp_path / "k.db")) as st:
        st.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
        st.addresses.add(200, "10.0.0.0", 8, 0, "")
        assert table.reload_from(st) == 2
    assert table.match(200, "10.2.2.2", 5060) == ""
    assert table.rows()[0] == (200, "127.0.0.3", 32, 0, "carrier")


def test_reload_from_storage_names_a_bad_db_row(table, tmp_path):
    with SqliteStorage(str(tmp_path / "k.db")) as st:
        st.addresses.add(1, "10.0.0.1", 32, 0, "")
        bad = st.addresses.add(1, "10.0.0.999", 32, 0, "")  # written around kampxctl
        with pytest.raises(PermissionsError, match=f"address row id {bad}: '10.0.0.999'"):
            table.reload_from(st)


# -- the per-process cache and the seqlock ----------------------------------------------

def test_cache_rebuilt_only_when_generation_changes(table, monkeypatch):
    table.load(ROWS)
    refreshes = []
    real = table._refresh
    monkeypatch.setattr(table, "_refresh", lambda: refreshes.append(1) or real())
    for _ in range(100):
        assert table.allow(200, "127.0.0.3", 5060)
    assert len(refreshes) == 1  # the first check after the load
    for _ in range(100):
        table.allow(200, "127.0.0.3", 5060)
    assert len(refreshes) == 1
    table.load(ROWS[:1])
    table.allow(200, "127.0.0.3", 5060)
    table.rows()
    assert len(refreshes) == 2


def test_reader_racing_two_reloads_retries(table, monkeypatch):
    """A reader that copies out generation N while two reloads happen (the second rewrites
    the very copy it read) must not use what it read: it retries and ends with N+2."""
    table.load([(1, "10.0.0.1", 32, 0, "A")])
    real = table._read_copy
    calls = []

    def racing_read(seq):
        data = real(seq)
        if not calls:
            table.load([(1, "10.0.0.2", 32, 0, "B")])
            table.load([(1, "10.0.0.3", 32, 0, "C")])
        calls.append(seq)
        return data

    monkeypatch.setattr(table, "_read_copy", racing_read)
    assert table.match(1, "10.0.0.3", 5) == "C"
    assert table.match(1, "10.0.0.1", 5) is None
    assert calls == [1, 3]


def test_half_written_copy_is_never_used(table):
    """A writer killed while writing the idle copy leaves the published table intact."""
    table.load([(1, "10.0.0.1", 32, 0, "A")])
    idle = table._copy_offset(table.generation + 1) + permissions._COPY_HEADER_SIZE
    table._mm[idle:idle + 96] = b"\xff" * 96  # garbage, never published
    assert table.match(1, "10.0.0.1", 5) == "A"
    table.load([(1, "10.0.0.2", 32, 0, "B")])  # and the next load overwrites it cleanly
    assert table.match(1, "10.0.0.2", 5) == "B"


def test_corrupt_published_copy_is_detected(table):
    table.load([(1, "10.0.0.1", 32, 0, "A")])
    off = table._copy_offset(table.generation)
    count, crc = permissions._COPY_HEADER.unpack_from(table._mm, off)
    assert table._read_copy(table.generation) is not None
    permissions._COPY_HEADER.pack_into(table._mm, off, count, crc ^ 1)
    assert table._read_copy(table.generation) is None


# -- across processes ------------------------------------------------------------------------

def test_children_see_reloads_of_the_parent_and_each_other(table):
    table.load([(1, "10.0.0.1", 32, 0, "before-fork")])
    assert table.match(1, "10.0.0.1", 5) == "before-fork"
    child_r, parent_w = os.pipe()
    parent_r, child_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            assert table.match(1, "10.0.0.1", 5) == "before-fork"
            os.write(child_w, b"1")
            os.read(child_r, 1)  # the parent reloaded
            assert table.match(1, "10.0.0.1", 5) is None
            assert table.match(1, "10.0.0.2", 5) == "from-parent"
            table.load([(1, "10.0.0.3", 32, 0, "from-child")])
            code = 0
        finally:
            os._exit(code)
    select.select([parent_r], [], [], 10)
    assert os.read(parent_r, 1) == b"1"
    table.load([(1, "10.0.0.2", 32, 0, "from-parent")])
    os.write(parent_w, b"x")
    assert _wait(pid) == 0
    for fd in (child_r, parent_w, parent_r, child_w):
        os.close(fd)
    assert table.match(1, "10.0.0.3", 5) == "from-child"
    assert table.generation == 3


def test_concurrent_writers_lose_no_load(table):
    """Writers in several processes serialise: every load is published, none overwritten
    half-way."""
    per_child, children = 150, 3
    pids = []
    for c in range(children):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                for i in range(per_child):
                    table.load([(c, f"10.{c}.{i // 256}.{i % 256}", 32, 0, f"c{c}")] * 8)
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        assert _wait(pid) == 0
    assert table.generation == per_child * children
    rows = table.rows()
    assert len(rows) == 8 and len(set(rows)) == 1


def test_readers_never_see_a_mixed_table(table):
    """Readers in other processes, while the parent flips between two tables as fast as it
    can: every table a reader sees is exactly A or exactly B."""
    a = [(1, f"10.0.{i}.0", 24, 0, "A") for i in range(40)]
    b = [(1, f"10.0.{i}.0", 24, 5060, "B") for i in range(40)] + [(2, "::1", 128, 0, "B")]
    table.load(a)
    deadline = time.monotonic() + 1.0
    readers = []
    for _ in range(2):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                seen = set()
                while time.monotonic() < deadline:
                    rows = [tuple(x) for x in table.rows()]
                    if rows == a:
                        seen.add("A")
                        assert table.match(1, "10.0.39.9", 5070) in ("A", "B", None)
                    elif rows == b:
                        seen.add("B")
                    else:
                        raise AssertionError(f"mixed table: {rows[:3]}... ({len(rows)} rows)")
                os.write(w, ",".join(sorted(seen)).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(w)
        readers.append((pid, r))
    loads = 0
    while time.monotonic() < deadline:
        table.load(b if loads % 2 == 0 else a)
        loads += 1
    for pid, r in readers:
        assert _wait(pid) == 0
        select.select([r], [], [], 5)
        seen = os.read(r, 100).decode()
        os.close(r)
        assert seen  # the reader did read tables
    assert loads > 10
