"""The soak of tools/soak, in its short version (60 s at a load that leaves room for the
other tests running beside it): every call of the mix succeeds, no transaction is left once
the load stops, no process grows its private memory or its file descriptors after the
warm-up. The 10-minute run at 80 % of the box is `tools/soak` (docs/reliability.md)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

import sipprun

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

pytestmark = [pytest.mark.wire, pytest.mark.timeout(300),
              pytest.mark.skipif(not sipprun.available(), reason="SIPp (sip-tester) not installed")]


def test_a_minute_of_the_whole_mix_leaves_nothing_behind():
    r = subprocess.run([sys.executable, os.path.join(REPO, "tools", "soak"), "--seconds", "60",
                        "--load", "0.04", "--warmup", "15"],
                       capture_output=True, text=True, timeout=280)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    rows = {m.group(1): (int(m.group(2)), int(m.group(3)), int(m.group(4)))
            for m in re.finditer(r"^(options|register|carrier-in|outbound)\s+\d+\s+(\d+)\s+(\d+)"
                                 r"\s+(\d+)", out, re.M)}
    assert set(rows) == {"options", "register", "carrier-in", "outbound"}, out
    for name, (calls, ok, failed) in rows.items():
        assert calls > 0 and ok == calls and failed == 0, (name, out)
    assert "transactions left: 0 " in out
    assert out.count("udp receiver") == 2 and "every goal met" in out
