"""The read side of accounting: the acc.* control methods (kampx/control/rpc_acc.py) and
`kampxctl acc cdrs|list|summary`, over rows put straight into the proxy's SQLite database
(as the db writer, or Kamailio-style SQL, leaves them)."""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ops"))

from ctlkit import InProcessCtl, kampxctl  # noqa: E402
from kampx.control.client import ControlClient, RpcError  # noqa: E402
from kampx.db import open_storage  # noqa: E402
from kampx.db.base import ACC_CDRS_COLUMNS, ACC_COLUMNS  # noqa: E402

# the tables' columns as the storage declares them (their truth is test_acc_storage.py's)
CDR_KEYS = tuple(c[0] for c in ACC_CDRS_COLUMNS)
ACC_KEYS = tuple(c[0] for c in ACC_COLUMNS)


def utc(epoch: float) -> str:
    """The UTC text of the tables: 'YYYY-MM-DD HH:MM:SS.mmm'."""
    seconds, millis = divmod(round(epoch * 1000), 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}"


@pytest.fixture
def ctl():
    with InProcessCtl() as c:
        open_storage(c.cfg).close()  # the schema, as the supervisor creates it at start
        c.db = c.cfg.db_path()
        yield c


def put_cdrs(ctl, *cdrs: dict) -> None:
    """Rows written with plain SQL into the proxy's database, times as UTC text."""
    conn = sqlite3.connect(ctl.db)
    with conn:
        for c in cdrs:
            conn.execute(
                f"INSERT INTO acc_cdrs ({', '.join(CDR_KEYS)}) VALUES ({', '.join('?' * len(CDR_KEYS))})",
                tuple(
                    utc(c[k])
                    if k.endswith("_time")
                    else (f"{c[k]:03d}" if k == "sip_code" else c[k])
                    for k in CDR_KEYS
                ),
            )
    conn.close()


def put_records(ctl, table: str, *rows: dict) -> None:
    conn = sqlite3.connect(ctl.db)
    with conn:
        for r in rows:
            conn.execute(
                f"INSERT INTO {table} ({', '.join(ACC_KEYS)}) VALUES ({', '.join('?' * len(ACC_KEYS))})",
                tuple(
                    utc(r[k]) if k == "time" else (f"{r[k]:03d}" if k == "sip_code" else r[k])
                    for k in ACC_KEYS
                ),
            )
    conn.close()


def cdr(
    callid: str,
    start: float,
    direction: str = "outbound",
    code: int = 200,
    duration: float = 61.5,
    end_reason: str = "caller",
    **kw,
) -> dict:
    row = dict(
        start_time=start,
        end_time=start + duration,
        duration=duration,
        setup_time=start - 3.25,
        callid=callid,
        from_tag="ft-" + callid,
        to_tag="tt-" + callid,
        src_user="alice",
        src_domain="kampx.test",
        src_ip="127.0.0.9",
        dst_ouser="+4930555",
        dst_user="4930555",
        dst_domain="gw.example",
        direction=direction,
        sip_code=code,
        sip_reason="OK" if code == 200 else "Busy Here",
        end_reason=end_reason,
    )
    row.update(kw)
    return row


def record(callid: str, when: float, code: int = 486, **kw) -> dict:
    row = dict(
        method="INVITE",
        from_tag="f",
        to_tag="t",
        callid=callid,
        sip_code=code,
        sip_reason="Busy Here",
        time=when,
        src_user="bob",
        src_domain="kampx.test",
        src_ip="127.0.0.8",
        dst_ouser="carol",
        dst_user="carol",
        dst_domain="kampx.test",
        direction="local",
    )
    row.update(kw)
    return row


def ms(epoch: float) -> float:
    return round(epoch, 3)


def without_ids(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "id"} for r in rows]


def as_read(row: dict) -> dict:
    """What the read side returns for a row written by put_*: times to the millisecond."""
    return {k: ms(v) if k == "time" or k.endswith("_time") else v for k, v in row.items()}


@pytest.fixture
def calls(ctl):
    now = time.time()
    rows = [
        cdr("c-out", now - 120),
        cdr("c-in", now - 600, direction="inbound"),
        cdr("c-busy", now - 1800, direction="inbound", code=486, duration=0.0, end_reason="failed"),
        cdr("c-local", now - 3000, direction="local", duration=12.25),
    ]
    old = cdr("c-old", now - 7200)  # outside the last hour
    put_cdrs(ctl, rows[2], old, rows[0], rows[3], rows[1])
    return rows


# -- kampxctl acc cdrs --------------------------------------------------------------------------


def test_cdrs_json_returns_exactly_the_rows_of_the_hour(ctl, calls):
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--since", "1h", "--json")
    assert r.returncode == 0, r.stderr
    result = json.loads(r.stdout)
    assert without_ids(result["rows"]) == [as_read(c) for c in calls]  # newest first
    assert all(isinstance(row["id"], int) for row in result["rows"])
    assert abs(result["since"] - (time.time() - 3600)) < 30


