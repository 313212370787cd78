"""kampx.db: the SQLite storage, its schema migrations and its three tables."""
import os
import sqlite3
import time
from collections import namedtuple

import pytest

from kampx import config as kconfig
from kampx.auth.credentials import subscriber_row
from kampx.db import LOCATION_FIELDS, StorageError, open_storage
from kampx.db import migrations as mig
from kampx.db import sqlite as kxsqlite
from kampx.db.sqlite import SqliteStorage

Binding = namedtuple("Binding", LOCATION_FIELDS)

LATEST = mig.MIGRATIONS[-1].version
NEXT = LATEST + 1


def binding(ruid, aor="alice@kampx.test", contact="sip:alice@127.0.0.1:5070", expires=None,
            **kw):
    now = time.time()
    values = dict(ruid=ruid, aor=aor, contact=contact, received="sip:127.0.0.1:40000",
                  path="<sip:p1;lr>", socket="udp:127.0.0.1:5060", user_agent="phone/1.0",
                  callid=f"cid-{ruid}", instance="", reg_id=0, cseq=3, q=500,
                  expires=now + 3600 if expires is None else expires, last_modified=now,
                  flags=0)
    values.update(kw)
    return Binding(**values)


@pytest.fixture
def st(tmp_path):
    s = SqliteStorage(str(tmp_path / "sub" / "kampx.db"))
    yield s
    s.close()


# -- opening --------------------------------------------------------------------------------

def test_open_creates_dirs_schema_and_wal(tmp_path):
    path = tmp_path / "a" / "b" / "kampx.db"
    with SqliteStorage(str(path)) as s:
        assert s.schema_version == LATEST
        assert s.where == str(path)
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    versions = dict(conn.execute("SELECT table_name, table_version FROM version"))
    assert versions == {"version": 1, "subscriber": 1, "address": 1, "location": 1,
                        "kampx_changes": 1, "dialog": 1, "dispatcher": 4, "kampx": LATEST,
                        "acc": 5, "missed_calls": 4, "acc_cdrs": 2}
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"subscriber", "address", "location", "version"} <= tables
    cols = {r[1] for r in conn.execute("PRAGMA table_info(subscriber)")}
    assert "password" not in cols and {"ha1", "ha1b", "ha1_sha256", "ha1b_sha256"} <= cols


def test_open_storage_from_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = kconfig.from_dict({"db": {"url": "sqlite://data/x.db"}})
    with open_storage(cfg) as s:
        assert s.where == str(tmp_path / "data" / "x.db")
    assert (tmp_path / "data" / "x.db").exists()


def test_unsupported_url_is_a_storage_error():
    cfg = kconfig.Config(db=kconfig.DbConfig(url="mysql://db/kampx"))
    with pytest.raises(StorageError, match="unsupported database"):
        open_storage(cfg)


def test_not_a_database(tmp_path):
    p = tmp_path / "junk.db"
    p.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StorageError, match="is not an SQLite database"):
        SqliteStorage(str(p))


def test_reopen_keeps_data(tmp_path):
    path = str(tmp_path / "k.db")
    with SqliteStorage(path) as s:
        s.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    with SqliteStorage(path) as s:
        assert s.subscribers.count() == 1
        assert s.schema_version == LATEST


def test_use_after_fork_is_refused(st):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            st.subscribers.count()
        except StorageError as e:
            code = 0 if "open it again after fork" in str(e) else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert st.subscribers.count() == 0  # the parent's connection is untouched


def test_busy_database_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setattr(kxsqlite, "BUSY_TIMEOUT_MS", 200)
    path = str(tmp_path / "k.db")
    s = SqliteStorage(path)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        t0 = time.monotonic()
        with pytest.raises(StorageError, match="is busy"):
            s.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
        assert time.monotonic() - t0 < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    s.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))  # works once released
    s.close()


# -- migrations -----------------------------------------------------------------------------

def test_v0_database_is_upgraded(tmp_path):
    """A database kampx never set up (here: someone else's table in it) gets schema 1 and
    keeps what was there."""
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('keep me')")
    conn.commit()
    assert mig.schema_version(conn) == 0
    conn.close()
    with SqliteStorage(str(path)) as s:
        assert s.schema_version == LATEST
        s.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT x FROM notes").fetchall() == [("keep me",)]
    assert mig.schema_version(conn) == LATEST


