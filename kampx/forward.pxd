# C types for kampx/forward.py, compiled as it is written (setup.py's PYTHON_COMPILED): tm
# calls the destination lookup in C, which reads the Request-URI from the parsed offsets
# (ruri_hop) and, when it has parameters, its view as C fields.
cimport cython
from kampx._cparse cimport Message, URI, ruri_hop
from kampx._inet cimport is_ip
from kampx._shm cimport CounterRow
from kampx.stats.family cimport Family

cdef class Forwarder:
    cdef public object sockets, dialogs
    cdef public CounterRow stats
    cdef public str realm
    cdef public bint forward_stray_replies
    cdef public long long _stateless_seq
    cdef public dict _myself
    cdef public dict _senders

    cpdef socket_for(self, dest)
    cpdef bint is_myself(self, str host, port) except -1
    @cython.locals(u=URI, hop=tuple, kind=int)
    cpdef destination(self, Message msg, host=*, port=*)
    cpdef bint forward_stateless(self, Message msg, dest, str branch_prefix) except -1

cpdef tuple reply_destination(Message msg, src)
cpdef resolve_destination(str host, int port, transport=*, bint secure=*)

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family DROP_REPLIES, FWD_REPLIES, FWD_REQUESTS, SEND_ERRORS
