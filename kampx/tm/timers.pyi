"""A worker's timers in 10 ms buckets (compiled from timers.pyx; see its docstring)."""

from collections.abc import Callable
from typing import Any

_now: Callable[[], float]
TICK_HZ: int

class Timer:
    alive: bool
    def cancel(self) -> None: ...

class TimerHeap:
    def __init__(self) -> None: ...
    def __len__(self) -> int: ...
    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> Timer: ...
    def later(self, delay: float, fn: Callable[..., Any], args: tuple[Any, ...]) -> Timer: ...
    def timeout(self, cap: float = 1.0) -> float:
        """Seconds until the next bucket with a live timer (at most `cap`), for epoll."""
    def run(self, on_error: Callable[[Exception], Any] | None = None) -> int:
        """Fire every due timer; returns how many ran."""
