"""The tracked-dialog table and the accounting records, without a network: what a dialog's
life writes (kampx/dialog_table.py, kampx/dialog.py, kampx/acc.py)."""

from __future__ import annotations

import json
import marshal
import os
import time
from types import SimpleNamespace

import parsedkit
import pytest

from kampx import _records as records
from kampx import dialog as D
from kampx import stats as S
from kampx._shm import CounterRows, KeyIndex
from kampx.acc import (
    CALL_DURATION,
    CALLS_ANSWERED,
    CALLS_ATTEMPTED,
    CALLS_FAILED,
    RECORDS_DROPPED,
    RECORDS_WRITTEN,
    Accounting,
    AccSink,
    decode_record,
    record_columns,
)
from kampx.config import AccConfig, DialogConfig
from kampx.db.base import acc_columns
from kampx.db.sqlite import SqliteStorage
from kampx.dialog_table import ANSWER_FIELDS, PROBE, SETUP_FIELDS, DialogTable, key_hash
from kampx.dialog_table import decode as decode_dialog

ACC = AccConfig()
LOG, MISSED, FAILED, INBOUND, OUTBOUND = (1 << f for f in (1, 2, 3, 4, 5))


def Req(method="INVITE", call_id="c1", from_tag="ft", to_tag=None, flags=0, manage=True,
        cseq_num=1):
    """A parsed request from the carrier for alice, its Request-URI rewritten to her
    registered address (as lookup() leaves it), marked with `flags` and, with `manage`,
    dlg_manage()."""
    msg = parsedkit.request(method, call_id, from_tag, to_tag, cseq=cseq_num)
    msg.set_ruri("sip:alice@198.51.100.7")
    msg.rr_added = True
    msg.dlg_manage = manage
    msg.flags = flags
    return msg


def Reply(code=200, to_tag="tt", headers=()):
    """alice's reply, through us (our Record-Route)."""
    return parsedkit.reply(code, to_tag, reason=REASONS[code], headers=headers)


REASONS = {180: "Ringing", 200: "OK"}


@pytest.fixture
def env():
    r, w = D.journal_pipe()
    rows = CounterRows(1, S.ncols())
    stats = S.Stats(rows, 0)
    journal = D.Journal(w, stats)
    table = DialogTable(64)
    dialogs = D.Dialogs(
        KeyIndex(1000, 7),
        journal,
        DialogConfig(linger_s=30, lifetime_s=100),
        60.0,
        stats,
        table=table,
        acc=Accounting(ACC, journal, stats),
    )
    sink = AccSink(ACC)

    def records():
        journal.flush()
        got, _ = D.read_journal(r)
        rows = []
        for op, k, _, _ in got:
            if op == D.OP_ACC:
                row = decode_record(k)
                # what the db writer inserts, read without the dict: the same values
                assert record_columns(k) == acc_columns(row)
                rows.append(row)
        return rows

    yield SimpleNamespace(
        dialogs=dialogs,
        table=table,
        records=records,
        sink=sink,
        r=r,
        count=lambda col: rows.get(0, col),
    )
    os.close(r)
    os.close(w)


def establish(d, flags=LOG | MISSED | INBOUND):
    req = Req(flags=flags)
    k, state = d.start(req)
    assert state & D.TRACKED
    state = d.on_reply(k, state, 180, Reply(180))
    state = d.on_reply(k, state, 200, Reply())
    return req, k, state