V2 = mig.Migration(NEXT, "subscriber email", (
    "ALTER TABLE subscriber ADD COLUMN email VARCHAR(128) DEFAULT '' NOT NULL",
    "CREATE TABLE test_extra (id INTEGER PRIMARY KEY)",
), {"subscriber": 2})


def test_older_database_is_migrated_forward(tmp_path):
    path = str(tmp_path / "k.db")
    with SqliteStorage(path) as s:  # a v1 database with data
        s.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
        s.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
    with SqliteStorage(path, migrations=mig.MIGRATIONS + (V2,)) as s:
        assert s.schema_version == NEXT
        assert s.subscribers.get("alice").ha1 == subscriber_row("alice", "kampx.test", "pw").ha1
        assert [r.ip_addr for r in s.addresses.list()] == ["127.0.0.3"]
    conn = sqlite3.connect(path)
    versions = dict(conn.execute("SELECT table_name, table_version FROM version"))
    assert versions["kampx"] == NEXT and versions["subscriber"] == 2 and versions["address"] == 1
    assert "email" in {r[1] for r in conn.execute("PRAGMA table_info(subscriber)")}
    conn.close()
    # applied once: opening again with the same list changes nothing
    with SqliteStorage(path, migrations=mig.MIGRATIONS + (V2,)) as s:
        assert s.schema_version == NEXT


def test_failed_migration_rolls_back(tmp_path):
    path = str(tmp_path / "k.db")
    SqliteStorage(path).close()
    bad = mig.Migration(NEXT, "broken", ("CREATE TABLE half_done (x)", "THIS IS NOT SQL"),
                        {"subscriber": 2})
    with pytest.raises(StorageError, match=f"migration {NEXT} \\(broken\\) failed"):
        SqliteStorage(path, migrations=mig.MIGRATIONS + (bad,))
    conn = sqlite3.connect(path)
    assert mig.schema_version(conn) == LATEST
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name='half_done'").fetchone()
    conn.close()
    with SqliteStorage(path) as s:
        assert s.schema_version == LATEST


def test_newer_database_is_refused(tmp_path):
    path = str(tmp_path / "k.db")
    SqliteStorage(path, migrations=mig.MIGRATIONS + (V2,)).close()
    with pytest.raises(StorageError, match=f"schema version {NEXT}; this kampx knows up to {LATEST}"):
        SqliteStorage(path)


def test_migration_numbers_must_be_contiguous():
    with pytest.raises(ValueError, match="out of sequence"):
        mig.check_sequence(list(mig.MIGRATIONS) + [mig.Migration(NEXT + 1, "gap", ())])


def test_concurrent_first_open_upgrades_once(tmp_path):
    """Several processes opening a fresh database at once: all succeed, one schema."""
    path = str(tmp_path / "k.db")
    pids = []
    for i in range(4):
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                with SqliteStorage(path) as s:
                    s.subscribers.add(subscriber_row(f"u{i}", "kampx.test", "pw"))
                code = 0
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    with SqliteStorage(path) as s:
        assert s.subscribers.count() == 4
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT COUNT(*) FROM version WHERE table_name='kampx'").fetchone()[0] == 1


# -- subscribers ----------------------------------------------------------------------------

def test_subscriber_crud(st):
    subs = st.subscribers
    subs.add(subscriber_row("alice", "kampx.test", "secret"))
    subs.add(subscriber_row("alice", "other.test", "secret2"))
    assert subs.count() == 2
    assert subs.count("other.test") == 1
    got = subs.get("alice", "kampx.test")
    assert got == subscriber_row("alice", "kampx.test", "secret")
    assert subs.get("alice").domain == "kampx.test"  # no domain: the oldest
    assert subs.get("bob") is None
    assert subs.get("alice", "nowhere.test") is None
    with pytest.raises(StorageError, match="^user alice@kampx.test already exists$"):
        subs.add(subscriber_row("alice", "kampx.test", "x"))
    subs.set_password(subscriber_row("alice", "kampx.test", "new"))
    assert subs.get("alice", "kampx.test").ha1 == subscriber_row("alice", "kampx.test", "new").ha1
    with pytest.raises(StorageError, match="^no such user bob@kampx.test$"):
        subs.set_password(subscriber_row("bob", "kampx.test", "x"))
    assert [s.domain for s in subs.list()] == ["kampx.test", "other.test"]
    assert [s.domain for s in subs.list("other.test")] == ["other.test"]
    subs.remove("alice", "other.test")
    with pytest.raises(StorageError, match="no such user alice@other.test"):
        subs.remove("alice", "other.test")
    assert subs.count() == 1


