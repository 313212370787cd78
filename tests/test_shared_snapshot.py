"""kampx/shared_snapshot.py: a blob published to every process, readers that never lock and
never use a copy being rewritten, and the per-process parsed view."""
import os
import select
import time

import pytest

from kampx import shared_snapshot as ss

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def blob():
    b = ss.SharedBlob("test", 4096)
    yield b
    b.close()


def test_empty_until_published(blob):
    assert blob.generation == 0 and blob.read() == (0, b"")
    assert blob.publish(b"one") == 1 and blob.read() == (1, b"one")
    assert blob.publish(b"") == 2 and blob.read() == (2, b"")


def test_too_large_is_refused_and_changes_nothing(blob):
    blob.publish(b"kept")
    with pytest.raises(ss.BlobTooLarge):
        blob.publish(b"x" * 4097)
    assert blob.read() == (1, b"kept")


def test_parsed_view_parses_again_only_after_a_publication(blob):
    parsed = []
    view = ss.ParsedSnapshot(blob, lambda gen, data: parsed.append(gen) or (gen, data))
    for _ in range(50):
        assert view.get() == (0, b"")
    blob.publish(b"a")
    for _ in range(50):
        assert view.get() == (1, b"a")
    assert parsed == [0, 1]


def test_a_reader_racing_two_publications_retries(blob, monkeypatch):
    """A reader copying out generation N while two publications happen (the second rewrites
    the very copy it read) must not use what it read."""
    blob.publish(b"A" * 100)
    real, calls = blob._read_copy, []

    def racing(seq):
        data = real(seq)
        if not calls:
            blob.publish(b"B" * 100)
            blob.publish(b"C" * 100)
        calls.append(seq)
        return data

    monkeypatch.setattr(blob, "_read_copy", racing)
    assert blob.read() == (3, b"C" * 100)
    assert calls == [1, 3]


def test_a_corrupt_copy_is_never_used(blob):
    blob.publish(b"good")
    off = blob._copy_offset(1)
    length, crc = ss._COPY_HEADER.unpack_from(blob._mm, off)
    ss._COPY_HEADER.pack_into(blob._mm, off, length, crc ^ 1)
    assert blob._read_copy(1) is None
    ss._COPY_HEADER.pack_into(blob._mm, off, length, crc)
    idle = blob._copy_offset(2) + ss._COPY_HEADER_SIZE
    blob._mm[idle:idle + 64] = b"\xff" * 64  # a writer killed half-way: never published
    assert blob.read() == (1, b"good")


def test_writers_in_several_processes_lose_nothing(blob):
    per_child, children = 100, 3
    pids = []
    for c in range(children):
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(per_child):
                    blob.publish(bytes([c]) * (100 + i))
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        assert os.waitpid(pid, 0)[1] == 0
    gen, data = blob.read()
    assert gen == per_child * children and len(set(data)) == 1


def test_readers_in_other_processes_see_whole_publications_only(blob):
    """A reader in another process sees each publication whole: it reads until it has seen
    both (or 5 s passed, on a busy machine) while the writer alternates them; any other
    value is a torn read."""
    a, b = b"A" * 3000, b"B" * 2000
    blob.publish(a)
    deadline = time.monotonic() + 5.0
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            seen = set()
            while time.monotonic() < deadline and len(seen) < 2:
                seen.add(blob.read()[1])
            os.write(w, b"torn" if not seen <= {a, b} else b"ok" if len(seen) == 2 else b"one")
        finally:
            os._exit(0)
    os.close(w)
    while not select.select([r], [], [], 0)[0] and time.monotonic() < deadline + 1:
        blob.publish(b)
        blob.publish(a)
    assert os.read(r, 16) == b"ok"
    os.waitpid(pid, 0)
    os.close(r)


def test_the_writer_lock_is_reentrant_and_exclusive(blob):
    with blob.writer():
        with blob.writer():
            blob.publish(b"x")
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                with blob.writer():  # waits for the parent to let go
                    os.write(w, str(blob.generation).encode())
            finally:
                os._exit(0)
        time.sleep(0.2)
        blob.publish(b"y")  # still ours: the child has not got in
    assert os.read(r, 8) == b"2"
    os.waitpid(pid, 0)
    os.close(r)
    os.close(w)
