"""The control server (kampx/control/server.py + methods.py) over a real Unix socket and real
shared tables: the JSON-RPC envelope, every method's results and errors, ul.dump paging."""
import dataclasses
import json
import os
import socket
import stat
import threading
import time
from types import SimpleNamespace

import pytest

from ctlkit import InProcessCtl
from kampx import stats as S
from kampx.tm.stats import ACTIVE_TRANSACTIONS, FINAL_REPLIES
from kampx.stats.core import RCV_REQUESTS
from kampx.sl import SL_REPLIES
from kampx.control.client import ControlClient, RpcError
from kampx.control.server import MAX_REQUEST, SocketInUse, bind_unix
from kampx.db import open_storage


@pytest.fixture
def ctl():
    with InProcessCtl() as c:
        yield c


def raw(path: str, data: bytes, shut: bool = True) -> bytes:
    """Send raw bytes, return everything the server writes before closing."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect(path)
    try:
        s.sendall(data)
        if shut:
            s.shutdown(socket.SHUT_WR)
        out = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return out
            out += chunk
    finally:
        s.close()


def rpc(ctl, method, params=None):
    return ControlClient(ctl.sock_path).call(method, params)


def rpc_error(ctl, method, params=None) -> RpcError:
    with pytest.raises(RpcError) as e:
        rpc(ctl, method, params)
    return e.value


# -- transport and envelope ------------------------------------------------------------------

def test_socket_mode_and_cleanup(ctl):
    st = os.stat(ctl.sock_path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660


def test_stale_socket_replaced_live_one_kept():
    d = "/tmp/kxops-stale-%d" % os.getpid()
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, "s.sock")
    try:
        dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        dead.bind(path)
        dead.close()                      # a file nobody listens on: a killed proxy's
        live = bind_unix(path)
        with pytest.raises(SocketInUse):  # a second kampx must not steal a live socket
            bind_unix(path)
        live.close()
    finally:
        if os.path.exists(path):
            os.unlink(path)
        os.rmdir(d)


def test_response_is_one_line_and_id_echoed(ctl):
    out = raw(ctl.sock_path, b'{"jsonrpc":"2.0","method":"core.version","id":"abc"}\n')
    assert out.endswith(b"\n") and out.count(b"\n") == 1
    resp = json.loads(out)
    assert resp["id"] == "abc" and resp["result"]["name"] == "kampx"


def test_request_without_newline_read_to_eof(ctl):
    out = raw(ctl.sock_path, b'{"jsonrpc":"2.0","method":"core.uptime","id":1}')
    assert json.loads(out)["result"]["uptime"] >= 5


@pytest.mark.parametrize("data,code,text", [
    (b"{not json", -32700, "parse error"),
    (b"", -32700, "parse error"),
    (b'[{"jsonrpc":"2.0","method":"core.uptime","id":1}]', -32600, "batch requests are not supported"),
    (b'"hello"', -32600, "invalid request"),
    (b'{"jsonrpc":"1.0","method":"core.uptime","id":1}', -32600, "jsonrpc"),
    (b'{"jsonrpc":"2.0","method":5,"id":1}', -32600, "method"),
    (b'{"jsonrpc":"2.0","method":"no.such","id":1}', -32601, "method not found: no.such"),
    (b'{"jsonrpc":"2.0","method":"core.uptime","params":"x","id":1}', -32602, "params"),
    (b'{"jsonrpc":"2.0","method":"core.uptime","params":[1],"id":1}', -32602, "params"),
    (b'{"jsonrpc":"2.0","method":"core.uptime","params":{"x":1},"id":1}', -32602, "'x'"),
])
def test_envelope_errors(ctl, data, code, text):
    resp = json.loads(raw(ctl.sock_path, data + b"\n"))
    assert resp["jsonrpc"] == "2.0"
    assert resp["error"]["code"] == code, resp
    assert text in resp["error"]["message"]
    assert "\n" not in resp["error"]["message"]


def test_params_empty_object_and_array_accepted(ctl):
    for params in ({}, []):
        assert rpc(ctl, "core.version", params)["version"]


def test_too_long_request(ctl):
    data = b'{"jsonrpc":"2.0","method":"core.uptime","id":1,"pad":"' + b"x" * (MAX_REQUEST + 10)
    resp = json.loads(raw(ctl.sock_path, data, shut=False))
    assert resp["error"]["code"] == -32600 and resp["id"] is None


def test_notification_executed_without_answer(ctl):
    ctl.register("alice", "sip:alice@10.0.0.1")
    out = raw(ctl.sock_path, b'{"jsonrpc":"2.0","method":"ul.rm","params":{"aor":"alice"}}\n')
    assert out == b""
    assert ctl.shared.location.lookup("alice", time.time()) == []


def test_internal_error_is_32603(ctl):
    def boom(params):
        raise ZeroDivisionError("bug")
    ctl.server.methods["core.version"] = boom
    e = rpc_error(ctl, "core.version")
    assert e.code == -32603 and "core.version" in e.message


def test_stalled_client_does_not_block_others(ctl):
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(ctl.sock_path)         # connects, says nothing
    try:
        t = time.monotonic()
        assert rpc(ctl, "core.version")["name"] == "kampx"
        assert time.monotonic() - t < 2
    finally:
        idle.close()


def test_list_methods(ctl):
    assert rpc(ctl, "system.listMethods") == sorted([
        "ul.dump", "ul.lookup", "ul.rm", "ul.rm_contact", "ul.add",
        "permissions.addressReload", "permissions.addressDump", "dns.view", "dns.delete_all",
        "dispatcher.reload", "dispatcher.list", "dispatcher.set_state", "core.uptime", "core.psx",
        "core.version", "core.tcp_info", "stats.get_statistics", "stats.reset_statistics",
        "cfg.reload",
        "trace.start", "trace.read", "trace.stop", "acc.cdrs", "acc.list", "acc.summary",
        "dlg.list", "dlg.show", "dlg.end", "system.listMethods"])


# -- trace ----------------------------------------------------------------------------------

@pytest.mark.parametrize("params, name", [
    ({"count": 0}, "count"), ({"count": "5"}, "count"), ({"duration": 0}, "duration"),
    ({"duration": 4000}, "duration"), ({"duration": True}, "duration"), ({"method": ""}, "method"),
    ({"user": 3}, "user"), ({"verbose": "yes"}, "verbose"), ({"bogus": 1}, "bogus"),
])
def test_trace_start_invalid(ctl, params, name):
    e = rpc_error(ctl, "trace.start", params)
    assert e.code == -32602 and f"'{name}'" in e.message


def test_trace_long_poll_holds_no_other_method_and_stop_ends_it(ctl):
    started = rpc(ctl, "trace.start", {"duration": 30})
    assert rpc_error(ctl, "trace.read", {"id": started["id"] + 1}).message == (
        f"no trace {started['id'] + 1}")
    got = {}
    poll = threading.Thread(target=lambda: got.update(
        rpc(ctl, "trace.read", {"id": started["id"], "wait": 3})))
    t0 = time.monotonic()
    poll.start()
    time.sleep(0.2)
    assert rpc(ctl, "core.version")["name"] == "kampx"  # not behind the long poll
    assert time.monotonic() - t0 < 1.0
    assert rpc(ctl, "trace.stop", {"id": started["id"]}) == {"id": started["id"], "messages": 0}
    poll.join(5)
    assert got == {"records": [], "next": 0, "done": True, "reason": "stopped"}
    assert time.monotonic() - t0 < 2.0  # the stop woke the poll
    assert ctl.shared.trace_spec.read()[1] == b""  # the workers' filter is taken back


# -- usrloc ---------------------------------------------------------------------------------

def test_ul_lookup_contact_object(ctl):
    ctl.register("alice", "sip:alice@10.0.0.1:5062", q=500, received="sip:192.0.2.1:4000",
                 path="<sip:edge;lr>", callid="cid-1", cseq=7)
    aor = rpc(ctl, "ul.lookup", {"aor": "alice@kampx.test"})   # domain dropped (use_domain off)
    assert aor["aor"] == "alice"
    (c,) = aor["contacts"]
    assert set(c) == {"contact", "ruid", "expires", "q", "received", "path", "socket",
                      "user_agent", "callid", "cseq", "instance", "reg_id", "flags",
                      "last_modified"}
    assert c["contact"] == "sip:alice@10.0.0.1:5062" and c["q"] == 0.5
    assert c["received"] == "sip:192.0.2.1:4000" and c["path"] == "<sip:edge;lr>"
    assert c["callid"] == "cid-1" and c["cseq"] == 7 and c["socket"] == "udp:127.0.0.1:5060"
    assert 3500 < c["expires"] - time.time() <= 3600
    assert rpc(ctl, "ul.lookup", {"aor": "alice"}) == aor
    assert rpc(ctl, "ul.lookup", {"aor": "ALICE"}) == aor      # Kamailio: case-insensitive users


def test_ul_lookup_order_and_missing(ctl):
    ctl.register("bob", "sip:bob@10.0.0.1", q=100, callid="a")
    ctl.register("bob", "sip:bob@10.0.0.2", q=900, callid="b")
    ctl.register("bob", "sip:bob@10.0.0.3", callid="c")        # no q counts as 1.0
    got = [c["contact"] for c in rpc(ctl, "ul.lookup", {"aor": "bob"})["contacts"]]
    assert got == ["sip:bob@10.0.0.3", "sip:bob@10.0.0.2", "sip:bob@10.0.0.1"]
    e = rpc_error(ctl, "ul.lookup", {"aor": "nobody"})
    assert (e.code, e.message) == (404, "AOR not found")
    assert rpc_error(ctl, "ul.lookup", {}).code == -32602
    assert rpc_error(ctl, "ul.lookup", {"aor": ""}).code == -32602
    assert rpc_error(ctl, "ul.lookup", {"aor": "x", "bogus": 1}).code == -32602


def test_ul_aor_with_use_domain(ctl):
    # a registrar keying AORs by user@domain: a bare user gets the realm
    ctl.methods.cfg = dataclasses.replace(
        ctl.cfg, registrar=SimpleNamespace(use_domain=True, case_sensitive=False))
    ctl.register("carol@kampx.test", "sip:carol@10.0.0.9")
    assert rpc(ctl, "ul.lookup", {"aor": "carol"})["aor"] == "carol@kampx.test"
    assert rpc(ctl, "ul.lookup", {"aor": "sip:Carol@KAMPX.test"})["aor"] == "carol@kampx.test"
    assert rpc_error(ctl, "ul.lookup", {"aor": "carol@other.test"}).code == 404


def test_ul_add_rm_contact_rm(ctl):
    c = rpc(ctl, "ul.add", {"aor": "dave", "contact": "sip:dave@10.0.0.4:5070"})
    assert c["expires"] == 0 and c["q"] is None and c["cseq"] == 1 and c["callid"]
    assert c["socket"] == "" and c["received"] == ""
    # same contact again: replaced, not duplicated; with expires, q, path, flags
    c2 = rpc(ctl, "ul.add", {"aor": "dave", "contact": "sip:dave@10.0.0.4:5070", "expires": 60,
                             "q": 0.25, "path": "<sip:p1;lr>", "flags": 4})
    assert 55 < c2["expires"] - time.time() <= 60 and c2["q"] == 0.25
    assert c2["path"] == "<sip:p1;lr>" and c2["flags"] == 4 and c2["callid"] != c["callid"]
    rpc(ctl, "ul.add", {"aor": "dave", "contact": "sip:dave@10.0.0.5"})
    assert len(rpc(ctl, "ul.lookup", {"aor": "dave"})["contacts"]) == 2
    assert rpc(ctl, "ul.rm_contact", {"aor": "dave", "contact": "sip:dave@10.0.0.5"}) == {"removed": 1}
    e = rpc_error(ctl, "ul.rm_contact", {"aor": "dave", "contact": "sip:dave@10.0.0.5"})
    assert (e.code, e.message) == (404, "Contact not found")
    e = rpc_error(ctl, "ul.rm_contact", {"aor": "eve", "contact": "sip:eve@10.0.0.5"})
    assert (e.code, e.message) == (404, "AOR not found")
    assert rpc(ctl, "ul.rm", {"aor": "dave"}) == {"removed": 1}
    e = rpc_error(ctl, "ul.rm", {"aor": "dave"})
    assert (e.code, e.message) == (404, "AOR not found")


@pytest.mark.parametrize("params,name", [
    ({"aor": "x", "contact": "http://x"}, "contact"),
    ({"aor": "x", "contact": "sip:"}, "contact"),
    ({"aor": "x", "contact": "sip:x@h", "expires": -1}, "expires"),
    ({"aor": "x", "contact": "sip:x@h", "expires": "10"}, "expires"),
    ({"aor": "x", "contact": "sip:x@h", "q": 1.5}, "q"),
    ({"aor": "x", "contact": "sip:x@h", "q": True}, "q"),
    ({"aor": "x"}, "contact"),
    ({"aor": "x", "contact": "sip:x@h", "color": 1}, "color"),
])
def test_ul_add_invalid(ctl, params, name):
    e = rpc_error(ctl, "ul.add", params)
    assert e.code == -32602 and f"'{name}'" in e.message


def test_ul_add_table_full():
    with InProcessCtl(capacity=2) as ctl:
        rpc(ctl, "ul.add", {"aor": "a", "contact": "sip:a@h"})
        rpc(ctl, "ul.add", {"aor": "b", "contact": "sip:b@h"})
        e = rpc_error(ctl, "ul.add", {"aor": "c", "contact": "sip:c@h"})
        assert (e.code, e.message) == (500, "usrloc table full")


def test_ul_dump_pages_every_aor_exactly_once():
    n = 20000
    with InProcessCtl(capacity=2 * n) as ctl:
        for i in range(n):
            ctl.register(f"u{i}", f"sip:u{i}@10.1.{i % 250}.1", callid=f"c{i}")
            if i % 10 == 0:
                ctl.register(f"u{i}", f"sip:u{i}@10.2.{i % 250}.1", callid=f"d{i}")
        seen = {}
        cursor, pages = None, 0
        while True:
            params = {"limit": 300} if cursor is None else {"limit": 300, "cursor": cursor}
            page = rpc(ctl, "ul.dump", params)
            pages += 1
            # a page is bounded: at most limit AORs plus the rest of its last hash bucket
            assert len(page["aors"]) <= 300 + 8
            for a in page["aors"]:
                assert a["aor"] not in seen and a["contacts"]
                seen[a["aor"]] = len(a["contacts"])
            if page["next"] is None:
                break
            assert page["next"] != cursor
            cursor = page["next"]
        assert len(seen) == n and pages >= n // 308
        assert sum(seen.values()) == n + n // 10
        # the client's own loop sees the same
        assert sum(1 for _ in ControlClient(ctl.sock_path).dump_aors(1000)) == n


def test_ul_dump_bad_params(ctl):
    for params, name in (({"limit": 0}, "limit"), ({"limit": 10001}, "limit"),
                         ({"cursor": "abc"}, "cursor"), ({"cursor": -3}, "cursor"),
                         ({"page": 1}, "page")):
        e = rpc_error(ctl, "ul.dump", params)
        assert e.code == -32602 and f"'{name}'" in e.message
    assert rpc(ctl, "ul.dump", {"cursor": 10 ** 9}) == {"aors": [], "next": None}


def test_ul_without_location_table(ctl):
    ctl.shared.location = None
    e = rpc_error(ctl, "ul.dump")
    assert e.code == 500 and "location table" in e.message


# -- permissions ----------------------------------------------------------------------------

def test_address_reload_and_dump(ctl):
    assert rpc(ctl, "permissions.addressDump") == {"generation": 0, "rows": []}
    with open_storage(ctl.cfg) as st:
        st.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
        st.addresses.add(1, "2001:db8::", 32, 5060, "")
    r = rpc(ctl, "permissions.addressReload")
    assert r == {"rows": 2, "generation": 1}
    assert rpc(ctl, "permissions.addressDump") == {"generation": 1, "rows": [
        {"grp": 200, "ip_addr": "127.0.0.3", "mask": 32, "port": 0, "tag": "carrier"},
        {"grp": 1, "ip_addr": "2001:db8::", "mask": 32, "port": 5060, "tag": ""}]}
    assert ctl.shared.permissions.allow(200, "127.0.0.3", 5099)
    # a second reload within RELOAD_DELTA: busy, with the time to wait
    e = rpc_error(ctl, "permissions.addressReload")
    assert e.code == 503 and 0 < e.data["retry_after"] <= 1.0
    assert "try again in" in e.message
    time.sleep(e.data["retry_after"])
    assert rpc(ctl, "permissions.addressReload")["generation"] == 2


def test_address_reload_bad_row_keeps_table(ctl):
    with open_storage(ctl.cfg) as st:
        st.addresses.add(200, "127.0.0.3", 32, 0, "carrier")
    rpc(ctl, "permissions.addressReload")
    with open_storage(ctl.cfg) as st:
        with st._db.write() as conn:    # a row kampxctl would have refused
            conn.execute("INSERT INTO address (grp, ip_addr, mask, port, tag) "
                         "VALUES (1, '10.0.0.300', 32, 0, '')")
    time.sleep(1.05)
    e = rpc_error(ctl, "permissions.addressReload")
    assert e.code == 500 and "10.0.0.300" in e.message
    assert rpc(ctl, "permissions.addressDump")["generation"] == 1


# -- core and statistics --------------------------------------------------------------------

def test_core_uptime_version_psx(ctl):
    up = rpc(ctl, "core.uptime")
    assert abs(up["now"] - time.time()) < 2 and up["up_since"] == ctl.started
    assert up["uptime"] == pytest.approx(up["now"] - up["up_since"])
    v = rpc(ctl, "core.version")
    assert v["name"] == "kampx" and v["version"] and v["python"].count(".") == 2
    ps = rpc(ctl, "core.psx")
    assert ps[0]["pid"] == os.getpid() and ps[0]["idx"] == 0
    assert ps[0]["rss_bytes"] > 1 << 20 and ps[0]["cpu_percent"] >= 0


def test_statistics_names_and_reset(ctl):
    rows = ctl.shared.counters
    rows.add(0, RCV_REQUESTS.col("INVITE"), 5)
    rows.add(3, RCV_REQUESTS.col("INVITE"), 2)      # another worker's row
    rows.add(1, RCV_REQUESTS.col("BYE"), 4)
    rows.add(0, SL_REPLIES.col(404), 3)
    rows.add(0, SL_REPLIES.col(487), 1)
    rows.add(0, FINAL_REPLIES.col("2xx"), 6)
    rows.add(2, ACTIVE_TRANSACTIONS.base, 9)
    ctl.register("alice", "sip:alice@h1", callid="x")
    ctl.register("alice", "sip:alice@h2", callid="y")
    st = rpc(ctl, "stats.get_statistics")
    assert st["core"]["rcv_requests_invite"] == 7 and st["core"]["rcv_requests"] == 11
    assert st["sl"]["404_replies"] == 3 and st["sl"]["4xx_replies"] == 4
    assert st["sl"]["487_replies"] == 1 and "488_replies" not in st["sl"]
    assert st["sl"]["200_replies"] == 0 and st["sl"]["sent_replies"] == 4
    assert st["tm"]["2xx_transactions"] == 6 and st["tm"]["active_transactions"] == 9
    assert st["usrloc"]["registered_users"] == 1 and st["usrloc"]["location-contacts"] == 2
    assert rpc(ctl, "stats.get_statistics", {"group": "sl"}).keys() == {"sl"}
    e = rpc_error(ctl, "stats.get_statistics", {"group": "nope"})
    assert (e.code, e.message) == (404, "no such statistics group: nope")

    assert rpc(ctl, "stats.reset_statistics", {"group": "core", "name": "rcv_requests_bye"}) == {"reset": 1}
    core = rpc(ctl, "stats.get_statistics", {"group": "core"})["core"]
    assert core["rcv_requests_bye"] == 0 and core["rcv_requests_invite"] == 7
    n = rpc(ctl, "stats.reset_statistics")["reset"]
    assert n > 100
    st = rpc(ctl, "stats.get_statistics")
    assert st["core"]["rcv_requests"] == 0 and st["sl"]["sent_replies"] == 0
    assert st["tm"]["active_transactions"] == 9            # gauges are left alone
    # the shared rows, which /metrics exports, never went down
    assert rows.column_sums()[RCV_REQUESTS.col("INVITE")] == 7
    rows.add(1, RCV_REQUESTS.col("INVITE"), 1)
    assert rpc(ctl, "stats.get_statistics", {"group": "core"})["core"]["rcv_requests_invite"] == 1
    assert rpc_error(ctl, "stats.reset_statistics", {"group": "core", "name": "nope"}).code == 404
    assert rpc_error(ctl, "stats.reset_statistics", {"group": "nope"}).code == 404
