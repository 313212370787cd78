# C types for kampx/worker.py (setup.py's PYTHON_COMPILED): a datagram's way from process()
# to the script or its transaction is C calls on C slots. Every other attribute lives in the
# instance's __dict__, as before (a Python subclass, the sandbox's, adds its own; cpdef
# methods can still be replaced on an instance, as a test does).
cimport cython
from kampx._clock cimport monotonic, monotonic_ns, time
from kampx._cparse cimport Message
from kampx.tm.manager cimport TransactionManager
from kampx.dialog cimport Dialogs, Journal
from kampx.routing.hooks cimport Hooks
from kampx._shm cimport CounterRow
from kampx.stats.family cimport Family
from kampx.tm.timers cimport TimerHeap
from kampx.transport.sockets cimport ListenSocket


cdef class Worker:
    cdef public Hooks hooks
    cdef public object overload, forwarder
    cdef public CounterRow stats
    cdef public TransactionManager tm
    cdef public str sl_ack_prefix
    # what the script API reads of its worker on every request (kampx/routing, sl, rr,
    # registrar: `ctx.worker` is a Worker there): C loads, not lookups in __dict__
    cdef public object cfg, ctx, script, modules, server_header, sl_tag_prefix
    cdef public Dialogs dialogs
    cdef dict __dict__

    # the loop's calls per round (timers, the journal, the sockets' sends) are C calls
    @cython.locals(timers=TimerHeap, journal=Journal, ls=ListenSocket, mine=ListenSocket,
                   now=double, rotated=double, next_check=double, trace_word=Py_ssize_t)
    cpdef _loop(self)
    @cython.locals(msg=Message)
    cpdef process(self, data, src, lsock, bint handed_off)
    cpdef _on_request(self, Message msg)
    cpdef bint _acks_own_reply(self, Message msg) except -1
    cpdef _on_reply(self, Message msg)

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family BAD_MSG_HDR, ERR_REQUESTS, HANDOFFS, HANDOFF_FAILED, HANDOFF_REJECTED
cdef Family INTERNAL_ERRORS, RCV_REPLIES, RCV_REQUESTS, SEND_ERRORS, SL_ERR_REPLIES
cdef Family SL_REPLIES, STEERED
