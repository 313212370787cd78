# C view of kampx/tm/timers.pyx: tm arms its timers (TimerHeap.later) and cancels them
# (Timer.cancel), the worker loop asks when the next is due and runs them, all with C calls;
# neither class has an instance dict or a subclass, so a cpdef method is a direct call.

cdef class Timer:
    cdef object fn
    cdef tuple args
    cdef public bint alive
    cdef dict bucket
    cpdef cancel(self)

cdef class TimerHeap:
    cdef dict _buckets  # tick -> {Timer: None}, insertion-ordered
    cdef list _ticks    # heap of the ticks that have a bucket
    cpdef Timer later(self, double delay, fn, tuple args)
    # the worker loop's two calls per round
    cpdef double timeout(self, double cap=*)
    cpdef int run(self, on_error=*) except -1
