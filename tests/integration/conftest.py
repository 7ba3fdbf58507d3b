"""pytest fixtures for the etcdfs integration tests.

- etcd: a session-wide etcd server, emptied before every test.  Tests that
  stop, kill, restart or compact etcd take own_etcd, a private server.
- cluster: a private three-member etcd cluster (harness.EtcdCluster).
- mounter: mounts etcdfs (a real FUSE mount) and, at teardown, unmounts it
  with fusermount3 -u, expects the daemon to exit 0 and fails the test on
  unexpected daemon stderr (sanitizer reports always fail).
- mnt: the default mount of etcd.
- A watchdog per test: when a test runs too long it kills the daemons (which
  fails any system call blocked on the mount) and interrupts the test.
- Whatever happens, every etcd and daemon is killed and every mount removed
  (finalizers, then an atexit hook, then PR_SET_PDEATHSIG for etcd).
"""
import atexit
import os
import signal
import sys
import tempfile
import threading

import pytest

import harness

TEST_TIMEOUT = float(os.environ.get("ETCDFS_TEST_TIMEOUT", "180"))


class TestTimeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise TestTimeout("test ran longer than %ss; daemons were killed" % TEST_TIMEOUT)


def _on_term(signum, frame):
    # meson test's timeout sends SIGTERM: unwind through the finalizers.
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config):
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.signal(signal.SIGTERM, _on_term)
    atexit.register(harness.cleanup_at_exit)


def pytest_report_header(config):
    return "etcdfs binary: %s" % harness.ETCDFS_BIN


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    mounts, etcds = harness.cleanup_at_exit()
    if mounts or etcds:
        print("\nLEFTOVER after the session (killed now): %d mounts %s, %d etcd servers"
              % (len(mounts), [m.path for m in mounts], len(etcds)))
        session.exitstatus = 1


@pytest.fixture(autouse=True)
def _watchdog(request):
    main = threading.main_thread().ident
    fired = []
    # a module may need longer (its own TEST_TIMEOUT), never less
    limit = max(TEST_TIMEOUT, getattr(request.module, "TEST_TIMEOUT", 0))

    def fire():
        fired.append(True)
        print("WATCHDOG: the test ran longer than %ss; killing its daemons" % limit,
              file=sys.stderr)
        harness.abort_everything()
        signal.pthread_kill(main, signal.SIGALRM)

    t = threading.Timer(limit, fire)
    t.daemon = True
    t.start()
    yield
    t.cancel()
    assert not fired, "watchdog: the test ran longer than %ss" % limit


@pytest.fixture(scope="session")
def _session_etcd():
    box = {"etcd": harness.Etcd("session").start()}
    yield box
    box["etcd"].destroy()


@pytest.fixture
def etcd(_session_etcd):
    """The shared etcd server, empty at the start of the test."""
    e = _session_etcd["etcd"]
    if e.proc.poll() is not None or e.stopped:
        e.destroy()   # a test broke it: start a new one
        e = _session_etcd["etcd"] = harness.Etcd("session").start()
    e.wipe()
    return e


@pytest.fixture
def own_etcd():
    """A private etcd server for tests that stop, kill or compact it."""
    e = harness.Etcd("own").start()
    yield e
    e.destroy()


@pytest.fixture
def cluster():
    """A private three-member etcd cluster, new for each test (it starts in
    a few tenths of a second, now and then two seconds).  Ask for it before
    mounter, so that the mounts are gone before their etcd is."""
    c = harness.EtcdCluster().start()
    yield c
    c.destroy()


@pytest.fixture
def mounter(tmp_path, request):
    """mounter(*args, etcd=E, foreground=True, allowed_stderr=(), env=None)
    mounts etcdfs with --endpoints of E (when given: an Etcd, or an
    EtcdCluster for all its members) plus args."""
    mounts = []
    public_dirs = []

    def mount(*args, etcd=None, foreground=True, allowed_stderr=(), stderr_free=False,
              env=None, path=None, start=True, public=False):
        if public:
            # a mount point every user can reach (pytest's tmp_path is 0700)
            path = tempfile.mkdtemp(prefix="etcdfs-pub-", dir="/tmp")
            os.chmod(path, 0o755)
            public_dirs.append(path)
        if path is None:
            path = str(tmp_path / ("mnt%d" % len(mounts)))
        os.makedirs(path, exist_ok=True)
        argv = (["--endpoints=" + ",".join(etcd.endpoints)] if etcd else []) + list(args)
        m = harness.Mount(path, argv, foreground=foreground, env=env,
                          allowed_stderr=allowed_stderr, stderr_free=stderr_free,
                          stderr_path=str(tmp_path / ("mnt%d.stderr" % len(mounts))))
        mounts.append(m)
        if start:
            m.start()
        return m

    yield mount

    problems = []
    for m in reversed(mounts):
        if m.proc is None:
            # started by the test itself (expected to fail): nothing may remain
            if harness.mountinfo_entry(m.path):
                problems.append("%s: left mounted; unmounted now" % m.path)
                m.dpid = (harness.pids_of_mount(m.path) or [None])[0]
                m.abort()
            for pid in harness.pids_of_mount(m.path):
                problems.append("%s: etcdfs pid %d left running; killed" % (m.path, pid))
                os.kill(pid, 9)
            continue
        mp = m.close()
        for name, text in (("stderr", m.stderr()), ("stdout", m.stdout())):
            if text.strip():
                # shown with the test's report when it fails
                print("---- etcdfs %s %s (last 100 lines) ----\n%s"
                      % (m.path, name, "\n".join(text.splitlines()[-100:])))
        problems += ["%s: %s" % (m.path, p) for p in mp]
    for d in public_dirs:
        if not harness.mountinfo_entry(d):
            os.rmdir(d)
    if problems:
        pytest.fail("mount teardown:\n  " + "\n  ".join(problems), pytrace=False)


@pytest.fixture
def mnt(etcd, mounter):
    """etcdfs mounted on the shared etcd with default options."""
    return mounter(etcd=etcd)
