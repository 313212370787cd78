# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads;
# kampx/sl.py's stateless reply is a C call.
from kampx.routing.context cimport _Context

cdef _Context ctx

from kampx.sl cimport stateless_reply
from kampx.stats.family cimport Family

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family ERR_REQUESTS
