"""Start, provision and stop the proxy the wire tests talk to.

The target is chosen by the environment variable KAMPX_TEST_TARGET:
  kampx     (default) `kampx run --config CFG`, provisioned with `kampxctl --config CFG ...`
  kamailio  Kamailio 5.6 with tests/reference/kamailio101.cfg, provisioned with SQL into its
            SQLite database
Both are configured alike: the contract's built-in route script, listening on port 5060 of a
loopback address of their own, realm REALM, carrier address group 200.

Addresses: every target takes a block of four addresses 127.A.B.C..C+3 (A in 64..250, so
outside 127.0.0.0/24 and the reserved 127.0.1-3.x), held by a lock file for its lifetime, so
parallel test runs on one machine never meet. C+0 is the proxy (port 5060), C+1 the carrier
(its source address is in group 200, and its gateway listens there on CARRIER_PORT), C+2 and
C+3 the users' phones and clients.
"""
from __future__ import annotations

import fcntl
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import sipclient

HERE = os.path.dirname(os.path.abspath(__file__))
KAMAILIO_CFG = os.environ.get("KAMAILIO_CFG") or os.path.join(HERE, "reference", "kamailio101.cfg")
KAMAILIO_SCHEMA_DIR = "/usr/share/kamailio/db_sqlite"
LOCK_DIR = os.path.join(tempfile.gettempdir(), "kampx-wire-addresses")
REALM = "kampx.test"
CARRIER_GROUP = 200
CARRIER_PORT = 5070
SIP_PORT = 5060


def target_name() -> str:
    return os.environ.get("KAMPX_TEST_TARGET", "kampx").strip().lower() or "kampx"


@dataclass
class Options:
    """What a test run may tune. Times are milliseconds like kampx's [tm] keys."""
    children: int = 2
    fr_timer_ms: int = 2000
    fr_inv_timer_ms: int = 6000
    nonce_expires_s: int = 300
    min_expires: int = 1
    realm: str = REALM


@dataclass
class Subscriber:
    user: str
    password: str


