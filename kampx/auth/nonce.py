"""Stateless digest nonces, valid in every worker.

A nonce is base64url of

    version (1 byte) | issued at, ms of CLOCK_MONOTONIC (8) | index (4) | generation (4) | MAC (16)

where MAC = BLAKE2s keyed with secret (RFC 7693's MAC mode, 128-bit output) over the 17
bytes before it, and secret is the random key the supervisor creates at start
(shared.secret). Any worker can check any worker's nonce without shared state; a restart
changes the secret, which turns the old nonces into forgeries (the client is simply
challenged again).

(index, generation) name a slot of the shared NonceCounts table that remembers the highest
nonce-count a qop client has used with this nonce, so a replayed response is refused. Slots
are reused round robin; a nonce whose slot went to a newer one is stale, like an expired one.
CLOCK_MONOTONIC is system-wide on Linux, so the age is right in every process and a wall
clock step cannot make nonces live forever or die at once.
"""

from __future__ import annotations

import time
from enum import IntEnum

from kampx.auth._digest import MacKey, open_nonce, seal_nonce

VERSION = 1
BODY_LEN = 17  # version, issued at, index, generation
MAC_LEN = 16
RAW_LEN = BODY_LEN + MAC_LEN  # 33 bytes
TEXT_LEN = RAW_LEN * 4 // 3  # 44 characters, no padding (33 is a multiple of 3)
FUTURE_SLACK_MS = 1000  # a nonce "from the future" beyond this is forged


class NonceState(IntEnum):
    VALID = 0
    STALE = 1  # ours, but expired or its count slot was reused: challenge again, stale=true
    FORGED = 2  # not ours (bad MAC, bad format, another instance's, from the future)


class NonceCheck:
    __slots__ = ("state", "index", "generation", "issued_ms")

    def __init__(self, state: NonceState, index: int = 0, generation: int = 0, issued_ms: int = 0):
        self.state = state
        self.index = index
        self.generation = generation
        self.issued_ms = issued_ms


_FORGED = NonceCheck(NonceState.FORGED)
_VALID, _STALE = NonceState.VALID, NonceState.STALE  # an enum member read costs a lookup


def _now_ms() -> int:
    return int(time.monotonic() * 1000)


class Nonces:
    """Issues and checks nonces. One per process; `counts` is the shared NonceCounts."""

    def __init__(self, secret: bytes, counts, expires_s: float, clock=_now_ms):
        if not 16 <= len(secret) <= 32:
            raise ValueError("the nonce secret must be 16 to 32 bytes")
        self._secret = bytes(secret)
        self._counts = counts
        self.expires_ms = int(expires_s * 1000)
        self._clock = clock
        # keyed BLAKE2s, 3x as fast as HMAC-SHA256 (two per REGISTER), in C from the state
        # after the key block (kx_blake2s.h): a MAC is one compression, with no hashlib
        # object to copy, update and read (a registration 248.7k -> 241.8k instructions).
        # The layout is packed, MAC'd and checked in C (kampx/auth/_digest.pyx: seal_nonce,
        # open_nonce); the policy (version, age, slots) is here.
        self._keyed = MacKey(self._secret, MAC_LEN)

    def issue(self) -> str:
        index, generation = self._counts.new_index()
        return seal_nonce(self._keyed, VERSION, self._clock(), index, generation)

    def check(self, nonce: str) -> NonceCheck:
        """Whether `nonce` is one of ours and still young enough; counts nothing."""
        fields = open_nonce(nonce, self._keyed)  # None: not a spelling we issue, or MAC
        if fields is None:
            return _FORGED
        version, issued, index, generation = fields
        if version != VERSION:
            return _FORGED
        now = self._clock()
        if issued > now + FUTURE_SLACK_MS:
            return _FORGED
        return NonceCheck(
            _STALE if now - issued > self.expires_ms else _VALID, index, generation, issued
        )

    def count(self, check: NonceCheck, nc: int) -> int:
        """Record nonce-count `nc` for a valid nonce, after its response was verified:
        1 accepted, 0 replay (nc not above the last one seen), -1 stale (slot reused)."""
        return self._counts.check(check.index, check.generation, nc)
