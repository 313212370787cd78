# C types for kampx/security/guard.py, compiled as it is written (setup.py).

cdef class SecurityGuard:
    cdef public object scanner, flood, bans, permissions, carrier_group, own_ips, stats
