# `ctx` as its C type (kampx/routing/context.pxd): its message and worker are C loads;
# kampx/sl.py's replies are C calls.
from kampx.routing.context cimport _Context

cdef _Context ctx

from kampx.sl cimport send_reply as _send_reply, stateless_reply as _stateless_reply
