# C view of kampx/_clock.pyx: the packet path's clock reads as C calls.
cpdef double monotonic() noexcept
cpdef double time() noexcept
cpdef long long monotonic_ns() noexcept
