"""The accounting tables in kampx's storage (kampx/db): Kamailio's acc, missed_calls and
acc_cdrs, written in batches by the db writer (storage.acc.insert) and read back by the
control methods. Every contract test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import sqlite3
import time

import psycopg
import pytest

from kampx import config as kconfig
from kampx.db import StorageError, open_storage
from kampx.db import migrations as mig
from kampx.db.sqlite import SqliteStorage, utc_text

T0 = 1700000000.125  # 2023-11-14 22:13:20.125 UTC (binary-exact: T0 + n compares exactly)
T0_TEXT = "2023-11-14 22:13:20.125"

PARTIES = dict(
    src_user="alice",
    src_domain="kampx.test",
    src_ip="192.0.2.7",
    dst_ouser="+4930123",
    dst_user="4930123",
    dst_domain="carrier.example",
    direction="outbound",
)


def acc(**kw) -> dict:
    row = dict(
        t="acc",
        method="INVITE",
        from_tag="ft1",
        to_tag="tt1",
        callid="call-1",
        sip_code=200,
        sip_reason="OK",
        time=T0,
        **PARTIES,
    )
    row.update(kw)
    return row


def cdr(**kw) -> dict:
    row = dict(
        t="acc_cdrs",
        start_time=T0 + 2.5,
        end_time=T0 + 62.5,
        duration=60.0,
        setup_time=T0,
        callid="call-1",
        from_tag="ft1",
        to_tag="tt1",
        sip_code=200,
        sip_reason="OK",
        end_reason="caller",
        **PARTIES,
    )
    row.update(kw)
    return row


def stored(row: dict) -> dict:
    """What the read side gives back for a record: its columns without "t"."""
    return {k: v for k, v in row.items() if k != "t"}


@pytest.fixture(params=["sqlite", "postgresql"])
def st(request, tmp_path):
    if request.param == "sqlite":
        s = SqliteStorage(str(tmp_path / "kampx.db"))
        s.sql = lambda q: _sqlite_exec(s.where, q)
    else:
        pg = request.getfixturevalue("pg")
        s = open_storage(
            kconfig.from_dict(
                {
                    "db": {
                        "url": pg.url,
                        "local": "sqlite:///" + str(tmp_path / "node.db").lstrip("/"),
                    }
                }
            )
        )
        s.connect()
        s.sql = lambda q: _pg_exec(pg.url, q)
    s.backend = request.param
    yield s
    s.close()


def _sqlite_exec(path: str, statements: list[str]) -> list:
    conn = sqlite3.connect(path)
    try:
        out = []
        for q in statements:
            out = conn.execute(q).fetchall()
        conn.commit()
        return out
    finally:
        conn.close()


def _pg_exec(url: str, statements: list[str]) -> list:
    with psycopg.connect(url, autocommit=True) as c:
        out = []
        for q in statements:
            cur = c.execute(q)
            out = cur.fetchall() if cur.description else []
        return out


def count(st, table: str) -> int:
    return st.sql([f"SELECT COUNT(*) FROM {table}"])[0][0]


# -- the schema --------------------------------------------------------------------------------

ACC_COLS = [
    "id",
    "method",
    "from_tag",
    "to_tag",
    "callid",
    "sip_code",
    "sip_reason",
    "time",
    "src_user",
    "src_domain",
    "src_ip",
    "dst_ouser",
    "dst_user",
    "dst_domain",
    "direction",
]
CDR_COLS = [
    "id",
    "start_time",
    "end_time",
    "duration",
    "setup_time",
    "callid",
    "from_tag",
    "to_tag",
    "src_user",
    "src_domain",
    "src_ip",
    "dst_ouser",
    "dst_user",
    "dst_domain",
    "direction",
    "sip_code",
    "sip_reason",
    "end_reason",
]


def test_kamailio_tables_columns_indexes_and_versions(st):
    if st.backend == "sqlite":
        cols = {
            t: [r[1] for r in st.sql([f"PRAGMA table_info({t})"])]
            for t in ("acc", "missed_calls", "acc_cdrs")
        }
        indexes = {r[0] for r in st.sql(["SELECT name FROM sqlite_master WHERE type = 'index'"])}
    else:
        cols = {
            t: [
                r[0]
                for r in st.sql(
                    [
                        "SELECT column_name FROM information_schema.columns "
                        f"WHERE table_name = '{t}' ORDER BY ordinal_position"
                    ]
                )
            ]
            for t in ("acc", "missed_calls", "acc_cdrs")
        }
        indexes = {r[0] for r in st.sql(["SELECT indexname FROM pg_indexes"])}
        types = dict(
            st.sql(
                [
                    "SELECT column_name, data_type FROM information_schema.columns "
                    "WHERE table_name = 'acc_cdrs'"
                ]
            )
        )
        assert types["start_time"] == "timestamp without time zone"
    assert cols == {"acc": ACC_COLS, "missed_calls": ACC_COLS, "acc_cdrs": CDR_COLS}
    assert {
        "acc_callid_idx",
        "acc_time_idx",
        "missed_calls_callid_idx",
        "missed_calls_time_idx",
        "acc_cdrs_start_time_idx",
        "acc_cdrs_callid_idx",
    } <= indexes
    versions = dict(st.sql(["SELECT table_name, table_version FROM version"]))
    assert (versions["acc"], versions["missed_calls"], versions["acc_cdrs"]) == (5, 4, 2)


# -- insert and read back ----------------------------------------------------------------------


def test_each_kind_round_trips(st):
    rows = [
        acc(),
        acc(
            t="missed_calls",
            callid="call-2",
            sip_code=486,
            sip_reason="Busy Here",
            time=T0 + 1,
            direction="inbound",
        ),
        cdr(),
    ]
    assert st.acc.insert(rows) == 3
    (a,) = st.acc.records("acc", since=T0 - 10)
    assert a.pop("id") >= 1
    assert a == stored(rows[0])
    (m,) = st.acc.records("missed_calls", since=T0 - 10)
    m.pop("id")
    assert m == stored(rows[1]) and m["sip_code"] == 486
    (c,) = st.acc.cdrs(since=T0 - 10)
    c.pop("id")
    assert c == stored(rows[2])
    assert isinstance(c["sip_code"], int) and isinstance(c["start_time"], float)


def test_missing_keys_are_the_columns_defaults(st):
    assert (
        st.acc.insert(
            [
                {"t": "acc", "method": "BYE", "time": T0},
                {"t": "acc_cdrs", "callid": "c9", "start_time": T0},
            ]
        )
        == 2
    )
    (a,) = st.acc.records("acc")
    assert a["method"] == "BYE" and a["time"] == T0
    assert a["sip_code"] is None  # stored as Kamailio's '' char(3)
    assert all(
        a[k] == ""
        for k in (
            "from_tag",
            "to_tag",
            "callid",
            "sip_reason",
            "src_user",
            "src_domain",
            "src_ip",
            "dst_ouser",
            "dst_user",
            "dst_domain",
            "direction",
        )
    )
    (c,) = st.acc.cdrs()
    assert c["callid"] == "c9" and c["start_time"] == T0
    assert c["end_time"] is None and c["setup_time"] is None  # NULL
    assert c["duration"] == 0.0 and c["sip_code"] is None and c["end_reason"] == ""
    assert st.sql(["SELECT sip_code FROM acc"]) == [("",)]


@pytest.fixture
def far_from_utc(monkeypatch):
    """A local time zone far from UTC (with a half hour), so that local time shows."""
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_times_are_utc_to_the_millisecond(st, far_from_utc):
    st.acc.insert([acc(time=T0 + 0.0004), cdr(start_time=1700000000.9996)])
    if st.backend == "sqlite":
        assert st.sql(["SELECT time FROM acc"]) == [(T0_TEXT,)]
        assert st.sql(["SELECT start_time FROM acc_cdrs"]) == [("2023-11-14 22:13:21.000",)]
    else:
        assert st.sql(["SELECT to_char(time, 'YYYY-MM-DD HH24:MI:SS.MS') FROM acc"]) == [(T0_TEXT,)]
    assert st.acc.records("acc")[0]["time"] == T0
    assert st.acc.cdrs()[0]["start_time"] == 1700000001.0


def test_sqlite_time_text_compares_with_sqlite_datetime(tmp_path, far_from_utc):
    """Kamailio-style SQL over the tables works: datetime('now', '-1 hour') has no
    milliseconds (so it may take in the second before the hour), and the text still compares
    in time order."""
    with SqliteStorage(str(tmp_path / "k.db")) as st:
        now = time.time()
        st.acc.insert(
            [
                cdr(callid="recent", start_time=now - 600),
                cdr(callid="old", start_time=now - 7200),
                cdr(callid="inside", start_time=now - 3590),
                cdr(callid="outside", start_time=now - 3602),
            ]
        )
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", utc_text(now))
        conn = sqlite3.connect(st.where)
        got = conn.execute(
            "SELECT callid FROM acc_cdrs WHERE start_time >= "
            "datetime('now', '-1 hour') ORDER BY start_time DESC"
        ).fetchall()
        conn.close()
    assert got == [("recent",), ("inside",)]


def test_newest_first_since_until_direction_limit(st):
    rows = [
        cdr(callid=f"c{i}", start_time=T0 + i * 60, direction=d)
        for i, d in enumerate(["inbound", "outbound", "local", "inbound", "outbound"])
    ]
    st.acc.insert(rows)
    assert [r["callid"] for r in st.acc.cdrs()] == ["c4", "c3", "c2", "c1", "c0"]
    assert [r["callid"] for r in st.acc.cdrs(since=T0 + 120)] == ["c4", "c3", "c2"]
    assert [r["callid"] for r in st.acc.cdrs(since=T0 + 60, until=T0 + 180)] == ["c2", "c1"]
    assert [r["callid"] for r in st.acc.cdrs(direction="inbound")] == ["c3", "c0"]
    assert [r["callid"] for r in st.acc.cdrs(since=T0 + 60, direction="outbound")] == ["c4", "c1"]
    assert [r["callid"] for r in st.acc.cdrs(limit=2)] == ["c4", "c3"]
    # same start time: the later row first
    st.acc.insert(
        [cdr(callid="tie-a", start_time=T0 + 600), cdr(callid="tie-b", start_time=T0 + 600)]
    )
    assert [r["callid"] for r in st.acc.cdrs(limit=2)] == ["tie-b", "tie-a"]


def test_records_since_callid_limit_and_table_names(st):
    st.acc.insert(
        [acc(callid=f"c{i % 2}", time=T0 + i) for i in range(6)]
        + [acc(t="missed_calls", callid="m", time=T0)]
    )
    assert [r["time"] for r in st.acc.records("acc")] == [T0 + i for i in range(5, -1, -1)]
    assert [r["time"] for r in st.acc.records("acc", since=T0 + 4)] == [T0 + 5, T0 + 4]
    assert [r["time"] for r in st.acc.records("acc", callid="c0")] == [T0 + 4, T0 + 2, T0]
    assert [r["time"] for r in st.acc.records("acc", callid="c1", limit=1)] == [T0 + 5]
    assert [r["callid"] for r in st.acc.records("missed_calls")] == ["m"]
    for bad in ("acc_cdrs", "subscriber", "acc; DROP TABLE acc"):
        with pytest.raises(ValueError, match="acc or missed_calls"):
            st.acc.records(bad)


def test_unknown_tables_are_skipped(st):
    rows = [
        acc(),
        {"t": "subscriber", "callid": "x"},
        {"callid": "no t"},
        {"t": None},
        cdr(),
        {"t": "location"},
    ]
    assert st.acc.insert(rows) == 2
    assert (count(st, "acc"), count(st, "missed_calls"), count(st, "acc_cdrs")) == (1, 0, 1)
    assert st.acc.insert([]) == 0 and st.acc.insert([{"t": "x"}]) == 0


def test_a_batch_is_one_transaction(st):
    """The database refuses the last row: the rows of the other tables, inserted before it
    in the same batch, are not written either."""
    if st.backend == "sqlite":
        st.sql(
            [
                "CREATE TRIGGER refuse BEFORE INSERT ON acc_cdrs WHEN NEW.callid = 'boom' "
                "BEGIN SELECT RAISE(ABORT, 'refused by test'); END"
            ]
        )
    else:
        st.sql(
            [
                "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.callid = 'boom' THEN RAISE EXCEPTION 'refused by test'; END IF; "
                "RETURN NEW; END $$",
                "CREATE TRIGGER refuse BEFORE INSERT ON acc_cdrs "
                "FOR EACH ROW EXECUTE FUNCTION refuse()",
            ]
        )
    batch = [acc(), acc(t="missed_calls"), cdr(), cdr(callid="boom")]
    with pytest.raises(StorageError, match="refused by test"):
        st.acc.insert(batch)
    assert (count(st, "acc"), count(st, "missed_calls"), count(st, "acc_cdrs")) == (0, 0, 0)
    # a value the column cannot hold: named, and nothing written either
    with pytest.raises(StorageError, match=r"record 1 \(acc_cdrs\): bad 'duration'"):
        st.acc.insert([acc(), cdr(duration="long")])
    with pytest.raises(StorageError, match="bad 'sip_code'"):
        st.acc.insert([acc(sip_code=1000)])
    assert count(st, "acc") == 0
    assert st.acc.insert(batch[:3]) == 3  # the storage is fine afterwards


def test_odd_strings_never_fail_a_batch(st):
    """What a hostile header can put in a record: invalid UTF-8 (escaped as lone
    surrogates), NUL, values longer than the column."""
    st.acc.insert(
        [acc(src_user="bad\udcff\x00user", callid="c" * 300, direction="sideways!", sip_reason=42)]
    )
    (a,) = st.acc.records("acc")
    assert a["src_user"] == "bad?user"
    assert a["callid"] == "c" * 255 and a["direction"] == "sideways" and a["sip_reason"] == "42"


def test_summary_per_direction(st):
    st.acc.insert(
        [
            cdr(direction="inbound", start_time=T0, duration=30.5),
            cdr(direction="inbound", start_time=T0 + 1, duration=60.25),
            cdr(
                direction="inbound",
                start_time=T0 + 2,
                sip_code=486,
                duration=0,
                end_reason="failed",
            ),
            cdr(
                direction="outbound",
                start_time=T0 + 3,
                sip_code=487,
                duration=0,
                end_reason="canceled",
            ),
            cdr(direction="local", start_time=T0 + 4, sip_code=202, duration=1.0),
            cdr(direction="outbound", start_time=T0 - 100, duration=999),  # before the window
            cdr(direction="local", start_time=T0 + 100, duration=999),  # after it
        ]
    )
    assert st.acc.summary(T0, T0 + 50) == {
        "inbound": {"calls": 3, "answered": 2, "duration": 90.75},
        "local": {"calls": 1, "answered": 1, "duration": 1.0},
        "outbound": {"calls": 1, "answered": 0, "duration": 0.0},
    }
    assert st.acc.summary(T0 + 1000) == {}
    assert st.acc.summary(T0 - 100)["outbound"]["calls"] == 2


def test_many_rows_in_one_batch(st):
    """One executemany per table: a writer's batch of thousands is written at once."""
    rows = [
        cdr(callid=f"c{i}", start_time=T0 + i) if i % 2 else acc(callid=f"a{i}", time=T0 + i)
        for i in range(20000)
    ]
    started = time.perf_counter()
    assert st.acc.insert(rows) == 20000
    took = time.perf_counter() - started
    assert (count(st, "acc"), count(st, "acc_cdrs")) == (10000, 10000)
    assert took < 10, took  # measured: 0.25 s with SQLite, 0.35 s with PostgreSQL
    assert st.acc.cdrs(limit=1)[0]["callid"] == "c19999"


