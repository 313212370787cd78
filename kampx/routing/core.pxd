# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads.
cimport cython
from kampx.forward cimport Forwarder
from kampx.routing.context cimport _Context

cdef _Context ctx

# the parser's method ids by name, a C dict: is_method() of a known method is a lookup and an
# int compare
cdef dict METHOD_IDS

# the proxy's own addresses: a C call on the worker's forwarder
@cython.locals(fw=Forwarder)
cpdef is_myself(uri=*)
