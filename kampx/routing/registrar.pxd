# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx.routing.context cimport _Context, result

cdef _Context ctx
