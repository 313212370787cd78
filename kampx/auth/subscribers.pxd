# C declaration of kampx/auth/subscribers.py's name check, for the authenticator's C call.
# (The cache stays a Python class: tests replace its methods on an instance.)

cpdef bint name_fits(str name) except -1
