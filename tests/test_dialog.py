"""kampx/dialog.py without a proxy: the states a dialog goes through, the in-dialog check,
and the journal that carries confirmed dialogs to the database."""
from __future__ import annotations

import os
from types import SimpleNamespace

import parsedkit
import pytest

from kampx import dialog as D
from kampx import stats as S
from kampx.dialog import DIALOGS_FAILED, DIALOGS_PROCESSED, DIALOG_JOURNAL_DROPPED, DIALOG_REJECTED, DIALOG_TABLE_FULL
from kampx._shm import CounterRows, KeyIndex
from kampx.config import DialogConfig


def Msg(method="INVITE", call_id="c1", from_tag="ft", to_tag=None, rr=True):
    """A parsed request; `rr`: record_route() added ours."""
    msg = parsedkit.request(method, call_id, from_tag, to_tag)
    msg.rr_added = rr
    return msg


TAGGED = parsedkit.reply()  # a reply with a To-tag


@pytest.fixture
def env():
    r, w = D.journal_pipe()
    rows = CounterRows(1, S.ncols())
    stats = S.Stats(rows, 0)
    dialogs = D.Dialogs(KeyIndex(1000, 7), D.Journal(w, stats), DialogConfig(linger_s=30), 60.0,
                        stats)
    yield SimpleNamespace(dialogs=dialogs, r=r, w=w, rows=rows,
                          count=lambda fam: rows.get(0, fam.base))
    os.close(r)
    os.close(w)


def _establish(d, code=200, call_id="c1", from_tag="ft"):
    k, state = d.start(Msg(call_id=call_id, from_tag=from_tag))
    state = d.on_reply(k, state, 180, TAGGED)
    return k, d.on_reply(k, state, code, TAGGED)


def test_only_record_routed_dialog_creating_requests_start_dialogs(env):
    d = env.dialogs
    assert d.start(Msg("INVITE")) == (D.key("c1", "ft"), D.PENDING)
    assert d.start(Msg("SUBSCRIBE", call_id="c2"))[1] == D.EARLY   # NOTIFY may beat its 2xx
    assert d.start(Msg("INVITE", rr=False)) is None         # we are not on the route set
    assert d.start(Msg("INVITE", to_tag="x")) is None       # a re-INVITE
    assert d.start(Msg("MESSAGE")) is None
    assert env.count(DIALOGS_PROCESSED) == 2


def test_a_full_index_refuses_to_start_a_dialog(env):
    d = env.dialogs
    d.index = KeyIndex(1, 3)                                # 16 slots
    started = [d.start(Msg(call_id=f"c{i}")) for i in range(17)]
    assert started[-1] == (None, 0)
    assert env.count(DIALOG_TABLE_FULL) == 1


def test_admitted_in_both_directions_only_once_a_reply_set_up_the_dialog(env):
    d = env.dialogs
    k, _ = d.start(Msg())
    assert not d.admit(Msg("PRACK", to_tag="callee"))       # pending: no reply yet
    d.on_reply(k, D.PENDING, 183, TAGGED)
    assert d.admit(Msg("PRACK", to_tag="callee"))           # early dialog
    d.on_reply(k, D.EARLY, 200, TAGGED)
    assert d.admit(Msg("ACK", to_tag="callee"))             # the caller's side
    assert d.admit(Msg("BYE", from_tag="callee", to_tag="ft"))   # the callee's side
    assert env.count(DIALOG_REJECTED) == 1


def test_forged_tags_or_call_id_are_refused_and_counted(env):
    d = env.dialogs
    _establish(d)
    for m in (Msg("BYE", call_id="c2", to_tag="x"), Msg("BYE", from_tag="other", to_tag="x"),
              Msg("INFO", call_id="c1x", from_tag="ft", to_tag="callee")):
        assert not d.admit(m)
    assert env.count(DIALOG_REJECTED) == 3


def test_a_failed_call_leaves_no_dialog(env):
    d = env.dialogs
    k, state = _establish(d, code=486)
    d.failed(k, state)
    assert not d.admit(Msg("BYE", to_tag="callee"))
    assert env.count(DIALOGS_FAILED) == 1


