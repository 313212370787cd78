# C types for kampx/worker.py (setup.py's PYTHON_COMPILED): a datagram's way from process()
# to the script or its transaction is C calls on C slots. Every other attribute lives in the
# instance's __dict__, as before (a Python subclass, the sandbox's, adds its own; cpdef
# methods can still be replaced on an instance, as a test does).
from kampx._cparse cimport Message
from kampx.tm.manager cimport TransactionManager


cdef class Worker:
    cdef public object stats, hooks, overload, forwarder
    cdef public TransactionManager tm
    cdef public str sl_ack_prefix
    cdef dict __dict__

    cpdef process(self, data, src, lsock, bint handed_off)
    cpdef _on_request(self, Message msg)
    cpdef bint _acks_own_reply(self, Message msg) except -1
    cpdef _on_reply(self, Message msg)
