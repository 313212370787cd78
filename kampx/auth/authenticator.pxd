# C types for kampx/auth/authenticator.py (compiled with setup.py's PYTHON_COMPILED): the
# outcome and the authenticator are C structs, the message a typed Message, the credentials
# and the nonce check C types of their own modules, so that the check's steps are C calls
# and loads instead of attribute lookups and Python calls.
cimport cython

from kampx._cparse cimport Message
from kampx.auth._digest cimport Credentials, pick
from kampx.auth.digest cimport verify
from kampx.auth.nonce cimport NonceCheck, Nonces
from kampx.auth.subscribers cimport name_fits
from kampx._shm cimport CounterRow


cdef class Outcome:
    cdef readonly int code
    cdef readonly object kind
    cdef readonly object username
    cdef readonly bint stale


cdef class Authenticator:
    cdef public list algorithms
    cdef public Nonces nonces
    cdef public object subscribers
    cdef public CounterRow stats
    cdef public object on_failure
    cdef dict _decoy
    cdef bint _storage_error_logged
    cpdef int check(self, Message msg, str realm, object kind, int flags=*) except? -100
    cdef Outcome _fail(self, Message msg, object kind, int code, str reason, object username=*,
                       bint counts_for_ban=*)
    @cython.locals(cred=Credentials, nonce=NonceCheck)
    cdef Outcome _check(self, Message msg, str realm, object kind, int flags)
    cdef bint _verify(self, Credentials cred, sub, str column, str base, str method,
                      bytes body) except -1
    cpdef list challenge_headers(self, Message msg, str realm, object kind, int flags=*)


cpdef bint uri_matches(str digest_uri, str request_uri) except -1
cdef object _party_user(Message msg, bint to_side)
cdef bint _ids_match(Message msg, str auth_user) except -1
