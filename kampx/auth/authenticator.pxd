# C types for kampx/auth/authenticator.py, compiled as it is written (setup.py).

cdef class Authenticator:
    cdef public object algorithms, nonces, subscribers, stats, on_failure
    cdef public dict _decoy
    cdef public bint _storage_error_logged