# -- migration ---------------------------------------------------------------------------------


def test_a_database_of_the_previous_schema_gets_the_tables(tmp_path):
    """A kampx database at migration 4 (before accounting) keeps its data and gains the three
    tables when this kampx opens it."""
    path = str(tmp_path / "old.db")
    before = tuple(m for m in mig.MIGRATIONS if m.version < 5)
    with SqliteStorage(path, migrations=before) as s:
        assert s.schema_version == 4
        s.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
    conn = sqlite3.connect(path)
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name LIKE 'acc%'").fetchone()
    conn.close()
    with SqliteStorage(path) as s:
        assert s.schema_version == mig.MIGRATIONS[-1].version >= 5
        assert [r.ip_addr for r in s.addresses.list()] == ["127.0.0.3"]
        assert s.acc.insert([acc(), cdr()]) == 2
        assert [r["callid"] for r in s.acc.cdrs()] == ["call-1"]
    conn = sqlite3.connect(path)
    versions = dict(conn.execute("SELECT table_name, table_version FROM version"))
    conn.close()
    assert versions["kampx"] == mig.MIGRATIONS[-1].version
    assert (versions["acc"], versions["missed_calls"], versions["acc_cdrs"]) == (5, 4, 2)
    assert versions["dispatcher"] == 4 and versions["subscriber"] == 1


