# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx._cparse cimport Message
from kampx._shm cimport CounterRow
from kampx.routing.context cimport _Context
from kampx.stats.family cimport Family

cdef _Context ctx

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family DROP_REQUESTS


# The worker types its hooks: request_route is a C call, and the runners' own fields are
# C loads (the script, the worker and the counters read on every request).
cdef class Hooks:
    cdef public object _script, _worker, _report, reply_route, failure_route, branch_route
    cdef public CounterRow _stats
    cpdef request_route(self, Message msg)
