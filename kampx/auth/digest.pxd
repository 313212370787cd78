# C types for kampx/auth/digest.py (compiled with setup.py's PYTHON_COMPILED): verify() is a
# C call for the authenticator, the credentials' fields C loads.
from kampx.auth._digest cimport Credentials


cpdef bint verify(Credentials cred, str stored_ha1, str method, bytes body=*) except -1
