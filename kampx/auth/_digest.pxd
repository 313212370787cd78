# C declarations of kampx/auth/_digest.pyx for the compiled modules that cimport them
# (digest.py, nonce.py, authenticator.py): field reads are C loads, calls C calls.
from libc.stdint cimport uint32_t, uint64_t


cdef class Credentials:
    cdef readonly str username, realm, nonce, uri, response, algorithm, base_algorithm
    cdef readonly object qop, nc, cnonce, opaque
    cdef readonly bint sess


cdef class MacKey:
    cdef uint32_t h[8]
    cdef readonly int size


cpdef str md5_response(str ha1_hex, str nonce, str method, str uri, qop, nc, cnonce, bint sess,
                       bytes body)
cpdef object pick(values, str realm)
cpdef tuple open_nonce(str text, MacKey key)
cpdef str seal_nonce(MacKey key, int version, uint64_t issued_ms, uint32_t index,
                     uint32_t generation)