def test_a_tracked_call_lives_in_the_table_from_invite_to_bye(env):
    d = env.dialogs
    req = Req(flags=LOG | INBOUND)
    k, state = d.start(req)
    assert state == D.PENDING | D.TRACKED
    assert env.table.counts()[:3] == (1, 0, 0)
    state = d.on_reply(k, state, 180, Reply(180))
    assert state == D.EARLY | D.TRACKED and env.table.counts()[:3] == (1, 1, 0)
    state = d.on_reply(k, state, 200, Reply())
    assert state == D.CONFIRMED | D.TRACKED and env.table.counts()[:3] == (1, 0, 1)
    st, _, info = env.table.get(k)
    assert (
        st == D.CONFIRMED
        and info["to_tag"] == "tt"
        and info["callee_addr"] == ["198.51.100.7", 5060]
    )
    assert info["direction"] == "inbound" and info["dst_ouser"] == "alice"
    bye = Req("BYE", to_tag="tt", flags=0)
    assert d.admit(bye)
    assert env.table.get(k) is None and env.table.counts()[:3] == (0, 0, 0)
    (cdr,) = env.records()
    assert cdr["t"] == "acc_cdrs" and cdr["end_reason"] == "caller" and cdr["sip_code"] == 200
    assert 0 <= cdr["duration"] < 1 and cdr["direction"] == "inbound"
    assert env.count(CALL_DURATION.base + CALL_DURATION.series.index("inbound") * 14 + 13) == 1
    # a retransmitted BYE ends nothing twice
    assert d.admit(Req("BYE", to_tag="tt")) and env.records() == []


def test_the_callee_side_bye_is_told_apart(env):
    d = env.dialogs
    _, k, _ = establish(d)
    bye = Req("BYE", from_tag="tt", to_tag="ft")
    assert d.admit(bye)
    (cdr,) = env.records()
    assert cdr["end_reason"] == "callee"


def test_a_failed_call_gives_a_failed_cdr_and_a_canceled_one_says_so(env):
    d = env.dialogs
    for code, why in ((486, "failed"), (487, "canceled")):
        k, state = d.start(Req(call_id=f"c{code}", flags=LOG))
        d.failed(k, state, code, "Busy Here")
        assert env.table.get(k) is None
        (cdr,) = env.records()
        assert (cdr["end_reason"], cdr["sip_code"], cdr["duration"]) == (why, code, 0.0)


def test_an_untracked_dialog_uses_no_slot(env):
    k, state = env.dialogs.start(Req(manage=False))
    assert state == D.PENDING and env.table.counts()[0] == 0


def test_transaction_records_follow_the_flags(env):
    acc = env.dialogs.acc
    acc.final(Req(flags=LOG | MISSED), 200, "OK", "tt")
    acc.final(Req(flags=LOG | MISSED), 486, "Busy Here", "tt")
    acc.final(Req(flags=LOG | MISSED | FAILED | OUTBOUND), 503, "Service Unavailable", "tt")
    acc.final(Req("BYE", to_tag="x", flags=LOG | FAILED), 481, "No Such Call", None)
    got = [(r["t"], r["method"], r["sip_code"], r["direction"]) for r in env.records()]
    assert got == [
        ("acc", "INVITE", 200, "local"),
        ("missed_calls", "INVITE", 486, "local"),
        ("acc", "INVITE", 503, "outbound"),
        ("missed_calls", "INVITE", 503, "outbound"),
        ("acc", "BYE", 481, "local"),
    ]
    assert env.count(CALLS_ATTEMPTED.col("local")) == 2
    assert env.count(CALLS_ANSWERED.col("local")) == 1
    assert env.count(CALLS_FAILED.col(("outbound", "5xx"))) == 1


