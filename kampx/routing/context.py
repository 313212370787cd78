"""What the running route function works on (`ctx`: the worker, the message, in
failure_route the transaction), set by kampx.routing.hooks around each call; and `Result`,
the Kamailio return code every script function that has one returns."""

from __future__ import annotations


class _Context:
    """What the running route function works on; set by the worker around each call. A C
    type (context.pxd): the script API's modules read `ctx.msg` and `ctx.worker` as C
    loads, and `msg` only ever holds a parsed message (kampx._cparse.Message) or None."""

    def __init__(self):
        self.worker = None
        self.msg = None
        self.txn = None  # in failure_route: the transaction whose branches failed


ctx = _Context()


class Result(int):
    """A Kamailio return code: the number, true only when positive (a Kamailio script
    treats a negative return as false): `if not lookup("location"): ...`."""

    __slots__ = ()

    def __bool__(self) -> bool:
        return self > 0  # int's comparison: no new int per test

    def __repr__(self) -> str:
        return f"Result({int(self)})"


# the codes script functions return, made once: an int subclass is immutable
_RESULTS = {code: Result(code) for code in range(-10, 11)}


def result(code: int) -> Result:
    """Result(code), the same object for the common codes (-10..10): the script calls
    pike_check_req(), lookup(), auth_check() on every request."""
    r = _RESULTS.get(code)
    return r if r is not None else Result(code)
