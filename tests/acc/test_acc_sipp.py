"""Accounting under load: SIPp as the carrier calls a registered user (a SIPp UAS) through
the built-in script; every answered call gives exactly one CDR and two acc rows (INVITE and
BYE), none lost when the proxy is stopped the moment the last call ends."""

from __future__ import annotations

import collections
import os
import sqlite3

import pytest

import sipprun
from authkit import AuthProxy
from sipclient import authorize

pytestmark = [
    pytest.mark.wire,
    pytest.mark.timeout(180),
    pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed"),
]

CALLS = 300


def test_every_sipp_call_gives_exactly_one_cdr_even_across_a_stop():
    px = AuthProxy(users={"alice": "alice-pw-1"}, children=2).start()
    try:
        uas_addr = (px.addrs.phone, 5062)
        with px.client("alice") as c:
            req = c.request(
                "REGISTER",
                "sip:kampx.test",
                from_uri="sip:alice@kampx.test",
                contact=f"<sip:alice@{uas_addr[0]}:{uas_addr[1]}>",
                expires=300,
            )
            c.send(req)
            again = authorize(req, c.final(req), "alice", "alice-pw-1")
            c.send(again)
            assert c.final(again).status == 200
        uas = sipprun.Sipp("uas_call.xml", uas_addr, timeout=90)
        uac = sipprun.Sipp(
            "uac_call.xml",
            (px.addrs.carrier, 5064),
            px.addr,
            calls=CALLS,
            rate=100,
            service="alice",
            timeout=60,
        )
        res = uac.wait()
        uas.stop()
        assert res.successful == CALLS and res.failed == 0, res.out
        assert px.stop() == 0  # SIGTERM at once: what is in flight must still be written
        with sqlite3.connect(os.path.join(px.workdir, "kampx.db")) as db:
            cdrs = collections.Counter(
                r[0]
                for r in db.execute(
                    "SELECT callid FROM acc_cdrs WHERE end_reason = 'caller' AND sip_code = '200'"
                )
            )
            acc = collections.Counter(r for r in db.execute("SELECT callid, method FROM acc"))
            total = db.execute("SELECT COUNT(*) FROM acc_cdrs").fetchone()[0]
    finally:
        px.close()
    assert len(cdrs) == CALLS and set(cdrs.values()) == {1}
    assert total == CALLS
    assert len(acc) == 2 * CALLS and set(acc.values()) == {1}
    assert {m for _, m in acc} == {"INVITE", "BYE"}
