# C types for kampx/security/guard.py, compiled as it is written (setup.py).
from kampx._shm cimport CounterRow

cdef class SecurityGuard:
    cdef public object scanner, flood, bans, permissions, carrier_group, own_ips
    cdef public CounterRow stats

    # the script's three checks of every request (kampx/routing/security.py types its
    # guard): C calls. `msg` stays untyped: the unit tests hand in stand-ins.
    cpdef bint is_scanner(self, msg) except -1
    cpdef int pike_check(self, msg) except? -99
    cpdef bint banned(self, msg) except -1
