# C types for kampx/transport/sockets.py, compiled as it is written (setup.py).

cdef class ListenSocket:
    cdef public object index, addr, sock, host, port, name, fd, hostport, proto, family
    cdef public object via_prefix, rr_value, rr_double, reply_socks, tap, pending
    cdef public dict addr_cache
    cdef public bint reliable, v6

    cpdef int flush(self) except -1  # the worker loop's send, once per round
