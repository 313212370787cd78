"""What the running route function works on (`ctx`: the worker, the message, in
failure_route the transaction), set by kampx.routing.hooks around each call; and `Result`,
the Kamailio return code every script function that has one returns."""

from __future__ import annotations


class _Context:
    """What the running route function works on; set by the worker around each call."""

    __slots__ = ("worker", "msg", "txn")

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
        return int(self) > 0

    def __repr__(self) -> str:
        return f"Result({int(self)})"