def test_bye_ends_the_dialog_after_the_linger(env):
    d = env.dialogs
    k, _ = _establish(d)
    assert d.admit(Msg("BYE", to_tag="callee"))
    assert d.index.lookup(k, 0) == D.ENDED
    assert d.admit(Msg("BYE", from_tag="callee", to_tag="ft"))      # a crossing BYE
    import time
    assert d.index.lookup(k, time.monotonic() + 31) == -1           # linger_s = 30


def test_enforce_off_admits_anything(env):
    d = env.dialogs
    d.enforce = False
    assert d.admit(Msg("BYE", call_id="never", to_tag="x"))


def test_journal_carries_confirm_refresh_and_end(env):
    d = env.dialogs
    k, _ = _establish(d)
    d.admit(Msg("INFO", to_tag="callee"))                     # refreshes the lifetime
    d.admit(Msg("BYE", to_tag="callee"))
    assert D.read_journal(env.r) == ([], b"")                  # kept until the loop flushes
    d.journal.flush()
    records, rest = D.read_journal(env.r)
    assert rest == b""
    assert [(op, key, state) for op, key, state, _ in records] == [
        (D.OP_PUT, k, D.CONFIRMED), (D.OP_PUT, k, D.CONFIRMED), (D.OP_DELETE, k, 0)]
    assert D.split_key(k) == ("c1", "ft")


def test_journal_reader_keeps_a_partial_record_for_later(env):
    payload = D._RECORD.pack(D.OP_PUT, D.CONFIRMED, 123.5, 4) + b"ab\0c"
    os.write(env.w, payload[:5])
    assert D.read_journal(env.r) == ([], payload[:5])
    os.write(env.w, payload[5:])
    records, rest = D.read_journal(env.r, payload[:5])
    assert records == [(D.OP_PUT, b"ab\0c", D.CONFIRMED, 123.5)] and rest == b""


def test_a_full_journal_drops_and_counts(env):
    d = env.dialogs
    big = "x" * 2000
    n = 0
    while env.count(DIALOG_JOURNAL_DROPPED) == 0:
        d.journal.write(D.OP_PUT, D.key(big, str(n)), D.CONFIRMED, 1.0)
        d.journal.flush()
        n += 1
        assert n < 10_000
    assert n > 10                                            # the pipe took a good many first


def test_writer_coalesces_and_load_restores(env, tmp_path):
    from kampx.db.sqlite import SqliteStorage
    import time
    d = env.dialogs
    k1, _ = _establish(d, call_id="a")
    _establish(d, call_id="b")
    d.admit(Msg("BYE", call_id="b", to_tag="callee"))
    d.journal.flush()
    writer = D.JournalWriter(env.r)
    assert writer.collect() == 3
    storage = SqliteStorage(str(tmp_path / "k.db"))
    try:
        assert writer.write(storage) == 2                      # b: confirmed then deleted
        rows = list(storage.dialogs.load_live(time.time()))
        assert [(c, t) for c, t, _ in rows] == [("a", "ft")]
        index = KeyIndex(100, 1)
        assert D.load(index, rows, time.time(), time.monotonic()) == 1
        assert index.lookup(k1, time.monotonic()) == D.CONFIRMED
        assert storage.dialogs.delete_expired(time.time() + 10 ** 6) == 1
    finally:
        storage.close()


def test_a_none_where_a_message_belongs_raises_instead_of_crashing(env):
    """dialog.py (as acc.py and tm's manager) reads a Message's fields as C fields (its
    .pxd): built with nonecheck, a None there is an exception the worker counts. Without
    it the fields are read from whatever memory follows the None object: built without
    it, admit(None) returned an answer made of that memory instead of raising."""
    d = env.dialogs
    with pytest.raises((AttributeError, TypeError)):
        d.start(None)
    with pytest.raises((AttributeError, TypeError)):
        d.admit(None)
    k, state = d.start(Msg())
    with pytest.raises((AttributeError, TypeError)):
        d.on_reply(k, state, 180, None)