def test_a_row_record_is_a_tuple_that_decodes_to_the_whole_row(env):
    import marshal

    acc = env.dialogs.acc
    acc.final(Req(flags=LOG | INBOUND), 200, "OK", "tt")
    (row,) = env.records()
    assert list(row) == [
        "t",
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
    assert row["t"] == "acc" and row["to_tag"] == "tt" and row["callid"] == "c1"
    assert (row["src_user"], row["src_domain"], row["src_ip"]) == (
        "+15550100",
        "carrier.example",
        "203.0.113.10",
    )
    assert (row["dst_ouser"], row["dst_user"], row["dst_domain"], row["direction"]) == (
        "alice",
        "alice",
        "198.51.100.7",
        "inbound",
    )
    # what went through the pipe is the compact form; a dict (an older writer) still reads
    assert isinstance(marshal.loads(marshal.dumps(acc._row("acc", Req(), 200, "OK", None))), tuple)
    assert decode_record(marshal.dumps(row)) == row
    assert decode_record(marshal.dumps(("row", "acc"))) is None  # malformed: dropped


def test_expired_dialogs_end_with_a_timeout_cdr_and_stuck_setups_as_lost(env):
    d = env.dialogs
    _, k, _ = establish(d)
    k2, _ = d.start(Req(call_id="c2"))
    d.lifetime = 0.0
    d.ttl_setup = 0.0
    env.table.set_state(k, D.CONFIRMED, time.time() - 1)
    env.table.set_state(k2, D.PENDING, time.time() - 1)
    assert d.expire() == 2
    reasons = sorted(r["end_reason"] for r in env.records())
    assert reasons == ["lost", "timeout"]
    assert env.table.counts()[0] == 0


def test_a_tracked_dialog_is_written_as_two_tuples_read_back_as_one_dict(env):
    d = env.dialogs
    req, k, _ = establish(d)
    slots_get = env.table.slots.take(key_hash(k))  # the records as they sit in the slot
    _, direction, answered, setup, answer = slots_get
    # both in kampx/_records.pyx's compact form (lists included), not marshal's
    assert setup[0] == answer[0] == records.MAGIC
    assert isinstance(records.loads(setup), tuple) and isinstance(records.loads(answer), tuple)
    assert len(records.loads(setup)) == len(SETUP_FIELDS)
    assert len(records.loads(answer)) == len(ANSWER_FIELDS)
    info = decode_dialog(setup, answer)
    assert info == {
        "callid": "c1",
        "from_tag": "ft",
        "to_tag": "tt",  # the 2xx's record, read second, fills it in
        "from": "<sip:+15550100@carrier.example>;tag=ft",
        "to": "<sip:alice@kampx.test>;tag=tt",
        "ruri": "sip:alice@kampx.test",
        "caller_contact": "sip:c@203.0.113.10",
        "caller_addr": ["203.0.113.10", 5060],
        "socket": 0,
        "caller_cseq": 1,
        "setup": info["setup"],
        "src_user": "+15550100",
        "src_domain": "carrier.example",
        "src_ip": "203.0.113.10",
        "dst_ouser": "alice",
        "dst_user": "alice",
        "dst_domain": "198.51.100.7",
        "direction": "inbound",
        "callee_contact": "sip:alice@198.51.100.7",
        "callee_addr": ["198.51.100.7", 5060],
        "callee_socket": 0,
        "callee_route": [],
        "caller_route": [],
        "answered": answered,
        "code": 200,
        "reason": "OK",
    }  # no session_expires: the 2xx set none
    assert direction == 0 and info["setup"] <= answered
    # a session interval is kept; a record of another shape (a torn write) reads as nothing
    values = records.loads(answer)[:-1] + (1800,)
    assert decode_dialog(setup, records.dumps(values))["session_expires"] == 1800
    assert decode_dialog(setup, marshal.dumps(values))["session_expires"] == 1800  # older
    assert decode_dialog(records.dumps(("c1", "ft"))) == {}


def test_an_oversized_tuple_record_is_shed_by_name_too():
    t = DialogTable(4)
    values = dict.fromkeys(SETUP_FIELDS, "")
    values.update(caller_cseq=0, socket=0, setup=0.0)
    values.update(callid="c", src_user="alice", caller_contact="sip:" + "x" * 1500)
    assert t.create(b"k", D.CONFIRMED, time.time() + 60, tuple(values.values()))
    got = t.get(b"k")[2]
    assert got["partial"] and "caller_contact" not in got
    assert got["callid"] == "c" and got["src_user"] == "alice"


def test_the_table_is_bounded_and_slots_come_back():
    t = DialogTable(8)
    for i in range(8):
        assert t.create(f"k{i}".encode(), D.PENDING, time.time() + 60, {"n": i})
    assert not t.create(b"k8", D.PENDING, time.time() + 60, {})
    assert t.counts()[3] == 1
    assert t.remove(b"k3")[1]["n"] == 3
    assert t.remove(b"k3") is None  # exactly one caller gets a dialog's end
    assert t.create(b"k8", D.PENDING, time.time() + 60, {"n": 8})
    assert t.get(b"k8")[2]["n"] == 8
    assert sorted(i["n"] for _, _, i in t.entries()) == [0, 1, 2, 4, 5, 6, 7, 8]


def test_collisions_probe_past_tombstones():
    t = DialogTable(16)
    keys = []
    n = 0
    while len(keys) < 3:  # three keys with the same home slot
        k = f"x{n}".encode()
        n += 1
        if key_hash(k) % t.nslots == 5:
            keys.append(k)
    for k in keys:
        assert t.create(k, D.CONFIRMED, time.time() + 60, {"k": k.decode()})
    t.remove(keys[0])  # a tombstone in front of the others
    assert t.get(keys[2])[2]["k"] == keys[2].decode()
    t.expire(time.time())
    assert t.get(keys[1]) is not None and t.counts()[0] == 2
    assert PROBE >= 3


def test_an_oversized_dialog_sheds_its_route_sets_not_its_cdr_fields():
    t = DialogTable(4)
    info = {
        "callid": "c",
        "caller_route": [f"<sip:x{i};lr>" * 100 for i in range(3)],
        "src_user": "alice",
    }
    assert t.create(b"k", D.CONFIRMED, time.time() + 60, info)
    got = t.get(b"k")[2]
    assert got["partial"] and "caller_route" not in got and got["src_user"] == "alice"


def test_the_sink_writes_batches_and_logs_json_lines(tmp_path):
    path = tmp_path / "acc.jsonl"
    rows = CounterRows(1, S.ncols())
    sink = AccSink(AccConfig(log=str(path)), S.Stats(rows, 0))
    storage = SqliteStorage(str(tmp_path / "kampx.db"))
    sink.add(marshal.dumps({"t": "acc", "callid": "a"}))
    sink.add(b"not marshal")
    sink.add(marshal.dumps({"t": "nope", "callid": "x"}))  # logged, but no table holds it
    sink.add(marshal.dumps({"t": "acc_cdrs", "callid": "b", "start_time": 1.5e9}))
    assert sink.write(storage) == 2
    assert [r["callid"] for r in storage.acc.records("acc")] == ["a"]
    assert [r["callid"] for r in storage.acc.cdrs()] == ["b"]
    assert sink.write(storage) == 0
    storage.close()
    assert rows.get(0, RECORDS_DROPPED.base) == 2  # the garbage and the record of no table
    written = [rows.get(0, RECORDS_WRITTEN.col(t)) for t in ("acc", "missed_calls", "acc_cdrs")]
    assert written == [1, 0, 1]
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["callid"] for x in lines] == ["a", "x", "b"]
    os.rename(path, tmp_path / "acc.jsonl.1")  # logrotate
    time.sleep(1.05)
    sink.add(marshal.dumps({"t": "acc", "callid": "c"}))
    assert json.loads(path.read_text())["callid"] == "c"
    sink.close()


