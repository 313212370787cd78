"""exit() and drop() as C builtins (kampx/routing/flow.py): a function that sets the
exception and returns NULL, with no frame of its own.

exit() ends nearly every request, and an exception costs a traceback entry (a frame object
made, then freed) for every Python frame it leaves; a Python exit() is one frame more, and a
compiled one gets a traceback frame built for it. Raised from C, only the script's own frames
are unwound. The exception is set without an instance (made only if a handler asks for it)."""

cdef extern from *:
    """
    static PyObject *kx_raise_type(PyObject *exc_type, PyObject *unused) {
        (void)unused;
        PyErr_SetNone(exc_type);
        return NULL;
    }
    static PyMethodDef kx_raise_defs[2] = {
        {"exit", (PyCFunction)kx_raise_type, METH_NOARGS,
         "exit($self, /)\\n--\\n\\nEnd processing of the current message (Kamailio's `exit`)."},
        {"drop", (PyCFunction)kx_raise_type, METH_NOARGS,
         "drop($self, /)\\n--\\n\\nEnd processing; a reply is not forwarded (Kamailio's `drop`)."},
    };
    """
    ctypedef struct PyMethodDef:
        pass
    PyMethodDef kx_raise_defs[2]
    object PyCFunction_NewEx(PyMethodDef *ml, object self, object module)


def raisers(type exit_type not None, type drop_type not None, str module not None):
    """(exit, drop): builtins of `module` (their __module__: the loader checks a script's
    calls of kampx's functions against their signatures) that raise `exit_type` /
    `drop_type`, each called without arguments."""
    if not (issubclass(exit_type, BaseException) and issubclass(drop_type, BaseException)):
        raise TypeError("exit and drop raise exception types")
    return (PyCFunction_NewEx(&kx_raise_defs[0], exit_type, module),
            PyCFunction_NewEx(&kx_raise_defs[1], drop_type, module))
