# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
from kampx.routing.context cimport _Context, result
from kampx.sl cimport send_reply  # a challenge's C call
from kampx.auth.authenticator cimport Authenticator

# the worker's authenticator and the arguments' checks: C calls, the authenticator typed
cpdef Authenticator _auth(w)
cpdef str _realm(realm)
cpdef _table(str table)

cdef _Context ctx
