# C types for kampx/forward.py, compiled as it is written (setup.py's PYTHON_COMPILED).

cdef class Forwarder:
    cdef public object sockets, stats, dialogs
    cdef public str realm
    cdef public bint forward_stray_replies
    cdef public long long _stateless_seq
    cdef public dict _myself
    cdef public dict _senders
