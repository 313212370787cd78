# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx.routing.context cimport _Context
from kampx.sl cimport send_reply  # a challenge's C call

cdef _Context ctx