def test_add_many_is_fast_and_one_transaction(st):
    rows = [subscriber_row(f"user{i:06d}", "kampx.test", f"pw{i}") for i in range(20000)]
    t0 = time.perf_counter()
    assert st.subscribers.add_many(rows) == 20000
    elapsed = time.perf_counter() - t0
    assert st.subscribers.count() == 20000
    assert elapsed < 5, elapsed  # ~0.1 s here; thousands of autocommits would take far longer


def test_add_many_all_or_nothing(st):
    st.subscribers.add(subscriber_row("u5", "kampx.test", "pw"))
    batch = [subscriber_row(f"u{i}", "kampx.test", "pw") for i in range(10)]
    with pytest.raises(StorageError, match="^user u5@kampx.test already exists$"):
        st.subscribers.add_many(batch)
    assert st.subscribers.count() == 1  # u0..u4 were rolled back
    with pytest.raises(StorageError, match="u1@kampx.test is listed twice"):
        st.subscribers.add_many([subscriber_row("u1", "kampx.test", "a"),
                                 subscriber_row("u1", "kampx.test", "b")])
    assert st.subscribers.count() == 1


# -- addresses ------------------------------------------------------------------------------

def test_address_rows(st):
    a = st.addresses
    i1 = a.add(200, "127.0.0.3", 32, 0, "carrier")
    i2 = a.add(1, "10.0.0.0", 8, 5060)
    i3 = a.add(1, "10.0.0.0", 16, 0, "again")
    rows = a.list()
    assert [r.id for r in rows] == [i1, i2, i3]
    assert rows[0][:5] == (200, "127.0.0.3", 32, 0, "carrier")
    assert rows[1].tag == ""  # stored NULL, as Kamailio does for no tag
    assert a.remove(1, "10.0.0.0") == 2
    with pytest.raises(StorageError, match="no address 10.0.0.0 in group 1"):
        a.remove(1, "10.0.0.0")
    assert len(a.list()) == 1


# -- locations ------------------------------------------------------------------------------

def test_locations_round_trip(st):
    loc = st.locations
    b1 = binding("r1")
    b2 = binding("r2", aor="bob", contact="sip:bob@127.0.0.1:5080", q=-1, reg_id=1,
                 instance="<urn:uuid:00000000-0000-0000-0000-000000000001>")
    b3 = binding("r3", expires=0)  # permanent
    assert loc.upsert_many([b1, b2._asdict(), b3]) == 3
    loaded = {r["ruid"]: r for r in loc.load_all(time.time())}
    assert set(loaded) == {"r1", "r2", "r3"}
    for b in (b1, b2, b3):
        assert Binding(**loaded[b.ruid]) == b
    assert loaded["r2"]["aor"] == "bob"
    conn = sqlite3.connect(st.where)
    assert conn.execute("SELECT username, domain FROM location WHERE ruid='r1'").fetchone() == \
        ("alice", "kampx.test")


def test_upsert_replaces_by_ruid(st):
    st.locations.upsert_many([binding("r1", cseq=1)])
    st.locations.upsert_many([binding("r1", cseq=2, contact="sip:alice@127.0.0.1:6000")])
    rows = list(st.locations.load_all(time.time()))
    assert len(rows) == 1 and rows[0]["cseq"] == 2
    assert rows[0]["contact"] == "sip:alice@127.0.0.1:6000"


def test_load_all_skips_expired_and_delete(st):
    now = time.time()
    st.locations.upsert_many([binding("live", expires=now + 60),
                              binding("dead", expires=now - 1),
                              binding("perm", expires=0)])
    assert {r["ruid"] for r in st.locations.load_all(now)} == {"live", "perm"}
    assert {r["ruid"] for r in st.locations.load_all(now + 120)} == {"perm"}
    assert st.locations.delete_expired(now) == 1
    assert st.locations.count() == 2
    assert st.locations.delete_many(["live", "nope"]) == 1
    assert st.locations.delete_many([]) == 0
    assert [r["ruid"] for r in st.locations.load_all(now)] == ["perm"]


def test_load_all_streams_many(st):
    now = time.time()
    st.locations.upsert_many(binding(f"r{i}", aor=f"u{i}@kampx.test") for i in range(5000))
    it = st.locations.load_all(now)
    first = next(it)
    assert first["ruid"] == "r0"
    assert sum(1 for _ in it) == 4999
