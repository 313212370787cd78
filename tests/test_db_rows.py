"""The db writer's C paths (kampx/db/_rows.pyx, kampx/_records.pyx's split_journal) against
the Python they replace: the same values out, and the uncommon cases left to Python."""

import math
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kampx._records import split_journal
from kampx.db._rows import plain_row, utc_text
from kampx.db.base import (
    _ACC_PLANS,
    ACC_TABLE_COLUMNS,
    StorageError,
    acc_values,
    acc_values_checked,
)


def reference_utc_text(epoch: float) -> str:
    # the Python this replaced (kampx/db/sqlite.py before 2026-12-08)
    seconds, ms = divmod(round(epoch * 1000), 1000)
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}"


@given(st.floats(min_value=-2e9, max_value=4e9, allow_nan=False))
def test_utc_text_is_the_python_formula(epoch):
    assert utc_text(epoch) == reference_utc_text(epoch)


@pytest.mark.parametrize(
    "epoch", [0.0, 0.0005, 0.0015, 1733616000.9995, 1733616000.0004999, -0.0005, -1.5, 59.9999]
)
def test_utc_text_rounds_halves_and_negatives_as_python(epoch):
    assert utc_text(epoch) == reference_utc_text(epoch)


@pytest.mark.parametrize("epoch", [math.inf, -math.inf, math.nan])
def test_utc_text_refuses_what_no_date_holds_as_python_does(epoch):
    with pytest.raises(type(_error_of(reference_utc_text, epoch))):
        utc_text(epoch)


def _error_of(fn, arg):
    try:
        fn(arg)
    except Exception as e:
        return e
    raise AssertionError("no error")


def kampx_acc_row(**over):
    # an acc row as kampx's workers write it: ASCII text, an int code, a float time
    row = dict(
        method="INVITE",
        from_tag="a1b2",
        to_tag="c3d4",
        callid="call-1@127.0.0.1",
        sip_code=200,
        sip_reason="OK",
        time=1733616000.123,
        src_user="alice",
        src_domain="kampx.test",
        src_ip="127.0.0.1",
        dst_ouser="bob",
        dst_user="bob",
        dst_domain="127.0.0.1",
        direction="local",
    )
    row.update(over)
    return [row[name] for name in _ACC_PLANS["acc"][0]]


def fast(table, values):
    _, texts, _, times, codes, reals = _ACC_PLANS[table]
    return plain_row(values, texts, times, codes, reals, utc_text)


def test_what_kampx_writes_takes_the_c_path_with_the_python_result():
    values = kampx_acc_row()
    row = fast("acc", values)
    assert row is not None
    assert row == acc_values_checked("acc", values, utc_text)
    assert row[_ACC_PLANS["acc"][0].index("sip_code")] == "200"
    assert row[_ACC_PLANS["acc"][0].index("time")] == "2024-12-08 00:00:00.123"


def test_a_cdr_takes_the_c_path_with_the_python_result():
    names = _ACC_PLANS["acc_cdrs"][0]
    values = [None] * len(names)
    for k, (name, kind, _) in enumerate(ACC_TABLE_COLUMNS["acc_cdrs"]):
        values[k] = {"time": 1733616000.5, "real": 1.23456, "code": 0}.get(kind, name[:4])
    values[names.index("setup_time")] = None  # a time not known: NULL
    row = fast("acc_cdrs", values)
    assert row is not None
    assert row == acc_values_checked("acc_cdrs", values, utc_text)
    assert row[names.index("duration")] == 1.235
    assert row[names.index("sip_code")] == ""
    assert row[names.index("setup_time")] is None


@pytest.mark.parametrize(
    "over",
    [
        {"src_user": "ålice"},  # not ASCII
        {"callid": "x" * 256},  # longer than its column
        {"from_tag": "a\x00b"},  # NUL
        {"method": None},  # a missing text
        {"to_tag": 7},  # not a str
        {"sip_code": True},  # a bool is no code
        {"sip_code": 1000},
        {"sip_code": -1},
        {"sip_code": "200"},
        {"time": 1733616000},  # an int time
        {"time": "now"},
    ],
)
def test_any_other_value_is_left_to_the_python_path(over):
    values = kampx_acc_row(**over)
    assert fast("acc", values) is None
    try:  # and acc_values still answers as that path does, error message and all
        expected = acc_values_checked("acc", values, utc_text)
    except StorageError as e:
        with pytest.raises(StorageError) as got:
            acc_values("acc", values, utc_text)
        assert str(got.value) == str(e)
    else:
        assert acc_values("acc", values, utc_text) == expected


def test_a_row_given_as_a_tuple_is_still_a_row():
    values = tuple(kampx_acc_row())
    assert fast("acc", values) is None  # the C path takes the db writer's lists only
    assert acc_values("acc", values, utc_text) == acc_values_checked("acc", list(values), utc_text)


def test_a_short_row_is_left_to_the_python_path():
    assert fast("acc", kampx_acc_row()[:3]) is None


texts = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=127), max_size=20),
    st.text(max_size=5),
    st.none(),
    st.integers(),
)
odd = st.one_of(st.none(), st.integers(-5, 1500), st.floats(-1e6, 4e9), st.booleans(), texts)


@given(st.lists(odd, min_size=14, max_size=14))
def test_the_c_path_agrees_with_the_python_path_whenever_it_answers(values):
    row = fast("acc", values)
    if row is not None:
        assert row == acc_values_checked("acc", values, utc_text)


def frame(op, key, state, timeout):
    return struct.pack("!BBdH", op, state, timeout, len(key)) + key


@given(
    st.lists(
        st.tuples(
            st.integers(0, 255),
            st.binary(max_size=300),
            st.integers(0, 255),
            st.floats(allow_nan=False),
        ),
        max_size=20,
    ),
    st.integers(0, 400),
)
def test_split_journal_reads_the_frames_struct_writes(records, cut):
    data = b"".join(frame(*r) for r in records)
    got, pos = split_journal(data)
    assert got == [(op, key, state, timeout) for op, key, state, timeout in records]
    assert pos == len(data)
    # a frame cut short is left for the next read, whole ones before it returned
    torn = data + frame(1, b"k" * 50, 2, 3.5)[: cut % 62]
    got, pos = split_journal(torn)
    assert len(got) == len(records) and pos == len(data)