def test_a_failing_database_keeps_the_rows_for_the_next_round(tmp_path):
    """The batch that failed (its values already made storable, then the database went
    away) is written whole by the next round, its times as they were."""
    from kampx.db import StorageError
    from kampx.db.base import acc_params
    from kampx.db.sqlite import utc_text

    sink = AccSink(AccConfig())
    storage = SqliteStorage(str(tmp_path / "kampx.db"))
    real = storage.acc.insert_columns
    calls = []

    def insert_columns(rows):
        calls.append(len(rows))
        if len(calls) == 1:
            acc_params(rows, utc_text)  # made storable, then the connection is lost
            raise StorageError("database is locked")
        return real(rows)

    failing = SimpleNamespace(acc=SimpleNamespace(insert_columns=insert_columns))
    sink.add(marshal.dumps({"t": "acc", "callid": "a", "time": 1_700_000_000.25}))
    sink.add(marshal.dumps({"t": "acc_cdrs", "callid": "b", "start_time": 1_700_000_001.5}))
    with pytest.raises(StorageError):
        sink.write(failing)
    assert sink.write(failing) == 2 and calls == [2, 2]
    [row] = storage.acc.records("acc")
    [cdr] = storage.acc.cdrs()
    assert (row["callid"], row["time"]) == ("a", 1_700_000_000.25)
    assert (cdr["callid"], cdr["start_time"]) == ("b", 1_700_000_001.5)
    storage.close()


