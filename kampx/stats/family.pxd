# C type for kampx/stats/family.py (setup.py's PYTHON_COMPILED): a family's column is a C
# field for the modules that cimport Family and declare the families they count as one.
cimport cython
from kampx._shm cimport CounterRow


cdef class Family:
    cdef public str group, name, kind, help
    cdef public object label, series_label
    cdef public tuple values, buckets, series
    cdef public Py_ssize_t base
    cdef public double scale

    # a histogram's observation, a C call for the modules that type the family
    @cython.locals(n=Py_ssize_t, base=Py_ssize_t, scaled=double)
    cpdef observe(self, CounterRow stats, Py_ssize_t series_index, double value)
