"""kampxctl: database commands against a temp database, live commands against a fake
JSON-RPC server that answers as docs/control.md specifies."""
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

import pytest

from kampx.auth.credentials import ha1
from kampx.cli import kampxctl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HINT = "** INFO: execute 'kampxctl address reload' to synchronize cache and database"


@pytest.fixture
def env():
    """A config with its database and control socket in a short temp dir (sun_path is 107
    bytes; pytest's tmp_path can be longer)."""
    d = tempfile.mkdtemp(prefix="kx", dir="/tmp")
    cfg = os.path.join(d, "kampx.toml")
    with open(cfg, "w") as f:
        f.write(f'[db]\nurl = "sqlite://{d}/data/kampx.db"\n'
                f'[control]\nsocket = "{d}/ctl.sock"\n'
                '[auth]\nrealm = "kampx.test"\n')
    yield type("Env", (), {"dir": d, "cfg": cfg, "db": f"{d}/data/kampx.db",
                           "sock": f"{d}/ctl.sock"})
    shutil.rmtree(d, ignore_errors=True)


def run(env, *args, capsys):
    """kampxctl in this process: (exit status, stdout, stderr)."""
    code = kampxctl.main(["--config", env.cfg, *args])
    out, err = capsys.readouterr()
    return code, out, err


def run_proc(env, *args, input=None):
    """kampxctl as its own process, for exit statuses and stderr as a shell sees them."""
    p = subprocess.run([sys.executable, "-m", "kampx.cli.kampxctl", "--config", env.cfg, *args],
                       capture_output=True, text=True, input=input, timeout=60,
                       env={**os.environ, "PYTHONPATH": REPO})
    return p.returncode, p.stdout, p.stderr


