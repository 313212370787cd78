"""Stateless nonces (kampx/auth/nonce.py) over the shared NonceCounts: validity in every
process, expiry, forgery, nonce-count replay and slot reuse."""
from __future__ import annotations

import base64
import os

import pytest

from kampx._shm import NonceCounts
from kampx.auth.nonce import TEXT_LEN, Nonces, NonceState


class Clock:
    def __init__(self, ms: int = 1_000_000):
        self.ms = ms

    def __call__(self) -> int:
        return self.ms


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def counts():
    return NonceCounts(64)


def make(counts, clock, secret=b"s" * 32, expires=30):
    return Nonces(secret, counts, expires, clock=clock)


def test_issued_nonce_is_valid_and_compact(counts, clock):
    n = make(counts, clock)
    nonce = n.issue()
    assert len(nonce) == TEXT_LEN and nonce.isascii() and '"' not in nonce
    assert n.check(nonce).state is NonceState.VALID


def test_every_process_with_the_secret_accepts_it(counts, clock):
    """Two Nonces objects (two workers) share only the secret and the counts table."""
    a, b = make(counts, clock), make(counts, clock)
    assert b.check(a.issue()).state is NonceState.VALID


def test_expiry_makes_it_stale(counts, clock):
    n = make(counts, clock, expires=30)
    nonce = n.issue()
    clock.ms += 30_000
    assert n.check(nonce).state is NonceState.VALID
    clock.ms += 1
    assert n.check(nonce).state is NonceState.STALE


@pytest.mark.parametrize("mangle", [
    lambda s: s[:-1] + ("A" if s[-1] != "A" else "B"),      # MAC changed
    lambda s: s[:5] + ("A" if s[5] != "A" else "B") + s[6:],  # time changed
    lambda s: s[:-2],                                         # truncated
    lambda s: s + "AAAA",                                     # longer
    lambda s: "!" * len(s),                                   # not base64
    lambda s: "\u00e9" * len(s),                              # not ASCII
    lambda s: s[:10] + "=" + s[11:],                          # padding inside
    lambda s: s[:10] + " " + s[11:],                          # a character to skip
    lambda s: s[:7] + "+" + s[8:],                            # the standard alphabet
    lambda s: "",
])
def test_tampered_nonces_are_forged(counts, clock, mangle):
    n = make(counts, clock)
    assert n.check(mangle(n.issue())).state is NonceState.FORGED


def test_another_secret_is_forged(counts, clock):
    assert make(counts, clock, b"x" * 32).check(make(counts, clock).issue()).state \
        is NonceState.FORGED


def test_from_the_future_is_forged(counts, clock):
    n = make(counts, clock)
    clock.ms += 60_000
    nonce = n.issue()
    clock.ms -= 60_000
    assert n.check(nonce).state is NonceState.FORGED


def test_random_bytes_of_the_right_size_are_forged(counts, clock):
    n = make(counts, clock)
    for _ in range(50):
        fake = base64.urlsafe_b64encode(os.urandom(33)).decode()
        assert n.check(fake).state is NonceState.FORGED


def test_nonce_count_replay(counts, clock):
    n = make(counts, clock)
    check = n.check(n.issue())
    assert n.count(check, 1) == 1
    assert n.count(check, 1) == 0          # the same count again: replay
    assert n.count(check, 3) == 1          # counts may skip
    assert n.count(check, 2) == 0          # but never go back


def test_counts_are_per_nonce(counts, clock):
    n = make(counts, clock)
    a, b = n.check(n.issue()), n.check(n.issue())
    assert n.count(a, 5) == 1
    assert n.count(b, 1) == 1


def test_slot_reuse_makes_the_old_nonce_stale(clock):
    counts = NonceCounts(4)
    n = make(counts, clock)
    old = n.check(n.issue())
    for _ in range(4):
        n.issue()                           # the table wraps: old's slot is taken
    assert n.count(old, 1) == -1


def test_short_secret_refused(counts, clock):
    with pytest.raises(ValueError):
        make(counts, clock, secret=b"short")
    with pytest.raises(ValueError):  # more than the MAC's key takes
        make(counts, clock, secret=b"s" * 33)
