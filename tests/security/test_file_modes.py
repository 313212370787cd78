"""The database holds every subscriber's HA1 digests (issue 10, item 7c): kampx creates the
file 0600 (SQLite gives its -wal and -shm files the same mode) and every directory it
creates for it 0750, whatever [db] url says; a directory that exists keeps its mode."""
from __future__ import annotations

import os
import stat
from contextlib import contextmanager

import pytest

from kampx.config import DbConfig
from kampx.db.sqlite import SqliteStorage
from kampxproc import KampxProcess


@contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def assert_db_private(db: str) -> None:
    assert mode(db) == 0o600
    for side in (db + "-wal", db + "-shm"):
        if os.path.exists(side):
            assert mode(side) == 0o600, side


def test_storage_creates_a_private_file_in_0750_directories(tmp_path):
    """umask 0: the modes are kampx's, not the umask's."""
    db = tmp_path / "var" / "lib" / "kampx" / "kampx.db"
    with umask(0):
        s = SqliteStorage(str(db))
    try:
        s.addresses.add(200, "127.0.0.9", 32, 0, "carrier")        # a write: -wal, -shm
        assert os.path.exists(str(db) + "-wal") and os.path.exists(str(db) + "-shm")
        assert_db_private(str(db))
        for d in (db.parent, db.parent.parent, db.parent.parent.parent):
            assert mode(d) == 0o750, d
    finally:
        s.close()


def test_existing_directory_and_file_keep_their_modes(tmp_path):
    data = tmp_path / "data"
    data.mkdir(mode=0o775)
    os.chmod(data, 0o775)                  # the operator's choice
    SqliteStorage(str(data / "kampx.db")).close()
    assert mode(data) == 0o775
    os.chmod(data / "kampx.db", 0o640)
    SqliteStorage(str(data / "kampx.db")).close()
    assert mode(data / "kampx.db") == 0o640


@pytest.mark.parametrize("where", ["embedded-default", "absolute"])
def test_a_fresh_proxy_creates_its_database_private(tmp_path, where):
    if where == "embedded-default":          # ./kampx-data/ in the proxy's working directory
        px = KampxProcess(config={"db": {"url": DbConfig().url}})
        base, new_dirs = px.workdir, ["kampx-data"]
    else:
        base, new_dirs = str(tmp_path), ["var", "var/lib", "var/lib/kampx"]
        px = KampxProcess(config={"db": {"url": f"sqlite://{base}/var/lib/kampx/kampx.db"}})
    try:
        with umask(0o022):                     # the usual one: what the issue saw
            px.start()
        px.metric("kampx_build_info")          # every helper is up, the db writer too
        assert_db_private(os.path.join(base, new_dirs[-1], "kampx.db"))
        for d in new_dirs:
            assert mode(os.path.join(base, d)) == 0o750, d
    finally:
        px.close()