def db_rows(env, sql):
    conn = sqlite3.connect(env.db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


# -- a fake kampx ctl process ---------------------------------------------------------------

class Fault(Exception):
    def __init__(self, code, message, data=None):
        self.code, self.message, self.data = code, message, data


NOW = 1_700_000_000.0


def contact(uri, **kw):
    c = {"contact": uri, "ruid": "r-" + uri[-4:], "expires": NOW + 3600, "q": None,
         "received": "", "path": "", "socket": "udp:127.0.0.1:5060", "user_agent": "ua/1",
         "callid": "cid-1", "cseq": 1, "instance": "", "reg_id": 0, "flags": 0,
         "last_modified": NOW}
    c.update(kw)
    return c


class FakeKampx:
    """Serves docs/control.md: one request per connection, one response line."""
    PAGE = 3  # at most this many AORs per page whatever the limit: the client must loop

    def __init__(self, path):
        self.path = path
        self.requests = []  # (raw bytes, parsed request)
        self.aors = [{"aor": f"u{i}@kampx.test",
                      "contacts": [contact(f"sip:u{i}@127.0.0.1:{5100 + i}", q=0.5)]}
                     for i in range(7)]
        self.stats = {"core": {"rcv_requests": 12, "fwd_requests": 10},
                      "tm": {"active_transactions": 2}}
        self.reload_busy = 0  # how many addressReload calls answer 503 first
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        self.sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() of the serving thread
        self.sock.close()
        self.thread.join(5)
        if os.path.exists(self.path):
            os.unlink(self.path)

    def methods(self):
        return [m[4:].replace("_", ".", 1) for m in dir(self) if m.startswith("rpc_")]

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                raw = b""
                while not raw.endswith(b"\n"):
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    raw += chunk
                conn.sendall(json.dumps(self._answer(raw)).encode() + b"\n")

    def _answer(self, raw):
        try:
            req = json.loads(raw)
        except ValueError:
            return {"jsonrpc": "2.0", "error": {"code": -32700, "message": "parse error"},
                    "id": None}
        self.requests.append((raw, req))
        if not isinstance(req, dict) or req.get("jsonrpc") != "2.0" or "method" not in req:
            return {"jsonrpc": "2.0", "error": {"code": -32600, "message": "invalid request"},
                    "id": None}
        params = req.get("params", {})
        if params == []:
            params = {}
        handler = getattr(self, "rpc_" + req["method"].replace(".", "_"), None)
        try:
            if handler is None:
                raise Fault(-32601, f"method not found: {req['method']}")
            if not isinstance(params, dict):
                raise Fault(-32602, "invalid params: expected an object")
            result = handler(**params)
        except TypeError as e:
            return {"jsonrpc": "2.0", "id": req.get("id"),
                    "error": {"code": -32602, "message": f"invalid params: {e}"}}
        except Fault as f:
            err = {"code": f.code, "message": f.message}
            if f.data is not None:
                err["data"] = f.data
            return {"jsonrpc": "2.0", "error": err, "id": req.get("id")}
        return {"jsonrpc": "2.0", "result": result, "id": req.get("id")}

    # the methods, as docs/control.md describes them
    def _find(self, aor):
        key = aor if "@" in aor else aor + "@kampx.test"
        for a in self.aors:
            if a["aor"] == key:
                return a
        raise Fault(404, "AOR not found")

    def rpc_ul_dump(self, limit=500, cursor=None):
        start = cursor or 0
        end = start + min(limit, self.PAGE)
        return {"aors": self.aors[start:end], "next": end if end < len(self.aors) else None}

    def rpc_ul_lookup(self, aor):
        return self._find(aor)

    def rpc_ul_add(self, aor, contact, expires=0, q=None, path="", flags=0):
        c = globals()["contact"](contact, expires=NOW + expires if expires else 0, q=q)
        self.aors.append({"aor": aor, "contacts": [c]})
        return c

    def rpc_ul_rm(self, aor):
        a = self._find(aor)
        self.aors.remove(a)
        return {"removed": len(a["contacts"])}

    def rpc_ul_rm_contact(self, aor, contact):
        a = self._find(aor)
        keep = [c for c in a["contacts"] if c["contact"] != contact]
        if len(keep) == len(a["contacts"]):
            raise Fault(404, "Contact not found")
        a["contacts"] = keep
        return {"removed": 1}

    def rpc_permissions_addressReload(self):
        if self.reload_busy:
            self.reload_busy -= 1
            raise Fault(503, "reload too soon, try again in 0.1 s", {"retry_after": 0.1})
        return {"rows": 2, "generation": 5}

    def rpc_permissions_addressDump(self):
        return {"generation": 5, "rows": [
            {"grp": 200, "ip_addr": "127.0.0.3", "mask": 32, "port": 0, "tag": "carrier"},
            {"grp": 1, "ip_addr": "2001:db8::", "mask": 32, "port": 5060, "tag": ""}]}

    def rpc_core_uptime(self):
        return {"now": NOW + 93784, "up_since": NOW, "uptime": 93784.0}

    def rpc_core_psx(self):
        return [{"idx": 0, "pid": 4711, "role": "supervisor", "cpu_percent": 0.25,
                 "rss_bytes": 31457280},
                {"idx": 1, "pid": 4712, "role": "udp receiver child=0 sock=udp:127.0.0.1:5060",
                 "cpu_percent": 12.5, "rss_bytes": 40894464}]

    def rpc_core_version(self):
        return {"name": "kampx", "version": "0.1.0", "python": "3.11.2"}

    def rpc_stats_get_statistics(self, group=None):
        if group is None:
            return self.stats
        if group not in self.stats:
            raise Fault(404, f"no such statistics group: {group}")
        return {group: self.stats[group]}

    def rpc_stats_reset_statistics(self, group=None, name=None):
        return {"reset": 1 if name else 2}

    def rpc_cfg_reload(self):
        return {"script": "builtin:kamailio101"}

    def rpc_system_listMethods(self):
        return sorted(self.methods())

    def calls(self):
        return [(r["method"], r.get("params")) for _, r in self.requests]


@pytest.fixture
def kampx(env):
    fake = FakeKampx(env.sock)
    yield fake
    fake.close()


# -- subscribers --------------------------------------------------------------------------

def test_add_passwd_rm(env, capsys):
    code, out, err = run(env, "add", "alice", "secret", capsys=capsys)
    assert (code, out, err) == (0, "new user 'alice@kampx.test' added\n", "")
    (h1, h1b, h256), = db_rows(env, "SELECT ha1, ha1b, ha1_sha256 FROM subscriber "
                                    "WHERE username='alice' AND domain='kampx.test'")
    assert h1 == ha1("alice", "kampx.test", "secret")
    assert h1b == ha1("alice@kampx.test", "kampx.test", "secret")
    assert h256 == ha1("alice", "kampx.test", "secret", "SHA-256")

    code, out, err = run(env, "add", "alice", "other", capsys=capsys)
    assert (code, out, err) == (1, "", "user alice@kampx.test already exists\n")

    code, out, err = run(env, "passwd", "alice", "n3w", capsys=capsys)
    assert (code, out) == (0, "password change succeeded\n")
    assert db_rows(env, "SELECT ha1 FROM subscriber")[0][0] == ha1("alice", "kampx.test", "n3w")

    code, out, err = run(env, "passwd", "bob", "x", capsys=capsys)
    assert (code, err) == (1, "no such user bob@kampx.test\n")

    code, out, err = run(env, "rm", "alice", "--json", capsys=capsys)
    assert code == 0 and json.loads(out) == {"removed": "alice@kampx.test"}
    code, out, err = run(env, "rm", "alice", capsys=capsys)
    assert (code, out, err) == (1, "", "no such user alice@kampx.test\n")


def test_add_with_domain_uses_it_as_realm(env, capsys):
    code, out, _ = run(env, "--json", "add", "bob@other.test", "pw", capsys=capsys)
    assert code == 0 and json.loads(out) == {"added": 1, "user": "bob@other.test"}
    assert db_rows(env, "SELECT domain, ha1 FROM subscriber") == \
        [("other.test", ha1("bob", "other.test", "pw"))]


def test_clear_password_is_never_written(env, capsys):
    run(env, "add", "alice", "Cl34r-t3xt-PW", capsys=capsys)
    run(env, "passwd", "alice", "An0ther-PW-x", capsys=capsys)
    data = b"".join(open(os.path.join(env.dir, "data", f), "rb").read()
                    for f in os.listdir(os.path.join(env.dir, "data")))
    assert b"alice" in data  # we did look at the right files
    assert b"Cl34r-t3xt-PW" not in data and b"An0ther-PW-x" not in data


@pytest.mark.parametrize("args,reason", [
    (["add", "al:ice", "pw"], "username 'al:ice' contains ':'"),
    (["add", "alice", ""], "empty password"),
    (["add"], "USER and PASSWORD are required"),
    (["add", "alice", "pw", "--file", "x"], "not both"),
])
def test_add_rejects(env, capsys, args, reason):
    code, out, err = run(env, *args, capsys=capsys)
    assert code == 1 and err.count("\n") == 1 and reason in err


def test_add_file_100k_lines(env):
    path = os.path.join(env.dir, "users.csv")
    with open(path, "w") as f:
        f.write("# provisioning batch\n\n")
        for i in range(100_000):
            f.write(f"user{i:06d},pw-{i}\n")
        f.write("carol@other.test, pass,with,commas \n")
    t0 = time.monotonic()
    code, out, err = run_proc(env, "add", "--file", path)
    elapsed = time.monotonic() - t0
    assert (code, out, err) == (0, "100001 users added\n", "")
    assert elapsed < 30, elapsed  # about 2 s on the 2-core box, process start included
    assert db_rows(env, "SELECT COUNT(*) FROM subscriber") == [(100_001,)]
    assert db_rows(env, "SELECT ha1 FROM subscriber WHERE username='user099999'") == \
        [(ha1("user099999", "kampx.test", "pw-99999"),)]
    assert db_rows(env, "SELECT ha1 FROM subscriber WHERE username='carol'") == \
        [(ha1("carol", "other.test", "pass,with,commas"),)]


def test_add_file_is_all_or_nothing(env, capsys):
    path = os.path.join(env.dir, "users.csv")
    with open(path, "w") as f:
        f.write("a1,pw\na2,pw\nno-comma-here\na3,pw\n")
    code, out, err = run(env, "add", "--file", path, capsys=capsys)
    assert (code, err) == (1, f"{path}:3: expected user,password\n")
    run(env, "add", "a2", "pw", capsys=capsys)
    with open(path, "w") as f:
        f.write("a1,pw\na2,pw\na3,pw\n")
    code, out, err = run(env, "add", "--file", path, capsys=capsys)
    assert (code, err) == (1, "user a2@kampx.test already exists\n")
    assert db_rows(env, "SELECT username FROM subscriber") == [("a2",)]


def test_add_file_from_stdin(env):
    code, out, err = run_proc(env, "--json", "add", "--file", "-", input="x1,p\nx2,p\n")
    assert code == 0 and json.loads(out) == {"added": 2}


# -- address table (database) -----------------------------------------------------------------

def test_address_add_show_rm(env, capsys):
    code, out, err = run(env, "address", "add", "200", "127.0.0.3", "32", "0", "carrier",
                         capsys=capsys)
    assert code == 0 and err == ""
    assert out.splitlines() == ["address 127.0.0.3/32 port 0 added to group 200", HINT]
    code, out, _ = run(env, "address", "add", "1", "2001:DB8::", "32", "5060", capsys=capsys)
    assert code == 0
    code, out, _ = run(env, "address", "show", capsys=capsys)
    assert out.splitlines() == [
        "id  grp  ip_addr     mask  port  tag",
        " 1  200  127.0.0.3     32     0  carrier",
        " 2    1  2001:db8::    32  5060",
    ]
    code, out, _ = run(env, "address", "show", "--json", capsys=capsys)
    assert json.loads(out) == {"rows": [
        {"id": 1, "grp": 200, "ip_addr": "127.0.0.3", "mask": 32, "port": 0, "tag": "carrier"},
        {"id": 2, "grp": 1, "ip_addr": "2001:db8::", "mask": 32, "port": 5060, "tag": ""}]}
    code, out, _ = run(env, "address", "rm", "1", "2001:db8:0::", capsys=capsys)
    assert out.splitlines() == ["1 address entry removed", HINT]
    code, out, err = run(env, "address", "rm", "1", "2001:db8::", capsys=capsys)
    assert (code, err) == (1, "no address 2001:db8:: in group 1\n")


def test_address_add_defaults_like_kamctl(env, capsys):
    run(env, "address", "add", "5", "10.0.0.1", capsys=capsys)
    assert db_rows(env, "SELECT grp, ip_addr, mask, port, tag FROM address") == \
        [(5, "10.0.0.1", 32, 0, None)]


@pytest.mark.parametrize("args,reason", [
    (["10.0.0.300"], "address: '10.0.0.300' is not an IP address"),
    (["10.0.0.1", "33"], "address: mask 33 is not 0..32 for 10.0.0.1"),
    (["10.0.0.1", "32", "70000"], "address: port 70000 is not 0..65535"),
])
def test_address_add_validates(env, capsys, args, reason):
    run(env, "address", "show", capsys=capsys)  # creates the database
    code, out, err = run(env, "address", "add", "1", *args, capsys=capsys)
    assert code == 1 and err.startswith(reason) and err.count("\n") == 1
    assert db_rows(env, "SELECT COUNT(*) FROM address") == [(0,)]


def test_address_add_reload(env, kampx, capsys):
    code, out, err = run(env, "address", "add", "200", "127.0.0.3", "32", "0", "carrier",
                         "--reload", capsys=capsys)
    assert code == 0
    assert out.splitlines() == ["address 127.0.0.3/32 port 0 added to group 200",
                                "address table reloaded: 2 rows (generation 5)"]
    assert kampx.calls() == [("permissions.addressReload", None)]


def test_address_reload_waits_when_rate_limited(env, kampx, capsys):
    kampx.reload_busy = 1
    code, out, err = run(env, "address", "reload", capsys=capsys)
    assert (code, out) == (0, "address table reloaded: 2 rows (generation 5)\n")
    assert len(kampx.calls()) == 2
    kampx.reload_busy = 2  # still busy after the one retry: a failure
    code, out, err = run(env, "address", "reload", capsys=capsys)
    assert (code, err) == (1, "reload too soon, try again in 0.1 s\n")


def test_address_add_reload_not_running(env, capsys):
    code, out, err = run(env, "address", "add", "1", "10.0.0.1", "--reload", capsys=capsys)
    assert (code, err) == (3, f"kampx is not running at {env.sock}\n")
    assert len(db_rows(env, "SELECT * FROM address")) == 1  # the database write stands


# -- live commands ----------------------------------------------------------------------------

def test_request_framing(env, kampx, capsys):
    run(env, "uptime", capsys=capsys)
    (raw, req), = kampx.requests
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert req["jsonrpc"] == "2.0" and req["method"] == "core.uptime"
    assert isinstance(req["id"], int) and "params" not in req


def test_ul_show_pages_through_ul_dump(env, kampx, capsys):
    code, out, err = run(env, "ul", "show", capsys=capsys)
    assert code == 0 and err == ""
    assert [c for c in kampx.calls()] == [("ul.dump", {"limit": 500}),
                                          ("ul.dump", {"limit": 500, "cursor": 3}),
                                          ("ul.dump", {"limit": 500, "cursor": 6})]
    lines = out.splitlines()
    assert [l for l in lines if l.startswith("AOR: ")] == \
        [f"AOR: u{i}@kampx.test" for i in range(7)]
    assert "    Contact: sip:u0@127.0.0.1:5100" in lines
    assert "        Q: 0.5" in lines
    assert "        Socket: udp:127.0.0.1:5060" in lines
    assert lines[-1] == "7 AORs, 7 contacts"


@pytest.mark.parametrize("where", ["front", "end"])
def test_ul_show_json(env, kampx, capsys, where):
    args = ["--json", "ul", "show"] if where == "front" else ["ul", "show", "--json"]
    code, out, err = run(env, *args, capsys=capsys)
    assert code == 0
    assert json.loads(out) == {"aors": kampx.aors}


def test_ul_show_empty_json(env, kampx, capsys):
    kampx.aors = []
    code, out, _ = run(env, "ul", "show", "--json", capsys=capsys)
    assert json.loads(out) == {"aors": []}


def test_ul_show_one_aor(env, kampx, capsys):
    code, out, err = run(env, "ul", "show", "u2", capsys=capsys)
    assert code == 0
    assert kampx.calls() == [("ul.lookup", {"aor": "u2"})]
    assert out.splitlines()[:2] == ["AOR: u2@kampx.test", "    Contact: sip:u2@127.0.0.1:5102"]
    code, out, err = run(env, "ul", "show", "nobody", capsys=capsys)
    assert (code, out, err) == (1, "", "AOR not found\n")
    code, out, err = run(env, "ul", "show", "u3@kampx.test", "--json", capsys=capsys)
    assert json.loads(out) == kampx.aors[3]


def test_ul_add_and_rm(env, kampx, capsys):
    code, out, err = run(env, "ul", "add", "dave", "sip:dave@127.0.0.1:5999", capsys=capsys)
    assert (code, out) == (0, "contact sip:dave@127.0.0.1:5999 added to dave (permanent)\n")
    code, out, err = run(env, "ul", "add", "erin@kampx.test", "sip:erin@127.0.0.1:6000",
                         "120", "0.7", "--json", capsys=capsys)
    assert code == 0 and json.loads(out)["contact"] == "sip:erin@127.0.0.1:6000"
    assert kampx.calls() == [
        ("ul.add", {"aor": "dave", "contact": "sip:dave@127.0.0.1:5999", "expires": 0,
                    "q": None}),
        ("ul.add", {"aor": "erin@kampx.test", "contact": "sip:erin@127.0.0.1:6000",
                    "expires": 120, "q": 0.7})]
    code, out, err = run(env, "ul", "rm", "u1", capsys=capsys)
    assert (code, out) == (0, "1 contact of u1 removed\n")
    code, out, err = run(env, "ul", "rm", "u2", "sip:u2@127.0.0.1:5102", capsys=capsys)
    assert code == 0
    code, out, err = run(env, "ul", "rm", "u3", "sip:nope@127.0.0.1", capsys=capsys)
    assert (code, err) == (1, "Contact not found\n")
    assert kampx.calls()[2:] == [
        ("ul.rm", {"aor": "u1"}),
        ("ul.rm_contact", {"aor": "u2", "contact": "sip:u2@127.0.0.1:5102"}),
        ("ul.rm_contact", {"aor": "u3", "contact": "sip:nope@127.0.0.1"})]


@pytest.mark.parametrize("args,reason", [
    (["dave", "http://x"], "http://x is not a valid SIP URI"),
    (["dave", "sip:d@h", "-5"], "expires -5 is negative"),
    (["dave", "sip:d@h", "60", "1.5"], "q 1.5 is not between 0 and 1"),
])
def test_ul_add_checks_before_calling(env, kampx, capsys, args, reason):
    code, out, err = run(env, "ul", "add", *args, capsys=capsys)
    assert code == 1 and reason in err
    assert kampx.calls() == []


def test_address_dump(env, kampx, capsys):
    code, out, err = run(env, "address", "dump", capsys=capsys)
    assert out.splitlines() == [
        "generation 5",
        "grp  ip_addr     mask  port  tag",
        "200  127.0.0.3     32     0  carrier",
        "  1  2001:db8::    32  5060",
    ]
    code, out, err = run(env, "address", "dump", "--json", capsys=capsys)
    assert json.loads(out) == kampx.rpc_permissions_addressDump()


def test_stats(env, kampx, capsys):
    code, out, _ = run(env, "stats", capsys=capsys)
    assert out.splitlines() == ["core:fwd_requests = 10", "core:rcv_requests = 12",
                                "tm:active_transactions = 2"]
    code, out, _ = run(env, "stats", "tm", capsys=capsys)
    assert out == "tm:active_transactions = 2\n"
    code, out, _ = run(env, "stats", "core:rcv_requests", "--json", capsys=capsys)
    assert json.loads(out) == {"core": {"rcv_requests": 12}}
    code, out, err = run(env, "stats", "core:nope", capsys=capsys)
    assert (code, err) == (1, "no such statistic core:nope\n")
    code, out, err = run(env, "stats", "bogus", capsys=capsys)
    assert (code, err) == (1, "no such statistics group: bogus\n")
    code, out, err = run(env, "stats", "--reset", "core", capsys=capsys)
    assert (code, out) == (0, "2 statistics reset\n")
    assert kampx.calls() == [("stats.get_statistics", None),  # no params: every group
                             ("stats.get_statistics", {"group": "tm"}),
                             ("stats.get_statistics", {"group": "core"}),
                             ("stats.get_statistics", {"group": "core"}),
                             ("stats.get_statistics", {"group": "bogus"}),
                             ("stats.reset_statistics", {"group": "core"})]


def test_ps(env, kampx, capsys):
    code, out, _ = run(env, "ps", capsys=capsys)
    assert out.splitlines() == [
        " PID  ROLE                                            CPU       MEM",
        "4711  supervisor                                     0.2%  30.0 MiB",
        "4712  udp receiver child=0 sock=udp:127.0.0.1:5060  12.5%  39.0 MiB",
    ]
    code, out, _ = run(env, "ps", "--json", capsys=capsys)
    assert json.loads(out) == kampx.rpc_core_psx()


def test_uptime_reload_version_rpc(env, kampx, capsys):
    code, out, _ = run(env, "uptime", capsys=capsys)
    lines = out.splitlines()
    assert lines[0].startswith("now: ") and lines[1].startswith("up since: ")
    assert lines[2] == "uptime: 93784 s (1 day, 2:03:04)"
    code, out, _ = run(env, "reload", capsys=capsys)
    assert (code, out) == (0, "reloading: route script builtin:kamailio101\n")
    code, out, _ = run(env, "version", capsys=capsys)
    assert out.splitlines() == ["kampxctl 0.1.0", f"kampx 0.1.0 running at {env.sock}"]
    code, out, _ = run(env, "rpc", "system.listMethods", capsys=capsys)
    assert "ul.dump" in json.loads(out) and "permissions.addressReload" in json.loads(out)
    code, out, err = run(env, "rpc", "no.such", capsys=capsys)
    assert (code, err) == (1, "method not found: no.such\n")
    code, out, err = run(env, "rpc", "stats.get_statistics", '{"group": "tm"}', capsys=capsys)
    assert json.loads(out) == {"tm": {"active_transactions": 2}}


# -- not running, and other failures ----------------------------------------------------------

@pytest.mark.parametrize("args", [["ul", "show"], ["ul", "show", "--json"],
                                  ["ul", "show", "alice"], ["stats"], ["ps"],
                                  ["uptime"], ["reload"], ["address", "dump"],
                                  ["address", "reload"], ["ul", "rm", "alice"]])
def test_not_running(env, args):
    code, out, err = run_proc(env, *args)
    assert (code, out, err) == (3, "", f"kampx is not running at {env.sock}\n")


def test_stale_socket_file_is_not_running(env, capsys):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(env.sock)  # bound, never listening: what a killed proxy leaves behind
    try:
        code, out, err = run(env, "ul", "show", capsys=capsys)
        assert (code, err) == (3, f"kampx is not running at {env.sock}\n")
    finally:
        s.close()


def test_version_without_proxy_is_not_a_failure(env, capsys):
    code, out, err = run(env, "version", capsys=capsys)
    assert code == 0
    assert out.splitlines() == ["kampxctl 0.1.0", f"kampx is not running at {env.sock}"]


def test_server_that_hangs_up(env, capsys):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(env.sock)
    srv.listen(1)

    def hang_up():
        conn, _ = srv.accept()
        conn.recv(65536)
        conn.close()
    t = threading.Thread(target=hang_up, daemon=True)
    t.start()
    try:
        code, out, err = run(env, "uptime", capsys=capsys)
        assert (code, err) == (1, f"kampx at {env.sock} closed the connection without "
                                  "answering\n")
    finally:
        t.join(5)
        srv.close()


def test_usage_error_is_one_line(env):
    code, out, err = run_proc(env, "frobnicate")
    assert code == 2 and out == "" and err.count("\n") == 1
    assert "invalid choice: 'frobnicate'" in err


def test_config_error_is_one_line(env):
    with open(env.cfg, "a") as f:
        f.write("[nonsense]\n")
    code, out, err = run_proc(env, "address", "show")
    assert code == 1 and err == f"{env.cfg}: unknown section [nonsense]\n"


def test_config_from_environment(env, capsys, monkeypatch):
    monkeypatch.setenv("KAMPX_CONFIG", env.cfg)
    assert kampxctl.main(["add", "zed", "pw"]) == 0
    capsys.readouterr()
    assert db_rows(env, "SELECT username FROM subscriber") == [("zed",)]


def test_bash_completion(env):
    code, script, err = run_proc(env, "completion", "bash")
    assert code == 0
    probe = script + """
complete_words() { COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _kampxctl; echo "${COMPREPLY[*]}"; }
complete_words kampxctl ul s
complete_words kampxctl --config x.toml addr
complete_words kampxctl address add --re
complete_words kampxctl ""
"""
    p = subprocess.run(["bash", "-c", probe], capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "show"
    assert lines[1] == "address"
    assert lines[2] == "--reload"
    assert {"add", "passwd", "rm", "ul", "address", "stats", "ps"} <= set(lines[3].split())
