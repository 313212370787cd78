"""The dispatcher table in SQLite (kampx/db): Kamailio's columns, the migration that adds it
to a database of an older kampx, and the storage API kampxctl and reloads use."""
import sqlite3

import pytest

from kampx.db import DispatcherRow, StorageError
from kampx.db import migrations as mig
from kampx.db.sqlite import SqliteStorage


@pytest.fixture
def st(tmp_path):
    s = SqliteStorage(str(tmp_path / "kampx.db"))
    yield s
    s.close()


def test_kamailio_columns_and_version(st):
    conn = sqlite3.connect(st.where)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(dispatcher)")]
    assert cols == ["id", "setid", "destination", "flags", "priority", "attrs", "description"]
    versions = dict(conn.execute("SELECT table_name, table_version FROM version"))
    assert versions["dispatcher"] == 4  # Kamailio's dispatcher table version


def test_add_list_remove(st):
    a = st.dispatcher.add(DispatcherRow(1, "sip:127.0.0.21:5060", 8, 5, "weight=50", "gw1"))
    b = st.dispatcher.add(DispatcherRow(2, "sip:gw.example.net"))
    assert b > a
    assert st.dispatcher.list() == [
        DispatcherRow(1, "sip:127.0.0.21:5060", 8, 5, "weight=50", "gw1", a),
        DispatcherRow(2, "sip:gw.example.net", 0, 0, "", "", b),
    ]
    st.dispatcher.remove(a)
    with pytest.raises(StorageError, match=f"no dispatcher entry with id {a}"):
        st.dispatcher.remove(a)
    assert [r.id for r in st.dispatcher.list()] == [b]


def test_a_database_of_the_previous_schema_gets_the_table(tmp_path):
    """A kampx database at migration 3 (before the dispatcher) keeps its data and gains the
    table when this kampx opens it."""
    path = str(tmp_path / "old.db")
    before = tuple(m for m in mig.MIGRATIONS if m.version < 4)
    with SqliteStorage(path, migrations=before) as s:
        assert s.schema_version == 3
        s.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
    conn = sqlite3.connect(path)
    assert not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'dispatcher'").fetchone()
    conn.close()
    with SqliteStorage(path) as s:
        assert s.schema_version == mig.MIGRATIONS[-1].version >= 4
        assert [r.ip_addr for r in s.addresses.list()] == ["127.0.0.3"]
        s.dispatcher.add(DispatcherRow(1, "sip:127.0.0.21"))
        assert [r.destination for r in s.dispatcher.list()] == ["sip:127.0.0.21"]
