# C types for kampx/security/guard.py, compiled as it is written (setup.py).
from kampx._shm cimport CounterRow

cdef class SecurityGuard:
    cdef public object scanner, flood, bans, permissions, carrier_group, own_ips
    cdef public CounterRow stats
