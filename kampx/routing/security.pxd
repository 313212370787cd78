# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx.routing.context cimport _Context, result
from kampx.security.guard cimport SecurityGuard

cdef _Context ctx

# the worker asked for last and its guard (the script asks three times a request): the
# guard's checks are C calls
cdef object _last_worker
cdef SecurityGuard _last_guard
cpdef SecurityGuard guard(w)
