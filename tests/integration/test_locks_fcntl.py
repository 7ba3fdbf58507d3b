"""fcntl(2) locks (POSIX and OFD) and shared locks as etcd locks: the same
lock as flock's and `etcdctl lock`'s, across mounts; F_GETLK reports the
holder; each owner's ranges are its own; close releases POSIX locks, the
last close OFD locks; readers share and writers (etcdctl's too) wait for
them.

Both sides are checked: what fcntl/flock return on the mounts, and the
keys in etcd under the lock name (a reader's key has the value "shared").
"""
import errno
import fcntl
import os
import signal
import struct
import subprocess
import sys
import threading
import time

import pytest

from test_locks import lock_name, owner_keys, try_flock, two, wait_for  # noqa: F401

F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 36, 37, 38
FLOCK_FMT = "hhxxxxqqixxxx"  # struct flock on x86_64 and arm64


def getlk(fd, typ=fcntl.F_WRLCK, start=0, length=0, cmd=fcntl.F_GETLK):
    """F_GETLK: (l_type, l_start, l_len, l_pid) of the lock in the way."""
    arg = struct.pack(FLOCK_FMT, typ, os.SEEK_SET, start, length, 0)
    t, _, s, n, pid = struct.unpack(FLOCK_FMT, fcntl.fcntl(fd, cmd, arg))
    return t, s, n, pid


def ofd(fd, typ, wait=False):
    arg = struct.pack(FLOCK_FMT, typ, os.SEEK_SET, 0, 0, 0)
    fcntl.fcntl(fd, F_OFD_SETLKW if wait else F_OFD_SETLK, arg)


def try_lockf(path, typ=fcntl.LOCK_EX):
    """F_SETLK on a new descriptor of this process: True if taken."""
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.lockf(fd, typ | fcntl.LOCK_NB)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return True
    except OSError as e:
        assert e.errno in (errno.EAGAIN, errno.EACCES), e
        return False
    finally:
        os.close(fd)


# A process that runs the lock steps it reads, one per line, and answers
# "ok" or the errno number after each.
STEPPER = r"""
import fcntl, os, sys
fds = {}
for line in sys.stdin:
    cmd = line.split()
    try:
        if cmd[0] == "open":
            fds[cmd[1]] = os.open(cmd[2], os.O_RDWR)
        elif cmd[0] == "close":
            os.close(fds.pop(cmd[1]))
        elif cmd[0] == "lockf":
            op = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}[cmd[2]]
            if len(cmd) > 5 and cmd[5] == "nb":
                op |= fcntl.LOCK_NB
            fcntl.lockf(fds[cmd[1]], op, int(cmd[3]), int(cmd[4]))  # LEN START
        elif cmd[0] == "flock":
            op = {"ex": fcntl.LOCK_EX, "sh": fcntl.LOCK_SH, "un": fcntl.LOCK_UN}[cmd[2]]
            fcntl.flock(fds[cmd[1]], op)
        print("ok", flush=True)
    except OSError as e:
        print(e.errno, flush=True)
"""