def test_cdrs_text_one_aligned_line_per_call(ctl, calls, monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Kolkata")  # kampxctl's: the start times are UTC all the same
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--since", "90m")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "start_time",
        "duration",
        "direction",
        "caller",
        "callee",
        "code",
        "end_reason",
        "callid",
    ]
    assert len(lines) == 1 + len(calls)
    for line, c in zip(lines[1:], calls):
        # the start as stored (to the millisecond) and read back, shown to the second
        start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms(c["start_time"])))
        assert line.split() == [
            start,
            f"{c['duration']:.3f}",
            c["direction"],
            "alice@kampx.test",
            "+4930555",
            str(c["sip_code"]),
            c["end_reason"],
            c["callid"],
        ]
        # aligned: every column starts where its header does
        for name in ("direction", "caller", "callee", "end_reason", "callid"):
            col = lines[0].index(name)
            assert line[col - 1] == " " and line[col] != " ", (name, line)


def test_cdrs_direction_and_limit(ctl, calls):
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--direction", "inbound", "--json")
    assert [row["callid"] for row in json.loads(r.stdout)["rows"]] == ["c-in", "c-busy"]
    r = kampxctl(ctl.config_path, "--json", "acc", "cdrs", "--since", "2d", "--limit", "2")
    assert [row["callid"] for row in json.loads(r.stdout)["rows"]] == ["c-out", "c-in"]
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--since", "3h", "--json")
    assert [row["callid"] for row in json.loads(r.stdout)["rows"]][-1] == "c-old"
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--since", "60")  # seconds
    assert r.returncode == 0 and r.stdout.strip() == "(no CDRs in that time)"


@pytest.mark.parametrize("span", ["1x", "-5", "0", "h", "1h30", ""])
def test_a_bad_since_is_one_line_and_fails(ctl, span):
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--since", span)
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1
    assert f"'{span}' is not a time span" in r.stderr


def test_bad_limit_is_one_line(ctl):
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--limit", "0")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip() == "invalid params: 'limit' must be an integer 1..10000"


# -- kampxctl acc list and summary --------------------------------------------------------------


def test_list_acc_and_missed_calls(ctl):
    now = time.time()
    put_records(
        ctl,
        "acc",
        record("a1", now - 30, code=200, sip_reason="OK"),
        record("a2", now - 20, code=200, sip_reason="OK", method="BYE"),
    )
    put_records(
        ctl,
        "missed_calls",
        record("m1", now - 40),
        record("m2", now - 10),
        record("m1", now - 5000),
    )
    r = kampxctl(ctl.config_path, "acc", "list", "--json")
    assert [(x["callid"], x["method"]) for x in json.loads(r.stdout)["rows"]] == [
        ("a2", "BYE"),
        ("a1", "INVITE"),
    ]
    r = kampxctl(ctl.config_path, "acc", "list", "--missed", "--json")
    result = json.loads(r.stdout)
    assert result["table"] == "missed_calls"
    assert without_ids(result["rows"]) == [
        as_read(record("m2", now - 10)),
        as_read(record("m1", now - 40)),
    ]
    r = kampxctl(
        ctl.config_path, "acc", "list", "--missed", "--callid", "m1", "--since", "2h", "--json"
    )
    assert [ms(x["time"]) for x in json.loads(r.stdout)["rows"]] == [ms(now - 40), ms(now - 5000)]
    r = kampxctl(ctl.config_path, "acc", "list", "--missed", "--limit", "1")
    lines = r.stdout.splitlines()
    assert lines[0].split() == [
        "time",
        "method",
        "code",
        "reason",
        "direction",
        "caller",
        "callee",
        "callid",
    ]
    assert lines[1].split()[1:] == [
        "INVITE",
        "486",
        "Busy",
        "Here",
        "local",
        "bob@kampx.test",
        "carol",
        "m2",
    ]
    assert len(lines) == 2


