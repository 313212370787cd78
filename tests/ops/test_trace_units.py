"""kampx.trace in one process: the filter, the records a worker's Tracer sends, the script
wrapped only while a trace runs, a handed-off datagram left to its owner, and a ctl that is
not there costing a counted loss, never an error."""
from __future__ import annotations

import json
import secrets
import socket
import time
import types
from types import SimpleNamespace

import pytest

from kampx import stats as S
from kampx._cparse import parse
from kampx._shm import CounterRows
from kampx.shared_snapshot import SharedBlob
from kampx.trace import DROPPED, RECORDS, SPEC_CAPACITY, Tracer, TraceSpec, records_address

INVITE = (b"INVITE sip:alice@kampx.test SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
          b"From: <sip:bob@x>;tag=1\r\nTo: <sip:alice@kampx.test>\r\nCall-ID: c1\r\n"
          b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
RINGING = (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\n"
           b"From: <sip:bob@x>;tag=1\r\nTo: <sip:alice@kampx.test>;tag=2\r\nCall-ID: c1\r\n"
           b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")
HANDOFFS = 0  # the column the fake worker counts hand-offs in
LSOCK = SimpleNamespace(addr=SimpleNamespace(host="127.0.0.1"), port=5060)


@pytest.mark.parametrize("spec, msg, src, dst, shown", [
    (TraceSpec(1), INVITE, "192.0.2.1", "127.0.0.1", True),
    (TraceSpec(1, method="invite"), INVITE, "192.0.2.1", "127.0.0.1", True),
    (TraceSpec(1, method="INVITE"), RINGING, "192.0.2.1", "127.0.0.1", True),  # CSeq's method
    (TraceSpec(1, method="BYE"), INVITE, "192.0.2.1", "127.0.0.1", False),
    (TraceSpec(1, user="alice"), INVITE, "192.0.2.1", "127.0.0.1", True),  # R-URI and To
    (TraceSpec(1, user="bob"), RINGING, "192.0.2.1", "127.0.0.1", True),  # From
    (TraceSpec(1, user="carol"), INVITE, "192.0.2.1", "127.0.0.1", False),
    (TraceSpec(1, ip="127.0.0.1"), INVITE, "192.0.2.1", "127.0.0.1", True),  # destination
    (TraceSpec(1, ip="192.0.2.9"), INVITE, "192.0.2.1", "127.0.0.1", False),
    (TraceSpec(1), None, "192.0.2.1", "127.0.0.1", True),  # unparsable: no filter shows it
    (TraceSpec(1, ip="192.0.2.1"), None, "192.0.2.1", "127.0.0.1", True),
    (TraceSpec(1, method="INVITE"), None, "192.0.2.1", "127.0.0.1", False),
])
def test_filter(spec, msg, src, dst, shown):
    assert spec.matches(parse(msg) if msg else None, src, dst) is shown


def test_spec_round_trip_and_garbage():
    spec = TraceSpec(7, method="invite", user="alice", ip="::1", until=12.5, verbose=True)
    again = TraceSpec.from_bytes(spec.to_bytes())
    assert (again.id, again.method, again.user, again.ip, again.until, again.verbose) == (
        7, "INVITE", "alice", "::1", 12.5, True)
    assert TraceSpec.from_bytes(b"") is None
    assert TraceSpec.from_bytes(b"{not json") is None
    assert TraceSpec.from_bytes(b'{"id": 1, "bogus": 2}') is None


def _script():
    """A route script module with its own function and an API function it imported."""
    from kampx.routing import is_method
    module = types.ModuleType("trace_unit_script")
    module.is_method = is_method

    def INNER(msg):
        return 42

    INNER.__module__ = module.__name__
    module.INNER = INNER
    return module


class Rig:
    def __init__(self, script=None, ctl=True):
        self.instance = secrets.token_hex(4)
        self.blob = SharedBlob("trace-test", SPEC_CAPACITY)
        self.rows = CounterRows(1, S.ncols())
        self.stats = S.Stats(self.rows, 0)
        self.module = script or _script()
        self.originals = dict(self.module.__dict__)
        self.tracer = Tracer(self.blob, self.instance, 3, self.stats, self.module, HANDOFFS)
        self.ctl = None
        if ctl:
            self.ctl = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self.ctl.bind(records_address(self.instance))
            self.ctl.settimeout(0.2)

    def publish(self, spec):
        self.blob.publish(spec.to_bytes() if spec else b"")
        assert self.tracer.changed()
        self.tracer.refresh()

    def records(self):
        out = []
        while True:
            try:
                out.append(json.loads(self.ctl.recv(65536)))
            except (TimeoutError, socket.timeout):
                return out

    def close(self):
        self.tracer.stop()
        self.blob.close()
        if self.ctl:
            self.ctl.close()


def test_records_with_the_calls_and_the_script_unwrapped_after():
    rig = Rig()
    module = rig.module
    try:
        assert not rig.tracer.active and not rig.tracer.changed()
        rig.publish(TraceSpec(5, user="alice", until=time.time() + 30))
        assert rig.tracer.active and module.INNER is not rig.originals["INNER"]

        def process(data, src, lsock, handed_off):  # what the worker does: runs the script
            from kampx.routing.context import ctx
            ctx.msg = parse(data)
            try:
                module.is_method("BYE")
                module.INNER(None)
            finally:
                ctx.msg = None
            lsock_sent(RINGING, ("192.0.2.1", 5060))

        def lsock_sent(data, dest):
            rig.tracer.sent(data, dest, LSOCK)

        rig.tracer.wrap(process)(INVITE, ("192.0.2.1", 5062), LSOCK, False)
        got = rig.records()
        assert [(r["dir"], r["line"]) for r in got] == [
            ("in", "INVITE sip:alice@kampx.test SIP/2.0"), ("out", "SIP/2.0 180 Ringing")]
        first = got[0]
        assert first["trace"] == 5 and first["worker"] == 3 and first["call_id"] == "c1"
        assert first["src"] == "192.0.2.1:5062" and first["dst"] == "127.0.0.1:5060"
        assert first["calls"] == ["is_method('BYE') -> False", "route INNER"]
        assert "data" not in first  # only with verbose
        assert rig.rows.get(0, RECORDS.base) == 2
        rig.publish(None)  # the ctl ends it: the script is as it was
        assert not rig.tracer.active
        assert module.__dict__ == rig.originals
    finally:
        rig.close()


def test_a_handed_off_datagram_is_left_to_its_owner():
    rig = Rig()
    try:
        rig.publish(TraceSpec(1, until=time.time() + 30))

        def hand_off(data, src, lsock, handed_off):
            rig.stats.inc(HANDOFFS)  # what Worker.handoff_to counts

        rig.tracer.wrap(hand_off)(RINGING, ("192.0.2.1", 5062), LSOCK, False)
        assert rig.records() == []
        # the owner gets it handed over and reports it
        rig.tracer.wrap(lambda *a: None)(RINGING, ("192.0.2.1", 5062), LSOCK, True)
        assert [r["line"] for r in rig.records()] == ["SIP/2.0 180 Ringing"]
    finally:
        rig.close()


def test_calls_made_by_a_timer_are_a_record_of_their_own():
    rig = Rig()
    try:
        rig.publish(TraceSpec(1, method="INVITE", until=time.time() + 30))
        msg = parse(INVITE)
        msg.src = ("192.0.2.1", 5062)
        rig.module.INNER(msg)  # a failure route run by a timer, between datagrams
        rig.tracer.flush()
        (record,) = rig.records()
        assert record["dir"] == "timer" and record["calls"] == ["route INNER"]
        assert record["line"].startswith("INVITE ")
    finally:
        rig.close()


def test_no_ctl_loses_records_counted_and_an_expired_spec_traces_nothing():
    rig = Rig(ctl=False)
    try:
        rig.publish(TraceSpec(1, until=time.time() + 30))
        rig.tracer.wrap(lambda *a: None)(INVITE, ("192.0.2.1", 5062), LSOCK, False)
        assert rig.rows.get(0, DROPPED.base) == 1 and rig.rows.get(0, RECORDS.base) == 0
        assert rig.tracer.expired(time.time() + 31)
        rig.publish(TraceSpec(2, until=time.time() - 1))  # already over when read
        assert not rig.tracer.active and rig.module.__dict__ == rig.originals
    finally:
        rig.close()
