# C types for kampx/auth/nonce.py, compiled as it is written (setup.py): the authenticator
# calls issue/check/count as C functions, and the MAC key is the C state of _digest.MacKey.
from kampx.auth._digest cimport MacKey


cdef class NonceCheck:
    cdef public object state, index, generation, issued_ms

cdef class Nonces:
    cdef public bytes _secret
    cdef public object _counts, _clock
    cdef public MacKey _keyed
    cdef public long long expires_ms
    cpdef str issue(self)
    cpdef NonceCheck check(self, str nonce)
    cpdef int count(self, NonceCheck check, long long nc) except? -2
