"""The whole receive path under mutated datagrams, for a bounded time (CI): no exception may
escape Worker.process() and the worker may log none of its own (tools/fuzz_receive.py; run
it by hand for longer: `python3 tools/fuzz_receive.py --seconds 3600 --keep-going`).

The seed is random per run and printed on failure, with the input saved, so a finding can be
replayed: `python3 tools/fuzz_receive.py --seed N`. KAMPX_FUZZ_SECONDS sets the budget."""
from __future__ import annotations

import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "tools"))

import fuzz_receive  # noqa: E402

SECONDS = float(os.environ.get("KAMPX_FUZZ_SECONDS", "20"))


def test_mutated_datagrams_never_raise(tmp_path):
    seed = random.SystemRandom().randrange(1 << 32)
    try:
        n = fuzz_receive.run_builtin(SECONDS, seed, str(tmp_path))
    except fuzz_receive.Finding as f:
        pytest.fail(f"seed {seed}: {f}", pytrace=False)
    assert n > 1000, f"only {n} inputs ran in {SECONDS} s"


def test_the_target_reports_an_escaping_exception(monkeypatch, tmp_path):
    """The check itself can fail: an exception raised inside the receive path is a finding."""
    target = fuzz_receive.Target()
    try:
        def broken(*a, **kw):
            raise RuntimeError("planted")
        monkeypatch.setattr(target.box.worker, "_on_request", broken)
        with pytest.raises(fuzz_receive.Finding, match="planted"):
            target.run_one(target.seeds[0], fuzz_receive.PHONE)
    finally:
        target.close()


def test_the_target_reports_a_script_error(monkeypatch):
    """A route-script exception (the worker answers 500 and logs it) is a finding too."""
    target = fuzz_receive.Target()
    try:
        def broken(msg):
            raise KeyError("planted")
        monkeypatch.setattr(target.box.worker.script, "request_route", broken)
        with pytest.raises(fuzz_receive.Finding, match="request_route"):
            target.run_one(target.seeds[0], fuzz_receive.PHONE)
    finally:
        target.close()


def test_the_flow_reaches_the_transaction_layer():
    """The seeds are a real registration and real calls: the worker relayed INVITEs and
    matched the callee's replies to its transactions."""
    from kampx import stats as S
    from kampx.tm.stats import RPL_RELAYED, UAC_TRANSACTIONS
    from kampx.registrar import ACCEPTED_REGS
    target = fuzz_receive.Target()
    try:
        row = target.box.shared.counters.row(0)
        assert row[ACCEPTED_REGS.base] >= 1
        assert row[UAC_TRANSACTIONS.base] >= 5
        assert row[RPL_RELAYED.base] >= 3
    finally:
        target.close()
