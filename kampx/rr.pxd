# C types for kampx/rr.py (setup.py's PYTHON_COMPILED): the message is a parsed Message (its
# flags and socket are C loads) and a known dialog's admission is a C call (the worker's
# Dialogs, typed).
cimport cython
from kampx._cparse cimport Message
from kampx.dialog cimport Dialogs


cpdef bint record_route(worker, Message msg) except -1
cpdef branch_lines(Message msg, out_lsock)
@cython.locals(dialogs=Dialogs)
cpdef bint loose_route(worker, Message msg) except -1
