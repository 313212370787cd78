# cython: language_level=3
"""Sending a batch of datagrams on a connected socket in one sendmmsg(2) call.

For traffic that can wait until the end of a loop round and goes to one peer (the HEP
copies of every SIP message, kampx/hep.py): one system call per round instead of one per
datagram. Non-blocking: what the socket cannot take now is dropped and counted by the
caller, never waited for.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EINTR, errno
from libc.string cimport memset


cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct msghdr:
        void *msg_name
        socklen_t msg_namelen
        iovec *msg_iov
        size_t msg_iovlen
        void *msg_control
        size_t msg_controllen
        int msg_flags
    struct mmsghdr:
        msghdr msg_hdr
        unsigned int msg_len
    int sendmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags) nogil
    int MSG_DONTWAIT


def send_batch(int fd, list packets):
    """Send `packets` (bytes each) on connected socket `fd`, as many per system call as it
    takes. Returns how many went; the rest were refused (a full buffer, an ICMP error of
    an earlier send) and are dropped."""
    cdef Py_ssize_t n = len(packets), i, done = 0, skipped = 0
    cdef int sent
    cdef bytes data
    if n == 0:
        return 0
    cdef mmsghdr *vec = <mmsghdr *>PyMem_Malloc(n * sizeof(mmsghdr))
    cdef iovec *iov = <iovec *>PyMem_Malloc(n * sizeof(iovec))
    if vec == NULL or iov == NULL:
        PyMem_Free(vec)
        PyMem_Free(iov)
        raise MemoryError()
    try:
        memset(vec, 0, n * sizeof(mmsghdr))
        for i in range(n):
            data = <bytes>packets[i]
            iov[i].iov_base = PyBytes_AS_STRING(data)
            iov[i].iov_len = PyBytes_GET_SIZE(data)
            vec[i].msg_hdr.msg_iov = &iov[i]
            vec[i].msg_hdr.msg_iovlen = 1
        while done < n:
            sent = sendmmsg(fd, vec + done, <unsigned int>(n - done), MSG_DONTWAIT)
            if sent < 0:
                if errno == EINTR:
                    continue
                if skipped == 0 and done < n - 1:
                    # the error of an earlier send (an ICMP unreachable) surfaced on this
                    # one: it is lost, the rest may still go
                    done += 1
                    skipped = 1
                    continue
                break
            done += sent
            if sent == 0:
                break
        return done - skipped
    finally:
        PyMem_Free(vec)
        PyMem_Free(iov)
