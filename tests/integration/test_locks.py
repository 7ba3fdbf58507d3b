"""flock(2) on files as etcd locks: exclusion across mounts and with
`etcdctl lock`, release on unlock, close, process death and daemon death,
interrupted waiters, and a counter that loses no increment.

Each test checks both sides: what flock returns on the mounts, and the
lock's owner keys in etcd (etcd's lock service keeps one key per holder or
waiter under NAME/, NAME being the file's user.etcd.lock_name).
"""
import errno
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
import types

import pytest

import harness
from test_races import H2Proxy, PROXY_OPTS



def wait_for(pred, timeout=10.0):
    """Polls pred until it is true; fails the test after timeout seconds."""
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "condition not met within %ss" % timeout
        time.sleep(0.02)

LOCKER = r"""
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
"""


def lock_name(path):
    return os.getxattr(path, "user.etcd.lock_name")


def owner_keys(etcd, name):
    return etcd.keys(name + b"/")


def try_flock(path):
    """flock -n on a new descriptor: True if taken (and then let go)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def locker(path, seconds):
    """A process holding flock on path; returns once it holds it."""
    p = subprocess.Popen([sys.executable, "-c", LOCKER, path, str(seconds)],
                         stdout=subprocess.PIPE)
    assert p.stdout.readline().strip() == b"locked"
    return p


@pytest.fixture
def two(etcd, mounter):
    """Two mounts of etcd and app/deploy.lock on both: m1, m2, their paths
    to the file f1, f2, and its lock name."""
    m1 = mounter(etcd=etcd)
    m2 = mounter(etcd=etcd)
    os.makedirs(os.path.join(m1.path, "app"))
    f1 = os.path.join(m1.path, "app/deploy.lock")
    f2 = os.path.join(m2.path, "app/deploy.lock")
    with open(f1, "w"):
        pass
    wait_for(lambda: os.path.exists(f2))
    return types.SimpleNamespace(m1=m1, m2=m2, f1=f1, f2=f2, name=lock_name(f1))


def test_lock_name_is_documented_mapping(etcd, two):
    for f in (two.f1, two.f2):
        assert lock_name(f) == b"etcdfs-lock/app/deploy.lock%"
    assert "user.etcd.lock_name" in os.listxattr(two.f1)
    # read-only, like the other etcd attributes
    assert harness.errno_of(os.setxattr, two.f1, "user.etcd.lock_name", b"x") == errno.EPERM


def test_flock_excludes_across_mounts(etcd, two):
    f1, f2, name = two.f1, two.f2, two.name
    fd = os.open(f1, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    keys = owner_keys(etcd, name)
    assert len(keys) == 1, keys
    # another mount, and another owner on the same mount, are refused at once
    assert not try_flock(f2)
    assert not try_flock(f1)
    got = []

    def waiter():
        fd2 = os.open(f2, os.O_RDONLY)
        fcntl.flock(fd2, fcntl.LOCK_EX)
        got.append(time.monotonic())
        fcntl.flock(fd2, fcntl.LOCK_UN)
        os.close(fd2)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(1.0)
    assert not got, "a second mount took a held lock"
    # the waiter's key waits behind the holder's
    assert len(owner_keys(etcd, name)) == 2
    released = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_UN)
    t.join(10)
    assert got and got[0] - released < 2.0
    os.close(fd)
    wait_for(lambda: owner_keys(etcd, name) == [])
    assert try_flock(f2)


def test_flock_and_etcdctl_lock_exclude_each_other(etcd, two):
    f1, f2, name = two.f1, two.f2, two.name.decode()
    fd = os.open(f1, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    ctl = subprocess.Popen(etcd.ctl_argv("lock", name, "echo", "got-it"),
                           stdout=subprocess.PIPE)
    time.sleep(1.0)
    assert ctl.poll() is None, "etcdctl lock went through a held flock"
    fcntl.flock(fd, fcntl.LOCK_UN)
    out, _ = ctl.communicate(timeout=10)
    assert b"got-it" in out
    # and the reverse: etcdctl holds, flock waits for it
    ctl = subprocess.Popen(etcd.ctl_argv("lock", name, "sleep", "2"))
    wait_for(lambda: len(owner_keys(etcd, name.encode())) == 1)
    assert not try_flock(f2)
    t0 = time.monotonic()
    fcntl.flock(fd, fcntl.LOCK_EX)
    waited = time.monotonic() - t0
    assert ctl.wait(10) == 0
    assert waited > 1.0, waited
    os.close(fd)


def test_lock_released_at_close_and_process_death(etcd, two):
    f1, f2, name = two.f1, two.f2, two.name
    p = locker(f1, 60)
    assert not try_flock(f2)
    p.kill()
    p.wait()
    wait_for(lambda: try_flock(f2), timeout=5)
    wait_for(lambda: owner_keys(etcd, name) == [])
    # close without LOCK_UN
    fd = os.open(f1, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    assert not try_flock(f2)
    os.close(fd)
    wait_for(lambda: try_flock(f2), timeout=5)


def test_interrupted_waiter_leaves_no_key(etcd, two):
    f1, f2, name = two.f1, two.f2, two.name
    p = locker(f1, 60)
    # flock -w 1: SIGALRM interrupts the wait
    t0 = time.monotonic()
    r = subprocess.run(["flock", "-w", "1", f2, "true"])
    assert r.returncode == 1 and time.monotonic() - t0 < 5
    wait_for(lambda: len(owner_keys(etcd, name)) == 1)
    # SIGKILL of a waiter: it dies at once (no D state), its key goes
    w = subprocess.Popen(["flock", f2, "true"])
    wait_for(lambda: len(owner_keys(etcd, name)) == 2)
    w.kill()
    assert w.wait(5) == -signal.SIGKILL
    wait_for(lambda: len(owner_keys(etcd, name)) == 1)
    p.kill()
    p.wait()
    wait_for(lambda: owner_keys(etcd, name) == [])


def test_lock_of_a_dead_daemon_lapses_with_its_lease(etcd, mounter):
    m1 = mounter("--lock-ttl=3s", etcd=etcd)
    m2 = mounter(etcd=etcd)
    f1 = os.path.join(m1.path, "held")
    with open(f1, "w"):
        pass
    name = lock_name(f1)
    p = locker(f1, 60)
    lease = etcd.kvs(name + b"/", prefix=True)[0]["lease"]
    assert lease != 0
    m1.crash()
    p.kill()
    p.wait()
    t0 = time.monotonic()
    r = subprocess.run(["flock", "-w", "15", os.path.join(m2.path, "held"), "true"])
    assert r.returncode == 0
    assert time.monotonic() - t0 < 3 + 2


def test_unmount_revokes_the_lease(etcd, mounter):
    m1 = mounter(etcd=etcd)
    f1 = os.path.join(m1.path, "f")
    with open(f1, "w"):
        pass
    name = lock_name(f1)
    fd = os.open(f1, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    lease = etcd.kvs(name + b"/", prefix=True)[0]["lease"]
    os.close(fd)
    wait_for(lambda: owner_keys(etcd, name) == [])
    assert b"remaining(" in etcd.ctl("lease", "timetolive", "%x" % lease)
    m1.close()
    out = etcd.ctl("lease", "timetolive", "%x" % lease)
    assert b"already expired" in out, out


# flock on a lock file, then read-increment-write of the counter (opened
# once the lock is held: a descriptor opened before works on the value it
# opened, and its Put fails with ESTALE if another holder wrote meanwhile);
# the holder's id goes into a second file while it holds the lock.
def test_unlock_puts_what_the_holder_wrote(etcd, two):
    """LOCK_UN returns after the holder's writes through that descriptor
    are in etcd, before close: the next holder reads them."""
    fd = os.open(two.f1, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, b"written under the lock")
        assert etcd.get(b"/app/deploy.lock") == b""
        fcntl.flock(fd, fcntl.LOCK_UN)
        assert etcd.get(b"/app/deploy.lock") == b"written under the lock"
        fd2 = os.open(two.f2, os.O_RDONLY)
        try:
            fcntl.flock(fd2, fcntl.LOCK_EX)
            assert os.read(fd2, 100) == b"written under the lock"
        finally:
            os.close(fd2)
    finally:
        os.close(fd)


@pytest.fixture
def proxy(etcd):
    p = H2Proxy(etcd.client_port)
    yield p
    p.close()


def test_holder_reads_what_the_previous_holder_wrote(etcd, proxy, mounter):
    """Mount b's watch events are held back (they may arrive late on any
    network): the lock it is granted still makes it read the value mount a
    wrote before letting go, not the one b has cached."""
    a = mounter(etcd=etcd)
    b = mounter(*PROXY_OPTS, "--endpoints=" + proxy.endpoint)
    os.makedirs(a.p("app"))
    with open(a.p("app/lock"), "w"):
        pass
    with open(a.p("app/v"), "w") as f:
        f.write("1")
    wait_for(lambda: os.path.exists(b.p("app/v")) and open(b.p("app/v")).read() == "1")
    proxy.hold_events()
    fa = os.open(a.p("app/lock"), os.O_RDONLY)
    fcntl.flock(fa, fcntl.LOCK_EX)
    with open(a.p("app/v"), "w") as f:
        f.write("2")
    fcntl.flock(fa, fcntl.LOCK_UN)
    os.close(fa)
    assert etcd.get(b"/app/v") == b"2"
    fb = os.open(b.p("app/lock"), os.O_RDONLY)
    fcntl.flock(fb, fcntl.LOCK_EX)
    try:
        with open(b.p("app/v")) as f:
            assert f.read() == "2", "the new holder read a value older than its lock"
    finally:
        fcntl.flock(fb, fcntl.LOCK_UN)
        os.close(fb)
        proxy.release()


COUNTER = r"""
import fcntl, os, sys
lock, path, holder, n, me = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
posix = sys.argv[6] == "fcntl"
lfd = os.open(lock, os.O_RDWR)
for _ in range(n):
    if posix:
        fcntl.lockf(lfd, fcntl.LOCK_EX)
    else:
        fcntl.flock(lfd, fcntl.LOCK_EX)
    with open(holder, "w") as f:
        f.write(me)
    with open(path, "r+") as f:
        v = int(f.read() or "0")
        f.seek(0)
        f.truncate()
        f.write("%d" % (v + 1))
    with open(holder) as f:
        assert f.read() == me, "two holders at once"
    if posix:
        fcntl.lockf(lfd, fcntl.LOCK_UN)
    else:
        fcntl.flock(lfd, fcntl.LOCK_UN)
