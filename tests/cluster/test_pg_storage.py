"""kampx/db/postgres.py against a real PostgreSQL: the same interface and errors as SQLite,
the schema migration, the change feed the nodes follow, reconnecting with back-off."""
from __future__ import annotations

import time
from collections import namedtuple

import psycopg
import pytest

from kampx import config as kconfig
from kampx.auth.credentials import subscriber_row
from kampx.db import LOCATION_FIELDS, StorageError, open_storage
from kampx.db import migrations as mig

Binding = namedtuple("Binding", LOCATION_FIELDS)


def binding(ruid, aor="alice", contact="sip:alice@127.0.0.1:5070", **kw):
    now = time.time()
    values = dict(ruid=ruid, aor=aor, contact=contact, received="sip:127.0.0.1:40000", path="",
                  socket="udp:127.0.0.1:5060", user_agent="phone/1.0", callid=f"cid-{ruid}",
                  instance="", reg_id=0, cseq=3, q=500, expires=now + 3600, last_modified=now,
                  flags=0)
    values.update(kw)
    return Binding(**values)


def cfg_for(pg, tmp_path, local=True):
    db = {"url": pg.url}
    if local:
        db["local"] = "sqlite:///" + str(tmp_path / "node.db").lstrip("/")
    return kconfig.from_dict({"db": db})


@pytest.fixture
def st(pg, tmp_path):
    s = open_storage(cfg_for(pg, tmp_path))
    s.open_local()
    yield s
    s.close()


def test_schema_is_created_once_and_versioned(pg, tmp_path):
    cfg = cfg_for(pg, tmp_path)
    a, b = open_storage(cfg), open_storage(cfg)
    try:
        assert a.schema_version == b.schema_version == mig.PG_MIGRATIONS[-1].version
    finally:
        a.close()
        b.close()
    with psycopg.connect(pg.url) as c:
        versions = dict(c.execute("SELECT table_name, table_version FROM version").fetchall())
    assert versions["kampx"] == mig.PG_MIGRATIONS[-1].version
    assert versions["location"] == 1 and versions["location_tombstone"] == 1


def test_dispatcher(st):
    """The dispatcher table (migration 2): the same interface and errors as SQLite's."""
    from kampx.db import DispatcherRow

    first = st.dispatcher.add(DispatcherRow(1, "sip:127.0.0.21:5060", 8, 5, "weight=50", "gw1"))
    st.dispatcher.add(DispatcherRow(2, "sip:gw.example.net"))
    rows = st.dispatcher.list()
    assert rows[0] == DispatcherRow(1, "sip:127.0.0.21:5060", 8, 5, "weight=50", "gw1", first)
    assert [r.setid for r in rows] == [1, 2]
    st.dispatcher.remove(first)
    with pytest.raises(StorageError, match=f"no dispatcher entry with id {first}"):
        st.dispatcher.remove(first)
    assert [r.destination for r in st.dispatcher.list()] == ["sip:gw.example.net"]


def test_a_newer_schema_is_refused(pg, tmp_path):
    with open_storage(cfg_for(pg, tmp_path)) as s:
        s.connect()
    with psycopg.connect(pg.url, autocommit=True) as c:
        c.execute("UPDATE version SET table_version = 99 WHERE table_name = 'kampx'")
    with open_storage(cfg_for(pg, tmp_path)) as s:
        with pytest.raises(StorageError, match="schema version 99"):
            s.connect()


def test_open_storage_does_not_connect_until_used(pg, tmp_path):
    """A worker holds a storage for subscriber lookups only: no connection for it."""
    with open_storage(cfg_for(pg, tmp_path)) as s:
        assert s.db.conn is None
        s.open_local()
        assert s.subscribers.get("nobody") is None
        assert s.db.conn is None


def test_subscribers_same_contract_as_sqlite(st):
    st.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    with pytest.raises(StorageError, match="user alice@kampx.test already exists"):
        st.subscribers.add_many([subscriber_row("bob", "kampx.test", "pw"),
                                 subscriber_row("alice", "kampx.test", "pw")])
    assert st.subscribers.count() == 1          # all or nothing: bob was rolled back
    with pytest.raises(StorageError, match="listed twice"):
        st.subscribers.add_many([subscriber_row("c", "d", "x")] * 2)
    with pytest.raises(StorageError, match="no such user carol@kampx.test"):
        st.subscribers.remove("carol", "kampx.test")
    st.subscribers.set_password(subscriber_row("alice", "kampx.test", "new"))
    assert [s.username for s in st.subscribers.list()] == ["alice"]


def test_subscriber_writes_reach_the_node_replica_at_once(st):
    """get() reads the node's SQLite replica (what the workers read); a write made on this
    node is there at once."""
    st.subscribers.add(subscriber_row("alice", "kampx.test", "pw"))
    assert st.local().subscribers.get("alice", "kampx.test").ha1 == \
        subscriber_row("alice", "kampx.test", "pw").ha1
    st.subscribers.set_password(subscriber_row("alice", "kampx.test", "new"))
    assert st.subscribers.get("alice", "kampx.test").ha1 == \
        subscriber_row("alice", "kampx.test", "new").ha1
    st.subscribers.remove("alice", "kampx.test")
    assert st.subscribers.get("alice", "kampx.test") is None


def test_addresses(st):
    i = st.addresses.add(200, "127.0.0.9", 32, 40000, "carrier")
    st.addresses.add(200, "127.0.0.10")
    rows = st.addresses.list()
    assert [(r.ip_addr, r.port, r.tag) for r in rows] == [("127.0.0.9", 40000, "carrier"),
                                                          ("127.0.0.10", 0, "")]
    assert rows[0].id == i
    assert st.addresses.remove(200, "127.0.0.9") == 1
    with pytest.raises(StorageError, match="no address 127.0.0.9 in group 200"):
        st.addresses.remove(200, "127.0.0.9")