class Stepper:
    """A separate process (its own POSIX lock owner)."""

    def __init__(self):
        self.p = subprocess.Popen([sys.executable, "-c", STEPPER], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def send(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def reply(self, timeout=10):
        got = []
        t = threading.Thread(target=lambda: got.append(self.p.stdout.readline().strip()))
        t.start()
        t.join(timeout)
        assert got, "no answer within %ss" % timeout
        return got[0]

    def do(self, line, want="ok"):
        """One step; want is "ok" or an errno."""
        self.send(line)
        got = self.reply()
        assert got == str(want), "%s: %s, not %s" % (line, got, want)

    def kill(self):
        self.p.kill()
        self.p.wait(10)


@pytest.fixture
def stepper():
    made = []

    def make():
        s = Stepper()
        made.append(s)
        return s
    yield make
    for s in made:
        s.kill()


def test_fcntl_excludes_across_mounts_flock_and_etcdctl(etcd, two, stepper):
    a = stepper()
    a.do("open f " + two.f1)
    a.do("lockf f ex 0 0")
    keys = etcd.keys(two.name + b"/", with_values=True)
    assert len(keys) == 1 and list(keys.values()) == [b""], keys
    # the other mount: fcntl and flock alike; this mount: another process
    assert not try_lockf(two.f2)
    assert not try_flock(two.f2)
    assert not try_lockf(two.f1)
    # F_GETLK: the local holder with its pid and range; from the other
    # mount, a holder elsewhere (pid 0, the whole file)
    fd1 = os.open(two.f1, os.O_RDONLY)
    fd2 = os.open(two.f2, os.O_RDONLY)
    assert getlk(fd1) == (fcntl.F_WRLCK, 0, 0, a.p.pid)
    assert getlk(fd2) == (fcntl.F_WRLCK, 0, 0, 0)
    ctl = subprocess.Popen(etcd.ctl_argv("lock", two.name.decode(), "echo", "got-it"),
                           stdout=subprocess.PIPE)
    time.sleep(1.0)
    assert ctl.poll() is None, "etcdctl lock went through a held fcntl lock"
    a.do("lockf f un 0 0")
    out, _ = ctl.communicate(timeout=10)
    assert b"got-it" in out
    wait_for(lambda: owner_keys(etcd, two.name) == [])
    assert getlk(fd2) == (fcntl.F_UNLCK, 0, 0, 0)
    # F_SETLKW waits for the other mount's holder, and gets it at its death
    b = stepper()
    b.do("open f " + two.f2)
    a.do("lockf f ex 0 0")
    b.send("lockf f ex 0 0")
    time.sleep(0.5)
    assert len(owner_keys(etcd, two.name)) == 2
    a.kill()
    assert b.reply() == "ok"
    assert len(owner_keys(etcd, two.name)) == 1
    os.close(fd1)
    os.close(fd2)


def test_close_of_any_descriptor_releases_posix_locks(etcd, two, stepper):
    a = stepper()
    a.do("open f " + two.f1)
    a.do("open g " + two.f1)
    a.do("lockf f ex 0 0")
    a.do("close g")  # POSIX: any close of the file by the owner lets go
    wait_for(lambda: owner_keys(etcd, two.name) == [])
    assert try_lockf(two.f2)


def test_ofd_lock_is_released_by_the_last_close(etcd, two):
    fd = os.open(two.f1, os.O_RDWR)
    dup = os.dup(fd)
    ofd(fd, fcntl.F_WRLCK)
    assert len(owner_keys(etcd, two.name)) == 1
    other = os.open(two.f2, os.O_RDWR)
    with pytest.raises(OSError) as e:
        ofd(other, fcntl.F_WRLCK)
    assert e.value.errno == errno.EAGAIN
    assert getlk(other, cmd=F_OFD_GETLK)[0] == fcntl.F_WRLCK
    os.close(fd)  # a descriptor of the open file remains: still held
    time.sleep(0.3)
    assert len(owner_keys(etcd, two.name)) == 1
    assert not try_lockf(two.f2)
    os.close(dup)
    wait_for(lambda: owner_keys(etcd, two.name) == [])
    ofd(other, fcntl.F_WRLCK)
    os.close(other)
    wait_for(lambda: owner_keys(etcd, two.name) == [])


def test_each_owner_keeps_its_own_ranges(etcd, two, stepper):
    a = stepper()
    a.do("open f " + two.f1)
    a.do("lockf f ex 10 0")   # bytes 0-9
    a.do("lockf f ex 10 20")  # bytes 20-29
    fd = os.open(two.f1, os.O_RDONLY)
    assert getlk(fd, start=25, length=1)[:2] == (fcntl.F_WRLCK, 0)
    assert getlk(fd)[1:3] == (0, 10)
    a.do("lockf f un 10 0")   # unlocking one range keeps the other
    time.sleep(0.3)
    assert not try_lockf(two.f2)
    assert getlk(fd)[1:3] == (20, 10)
    a.do("lockf f un 10 20")
    wait_for(lambda: owner_keys(etcd, two.name) == [])
    assert try_lockf(two.f2)
    os.close(fd)


def test_two_owners_upgrading_get_edeadlk(etcd, two, stepper):
    a, b = stepper(), stepper()
    for s in (a, b):
        s.do("open f " + two.f1)
        s.do("lockf f sh 0 0")
    a.send("lockf f ex 0 0")       # waits for b's read lock
    time.sleep(0.3)
    b.do("lockf f ex 0 0", errno.EDEADLK)
    b.do("lockf f un 0 0")
    assert a.reply() == "ok"


def test_an_upgrade_passes_the_writers_its_read_lock_holds_back(etcd, two, stepper):
    """A read lock's owner asking for a write lock waits only for the other
    readers, not behind writers that its own read lock keeps waiting (on
    its mount, on another, or etcdctl's): Linux grants it at once."""
    a, b, c = stepper(), stepper(), stepper()
    a.do("open f " + two.f1)
    b.do("open f " + two.f1)
    c.do("open f " + two.f2)
    a.do("lockf f sh 0 0")
    b.send("lockf f ex 0 0")
    c.send("lockf f ex 0 0")
    # a's reader's key, then c's and etcdctl's writers' (b waits in m1's
    # daemon, behind a's hold)
    wait_for(lambda: len(owner_keys(etcd, two.name)) == 2)
    ctl = subprocess.Popen(etcd.ctl_argv("lock", two.name.decode(), "echo", "got-it"),
                           stdout=subprocess.PIPE)
    wait_for(lambda: len(owner_keys(etcd, two.name)) == 3)
    a.do("lockf f ex 0 0")
    kvs = etcd.kvs(two.name + b"/", prefix=True)
    assert len(kvs) == 4, kvs  # the reader's key stays under the writer's
    time.sleep(0.3)
    assert ctl.poll() is None
    # then the queue's order: c and etcdctl joined it before b's key (b
    # waited in m1's daemon until a let go)
    a.do("lockf f un 0 0")
    assert c.reply() == "ok"
    assert ctl.poll() is None
    c.do("lockf f un 0 0")
    out, _ = ctl.communicate(timeout=10)
    assert b"got-it" in out
    assert b.reply() == "ok"
    b.do("lockf f un 0 0")
    wait_for(lambda: owner_keys(etcd, two.name) == [])


def test_sigalrm_interrupts_a_waiting_setlkw(etcd, two, stepper):
    a = stepper()
    a.do("open f " + two.f1)
    a.do("lockf f ex 0 0")
    # The handler raises: Python would otherwise retry the call (PEP 475).
    script = ("import fcntl, os, signal\n"
              "def alarm(*a):\n"
              "    raise TimeoutError\n"
              "signal.signal(signal.SIGALRM, alarm)\n"
              "fd = os.open(%r, os.O_RDWR)\n"
              "signal.alarm(1)\n"
              "try:\n"
              "    fcntl.lockf(fd, fcntl.LOCK_EX)\n"
              "    print('locked')\n"
              "except TimeoutError:\n"
              "    print('interrupted')\n" % two.f2)
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=20).stdout.strip()
    assert out == "interrupted" and time.monotonic() - t0 < 5, out
    wait_for(lambda: len(owner_keys(etcd, two.name)) == 1)


def test_shared_locks_share_and_writers_wait_for_them(etcd, two, stepper):
    r1, r2 = stepper(), stepper()
    r1.do("open f " + two.f1)
    r2.do("open f " + two.f2)
    r1.do("flock f sh")
    r2.do("lockf f sh 0 0")  # a read lock shares with a LOCK_SH
    keys = etcd.keys(two.name + b"/", with_values=True)
    assert sorted(keys.values()) == [b"shared", b"shared"], keys
    owners = os.getxattr(two.f1, "user.etcd.lock_owner").decode().splitlines()
    assert len(owners) == 2 and all(o.startswith("shared ") for o in owners), owners
    # a writer on either mount is refused, and etcdctl lock waits
    assert not try_flock(two.f1) and not try_flock(two.f2)
    ctl = subprocess.Popen(etcd.ctl_argv("lock", two.name.decode(), "sleep", "1.5"),
                           stdout=subprocess.PIPE)
    wait_for(lambda: len(owner_keys(etcd, two.name)) == 3)
    time.sleep(0.5)
    assert ctl.poll() is None, "etcdctl lock went through two readers"
    # a reader that comes after a waiting writer waits for it
    r3 = stepper()
    r3.do("open f " + two.f2)
    r3.send("flock f sh")
    time.sleep(0.3)
    r1.do("flock f un")
    r2.do("lockf f un 0 0")
    t0 = time.monotonic()
    assert ctl.wait(10) == 0
    assert r3.reply() == "ok"
    assert time.monotonic() - t0 >= 1.0, "a reader got in while etcdctl held the lock"
    r3.do("flock f un")
    wait_for(lambda: owner_keys(etcd, two.name) == [])
    with pytest.raises(OSError) as e:
        os.getxattr(two.f1, "user.etcd.lock_owner")
    assert e.value.errno == errno.ENODATA


def test_downgrade_keeps_the_place_and_lets_readers_in(etcd, two, stepper):
    w, r = stepper(), stepper()
    w.do("open f " + two.f1)
    w.do("flock f ex")
    [(key, rev)] = [(kv["key"], kv["create_revision"]) for kv in etcd.kvs(two.name + b"/", prefix=True)]
    r.do("open f " + two.f2)
    r.send("flock f sh")
    time.sleep(0.3)
    w.do("flock f sh")   # a downgrade: the reader of the other mount gets in
    assert r.reply() == "ok"
    kvs = {kv["key"]: kv for kv in etcd.kvs(two.name + b"/", prefix=True)}
    assert kvs[key]["create_revision"] == rev and kvs[key]["value"] == b"shared"
    assert not try_flock(two.f2)


FENCED = r"""
import errno, fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
fcntl.flock(fd, fcntl.LOCK_EX)
print("locked", flush=True)
sys.stdin.readline()
try:
    # as `echo from-1 > FILE` would: a new value, whatever the old one
    w = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)
    os.write(w, b"from-1")
    os.close(w)
    print("written", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
"""


def test_a_holder_that_lost_its_lock_cannot_clobber_the_next(etcd, mounter):
    """The holder's daemon is frozen past its lease TTL; another mount takes
    the lock and writes; the first, resumed, cannot write over it."""
    m1 = mounter("--lock-ttl=2s", etcd=etcd,
                 allowed_stderr=(r"lock lease .* expired", r"lock lease .* is gone",
                                 r"the lock is lost"))
    m2 = mounter(etcd=etcd)
    f1, f2 = m1.p("config"), m2.p("config")
    with open(f1, "w") as f:
        f.write("initial")
    wait_for(lambda: os.path.exists(f2))
    p = subprocess.Popen([sys.executable, "-c", FENCED, f1], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    os.kill(m1.proc.pid, signal.SIGSTOP)
    try:
        fd = os.open(f2, os.O_RDWR)
        t0 = time.monotonic()
        fcntl.flock(fd, fcntl.LOCK_EX)   # granted once m1's lease lapses
        assert time.monotonic() - t0 < 2 + 3
        os.pwrite(fd, b"from-2", 0)
        os.ftruncate(fd, 6)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
        assert etcd.get(b"/config") == b"from-2"
    finally:
        os.kill(m1.proc.pid, signal.SIGCONT)
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline().strip() == "ENOLCK"
    p.wait(10)
    time.sleep(0.5)
    assert etcd.get(b"/config") == b"from-2"
    # let go, the file can be locked and written again
    assert try_flock(f1)
    with open(f1, "w") as f:
        f.write("again")
    assert etcd.get(b"/config") == b"again"


def test_hundred_parked_waiters_leave_the_mount_working(etcd, two):
    """100 processes wait on one lock: each holds no daemon thread, so the
    mount keeps answering; released, each gets the lock in turn."""
    fd = os.open(two.f1, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    waiters = [subprocess.Popen(["flock", "-s" if i % 4 == 0 else "-x", two.f2, "true"])
               for i in range(100)]
    wait_for(lambda: len(owner_keys(etcd, two.name)) >= 2, timeout=30)
    time.sleep(1.0)
    assert all(p.poll() is None for p in waiters)
    # far more waiters than the daemon has worker threads: other requests
    # on the mount still go through
    other = os.path.join(two.m2.path, "app/other")
    for i in range(20):
        with open(other, "w") as f:
            f.write(str(i))
        with open(other) as f:
            assert f.read() == str(i)
        assert "deploy.lock" in os.listdir(os.path.dirname(other))
    assert etcd.get(b"/app/other") == b"19"
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)
    for p in waiters:
        assert p.wait(60) == 0
    wait_for(lambda: owner_keys(etcd, two.name) == [])
