"""The statistics catalogue: each module declares its own families; the catalogue lays them
out in columns once, contiguous and without overlap, and refuses a family no module lists."""

import importlib

import pytest

from kampx import stats as S


def test_columns_are_contiguous_and_cover_the_table():
    col = 0
    for fam in S.families():
        assert fam.base == col, f"{fam.group}:{fam.name}"
        col += fam.size
    assert col == S.ncols()


def test_every_catalogue_module_declares_its_own_statistics():
    names = set()
    for mod in S.CATALOGUE:
        stats = importlib.import_module(mod).STATISTICS
        assert stats, mod
        for fam in stats:
            assert isinstance(fam, S.Family)
            key = (fam.group, fam.name)
            assert key not in names, key  # one declaration per statistic
            names.add(key)
    assert len(names) == len(S.families())


def test_a_family_listed_nowhere_is_refused(monkeypatch):
    S.families()
    monkeypatch.setattr(S, "_laid_out", ())
    monkeypatch.setattr(S, "_declared", list(S._declared))
    S.family("test", "orphan", S.KIND_COUNTER, "declared but not exported")
    with pytest.raises(RuntimeError, match="test:orphan"):
        S.families()


def test_histogram_bucket_is_the_first_with_le_at_least_the_value():
    from kampx._shm import CounterRows
    from kampx.stats.core import PROC_TIME

    rows = CounterRows(1, S.ncols())
    st = S.Stats(rows, 0)
    for us in (0, 25, 26, 100000, 100001):
        st.observe_us(us)
    col = {le: PROC_TIME.base + i for i, le in enumerate(PROC_TIME.values)}
    assert rows.get(0, col[25]) == 2  # 0 and 25
    assert rows.get(0, col[50]) == 1
    assert rows.get(0, col[100000]) == 1
    assert rows.get(0, col["+Inf"]) == 1
    assert rows.get(0, col["count"]) == 5
    assert rows.get(0, col["sum"]) == 0 + 25 + 26 + 100000 + 100001