def test_location_round_trip_and_change_feed(st):
    loc = st.locations
    a, b = binding("r1"), binding("r2", aor="bob@example.com", contact="sip:bob@127.0.0.1")
    loc.upsert_many([a, b])
    rows = {r["ruid"]: r for r in loc.load_all(time.time())}
    assert rows["r1"] == a._asdict() and rows["r2"]["aor"] == "bob@example.com"
    feed = loc.changes_since(0, 100)
    assert [(ruid, aor, row is None) for _, ruid, aor, row in feed] == \
        [("r1", "alice", False), ("r2", "bob@example.com", False)]
    top = feed[-1][0]
    # a conditional deletion that saw an older version deletes nothing
    assert loc.delete_seen([("r1", a.last_modified - 1)]) == 0
    assert loc.delete_seen([("r1", a.last_modified)]) == 1
    feed = loc.changes_since(top, 100)
    assert [(ruid, aor, row) for _, ruid, aor, row in feed] == [("r1", "alice", None)]
    with loc.snapshot() as (seq, rows):
        assert [r["ruid"] for r in rows] == ["r2"]
    assert seq == feed[-1][0]
    assert loc.purge_tombstones(time.time() + 1) == 1
    assert loc.changes_since(0, 100)[0][1] == "r2"


def test_expired_rows_become_tombstones(st):
    st.locations.upsert_many([binding("old", expires=time.time() - 5), binding("perm", expires=0)])
    assert st.locations.delete_expired(time.time()) == 1
    assert [(r, row is None) for _, r, _, row in st.locations.changes_since(0, 10)] == \
        [("perm", False), ("old", True)]


def test_writes_commit_in_sequence_order(pg, st, tmp_path):
    """The seq trigger serialises location writers: a reader never sees seq N+1 committed
    while N is still to come (else a node following 'seq > last' would miss N)."""
    other = open_storage(cfg_for(pg, tmp_path, local=False))
    try:
        conn = other.db.connect()
        with conn.transaction():
            conn.execute("INSERT INTO location (ruid, username, contact) VALUES ('x', 'u', 'c')")
            t0 = time.monotonic()
            # our write waits for theirs: the advisory lock is held until their commit
            import threading
            done = threading.Event()
            threading.Thread(target=lambda: (st.locations.upsert_many([binding("y")]),
                                             done.set()), daemon=True).start()
            assert not done.wait(0.3)
        assert done.wait(5)
        assert time.monotonic() - t0 >= 0.3
        feed = st.locations.changes_since(0, 10)
        assert [r for _, r, _, _ in feed] == ["x", "y"]
    finally:
        other.close()


def test_database_down_then_back_reconnects_with_backoff(pg, st):
    st.subscribers.count()
    pg.stop()
    with pytest.raises(StorageError, match="unreachable"):
        st.locations.count()
    # within the back-off, no new attempt: refused at once, worded the same each time
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="reconnecting with back-off"):
        st.locations.count()
    assert time.monotonic() - t0 < 0.1
    pg.start()
    deadline = time.monotonic() + 15
    while True:
        try:
            assert st.locations.count() == 0
            break
        except StorageError:
            assert time.monotonic() < deadline
            time.sleep(0.2)


def test_password_never_in_messages(pg, tmp_path):
    cfg = kconfig.from_dict({"db": {"url": pg.url.replace(str(pgserver_port()), "1"),
                                    "connect_timeout_s": 1}})
    with open_storage(cfg) as s:
        with pytest.raises(StorageError) as e:
            s.connect()
    assert "kx-secret" not in str(e.value) and "***" in str(e.value)


def pgserver_port():
    import pgserver
    return pgserver.PG_PORT


def test_kampxctl_against_the_shared_database(pg, tmp_path, capsys):
    """kampxctl works on PostgreSQL as on SQLite, says that every node reloads by itself,
    and a database that is down is one line on stderr, password hidden."""
    from kampx.cli import kampxctl
    conf = tmp_path / "kampx.toml"
    conf.write_text(f'[db]\nurl = "{pg.url}"\nlocal = "sqlite:///{str(tmp_path / "n.db").lstrip("/")}"\n')
    assert kampxctl.main(["--config", str(conf), "add", "alice", "pw"]) == 0
    assert kampxctl.main(["--config", str(conf), "address", "add", "200", "127.0.0.9"]) == 0
    out = capsys.readouterr().out
    assert "new user 'alice@kampx.test' added" in out
    assert kampxctl.SHARED_RELOAD_HINT in out and kampxctl.RELOAD_HINT not in out
    pg.stop()
    assert kampxctl.main(["--config", str(conf), "add", "bob", "pw"]) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and "kx-secret" not in err and len(err.splitlines()) == 1


def test_kampx_check_reaches_the_server_and_shows_no_password(tmp_path):
    """`kampx check` connects to a PostgreSQL database (a SQLite file needs no server) and
    says which one failed without its password."""
    import subprocess
    import sys
    conf = tmp_path / "kampx.toml"
    conf.write_text('[db]\nurl = "postgresql://kx:kx-secret@127.0.0.1:1/kampx"\n'
                    "connect_timeout_s = 1\n"
                    f'\n[control]\nsocket = "{tmp_path}/kampx.sock"\n')
    r = subprocess.run([sys.executable, "-m", "kampx", "check", "--config", str(conf)],
                       capture_output=True, text=True, timeout=30, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "kx-secret" not in out and "***" in out and "127.0.0.1:1" in out, out