def test_summary_asr_acd_minutes(ctl, calls):
    r = kampxctl(ctl.config_path, "acc", "summary", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["directions"]["inbound"] == {
        "calls": 2,
        "answered": 1,
        "duration": 61.5,
        "asr": 50.0,
        "acd": 61.5,
        "minutes": 1.0,
    }
    assert s["directions"]["local"]["duration"] == 12.25
    assert s["total"] == {
        "calls": 4,
        "answered": 3,
        "duration": 135.25,
        "asr": 75.0,
        "acd": 45.1,
        "minutes": 2.3,
    }
    r = kampxctl(ctl.config_path, "acc", "summary")
    lines = r.stdout.splitlines()
    assert lines[0].startswith("calls that started since ")
    assert lines[1].split() == ["direction", "calls", "answered", "ASR", "ACD_s", "minutes"]
    assert [ln.split() for ln in lines[2:]] == [
        ["inbound", "2", "1", "50.0%", "61.5", "1.0"],
        ["local", "1", "1", "100.0%", "12.2", "0.2"],
        ["outbound", "1", "1", "100.0%", "61.5", "1.0"],
        ["total", "4", "3", "75.0%", "45.1", "2.3"],
    ]
    r = kampxctl(ctl.config_path, "acc", "summary", "--since", "1m", "--json")
    assert json.loads(r.stdout)["total"]["calls"] == 0


# -- the control methods -------------------------------------------------------------------------


def rpc(ctl, method, params=None):
    return ControlClient(ctl.sock_path).call(method, params)


def test_methods_are_listed_and_read_the_database(ctl, calls):
    assert {"acc.cdrs", "acc.list", "acc.summary"} <= set(rpc(ctl, "system.listMethods"))
    got = rpc(ctl, "acc.cdrs", {"since_s": 3600, "direction": "outbound"})
    assert [r["callid"] for r in got["rows"]] == ["c-out"]
    assert rpc(ctl, "acc.cdrs")["rows"][0]["callid"] == "c-out"  # defaults: the last hour
    assert rpc(ctl, "acc.list", {"table": "missed_calls"})["rows"] == []


@pytest.mark.parametrize(
    "method, params, message",
    [
        ("acc.cdrs", {"limit": 10001}, "'limit' must be an integer 1..10000"),
        ("acc.cdrs", {"since_s": -1}, "'since_s' must be a number of seconds"),
        ("acc.cdrs", {"since_s": "1h"}, "'since_s' must be a number of seconds"),
        (
            "acc.cdrs",
            {"direction": "sideways"},
            "'direction' must be one of inbound, outbound, local",
        ),
        ("acc.cdrs", {"table": "acc"}, "unknown parameter 'table'"),
        ("acc.list", {"table": "acc_cdrs"}, "'table' must be one of acc, missed_calls"),
        ("acc.list", {"callid": 7}, "'callid' must be a string"),
        ("acc.summary", {"limit": 5}, "unknown parameter 'limit'"),
    ],
)
def test_bad_params(ctl, method, params, message):
    with pytest.raises(RpcError) as e:
        rpc(ctl, method, params)
    assert e.value.code == -32602 and message in e.value.message


def test_a_database_error_is_one_line(ctl):
    with open(ctl.db, "wb") as f:
        f.write(b"this is not a database file, not at all" * 100)
    for suffix in ("-wal", "-shm"):
        if os.path.exists(ctl.db + suffix):
            os.unlink(ctl.db + suffix)
    with pytest.raises(RpcError) as e:
        rpc(ctl, "acc.cdrs")
    assert e.value.code == 500 and e.value.message == f"{ctl.db} is not an SQLite database"
    r = kampxctl(ctl.config_path, "acc", "summary")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == f"{ctl.db} is not an SQLite database\n"


def test_without_a_running_proxy_kampxctl_reads_the_database(ctl, calls):
    """The records are in the database whether or not the proxy runs."""
    ctl.server.close()
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--json")
    assert r.returncode == 0, r.stderr
    assert without_ids(json.loads(r.stdout)["rows"]) == [as_read(c) for c in calls]
    r = kampxctl(ctl.config_path, "acc", "cdrs", "--limit", "0")
    assert (r.returncode, r.stderr) == (1, "invalid params: 'limit' must be an integer 1..10000\n")


# -- a real proxy ----------------------------------------------------------------------------------


@pytest.mark.wire
@pytest.mark.timeout(120)
def test_a_running_proxy_answers_from_its_database():
    """The real ctl process (kampx run): kampxctl's acc commands go through it and read the
    rows put into the proxy's own SQLite file."""
    from kampxproc import KampxProcess

    with KampxProcess(children=1) as px:
        sock = os.path.join(px.workdir, "kampx.sock")
        deadline = time.monotonic() + 10  # the ctl process binds right after fork
        while not os.path.exists(sock) and time.monotonic() < deadline:
            time.sleep(0.05)
        db = os.path.join(px.workdir, "kampx.db")
        now = time.time()
        row = cdr("live-1", now - 30, direction="inbound")
        put_cdrs(type("Ctl", (), {"db": db}), row)
        methods = ControlClient(sock).call("system.listMethods")
        assert "acc.cdrs" in methods  # so kampxctl below is answered by the proxy
        r = kampxctl(px.config_path, "acc", "cdrs", "--since", "1h", "--json")
        assert r.returncode == 0, r.stderr + px.log_tail()
        assert without_ids(json.loads(r.stdout)["rows"]) == [as_read(row)]
        r = kampxctl(px.config_path, "acc", "summary", "--since", "5m")
        assert r.returncode == 0, r.stderr
        assert r.stdout.splitlines()[2].split() == ["inbound", "1", "1", "100.0%", "61.5", "1.0"]