@dataclass
class Addresses:
    proxy: str
    carrier: str
    phone: str
    client: str
    lock_fd: int = field(default=-1, repr=False)

    def release(self) -> None:
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _bindable(ip: str, port: int, kind=socket.SOCK_DGRAM) -> bool:
    s = socket.socket(socket.AF_INET, kind)
    try:
        s.bind((ip, port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def allocate_addresses(attempts: int = 200) -> Addresses:
    """Four free loopback addresses, locked for this process until release()."""
    os.makedirs(LOCK_DIR, exist_ok=True)
    rnd = random.SystemRandom()
    for _ in range(attempts):
        a, b, c = rnd.randint(64, 250), rnd.randint(0, 255), rnd.randrange(4, 248, 4)
        ips = [f"127.{a}.{b}.{c + i}" for i in range(4)]
        fd = os.open(os.path.join(LOCK_DIR, ips[0]), os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if (_bindable(ips[0], SIP_PORT) and _bindable(ips[1], CARRIER_PORT)
                and all(_bindable(ip, 0) for ip in ips[2:])):
            return Addresses(*ips, lock_fd=fd)
        os.close(fd)
    raise RuntimeError("no free loopback address block found")


def has_ipv6_loopback() -> bool:
    """True when ::1 can be bound (UDP and TCP) on this machine."""
    try:
        for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.bind(("::1", 0))
            s.close()
        return True
    except OSError:
        return False


def free_tcp_port(ip: str) -> int:
    s = socket.socket()
    s.bind((ip, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def ping(addr: tuple[str, int], timeout: float = 0.3, src_ip: str | None = None) -> bool:
    """One OPTIONS keepalive to the proxy; True on 200."""
    with sipclient.SipClient(src_ip or addr[0], 0, proxy=addr) as c:
        req = c.request("OPTIONS", f"sip:{addr[0]}", contact=None)
        c.send(req)
        r = c.response(req, timeout)
        return r is not None and r.status == 200


class Target:
    """One proxy instance: addresses, work directory, process."""
    name = "?"

    def __init__(self, options: Options | None = None):
        self.options = options or Options()
        self.addrs = allocate_addresses()
        self.workdir = tempfile.mkdtemp(prefix=f"kampx-wire-{self.name}-")
        self.proc: subprocess.Popen | None = None
        self.log_path = os.path.join(self.workdir, f"{self.name}.log")
        self._log = None
        self.subscribers: dict[str, Subscriber] = {}
        self.carrier_ips: list[str] = []
        self.ready_after: float | None = None   # seconds from spawn to the first 200
        self.stopped_after: float | None = None  # seconds from SIGTERM to exit
        self.returncode: int | None = None

    # -- addresses --
    @property
    def proxy(self) -> tuple[str, int]:
        return (self.addrs.proxy, SIP_PORT)

    @property
    def realm(self) -> str:
        return self.options.realm

    @property
    def carrier_gateway(self) -> tuple[str, int]:
        return (self.addrs.carrier, CARRIER_PORT)

    @property
    def carrier_uri(self) -> str:
        return f"sip:{self.addrs.carrier}:{CARRIER_PORT}"

    # -- provisioning (before start) --
    def add_subscribers(self, subs: list[Subscriber]) -> None:
        for s in subs:
            self.subscribers[s.user] = s

    def add_carrier(self, ip: str) -> None:
        self.carrier_ips.append(ip)

    def provision(self) -> None:
        raise NotImplementedError

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return dict(os.environ)

    # -- process --
    def start(self, ready_timeout: float = 15.0) -> None:
        self.provision()
        self._log = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.proc = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.workdir, env=self.env(),
                                     start_new_session=True)
        while time.monotonic() - t0 < ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited during start (rc={self.proc.returncode}):\n"
                                   + self.log_tail())
            if ping(self.proxy, 0.1, self.addrs.client):
                self.ready_after = time.monotonic() - t0
                return
        self.stop()
        raise RuntimeError(f"{self.name} did not answer OPTIONS on {self.proxy} within "
                           f"{ready_timeout}s:\n" + self.log_tail())

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc and self.proc.poll() is None else None

    def _children(self) -> list[int]:
        """PIDs of the process tree under our proxy (read from /proc, no psutil needed)."""
        if not self.pid:
            return []
        parents: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if not d.isdigit():
                continue
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            parents.setdefault(ppid, []).append(int(d))
        out, todo = [], [self.pid]
        while todo:
            for c in parents.get(todo.pop(), []):
                out.append(c)
                todo.append(c)
        return out

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the main process; measure the time to exit; SIGKILL stragglers (only
        processes of this target's tree, by PID)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            children = self._children()
            t0 = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
                self.stopped_after = time.monotonic() - t0
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            for pid in children:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.returncode = self.proc.returncode
        if self._log:
            self._log.close()
            self._log = None
        return self.returncode

    def close(self) -> None:
        self.stop()
        self.addrs.release()
        if os.environ.get("KAMPX_TEST_KEEP") != "1":
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, n: int = 40) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode("utf-8", "replace")
        except OSError:
            return ""


class KamailioTarget(Target):
    name = "kamailio"
    binary = os.environ.get("KAMAILIO_BIN", "/usr/sbin/kamailio")

    @property
    def db(self) -> str:
        return os.path.join(self.workdir, "kamailio.sqlite")

    def provision(self) -> None:
        con = sqlite3.connect(self.db)
        try:
            for name in ("standard-create.sql", "auth_db-create.sql", "permissions-create.sql"):
                with open(os.path.join(KAMAILIO_SCHEMA_DIR, name)) as f:
                    con.executescript(f.read())
            # kamctl's columns: ha1 = MD5(user:realm:password), ha1b = MD5(user@domain:realm:password)
            con.executemany(
                "INSERT INTO subscriber(username, domain, password, ha1, ha1b) VALUES (?,?,?,?,?)",
                [(s.user, self.realm, "", sipclient.ha1(s.user, self.realm, s.password),
                  sipclient.ha1(f"{s.user}@{self.realm}", self.realm, s.password))
                 for s in self.subscribers.values()])
            con.executemany("INSERT INTO address(grp, ip_addr, mask, port, tag) VALUES (?,?,32,0,'carrier')",
                            [(CARRIER_GROUP, ip) for ip in self.carrier_ips])
            con.commit()
        finally:
            con.close()

    def command(self) -> list[str]:
        o = self.options
        defs = {
            "KX_LISTEN": f"udp:{self.addrs.proxy}:{SIP_PORT}",
            "KX_REALM": f'"{o.realm}"',
            "KX_CHILDREN": str(o.children),
            "KX_DBURL": f'"sqlite://{self.db}"',
            "KX_CARRIER_HOSTPORT": f'"{self.addrs.carrier}:{CARRIER_PORT}"',
            "KX_CARRIER_GROUP": f'"{CARRIER_GROUP}"',
            "KX_FR_TIMER": str(o.fr_timer_ms),
            "KX_FR_INV_TIMER": str(o.fr_inv_timer_ms),
            "KX_NONCE_EXPIRE": str(o.nonce_expires_s),
            "KX_MIN_EXPIRES": str(o.min_expires),
        }
        cmd = [self.binary, "-DD", "-E", "-f", KAMAILIO_CFG, "-Y", self.workdir, "-m", "64", "-M", "8"]
        for k, v in defs.items():
            cmd += ["-A", f"{k}={v}"]
        return cmd


class KampxTarget(Target):
    name = "kampx"

    @staticmethod
    def _cli(var: str, script: str, module: str) -> list[str]:
        if os.environ.get(var):
            return os.environ[var].split()
        path = shutil.which(script)
        return [path] if path else [sys.executable, "-m", module]

    @property
    def config_path(self) -> str:
        return os.path.join(self.workdir, "kampx.toml")

    def write_config(self) -> None:
        o = self.options
        metrics_port = free_tcp_port(self.addrs.proxy)
        # pike and the auth ban are off: the reference (Kamailio) has neither, and the
        # auth-failure tests would otherwise ban their own client address
        text = f"""\
[core]
listen = ["udp:{self.addrs.proxy}:{SIP_PORT}"]
children = {o.children}

[db]
url = "sqlite:///{os.path.join(self.workdir, 'kampx.db').lstrip('/')}"

[auth]
realm = "{o.realm}"
algorithms = ["MD5"]
nonce_expires_s = {o.nonce_expires_s}

[security]
pike_enabled = false
auth_ban_failures = 0

[routing]
script = "builtin:kamailio101"
carrier_group = {CARRIER_GROUP}
carrier = "{self.carrier_uri}"

[metrics]
listen = "{self.addrs.proxy}:{metrics_port}"

[control]
socket = "{os.path.join(self.workdir, 'kampx.sock')}"

[tm]
fr_timer_ms = {o.fr_timer_ms}
fr_inv_timer_ms = {o.fr_inv_timer_ms}

[registrar]
min_expires = {o.min_expires}
"""
        with open(self.config_path, "w") as f:
            f.write(text)

    def ctl(self, *args: str) -> None:
        cmd = self._cli("KAMPXCTL_BIN", "kampxctl", "kampx.cli.kampxctl") + ["--config", self.config_path, *args]
        r = subprocess.run(cmd, cwd=self.workdir, capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")

    def provision(self) -> None:
        self.write_config()
        if self.subscribers:
            path = os.path.join(self.workdir, "subscribers.csv")
            with open(path, "w") as f:
                f.writelines(f"{s.user},{s.password}\n" for s in self.subscribers.values())
            self.ctl("add", "--file", path)
        for ip in self.carrier_ips:
            self.ctl("address", "add", str(CARRIER_GROUP), ip, "32", "0", "carrier")

    def command(self) -> list[str]:
        return self._cli("KAMPX_BIN", "kampx", "kampx.cli.kampx") + ["run", "--config", self.config_path]

    def env(self) -> dict:
        env = dict(os.environ)
        repo = os.path.dirname(HERE)  # a checkout without `pip install -e .` still runs
        env["PYTHONPATH"] = repo + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        return env


TARGETS = {"kampx": KampxTarget, "kamailio": KamailioTarget}


def make_target(options: Options | None = None) -> Target:
    name = target_name()
    if name not in TARGETS:
        raise ValueError(f"KAMPX_TEST_TARGET={name!r}: expected one of {sorted(TARGETS)}")
    return TARGETS[name](options)
