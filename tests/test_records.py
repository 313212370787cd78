"""kampx._records: the byte form of a call's records (dialog slots, accounting journal)."""

import marshal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kampx import _records
from kampx._records import dumps, loads

ROW = ("row", "acc", "INVITE", "f1", "t1", "c1@h", 200, "OK", 1765000000.125, "alice",
       "kampx.test", "bob", "kampx.test", "bob", "kampx.test", "127.0.0.1", "inbound")

flat_value = st.one_of(
    st.none(), st.booleans(), st.integers(-2**63, 2**63 - 1),
    st.floats(allow_nan=False), st.text(st.characters(max_codepoint=127), max_size=300),
    st.binary(max_size=300))
record_value = st.one_of(flat_value, st.lists(flat_value, max_size=8))  # a dialog's route sets
any_value = st.one_of(flat_value, st.text(max_size=20), st.integers(),
                      st.tuples(st.integers()), st.dictionaries(st.text(max_size=3), st.integers()))


def test_a_row_round_trips_in_the_compact_form():
    data = dumps(ROW)
    assert data[0] == _records.MAGIC and data[1] == len(ROW)
    assert loads(data) == ROW
    assert len(data) < len(marshal.dumps(ROW)) + 3 * len(ROW)


def assert_round_trips_in_the_compact_form(values):
    """`values` written in the compact form and read back equal, each value (and each value
    of a list) of its own type."""
    data = dumps(values)
    assert data[0] == _records.MAGIC
    back = loads(data)
    assert back == values
    for got, want in zip(back, values):
        assert type(got) is type(want)
        if type(want) is list:
            assert [type(v) for v in got] == [type(v) for v in want]


@settings(max_examples=300, deadline=None)
@given(st.lists(flat_value, max_size=40).map(tuple))
def test_flat_tuples_round_trip_exactly(values):
    assert_round_trips_in_the_compact_form(values)


def test_a_dialog_record_with_lists_round_trips_in_the_compact_form():
    # what dialog.py writes for a 2xx: the callee's address and the two route sets are lists
    answer = ("t2", "<sip:bob@h>;tag=t2", "sip:bob@192.0.2.20:5062", ["192.0.2.20", 5062], 0,
              [], ["<sip:127.0.0.1;lr;r2=on>", "<sip:[::1];lr;r2=on>"], 1765000000.5, 200, "OK",
              0)
    assert_round_trips_in_the_compact_form(answer)


@settings(max_examples=300, deadline=None)
@given(st.lists(record_value, max_size=30).map(tuple))
def test_tuples_of_values_and_lists_round_trip_exactly(values):
    assert_round_trips_in_the_compact_form(values)


@settings(max_examples=300, deadline=None)
@given(st.lists(any_value, max_size=12).map(tuple))
def test_what_the_form_does_not_take_goes_to_marshal(values):
    assert loads(dumps(values)) == values


@pytest.mark.parametrize("values", [
    ("caf\u00e9",),                 # not ASCII
    (2**70,),                       # past 64 bits
    ((1, 2),),                      # nested
    ([[1]],),                       # a list in a list
    (["caf\u00e9"],),               # a list with a value the form does not take
    (list(range(256)),),            # a list longer than its count byte
    ({"a": 1},),
    {"callid": "c1", "partial": True},  # a shed dialog record: not a tuple at all
    tuple(range(256)),              # more values than the count byte holds
])
def test_fallback_cases_are_marshal_bytes(values):
    data = dumps(values)
    assert data == marshal.dumps(values) and loads(data) == values


def test_records_marshal_wrote_still_read():
    for old in (marshal.dumps(ROW), marshal.dumps({"callid": "c1", "partial": True})):
        assert loads(old) == marshal.loads(old)


def test_long_text_and_bytes_use_the_long_length():
    values = ("x" * 300, b"y" * 70000, "z")
    data = dumps(values)
    assert data[2:3] == b"A" and loads(data) == values


@settings(max_examples=300, deadline=None)
@given(st.lists(record_value, min_size=1, max_size=10).map(tuple), st.data())
def test_a_torn_or_damaged_record_raises_value_error(values, data):
    blob = dumps(values)
    cut = data.draw(st.integers(1, len(blob) - 1))
    with pytest.raises(ValueError):
        loads(blob[:cut])
    with pytest.raises(ValueError):
        loads(blob + b"N")
    damaged = bytearray(blob)
    damaged[2] = ord("?")  # an unknown type code
    with pytest.raises(ValueError):
        loads(bytes(damaged))