"""


def test_counter_loses_no_increment(etcd, two):
    """4 processes on each of two mounts (two with flock, two with fcntl)
    and an etcdctl lock loop increment one counter under the lock: the
    total is exact, and no two holders ever overlap."""
    m1, m2 = two.m1, two.m2
    f1 = os.path.join(m1.path, "app/counter")
    with open(f1, "w") as f:
        f.write("0")
    wait_for(lambda: os.path.exists(os.path.join(m2.path, "app/counter")))
    name = two.name.decode()
    per, ctl_n = 25, 10
    procs = [subprocess.Popen([sys.executable, "-c", COUNTER,
                               os.path.join(m.path, "app/deploy.lock"),
                               os.path.join(m.path, "app/counter"),
                               os.path.join(m.path, "app/holder"), str(per), "%d.%d" % (i, j),
                               "fcntl" if j % 2 else "flock"])
             for i, m in enumerate((m1, m2)) for j in range(4)]
    script = ("v=$(%s get --print-value-only /app/counter); %s put /app/counter $((v+1)) >/dev/null"
              % (" ".join(etcd.ctl_argv()), " ".join(etcd.ctl_argv())))
    for _ in range(ctl_n):
        etcd.ctl("lock", name, "--", "sh", "-c", script, timeout=60)
    for p in procs:
        assert p.wait(120) == 0
    want = 8 * per + ctl_n
    assert etcd.get(b"/app/counter") == str(want).encode()
    for m in (m1, m2):
        wait_for(lambda: open(os.path.join(m.path, "app/counter")).read() == str(want))


def test_lock_on_a_file_not_in_etcd_yet(etcd, mounter):
    """flock(1) creates its lock file: the lock is etcd's before the file's
    key is, and excludes the other mount's flock of the same new name."""
    m1 = mounter(etcd=etcd)
    m2 = mounter(etcd=etcd)
    # mkdir'd directories live in their mount until a key is put under them
    os.makedirs(m1.p("jobs"))
    os.makedirs(m2.p("jobs"))
    holder = subprocess.Popen(["flock", m1.p("jobs/nightly.lock"), "-c",
                               "echo held; sleep 3"], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    name = b"etcdfs-lock/jobs/nightly.lock%"
    assert len(owner_keys(etcd, name)) == 1
    assert etcd.get(b"/jobs/nightly.lock") is None
    r = subprocess.run(["flock", "-n", m2.p("jobs/nightly.lock"), "true"])
    assert r.returncode != 0, "a second mount took the lock of a new file"
    assert holder.wait(15) == 0
    wait_for(lambda: owner_keys(etcd, name) == [])
    assert subprocess.run(["flock", "-n", m2.p("jobs/nightly.lock"), "true"]).returncode == 0
