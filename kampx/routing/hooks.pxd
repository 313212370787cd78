# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx.routing.context cimport _Context
from kampx.stats.family cimport Family

cdef _Context ctx

# the statistics counted here, as C values: `stats.inc(NAME.base)` is a C field read
cdef Family DROP_REQUESTS
