"""How stale a cached read can be: a member that stops answering (frozen,
or cut off from its leader) stops the caches within a second, so that no
read that starts later returns a value the cluster may have replaced.

Reads after that either fail (the member cannot answer within
--command-timeout) or return what etcd holds, never the cached value.
"""
import errno
import os
import signal
import time

from harness import read, write

FROZEN_ERRNOS = (errno.ETIMEDOUT, errno.ENOTCONN, errno.EAGAIN)


def read_or_errno(path):
    try:
        return read(path)
    except OSError as e:
        assert e.errno in FROZEN_ERRNOS, e
        return e.errno


def test_a_frozen_member_stops_the_caches_within_a_second(own_etcd, mounter):
    m = mounter("--command-timeout=1s", etcd=own_etcd,
                allowed_stderr=(r"watch", r"could not write", r"timed out", r"leaving"))
    path = m.p("cfg")
    write(path, b"v1")
    assert read(path) == b"v1"
    # served from the caches now: the read asks etcd nothing
    before = own_etcd.kv_requests()
    assert read(path) == b"v1"
    assert own_etcd.kv_requests() == before
    os.kill(own_etcd.proc.pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        time.sleep(1.0)
        # every read that starts now asks the frozen member, and fails
        results = []
        while time.monotonic() - stopped < 4.0:
            results.append(read_or_errno(path))
        assert results and all(r in FROZEN_ERRNOS for r in results), results
    finally:
        os.kill(own_etcd.proc.pid, signal.SIGCONT)
    # back: the caches come back too
    deadline = time.monotonic() + 15
    while read_or_errno(path) != b"v1":
        assert time.monotonic() < deadline, "the mount did not come back"
        time.sleep(0.05)
