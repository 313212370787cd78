# C view of kampx/_inet.pyx: IP address text read with C calls.
cpdef bint is_ip(object host) except -1
cpdef object ip_key(object ip)