def test_a_postgresql_database_of_the_previous_schema_gets_the_tables(pg, tmp_path):
    from kampx.db.postgres import PostgresStorage

    before = tuple(m for m in mig.PG_MIGRATIONS if m.version < 3)
    with PostgresStorage(pg.url, "pg", migrations=before) as s:
        assert s.schema_version == 2
        s.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
    assert _pg_exec(pg.url, ["SELECT to_regclass('acc_cdrs')"]) == [(None,)]
    with PostgresStorage(pg.url, "pg") as s:
        assert s.schema_version == mig.PG_MIGRATIONS[-1].version >= 3
        assert [r.ip_addr for r in s.addresses.list()] == ["127.0.0.3"]
        assert s.acc.insert([acc(), cdr()]) == 2
        assert [r["callid"] for r in s.acc.cdrs()] == ["call-1"]
    versions = dict(_pg_exec(pg.url, ["SELECT table_name, table_version FROM version"]))
    assert (versions["acc"], versions["missed_calls"], versions["acc_cdrs"]) == (5, 4, 2)


def test_postgresql_storage_keeps_records_on_the_server(pg, tmp_path):
    """A node's records go to the shared server (every node's CDRs in one place), not into
    the node's own SQLite file."""
    local = tmp_path / "node.db"
    cfg = kconfig.from_dict({"db": {"url": pg.url, "local": "sqlite:///" + str(local).lstrip("/")}})
    with open_storage(cfg) as s:
        s.open_local()
        s.acc.insert([cdr()])
    assert _pg_exec(pg.url, ["SELECT callid FROM acc_cdrs"]) == [("call-1",)]
    conn = sqlite3.connect(local)
    assert conn.execute("SELECT COUNT(*) FROM acc_cdrs").fetchone() == (0,)
    conn.close()
