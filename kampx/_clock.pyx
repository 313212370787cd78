# cython: language_level=3
"""The clocks of the packet path, as C calls.

A carrier call reads a clock 32 times (timers, the transaction index, dialogs, accounting,
the request-time histogram). As `time.monotonic()` each read was a Python call:
the attribute, the call, a float made and taken apart again, ~250 instructions. Here each is
a `clock_gettime` behind a C call from the modules that cimport this one (kampx/_clock.pxd).

The values are Python's, bit for bit: the same clocks (CLOCK_MONOTONIC for time.monotonic
and time.perf_counter_ns, CLOCK_REALTIME for time.time, as CPython uses them on Linux) and
the same conversion of nanoseconds to a float, so a time written by one module and compared
by another, compiled or not, agrees.

Only modules that bound time's functions at import (`from time import monotonic`) use these:
they never saw a patched `time.monotonic` anyway. Whatever reads `time.monotonic()` through
the module, for a test's clock (kampx/testing/clock.py), still does.
"""

from posix.time cimport CLOCK_MONOTONIC, CLOCK_REALTIME, clock_gettime, timespec


cdef inline long long _ns(int clock) noexcept nogil:
    cdef timespec ts
    clock_gettime(clock, &ts)
    return <long long>ts.tv_sec * 1000000000 + ts.tv_nsec


cdef inline double _seconds(long long ns) noexcept nogil:
    # CPython's _PyTime_AsSecondsDouble: whole seconds exactly, else ns / 1e9
    if ns % 1000000000 == 0:
        return <double>(ns // 1000000000)
    return <double>ns / 1e9


cpdef double monotonic() noexcept:
    """time.monotonic()"""
    return _seconds(_ns(CLOCK_MONOTONIC))


cpdef double time() noexcept:
    """time.time()"""
    return _seconds(_ns(CLOCK_REALTIME))


cpdef long long monotonic_ns() noexcept:
    """time.perf_counter_ns() and time.monotonic_ns() (the same clock on Linux)"""
    return _ns(CLOCK_MONOTONIC)
