"""A throwaway PostgreSQL server for the cluster tests: Debian's postgresql package, initdb
and pg_ctl in a temporary directory, listening on one loopback address of a locked block
(tests/proxyctl.py allocate_addresses), so parallel runs never meet.

PostgreSQL refuses to run as root: as root the server runs as the package's `postgres` user
(runuser), in a directory it owns; as anyone else, as that user. Only the server started
here is ever stopped (pg_ctl on its own data directory).
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

import proxyctl
import pytest

PG_PORT = 5432
USER, PASSWORD, DBNAME = "kampx", "kx-secret", "kampx"


def bindir() -> str | None:
    """The newest installed server's bin directory (/usr/lib/postgresql/N/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return os.path.dirname(found[-1]) if found else None


class PgServer:
    def __init__(self):
        self.bin = bindir()
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        self.addrs = proxyctl.allocate_addresses()
        self.host = self.addrs.proxy
        self.dir = tempfile.mkdtemp(prefix="kampx-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        self.as_root = os.geteuid() == 0
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(["initdb", "-D", self.data, "-U", USER, "--pwfile", self._pwfile(),
                   "-A", "scram-sha-256", "--no-sync", "-E", "UTF8", "--no-instructions"])

    @property
    def url(self) -> str:
        return f"postgresql://{USER}:{PASSWORD}@{self.host}:{PG_PORT}/{DBNAME}"

    def _pwfile(self) -> str:
        path = os.path.join(self.dir, "pw")
        with open(path, "w") as f:
            f.write(PASSWORD + "\n")
        if self.as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)
        return path

    def _run(self, argv: list[str], timeout: float = 60) -> None:
        cmd = [os.path.join(self.bin, argv[0]), *argv[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                           stdin=subprocess.DEVNULL, cwd=self.dir)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {r.stderr.strip()}\n{self.log_tail()}")

    def start(self) -> None:
        opts = (f"-c listen_addresses={self.host} -p {PG_PORT} -c unix_socket_directories={self.dir} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=40 -c shared_buffers=16MB -c log_min_messages=warning")
        self._run(["pg_ctl", "start", "-D", self.data, "-l", self.log, "-w", "-t", "30", "-o", opts])

    def create_database(self) -> None:
        import psycopg
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True,
                             connect_timeout=5) as c:
            c.execute(f"CREATE DATABASE {DBNAME}")

    def stop(self, mode: str = "fast") -> None:
        if os.path.exists(os.path.join(self.data, "postmaster.pid")):
            self._run(["pg_ctl", "stop", "-D", self.data, "-m", mode, "-w", "-t", "30"])

    def reset(self) -> None:
        """An empty kampx database again (between tests)."""
        import psycopg
        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True,
                             connect_timeout=5) as c:
            c.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = %s AND pid <> pg_backend_pid()", (DBNAME,))
            c.execute(f"DROP DATABASE IF EXISTS {DBNAME}")
            c.execute(f"CREATE DATABASE {DBNAME}")

    def log_tail(self, n: int = 20) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def close(self) -> None:
        try:
            self.stop("immediate")
        finally:
            self.addrs.release()
            shutil.rmtree(self.dir, ignore_errors=True)


def wait_until(pred, timeout: float, step: float = 0.02):
    """pred()'s first truthy value within `timeout` seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(step)


# -- the fixtures the cluster and accounting tests share (their conftests import them) ----------

@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL server per test process (session)."""
    if bindir() is None:
        pytest.fail("PostgreSQL is not installed: tools/setup-system.sh installs it")
    server = PgServer()
    try:
        server.start()
        server.create_database()
        yield server
    finally:
        server.close()


@pytest.fixture
def pg(pg_server):
    """The server, with an empty kampx database (and running, whatever the last test did)."""
    if not os.path.exists(os.path.join(pg_server.data, "postmaster.pid")):
        pg_server.start()
    pg_server.reset()
    return pg_server
