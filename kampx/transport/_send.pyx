# cython: language_level=3
"""Sending a loop round's datagrams in one sendmmsg(2) call.

send_batch: on a connected socket, to its one peer (the HEP copies of every SIP message,
kampx/hep.py). sendto_batch: on a listen socket, each datagram to its own address (what a
worker's round of requests and replies sends: kampx/transport/sockets.py), the addresses
packed once by `sockaddr` when the datagram was queued. Non-blocking: what the socket cannot
take now is dropped and counted by the caller, never waited for.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
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
    int AF_INET
    int AF_INET6

cdef extern from "<netinet/in.h>":
    struct in_addr:
        unsigned int s_addr
    struct in6_addr:
        unsigned char s6_addr[16]
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        unsigned int sin6_flowinfo
        in6_addr sin6_addr
        unsigned int sin6_scope_id
    unsigned short htons(unsigned short)

cdef extern from "<arpa/inet.h>":
    int inet_pton(int af, const char *src, void *dst)

cdef extern from "<poll.h>":
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd *fds, unsigned long nfds, int timeout) nogil
    short POLLOUT


cdef class _Vectors:
    """The mmsghdr and iovec arrays of one sendmmsg batch, freed with the object; each
    message points into a bytes object the caller keeps alive for the call."""

    cdef mmsghdr *vec
    cdef iovec *iov
    cdef Py_ssize_t n

    def __cinit__(self, Py_ssize_t n):
        self.n = n
        self.vec = <mmsghdr *>PyMem_Malloc(n * sizeof(mmsghdr))
        self.iov = <iovec *>PyMem_Malloc(n * sizeof(iovec))
        if self.vec == NULL or self.iov == NULL:
            raise MemoryError()
        memset(self.vec, 0, n * sizeof(mmsghdr))

    def __dealloc__(self):
        PyMem_Free(self.vec)
        PyMem_Free(self.iov)

    cdef void set(self, Py_ssize_t i, bytes data, bytes addr):
        self.iov[i].iov_base = PyBytes_AS_STRING(data)
        self.iov[i].iov_len = PyBytes_GET_SIZE(data)
        self.vec[i].msg_hdr.msg_iov = &self.iov[i]
        self.vec[i].msg_hdr.msg_iovlen = 1
        if addr is not None:
            self.vec[i].msg_hdr.msg_name = PyBytes_AS_STRING(addr)
            self.vec[i].msg_hdr.msg_namelen = <socklen_t>PyBytes_GET_SIZE(addr)


def sockaddr(str ip, object port, bint v6):
    """The packed address (ip, port) names for a socket of that family; None when it is not
    one (not an IP of that family, not a port 1-65535): destinations are built from what
    senders wrote."""
    cdef sockaddr_in a4
    cdef sockaddr_in6 a6
    cdef bytes text
    cdef long p
    if ip is None or type(port) is not int or not 0 < port < 65536:
        return None  # (compared as a Python int: any size)
    p = port
    try:
        text = ip.encode("ascii")
    except UnicodeEncodeError:
        return None
    if b"\0" in text:
        return None
    if v6:
        memset(&a6, 0, sizeof(a6))
        a6.sin6_family = AF_INET6
        a6.sin6_port = htons(<unsigned short>p)
        if inet_pton(AF_INET6, text, &a6.sin6_addr) != 1:
            return None
        return PyBytes_FromStringAndSize(<char *>&a6, sizeof(a6))
    memset(&a4, 0, sizeof(a4))
    a4.sin_family = AF_INET
    a4.sin_port = htons(<unsigned short>p)
    if inet_pton(AF_INET, text, &a4.sin_addr) != 1:
        return None
    return PyBytes_FromStringAndSize(<char *>&a4, sizeof(a4))


def sendto_batch(int fd, list items):
    """Send every (data, packed address) of `items` on `fd` in as few sendmmsg(2) calls as
    it takes; returns how many could not go. A full send buffer gets 5 ms to drain once,
    then what is left is dropped; a datagram the kernel refuses is skipped."""
    cdef Py_ssize_t n = len(items), i, done = 0
    cdef int sent, failed = 0, waited = 0
    cdef tuple item
    cdef pollfd pfd
    if n == 0:
        return 0
    cdef _Vectors v = _Vectors(n)
    for i in range(n):
        item = <tuple>items[i]
        v.set(i, <bytes>item[0], <bytes>item[1])
    while done < n:
        with nogil:
            sent = sendmmsg(fd, v.vec + done, <unsigned int>(n - done), MSG_DONTWAIT)
        if sent < 0:
            if errno == EINTR:
                continue
            if errno == EAGAIN and not waited:
                waited = 1
                pfd.fd = fd
                pfd.events = POLLOUT
                pfd.revents = 0
                with nogil:
                    poll(&pfd, 1, 5)
                continue
            if errno == EAGAIN:
                failed += <int>(n - done)
                break
            done += 1  # this one refused (no route, not permitted): the rest may go
            failed += 1
            continue
        done += sent
    return failed


def send_batch(int fd, list packets):
    """Send `packets` (bytes each) on connected socket `fd`, as many per system call as it
    takes. Returns how many went; the rest were refused (a full buffer, an ICMP error of
    an earlier send) and are dropped."""
    cdef Py_ssize_t n = len(packets), i, done = 0, skipped = 0
    cdef int sent
    if n == 0:
        return 0
    cdef _Vectors v = _Vectors(n)
    for i in range(n):
        v.set(i, <bytes>packets[i], None)
    while done < n:
        sent = sendmmsg(fd, v.vec + done, <unsigned int>(n - done), MSG_DONTWAIT)
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
