# cython: language_level=3
"""Reading the listen socket: every datagram it holds in one recvmmsg(2) call.

A worker woken by epoll used to call recvfrom() until it raised BlockingIOError: one system
call per datagram plus one that fails, and a Python exception built and caught on every
wake-up. recvmmsg() takes up to `batch` datagrams in one call and an empty socket costs no
exception. Each datagram comes out as (bytes, (ip, port)), the address as the socket module
gives it (IPv6 without flow info and scope), the text of recent source IPs reused.

With `timestamps`, the socket must have SO_TIMESTAMPNS set: the kernel stamps each datagram
as it arrives, and `delay` is then how long the oldest datagram of the last batch (its first:
a socket queue is FIFO) waited in the socket before this read. That is the worker's lag, what
overload control (kampx/overload.py) watches; it costs no system call.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from libc.errno cimport EAGAIN, EINTR, errno
from libc.string cimport memcpy, memset, strerror


cdef extern from "<sys/uio.h>":
    struct iovec:
        void *iov_base
        size_t iov_len

cdef extern from "<sys/socket.h>":
    ctypedef unsigned int socklen_t
    struct sockaddr_storage:
        unsigned short ss_family
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
    int recvmmsg(int fd, mmsghdr *vec, unsigned int vlen, int flags, void *timeout) nogil
    struct cmsghdr:
        size_t cmsg_len
        int cmsg_level
        int cmsg_type
    cmsghdr *CMSG_FIRSTHDR(msghdr *msg)
    cmsghdr *CMSG_NXTHDR(msghdr *msg, cmsghdr *cmsg)
    unsigned char *CMSG_DATA(cmsghdr *cmsg)
    int MSG_DONTWAIT
    int AF_INET
    int AF_INET6
    int SOL_SOCKET
    int SCM_TIMESTAMPNS

cdef extern from "<time.h>":
    struct timespec:
        long tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec *ts) nogil
    int CLOCK_REALTIME

cdef extern from "<netinet/in.h>":
    struct in_addr:
        unsigned int s_addr
    struct sockaddr_in:
        unsigned short sin_family
        unsigned short sin_port
        in_addr sin_addr
    struct in6_addr:
        pass
    struct sockaddr_in6:
        unsigned short sin6_family
        unsigned short sin6_port
        in6_addr sin6_addr
    unsigned short ntohs(unsigned short)

cdef extern from "<arpa/inet.h>":
    const char *inet_ntop(int af, const void *src, char *dst, socklen_t size)

cdef enum:
    MAX_DATAGRAM = 65536
    ADDR_CACHE_MAX = 4096
    CONTROL_LEN = 64           # CMSG_SPACE(sizeof(struct timespec)) with room to spare


cdef class Receiver:
    """recv() -> [(data, (ip, port)), ...] for one socket; [] when it holds nothing.
    Raises OSError for any other error (ICMP errors surface on UDP sockets this way)."""

    cdef int fd
    cdef unsigned int batch
    cdef char *bufs
    cdef mmsghdr *msgs
    cdef iovec *iovs
    cdef sockaddr_storage *names
    cdef dict ip_text          # raw IPv4 address -> its text (sources repeat: trunks, phones)
    cdef char *control         # a CONTROL_LEN buffer per datagram, or NULL: no timestamps
    cdef readonly double delay  # seconds the last batch's first datagram waited (timestamps)

    def __cinit__(self, int fd, unsigned int batch=32, bint timestamps=False):
        cdef unsigned int i
        self.fd = fd
        self.batch = batch
        self.delay = 0.0
        self.control = NULL
        self.bufs = <char *>PyMem_Malloc(<size_t>batch * MAX_DATAGRAM)
        self.msgs = <mmsghdr *>PyMem_Malloc(batch * sizeof(mmsghdr))
        self.iovs = <iovec *>PyMem_Malloc(batch * sizeof(iovec))
        self.names = <sockaddr_storage *>PyMem_Malloc(batch * sizeof(sockaddr_storage))
        if timestamps:
            self.control = <char *>PyMem_Malloc(batch * CONTROL_LEN)
        if not (self.bufs and self.msgs and self.iovs and self.names) or (
                timestamps and not self.control):
            raise MemoryError()
        memset(self.msgs, 0, batch * sizeof(mmsghdr))
        for i in range(batch):
            self.iovs[i].iov_base = self.bufs + <size_t>i * MAX_DATAGRAM
            self.iovs[i].iov_len = MAX_DATAGRAM
            self.msgs[i].msg_hdr.msg_iov = &self.iovs[i]
            self.msgs[i].msg_hdr.msg_iovlen = 1
            self.msgs[i].msg_hdr.msg_name = &self.names[i]
            if self.control:
                self.msgs[i].msg_hdr.msg_control = self.control + <size_t>i * CONTROL_LEN
        self.ip_text = {}

    def __dealloc__(self):
        PyMem_Free(self.control)
        PyMem_Free(self.bufs)
        PyMem_Free(self.msgs)
        PyMem_Free(self.iovs)
        PyMem_Free(self.names)

    cdef object _source(self, sockaddr_storage *sa):
        cdef char text[64]
        cdef sockaddr_in *v4
        cdef sockaddr_in6 *v6
        if sa.ss_family == AF_INET:
            v4 = <sockaddr_in *>sa
            ip = self.ip_text.get(v4.sin_addr.s_addr)
            if ip is None:
                inet_ntop(AF_INET, &v4.sin_addr, text, sizeof(text))
                ip = text.decode("ascii")
                if len(self.ip_text) >= ADDR_CACHE_MAX:
                    self.ip_text.clear()
                self.ip_text[v4.sin_addr.s_addr] = ip
            return (ip, ntohs(v4.sin_port))
        if sa.ss_family == AF_INET6:
            v6 = <sockaddr_in6 *>sa
            inet_ntop(AF_INET6, &v6.sin6_addr, text, sizeof(text))
            return (text.decode("ascii"), ntohs(v6.sin6_port))
        return ("", 0)

    cdef double _waited(self, msghdr *hdr):
        """Seconds since the kernel stamped this datagram; 0.0 without a stamp."""
        cdef cmsghdr *c = CMSG_FIRSTHDR(hdr)
        cdef timespec stamp, now
        while c != NULL:
            if c.cmsg_level == SOL_SOCKET and c.cmsg_type == SCM_TIMESTAMPNS:
                memcpy(&stamp, CMSG_DATA(c), sizeof(timespec))
                clock_gettime(CLOCK_REALTIME, &now)
                waited = (now.tv_sec - stamp.tv_sec) + (now.tv_nsec - stamp.tv_nsec) * 1e-9
                return waited if waited > 0.0 else 0.0
            c = CMSG_NXTHDR(hdr, c)
        return 0.0

    def recv(self):
        cdef unsigned int i
        cdef int n
        for i in range(self.batch):
            self.msgs[i].msg_hdr.msg_namelen = sizeof(sockaddr_storage)
            if self.control:
                self.msgs[i].msg_hdr.msg_controllen = CONTROL_LEN
        with nogil:
            n = recvmmsg(self.fd, self.msgs, self.batch, MSG_DONTWAIT, NULL)
        if n < 0:
            if errno == EAGAIN or errno == EINTR:  # EWOULDBLOCK is EAGAIN on Linux
                return []
            raise OSError(errno, strerror(errno))
        if self.control and n > 0:
            self.delay = self._waited(&self.msgs[0].msg_hdr)
        out = []
        for i in range(<unsigned int>n):
            out.append((
                PyBytes_FromStringAndSize(<char *>self.iovs[i].iov_base, self.msgs[i].msg_len),
                self._source(&self.names[i]),
            ))
        return out
