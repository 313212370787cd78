"""Anonymous shared memory with a writers' lock, for the tables every process of one kampx
reads: a memfd mapping (no name in any filesystem, gone with the last process) that, unlike
mmap(-1), has an fd to put a POSIX record lock on. Construct before fork.

Readers of the structures built on it never lock (each has its own scheme: sequence words,
two copies); writers serialise with `writer()`: exclusive against every other writer in any
process or thread, re-entrant in one, and right in a child forked while its parent held it.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading


class SharedMemory:
    def __init__(self, name: str, nbytes: int):
        self.nbytes = nbytes
        self.fd = os.memfd_create(f"kampx-{name}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self.fd, nbytes)
            self.mm = mmap.mmap(self.fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(self.fd)
            raise
        self._forked()

    def _forked(self) -> None:
        """This process's writer bookkeeping, new: a child forked while its parent held the
        lock inherits the bookkeeping but not the POSIX lock."""
        self._pid = os.getpid()
        self._thread_lock = threading.RLock()
        self._depth = 0  # writer() nesting in this process (POSIX locks do not nest)
        self._writer = _Writer(self)

    def writer(self) -> _Writer:
        """`with shm.writer():` holds the writers' lock (a plain object, not a generator:
        tables lock a few times per call)."""
        return self._writer

    def lock(self) -> None:
        if self._pid != os.getpid():
            self._forked()
        self._thread_lock.acquire()  # POSIX locks do not exclude threads of one process
        if self._depth == 0:
            try:
                fcntl.lockf(self.fd, fcntl.LOCK_EX)
            except BaseException:
                self._thread_lock.release()
                raise
        self._depth += 1

    def unlock(self) -> None:
        self._depth -= 1
        if self._depth == 0:
            fcntl.lockf(self.fd, fcntl.LOCK_UN)
        self._thread_lock.release()

    def words(self, nbytes: int) -> memoryview:
        """The first `nbytes` as 64-bit words (a header's counters)."""
        return memoryview(self.mm)[:nbytes].cast("Q")

    def close(self) -> None:
        self.mm.close()
        os.close(self.fd)


class _Writer:
    __slots__ = ("shm",)

    def __init__(self, shm: SharedMemory):
        self.shm = shm

    def __enter__(self) -> None:
        self.shm.lock()

    def __exit__(self, *exc) -> None:
        self.shm.unlock()