def test_a_full_pipe_holds_records_for_the_next_flush():
    r, w = D.journal_pipe()
    try:
        stats = S.Stats(CounterRows(1, S.ncols()), 0)
        j = D.Journal(w, stats)
        big = b"x" * 3000
        n = 0
        while True:  # fill the pipe
            j.write(D.OP_ACC, big)
            j.flush()
            n += 1
            if j.held:
                break
        got, left = D.read_journal(r)
        j.flush()  # room again: what was held goes
        more, _ = D.read_journal(r, left)
        assert len(got) + len(more) == n and not j.held
    finally:
        os.close(r)
        os.close(w)


def test_in_dialog_requests_refresh_the_end_and_remember_each_sides_cseq(env):
    d = env.dialogs
    _, k, _ = establish(d)
    _, before, _ = env.table.get(k)
    time.sleep(0.01)
    assert d.admit(Req("INFO", to_tag="tt", cseq_num=7))
    assert d.admit(Req("INFO", from_tag="tt", to_tag="ft", cseq_num=3))
    state, after, info = env.table.get(k)
    assert state == D.CONFIRMED and after > before
    assert (info["caller_cseq"], info["callee_cseq"]) == (7, 3)
    assert not env.table.answer(k, D.CONFIRMED, after, {"to_tag": "other"})  # a second 2xx
    assert env.table.get(k)[2]["to_tag"] == "tt"
    # ending it from outside (kampxctl dlg end): each side's CSeq for the BYEs, one CDR
    info = d.end_info(k, "ended")
    assert (info["caller_cseq"], info["callee_cseq"]) == (7, 3) and info["to_tag"] == "tt"
    assert d.end_info(k, "ended") is None and env.table.get(k) is None
    (cdr,) = env.records()
    assert cdr["end_reason"] == "ended"


def test_a_session_timer_sets_the_dialogs_end_and_only_refreshes_renew_it(env):
    d = env.dialogs
    req = Req(flags=LOG)
    k, state = d.start(req)
    ok = Reply(headers=("Session-Expires: 120;refresher=uac",))
    d.on_reply(k, state, 200, ok)
    _, expires, info = env.table.get(k)
    assert info["session_expires"] == 120 and 118 < expires - time.time() <= 120
    assert d.admit(Req("INFO", to_tag="tt", cseq_num=2))  # not a session refresh
    assert env.table.get(k)[1] == expires
    time.sleep(0.01)
    assert d.admit(Req("UPDATE", to_tag="tt", cseq_num=3))
    assert env.table.get(k)[1] > expires


def test_our_record_routes_split_the_route_sets_single_and_double():
    """The callee's side is above our Record-Route, the caller's below it; a request that
    crossed sockets carries two of ours (kampx/rr.py), and both stay out of either set."""
    from kampx.dialog import _own_record_route

    v6 = SimpleNamespace(rr_value="<sip:[::1]:5062;lr>", rr_double=b"<sip:[::1]:5062;r2=on;lr>")
    up, down = "<sip:up.example;lr>", "<sip:down.example;lr>"
    assert _own_record_route([up, v6.rr_value, down], v6) == (1, 2)
    double = [up, "<sip:[::1]:5062;r2=on;lr>", "<sip:127.0.0.9;r2=on;lr>", down]
    at, below = _own_record_route(double, v6)
    assert double[:at] == [up] and double[below:] == [down]
    assert _own_record_route([up, down], v6) == (-1, 0)


