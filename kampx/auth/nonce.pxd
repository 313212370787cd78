# C types for kampx/auth/nonce.py, compiled as it is written (setup.py).

cdef class NonceCheck:
    cdef public object state, index, generation, issued_ms

cdef class Nonces:
    cdef public bytes _secret
    cdef public object _counts, _clock, _keyed
    cdef public long long expires_ms