def test_party_values_of_a_parsed_request_follow_its_flags_and_request_uri(env):
    """On a real Message: the values are kept on the request for its next record, and made
    again when its flags or Request-URI changed (the cache must not hide the parser's
    acc_parties method, a name on the same object)."""
    from kampx._cparse import parse

    m = parse(
        b"INVITE sip:alice@kampx.test SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.10;branch=z9hG4bK1\r\n"
        b"From: <sip:+15550100@carrier.example>;tag=ft\r\nTo: <sip:alice@kampx.test>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    m.src = ("203.0.113.10", 5060)
    acc = env.dialogs.acc
    m.flags = LOG | INBOUND
    first = acc.party_values(m)
    assert first == (
        "+15550100", "carrier.example", "203.0.113.10", "alice", "alice", "kampx.test", "inbound"
    )
    assert acc.party_values(m) is first  # kept
    m.flags = LOG | OUTBOUND
    assert acc.party_values(m)[-1] == "outbound"
    m.set_ruri("sip:bob@198.51.100.7")
    assert acc.party_values(m)[3:6] == ("alice", "bob", "198.51.100.7")
    assert m.acc_parties()[3:] == ("bob", "198.51.100.7")  # still the parser's method


def test_an_accounting_record_is_journaled_as_write_would_and_a_too_big_one_dropped(env):
    """Journal.record (the accounting path, its head prebuilt) puts in the pipe exactly the
    bytes write(OP_ACC, ...) would; a record over MAX_DATA is refused and counted."""
    from kampx.acc import RECORDS_DROPPED

    r, w = D.journal_pipe()
    try:
        stats = S.Stats(CounterRows(1, S.ncols()), 0)
        a, b = D.Journal(w, stats), D.Journal(w, stats)
        data = marshal.dumps(("row", "acc", "INVITE"))
        assert a.record(data) and b.write(D.OP_ACC, data)
        a.flush()
        first = os.read(r, 1 << 16)
        b.flush()
        assert first == os.read(r, 1 << 16)
        os.write(w, first)
        assert D.read_journal(r) == ([(D.OP_ACC, data, 0, 0.0)], b"")
        assert not a.record(b"x" * (D.MAX_DATA + 1)) and a.record(b"x" * D.MAX_DATA)
    finally:
        os.close(r)
        os.close(w)
    acc = env.dialogs.acc
    acc.emit(("row", "x" * D.MAX_DATA))
    assert env.count(RECORDS_DROPPED.base) == 1 and env.records() == []


def test_a_2xx_whose_record_route_does_not_parse_still_confirms_the_call(env):
    """A callee's 2xx whose Record-Route does not parse (a reply's are read only when a
    dialog records them; a bad Contact is refused when the reply is parsed): the call is
    confirmed and its 2xx goes on (no exception for the worker to count as an internal
    error, the reply lost); the record has no route sets."""
    d = env.dialogs
    k, state = d.start(Req(flags=LOG | INBOUND))
    reply = parsedkit.reply(200, "tt", record_routes=("<sip:127.0.0.1;lr>", "<sip:broken;lr"))
    state = d.on_reply(k, state, 200, reply)
    assert state == D.CONFIRMED | D.TRACKED
    _, _, info = env.table.get(k)
    assert info["to_tag"] == "tt" and info["callee_contact"] == "sip:alice@198.51.100.7"
    assert info["callee_route"] == [] and info["caller_route"] == []


def test_a_histogram_observation_files_bucket_sum_and_count_of_its_series():
    """Family.observe (the call-duration histogram's way in): the first bucket whose bound
    is not below the value, the sum in the stored unit (ms) and the count, in the columns of
    the series asked for and no other."""
    rows = CounterRows(1, S.ncols())
    stats = S.Stats(rows, 0)
    fam = CALL_DURATION
    n = len(fam.buckets)
    outbound = fam.series.index("outbound")
    fam.observe(stats, outbound, 7.25)  # 7 250 ms: the bucket of 15 s (5 s is below it)
    base = fam.base + outbound * (n + 3)
    bucket = fam.buckets.index(15000)
    assert [rows.get(0, base + i) for i in range(n + 1)] == [int(i == bucket) for i in range(n + 1)]
    assert rows.get(0, base + n + 1) == 7250 and rows.get(0, base + n + 2) == 1
    fam.observe(stats, outbound, 1e9)  # above every bound: the +Inf bucket
    assert rows.get(0, base + n) == 1 and rows.get(0, base + n + 2) == 2
    others = [s for s in range(len(fam.series)) if s != outbound]
    assert all(rows.get(0, fam.base + s * (n + 3) + n + 2) == 0 for s in others)


def test_a_call_of_an_unknown_direction_files_its_duration_as_local(env):
    """A dialog slot's direction byte out of range (a slot written by another version) counts
    as "local", as direction_name() names it."""
    acc = env.dialogs.acc
    n = len(CALL_DURATION.buckets)
    count = CALL_DURATION.base + CALL_DURATION.series.index("local") * (n + 3) + n + 2
    before = env.count(count)
    acc.ended(200, time.time() - 2.0, b"", b"", "caller")
    assert env.count(count) == before + 1
