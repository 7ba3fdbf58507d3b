"""%watch and %watch@REV: a directory's changes as a stream of JSON lines
(the contract: WATCH STREAMS in etcdfs(1)).

Every stream read here is checked against etcd's own history of the same
prefix, taken with `etcdctl watch --rev` (history()): each line must be the
event etcd has, byte for byte once decoded, in etcd's order, with nothing
left out, nothing twice and nothing else.  Every line is parsed strictly
(parse_line(): one JSON object per line, UTF-8, fields in the contract's
order, numbers as numbers).

Readers of %watch block, so each runs in a process of its own (Reader:
cat, tail, head, bash, or PYREADER, a small reader that reports errno
values), drained by threads, waited for with timeouts and killed at the end
of every test, before the mounts are taken down.  The waits here are bounds
(a lost event fails instead of hanging), never speed assertions: how soon
a line arrives is measured by bench/watchfile.
"""
import base64
import errno
import json
import os
import select
import shlex
import signal
import stat
import subprocess
import sys
import threading
import time

import pytest

import harness
from harness import errno_of, is_etcdfs_mounted, read, run, sh, wait_until, write

# test_coherence's cut-able proxy in front of etcd (for an outage with a
# compaction in it)
from test_coherence import CutProxy

TEST_TIMEOUT = 300   # the watchdog's limit for this module (1,000 etcdctl puts, 64 MiB)

WATCH = "%watch"
# How long an event may take to reach a reader; it takes milliseconds, this
# is only a bound so that a lost line fails the test instead of hanging it.
STREAM_WAIT = 15
# How long a reader must stay silent to show that nothing more comes.
QUIET = 1.0
# What the daemon may say while etcd is away.
DOWN_STDERR = (r"^etcdfs: ",)
# A change made with etcdctl reaches the mount's watch within milliseconds;
# a test that needs a stream opened after it to start after it waits this
# long first (a stream may start earlier, as long as it then shows it).
WATCH_SETTLE = 0.3

# A reader that reports what each read(2) returns: its bytes on stdout, and
# on stderr "OPEN" once open, "ERRNO <name>" for each failed read (EINTR
# included: the read is made with libc's read, which Python cannot retry),
# "EOF" at the end.  Options: nonblock (O_NONBLOCK), size=N (bytes per
# read), errors=N (exit 3 after N failed reads other than EINTR), hold
# (after the first read, wait for a line on stdin before reading on).
PYREADER = r'''
import ctypes, errno, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.read.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t)
libc.read.restype = ctypes.c_ssize_t
path = sys.argv[1]
opts = dict(a.split("=", 1) if "=" in a else (a, "1") for a in sys.argv[2:])
size = int(opts.get("size", 65536))
errors = int(opts.get("errors", 1))
def note(text):
    os.write(2, (text + "\n").encode())
signal.signal(signal.SIGUSR1, lambda *a: None)
signal.siginterrupt(signal.SIGUSR1, True)
fd = os.open(path, os.O_RDONLY | (os.O_NONBLOCK if "nonblock" in opts else 0))
note("OPEN")
buf = ctypes.create_string_buffer(size)
first = True
while True:
    n = libc.read(fd, buf, size)
    if n < 0:
        e = ctypes.get_errno()
        note("ERRNO " + errno.errorcode.get(e, str(e)))
        if e != errno.EINTR:
            errors -= 1
            if errors <= 0:
                sys.exit(3)
        continue
    if n == 0:
        note("EOF")
        sys.exit(0)
    os.write(1, buf.raw[:n])
    if first and "hold" in opts:
        note("HOLDING")
        sys.stdin.readline()
    first = False
'''


def pyreader(path, *opts):
    return [sys.executable, "-c", PYREADER, path] + list(opts)


# ---------------------------------------------------------------- the format

def b64(data):
    return base64.b64encode(data).decode()


def text_or_b64(name, data):
    """(name, text) when data is valid UTF-8 without NUL, else
    (name_base64, base64)."""
    try:
        if b"\0" not in data:
            return (name, data.decode("utf-8"))
    except UnicodeDecodeError:
        pass
    return (name + "_base64", b64(data))


def put_event(key, value, create, mod, version, lease=0):
    return (("type", "PUT"), text_or_b64("key", key), text_or_b64("value", value),
            ("create_revision", create), ("mod_revision", mod), ("version", version),
            ("lease", lease))


def delete_event(key, mod):
    return (("type", "DELETE"), text_or_b64("key", key), ("mod_revision", mod))


def field(ev, name):
    return dict(ev).get(name)


def key_of(ev):
    """The event's key as bytes, whichever way it is written."""
    d = dict(ev)
    return d["key"].encode() if "key" in d else base64.b64decode(d["key_base64"])


# Field names in their order, per line type (key/value: or *_base64).
ORDER = {
    "START": ["type", "revision"],
    "PUT": ["type", "key", "value", "create_revision", "mod_revision", "version", "lease"],
    "DELETE": ["type", "key", "mod_revision"],
}
ERROR_ORDER = {
    "compacted": ["type", "error", "compact_revision"],
    "overflow": ["type", "error"],
    "refused": ["type", "error", "message"],
}
INTS = ("revision", "create_revision", "mod_revision", "version", "lease", "compact_revision")


def parse_line(raw):
    """One line of a %watch stream as a tuple of (field, value) pairs, in its
    order; fails unless it is one strict JSON object in UTF-8, with the
    contract's fields in the contract's order."""
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1, "not one line: %r" % raw[:300]
    try:
        text = raw[:-1].decode("utf-8")
    except UnicodeDecodeError as e:
        raise AssertionError("line is not UTF-8 (%s): %r" % (e, raw[:300])) from None
    try:
        pairs = json.loads(text, object_pairs_hook=lambda p: p)
    except ValueError as e:
        raise AssertionError("line is not JSON (%s): %r" % (e, raw[:300])) from None
    assert isinstance(pairs, list), "not a JSON object: %r" % raw[:300]
    names = [k for k, _ in pairs]
    assert len(set(names)) == len(names), "a field twice: %r" % raw[:300]
    d = dict(pairs)
    kind = d.get("type")
    if kind == "ERROR":
        order = ERROR_ORDER.get(d.get("error"))
    else:
        order = ORDER.get(kind)
    assert order is not None, "unknown line: %r" % raw[:300]
    plain = [n[:-len("_base64")] if n in ("key_base64", "value_base64") else n for n in names]
    assert plain == order, "fields %r, expected %r: %r" % (names, order, raw[:300])
    for name, value in pairs:
        if name in INTS:
            assert type(value) is int and value >= 0, "%s is %r: %r" % (name, value, raw[:300])
        elif name.endswith("_base64"):
            assert isinstance(value, str) and b64(base64.b64decode(value, validate=True)) == value, \
                "%s is not standard base64: %r" % (name, raw[:300])
        else:
            assert isinstance(value, str), "%s is %r" % (name, value)
    return tuple(pairs)


def etcd_event(ev):
    """An event of etcdctl watch -w json as the line %watch must show for it."""
    kv = ev["kv"]
    key = base64.b64decode(kv["key"])
    if ev.get("type", 0) in (1, "DELETE"):
        return delete_event(key, int(kv["mod_revision"]))
    return put_event(key, base64.b64decode(kv.get("value", "")), int(kv["create_revision"]),
                     int(kv["mod_revision"]), int(kv["version"]), int(kv.get("lease", 0)))


def ctl_env():
    env = dict(os.environ, ETCDCTL_API="3")
    env.pop("ETCDCTL_ENDPOINTS", None)
    return env


def history(etcd, prefix, from_rev, until_rev, timeout=30):
    """etcd's events under prefix from revision from_rev to until_rev (the
    revision of an event under prefix), as %watch lines, from etcdctl watch
    --rev; etcd never splits a revision's events between responses."""
    p = subprocess.Popen(etcd.ctl_argv("watch", "--prefix", prefix, "--rev", str(from_rev),
                                       "-w", "json"),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, env=ctl_env())
    events = []
    buf = b""
    deadline = time.monotonic() + timeout
    try:
        while not events or field(events[-1], "mod_revision") < until_rev:
            left = deadline - time.monotonic()
            ready = select.select([p.stdout], [], [], max(0, left))[0] if left > 0 else []
            if not ready:
                raise AssertionError("etcdctl watch %s --rev %d: revision %d not seen in %ss; "
                                     "events: %r" % (prefix, from_rev, until_rev, timeout,
                                                     events[-5:]))
            chunk = os.read(p.stdout.fileno(), 1 << 20)
            if not chunk:
                raise AssertionError("etcdctl watch ended: %r" % p.stderr.read())
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                if line.strip():
                    resp = json.loads(line)
                    assert not resp.get("Canceled"), resp
                    events += [etcd_event(e) for e in resp.get("Events") or []]
    finally:
        p.kill()
        p.wait(10)
        p.stdout.close()
        p.stderr.close()
    assert field(events[-1], "mod_revision") == until_rev, (until_rev, events[-3:])
    return events


def short(ev):
    """An event for a message: long values cut."""
    return tuple((k, v[:60] + "...(%d)" % len(v) if isinstance(v, str) and len(v) > 80 else v)
                 for k, v in ev)


def assert_events(got, expected, what="stream"):
    """got == expected, or a message that names the first difference."""
    if list(got) == list(expected):
        return
    for i, (g, e) in enumerate(zip(got, expected)):
        if g != e:
            raise AssertionError(
                "%s: line %d differs\n  got:      %r\n  expected: %r\n  before it: %r\n"
                "  (%d lines, %d expected)" % (what, i, short(g), short(e),
                                               [short(x) for x in got[max(0, i - 2):i]],
                                               len(got), len(expected)))
    raise AssertionError("%s: %d lines, %d expected; the extra ones: %r"
                         % (what, len(got), len(expected),
                            [short(x) for x in (got[len(expected):] or
                                                expected[len(got):])][:5]))


# ---------------------------------------------------------------- readers

class Reader:
    """A process that reads a %watch file (cat by default), its stdout and
    stderr drained by threads.  line()/events() take its output line by
    line with a timeout; stop() kills it and whatever it started (the
    fixture always does)."""

    def __init__(self, argv, stdin=False):
        self.argv = list(argv)
        self.proc = subprocess.Popen(self.argv,
                                     stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, LC_ALL="C"),
                                     start_new_session=True)
        self.cond = threading.Condition()
        self.data = {1: bytearray(), 2: bytearray()}
        self.ended = {1: False, 2: False}
        self.pos = 0   # bytes of stdout taken by line()
        self.threads = []
        for i, f in ((1, self.proc.stdout), (2, self.proc.stderr)):
            t = threading.Thread(target=self._pump, args=(i, f), daemon=True)
            t.start()
            self.threads.append(t)

    def __repr__(self):
        return "<reader %s>" % " ".join(a for a in self.argv if a != PYREADER)

    def _pump(self, i, f):
        fd = f.fileno()
        while True:
            try:
                chunk = os.read(fd, 1 << 20)
            except OSError:
                chunk = b""
            with self.cond:
                if chunk:
                    self.data[i] += chunk
                else:
                    self.ended[i] = True
                self.cond.notify_all()
            if not chunk:
                return

    def _wait(self, pred, timeout):
        with self.cond:
            return self.cond.wait_for(pred, timeout)

    @property
    def out(self):
        with self.cond:
            return bytes(self.data[1])

    @property
    def err(self):
        with self.cond:
            return bytes(self.data[2]).decode(errors="replace")

    def notes(self):
        """PYREADER's reports, one per line."""
        return self.err.splitlines()

    def wait_note(self, note, timeout=STREAM_WAIT):
        assert self._wait(lambda: self.ended[2] or note in bytes(self.data[2])
                          .decode(errors="replace").splitlines(), timeout) and \
            note in self.notes(), \
            "%r: no %r within %ss; it said %r" % (self, note, timeout, self.err)

    def _state(self):
        return "exit status %r, stderr %r, untaken output %r" % (
            self.proc.poll(), self.err[-500:], self.out[self.pos:self.pos + 300])

    def line(self, timeout=STREAM_WAIT):
        """The next line of output (bytes, with its newline)."""
        self._wait(lambda: b"\n" in self.data[1][self.pos:] or self.ended[1], timeout)
        with self.cond:
            if b"\n" not in self.data[1][self.pos:]:
                raise AssertionError("%r: no line within %ss or at its end (%d lines so far); %s"
                                     % (self, timeout, self.data[1][:self.pos].count(b"\n"),
                                        self._state()))
            end = self.data[1].index(b"\n", self.pos) + 1
            raw = bytes(self.data[1][self.pos:end])
            self.pos = end
            return raw

    def lines(self, n, timeout=STREAM_WAIT):
        deadline = time.monotonic() + timeout
        return [self.line(max(0.01, deadline - time.monotonic())) for _ in range(n)]

    def event(self, timeout=STREAM_WAIT):
        return parse_line(self.line(timeout))

    def start(self, timeout=STREAM_WAIT):
        """The START line's revision."""
        ev = self.event(timeout)
        assert field(ev, "type") == "START", "%r: first line %r" % (self, ev)
        return field(ev, "revision")

    def expect(self, expected, what=None, timeout=STREAM_WAIT):
        """Takes len(expected) lines and checks they are exactly those."""
        got = []
        deadline = time.monotonic() + timeout
        try:
            for _ in expected:
                got.append(self.event(max(0.01, deadline - time.monotonic())))
        except AssertionError as e:
            if got == list(expected[:len(got)]):
                raise AssertionError("%s: %d of %d lines arrived, then: %s"
                                     % (what or self, len(got), len(expected), e)) from None
        assert_events(got, expected, what or repr(self))
        return got

    def quiet(self, seconds=QUIET):
        """Nothing more arrives within seconds."""
        before = self.pos
        more = self._wait(lambda: len(self.data[1]) > before, seconds)
        assert not more, "%r: unexpected output %r" % (self, self.out[before:before + 500])

    def wait_exit(self, timeout):
        """The exit status, or None if still running after timeout; once it
        has exited, its output is all in (up to the end of its pipes)."""
        try:
            status = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._wait(lambda: self.ended[1] and self.ended[2], 5)
        return status

    def send(self, data):
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)   # a pipeline's others too
        except ProcessLookupError:
            pass

    def stop(self, timeout=10):
        self.kill()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return   # in D state: the mount's teardown kills the daemon
        for t in self.threads:
            t.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f:
                try:
                    f.close()
                except OSError:
                    pass


@pytest.fixture
def reader(mounter):
    """reader(path_or_argv, stdin=False): a Reader (cat PATH for a path);
    every one is killed before the mounts are taken down."""
    made = []

    def make(what, stdin=False):
        r = Reader(["cat", what] if isinstance(what, str) else what, stdin=stdin)
        made.append(r)
        return r

    yield make
    for r in made:
        r.kill()
    deadline = time.monotonic() + 10
    for r in made:
        r.stop(max(0.1, deadline - time.monotonic()))


@pytest.fixture
def proxy(own_etcd):
    p = CutProxy(own_etcd.client_port)
    yield p
    p.close()


# ---------------------------------------------------------------- helpers

READ_SYSCALL = {"x86_64": 0, "aarch64": 63}.get(os.uname().machine)


def in_read(pid):
    """Process pid sleeps in read(2)."""
    try:
        with open("/proc/%d/syscall" % pid) as f:
            words = f.read().split()
    except OSError:
        return False
    return bool(words) and words[0] == str(READ_SYSCALL)


def wait_blocked(r, timeout=STREAM_WAIT):
    assert wait_until(lambda: in_read(r.proc.pid), timeout=timeout, interval=0.02), \
        "%r is not blocked in read: %s" % (r, harness._state(r.proc.pid))


def ctl_script(etcd, ops):
    """One sh script that runs etcdctl once per op (a list of arguments)."""
    base = " ".join(shlex.quote(a) for a in etcd.ctl_argv())
    lines = ["set -e"] + ["%s %s >/dev/null" % (base, " ".join(shlex.quote(a) for a in op))
                          for op in ops]
    return "\n".join(lines) + "\n"


def ctl_loop(etcd, ops, timeout=150):
    """Runs etcdctl once per op, one after the other."""
    p = run(["/bin/sh", "-c", ctl_script(etcd, ops)], env=ctl_env(), timeout=timeout)
    assert p.returncode == 0, p.stderr[-2000:]


def txn(etcd, *ops):
    """One etcdctl txn of puts ("put K V") and deletes ("del K")."""
    out = etcd.ctl("txn", input=b"\n".join([b""] + [harness.b(o) for o in ops] + [b"", b"", b""]))
    assert out.startswith(b"SUCCESS"), out


def watchers(etcd):
    """etcd's watch counters: (watchers, watch streams)."""
    m = etcd.metrics()
    return (int(m["etcd_debugging_mvcc_watcher_total"]),
            int(m["etcd_debugging_mvcc_watch_stream_total"]))


def steady_watchers(etcd, timeout=10):
    """watchers() once it holds still for half a second (etcd drops the
    watch of an etcdctl watch that history() killed a moment later)."""
    deadline = time.monotonic() + timeout
    last = watchers(etcd)
    while True:
        time.sleep(0.5)
        now = watchers(etcd)
        if now == last or time.monotonic() > deadline:
            return now
        last = now


def stop_daemon(m, sig=signal.SIGTERM, timeout=15):
    """Signals a foreground daemon and waits for it; returns its exit status
    and takes the mount out of the fixture's teardown (after checking its
    output the way the teardown would)."""
    m.proc.send_signal(sig)
    try:
        status = m.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("etcdfs did not exit within %ss of signal %d; stderr %r"
                             % (timeout, sig, m.stderr()[-2000:])) from None
    assert wait_until(lambda: not is_etcdfs_mounted(m.path), timeout=5), \
        "%s still mounted after the daemon exited" % m.path
    problems = m.check_stderr()
    m.closed = True
    with harness._registry_lock:
        harness._mounts.discard(m)
    assert problems == [], problems
    return status


# ---------------------------------------------------------------- 1. many puts

def test_a_thousand_puts_arrive_once_each_in_order(etcd, mnt, reader):
    etcd.put("/w/k0", "before")
    r = reader(mnt.p("w", WATCH))
    start = r.start()
    first = etcd.revision() + 1
    ops, values = [], []
    for i in range(1000):
        key = "/w/k%d" % (i % 37) if i % 10 else "/w/sub/deep/k%d" % (i % 7)
        values.append((key.encode(), ("value %d of the loop" % i).encode()))
        ops.append(["put", key, values[-1][1].decode()])
    ctl_loop(etcd, ops)
    last = etcd.revision()
    assert last == first + 999
    expected = history(etcd, "/w/", start + 1, last)
    got = r.expect(expected, "cat %watch")
    r.quiet()
    # the 1,000 puts: once each, one revision each, in the loop's order
    loop = [ev for ev in got if field(ev, "mod_revision") >= first]
    assert len(loop) == 1000
    assert [field(ev, "type") for ev in loop] == ["PUT"] * 1000
    assert [field(ev, "mod_revision") for ev in loop] == list(range(first, last + 1))
    assert [(key_of(ev), field(ev, "value").encode()) for ev in loop] == values
    # and what it says last of each key is what etcd has now
    now = {kv["key"]: kv for kv in etcd.kvs("/w/", prefix=True)}
    latest = {key_of(ev): ev for ev in got}
    assert set(latest) == set(now)
    for key, kv in now.items():
        assert latest[key] == put_event(key, kv["value"], kv["create_revision"],
                                        kv["mod_revision"], kv["version"], kv["lease"])


# ---------------------------------------------------------------- 2. %watch@REV

def test_watch_at_a_compacted_revision_says_so_then_fails_with_eio(own_etcd, mounter, reader):
    e = own_etcd
    m = mounter(etcd=e)
    revs = []
    for i in range(6):
        e.put("/c/k", "v%d" % i)
        revs.append(e.revision())
    compacted = revs[3]
    e.compact(compacted)
    error = (("type", "ERROR"), ("error", "compacted"), ("compact_revision", compacted))
    for rev in (revs[1], compacted - 1):
        r = reader(pyreader(m.p("c", "%s@%d" % (WATCH, rev)), "errors=3"))
        assert r.start() == rev - 1
        assert r.event() == error
        # every further read fails with EIO
        assert r.wait_exit(STREAM_WAIT) == 3, r._state()
        assert r.notes() == ["OPEN", "ERRNO EIO", "ERRNO EIO", "ERRNO EIO"], r.notes()
        assert r.out[r.pos:] == b""
    # cat says so too, and ends
    r = reader(["cat", m.p("c", "%s@%d" % (WATCH, revs[0]))])
    assert r.start() == revs[0] - 1
    assert r.event() == error
    assert r.wait_exit(STREAM_WAIT) == 1, r._state()
    assert "Input/output error" in r.err and r.out[r.pos:] == b""
    # the compacted revision itself is still there: replayed, then live
    r = reader(m.p("c", "%s@%d" % (WATCH, compacted)))
    assert r.start() == compacted - 1
    e.put("/c/k", "live")
    r.expect(history(e, "/c/", compacted, e.revision()), "%watch@" + str(compacted))
    r.quiet()


def test_watch_at_a_revision_replays_then_goes_live_without_gap(etcd, mnt, reader):
    etcd.put("/r/k0", "old")
    etcd.put("/r/k1", "old")
    etcd.put("/other", "outside the directory")
    rev = etcd.revision() + 1
    # history: puts, a second version, deletes, a transaction of three
    etcd.put("/r/k0", "new")
    etcd.put("/r/deep/er/k", "deep")
    etcd.delete("/r/k1")
    etcd.put("/other", "outside again")
    txn(etcd, "put /r/z last-key-first", "put /r/a first-key-second", "del /r/k0")
    etcd.put("/r/k1", "born again")
    # and while a writer goes on, open the stream in the middle of it
    ops = [["put", "/r/live%d" % (i % 13), "live %d" % i] for i in range(150)]
    ops[40:40] = [["del", "/r/live3"]]
    writer = subprocess.Popen(["/bin/sh", "-c", ctl_script(etcd, ops)], env=ctl_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        base = etcd.revision()
        assert wait_until(lambda: etcd.revision() >= base + 30, timeout=60)
        r = reader(mnt.p("r", "%s@%d" % (WATCH, rev)))
        assert r.start() == rev - 1
        assert writer.wait(120) == 0, writer.stderr.read()
    finally:
        if writer.poll() is None:
            writer.kill()
        writer.wait(10)
        writer.stderr.close()
    etcd.put("/r/end", "after the writer")
    expected = history(etcd, "/r/", rev, etcd.revision())
    r.expect(expected, "%%watch@%d" % rev)
    r.quiet()
    # all of it history now: a second stream replays the same lines
    r2 = reader(mnt.p("r", "%s@%d" % (WATCH, rev)))
    assert r2.start() == rev - 1
    r2.expect(expected, "second %%watch@%d" % rev)
    r2.quiet()


def test_watch_at_a_revision_not_reached_yet_starts_there(etcd, mnt, reader):
    etcd.put("/fut/k", "0")
    time.sleep(WATCH_SETTLE)
    now = etcd.revision()
    nxt = reader(mnt.p("fut", "%s@%d" % (WATCH, now + 1)))    # the next one: no history
    later = reader(mnt.p("fut", "%s@%d" % (WATCH, now + 4)))
    assert nxt.start() == now and later.start() == now + 3
    for i in range(1, 7):
        etcd.put("/fut/k", "%d" % i)
    full = history(etcd, "/fut/", now + 1, now + 6)
    nxt.expect(full, "%%watch@%d" % (now + 1))
    later.expect(full[3:], "%%watch@%d" % (now + 4))
    nxt.quiet(0.3)
    later.quiet(0.3)


# ---------------------------------------------------------------- 3. deletes

def test_deletes_from_the_mount_and_from_etcdctl(etcd, mnt, reader):
    etcd.put("/d/f2", "two")
    write(mnt.p("d", "f1"), "one")
    for k in "xyz":
        etcd.put("/d/p/" + k, k)
    etcd.put("/d/q/1", "1")
    etcd.put("/d/q/2", "2")
    lease = etcd.lease_grant(300)
    etcd.put("/d/leased", "l", lease=lease)
    r = reader(mnt.p("d", WATCH))
    start = r.start()
    os.unlink(mnt.p("d", "f1"))                 # rm on the mount
    etcd.delete("/d/f2")                        # etcdctl del
    assert etcd.delete("/d/p/", prefix=True) == 3   # one revision, three keys
    assert etcd.delete("/d/none") == 0          # deletes nothing: no event
    sh("rm -r " + shlex.quote(mnt.p("d", "q")))
    etcd.ctl("lease", "revoke", "%x" % lease)   # the lease's key goes
    etcd.put("/d/end", "e")
    expected = history(etcd, "/d/", start + 1, etcd.revision())
    got = r.expect(expected, "d/%watch")
    r.quiet()
    deleted = [key_of(ev) for ev in got if field(ev, "type") == "DELETE"]
    assert sorted(deleted) == sorted([b"/d/f1", b"/d/f2", b"/d/p/x", b"/d/p/y", b"/d/p/z",
                                      b"/d/q/1", b"/d/q/2", b"/d/leased"])
    p_revs = {field(ev, "mod_revision") for ev in got
              if key_of(ev).startswith(b"/d/p/") and field(ev, "type") == "DELETE"}
    assert len(p_revs) == 1


# ---------------------------------------------------------------- 4. scope

def test_a_directory_watches_its_prefix_at_any_depth(etcd, mnt, reader):
    for key in ("/a/x", "/a/b/c", "/ab", "/b/x"):
        etcd.put(key, "first")
    os.mkdir(mnt.p("made"))   # a directory made on the mount, no key yet
    streams = {"": reader(mnt.p(WATCH)), "a": reader(mnt.p("a", WATCH)),
               "a/b": reader(mnt.p("a", "b", WATCH)), "made": reader(mnt.p("made", WATCH))}
    starts = {d: r.start() for d, r in streams.items()}
    etcd.put("/a/x", "second")
    etcd.put("/a/b/c", "second")
    etcd.put("/ab", "second")
    etcd.put("/ab/x", "a sibling's child")
    etcd.put("/b/x", "second")
    etcd.put("/a", "the directory's own key")
    etcd.put("/a/b/new/deeper", "new")
    write(mnt.p("a", "from-mount"), "m")
    etcd.put("/made/k", "in the made directory")
    etcd.delete("/a/x")
    etcd.delete("/b/x")
    etcd.put("/zz", "end")
    prefixes = {"": "/", "a": "/a/", "a/b": "/a/b/", "made": "/made/"}
    full = history(etcd, "/", min(starts.values()) + 1, etcd.revision())
    got = {}
    for d, r in streams.items():
        expected = [ev for ev in full if key_of(ev).startswith(prefixes[d].encode()) and
                    field(ev, "mod_revision") > starts[d]]
        got[d] = {key_of(ev) for ev in r.expect(expected, "%s/%%watch" % d)}
        r.quiet(0.3)
    assert got["a"] == {b"/a/x", b"/a/b/c", b"/a/b/new/deeper", b"/a/from-mount"}
    assert got["a/b"] == {b"/a/b/c", b"/a/b/new/deeper"}
    assert got["made"] == {b"/made/k"}
    assert got[""] == got["a"] | got["made"] | {b"/ab", b"/ab/x", b"/b/x", b"/a", b"/zz"}


def test_a_prefixed_mount_shows_full_keys(etcd, mounter, reader):
    etcd.put("/app/x", "in")
    m = mounter("--prefix=/app", etcd=etcd)
    r = reader(m.p(WATCH))
    start = r.start()
    for key in ("/app/x", "/apple", "/other/z", "/app", "/app/sub/y"):
        etcd.put(key, "v")
    write(m.p("made"), "on the mount")
    etcd.delete("/app/x")
    expected = history(etcd, "/app/", start + 1, etcd.revision())
    got = r.expect(expected, "root %watch of a --prefix=/app mount")
    assert {key_of(ev) for ev in got} == {b"/app/x", b"/app/sub/y", b"/app/made"}
    r.quiet()


# ---------------------------------------------------------------- 5. bytes

BYTES_CASES = [
    (b"/bin/\xff\xfe", b"plain value"),                 # key not UTF-8
    (b"/bin/ok", b"\x80\x81binary\xc3"),                # value not UTF-8
    (b"/bin/\xed\xa0\x80", b"\xed\xa0\x80"),            # an encoded surrogate is not UTF-8
    (b"/bin/\xc0\xaf", b"\xf4\x90\x80\x80"),            # overlong; past U+10FFFF
    (b"/bin/cut", b"abc\xe2\x82"),                      # cut in the middle of a character
    (b"/bin/escapes", b'line1\nline2 "quoted" back\\slash \t tab \x01\x08\x0c\x1b\x1f\x7f end\r'),
    (b"/bin/utf8", "\u00e9 \u20ac \U0001F600 \u4e2d\u6587 \u2028\u2029 \ufeff".encode()),
    (b"/bin/empty", b""),
    ('/bin/k "q" \\ \n\t \u00e9'.encode(), b"odd key"),
]


def test_bytes_that_are_not_utf8_are_base64_and_text_round_trips(etcd, mnt, reader):
    etcd.put("/bin/plain", "x")
    r = reader(mnt.p("bin", WATCH))
    start = r.start()
    for key, value in BYTES_CASES:
        etcd.put(key, value)
    lease = etcd.lease_grant(300)
    etcd.put("/bin/leased", "on a lease", lease=lease)
    # a name and a value that are not UTF-8, made on the mount
    fd = os.open(mnt.pb("bin", b"mnt-\xff"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"\xfe\xff from the mount")
    finally:
        os.close(fd)
    last = etcd.revision()
    expected = history(etcd, "/bin/", start + 1, last)
    raw = r.lines(len(expected))
    got = [parse_line(x) for x in raw]
    assert_events(got, expected, "bin/%watch")
    r.quiet()
    # no raw control byte in any line, the JSON escapes do it all
    for x in raw:
        assert not any(c < 0x20 for c in x[:-1]), x
    assert b"\\u0001" in [x for x in raw if b"/bin/escapes" in x][0]
    by_key = {key_of(ev): dict(ev) for ev in got if field(ev, "type") == "PUT"}
    assert by_key[b"/bin/\xff\xfe"]["key_base64"] == b64(b"/bin/\xff\xfe")
    assert "key" not in by_key[b"/bin/\xff\xfe"]
    assert by_key[b"/bin/ok"]["value_base64"] == b64(b"\x80\x81binary\xc3")
    assert by_key[b"/bin/leased"]["lease"] == lease
    assert by_key[b"/bin/mnt-\xff"]["value_base64"] == b64(b"\xfe\xff from the mount")
    # the text round-trips to etcd's bytes
    for key, value in BYTES_CASES:
        ev = by_key[key]
        assert ("value" in ev) == (key not in (b"/bin/ok", b"/bin/\xed\xa0\x80",
                                               b"/bin/\xc0\xaf", b"/bin/cut")), ev
        text = ev.get("value")
        assert (text.encode("utf-8") if text is not None
                else base64.b64decode(ev["value_base64"])) == etcd.get(key)
    # jq takes the stream, whole and live
    whole = r.out
    p = run(["jq", "-c", "."], input=whole, timeout=30)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count(b"\n") == whole.count(b"\n")
    n = len(expected) + 1
    p = reader(["/bin/sh", "-c", "head -n %d %s | jq -c ." % (
        n, shlex.quote(mnt.p("bin", "%s@%d" % (WATCH, start + 1))))])
    assert p.wait_exit(STREAM_WAIT) == 0, p._state()
    assert p.lines(n) and p.out.count(b"\n") == n


def test_a_nul_byte_makes_it_base64(etcd, mnt, reader):
    # valid UTF-8, but with a NUL byte: given as base64
    etcd.put("/z/k", "x")
    r = reader(mnt.p("z", WATCH))
    start = r.start()
    etcd.put("/z/nul", b"a\x00b\x00")
    write(mnt.p("z", "a%00b"), "key with a NUL")   # %00 is the name of a NUL byte
    assert etcd.keys("/z/", with_values=True)[b"/z/a\x00b"] == b"key with a NUL"
    expected = history(etcd, "/z/", start + 1, etcd.revision())
    raw = r.lines(len(expected))
    assert_events([parse_line(x) for x in raw], expected, "z/%watch")
    assert b'"key":"/z/nul","value_base64":"YQBiAA=="' in raw[0], raw[0]
    assert b'"key_base64":"%s"' % b64(b"/z/a\x00b").encode() in raw[-1], raw[-1]
    r.quiet()


# ---------------------------------------------------------------- 6. tools

def test_tail_f_shows_new_lines(etcd, mnt, reader):
    etcd.put("/t/k", "0")
    r = reader(["tail", "-f", mnt.p("t", WATCH)])
    start = r.start()
    etcd.put("/t/k", "1")
    etcd.put("/t/k2", "2")
    etcd.delete("/t/k")
    # tail polls (about once a second): the bound here is STREAM_WAIT
    r.expect(history(etcd, "/t/", start + 1, etcd.revision()), "tail -f")
    etcd.put("/t/k3", "later")
    r.expect(history(etcd, "/t/", etcd.revision(), etcd.revision()), "tail -f, later")
    r.quiet()
    assert r.proc.poll() is None


def test_bash_while_read_sees_every_line_intact(etcd, mnt, reader):
    etcd.put("/br/seed", "s")
    rev = etcd.revision() + 1
    # lines longer and shorter than bash's 128-byte reads, and that end
    # anywhere in them
    for i in range(60):
        etcd.put("/br/k%d" % (i % 9), ("v%d \\ \"x\" " % i) + "y" * (i * 13 % 400))
    n = 1 + 60 + 10
    script = ('n=0; while IFS= read -r line; do printf "%s\\n" "$line"; n=$((n+1)); '
              '[ "$n" -ge "$2" ] && break; done < "$1"; echo done >&2')
    path = mnt.p("br", "%s@%d" % (WATCH, rev))
    bash = reader(["bash", "-c", script, "bash", path, str(n)])
    cat = reader(path)
    bash.line(), cat.line()   # START
    bash.lines(60), cat.lines(60)
    for i in range(10):
        etcd.put("/br/live", "live %d " % i + "z" * (i * 37))
    assert bash.wait_exit(STREAM_WAIT) == 0, bash._state()
    cat.lines(10)
    assert bash.out == cat.out
    assert_events([parse_line(x) for x in cat.out.splitlines(True)[1:]],
                  history(etcd, "/br/", rev, etcd.revision()), "bash while read")


def test_head_ends(etcd, mnt, reader):
    etcd.put("/h/k", "0")
    time.sleep(WATCH_SETTLE)
    one = reader(["head", "-n", "1", mnt.p("h", WATCH)])
    assert one.wait_exit(STREAM_WAIT) == 0, one._state()
    assert field(parse_line(one.out), "type") == "START"
    # head writes into a pipe at its end only: wait until it reads
    three = reader(["head", "-n", "3", mnt.p("h", WATCH)])
    wait_blocked(three)
    etcd.put("/h/k", "1")
    time.sleep(WATCH_SETTLE)
    assert three.proc.poll() is None
    etcd.put("/h/k", "2")
    assert three.wait_exit(STREAM_WAIT) == 0, three._state()
    start = three.start()
    three.expect(history(etcd, "/h/", start + 1, etcd.revision()), "head -n 3")
    assert three.out.count(b"\n") == 3


# ---------------------------------------------------------------- 7. names

def test_watch_is_not_listed_and_is_no_key(etcd, mnt, reader):
    etcd.put("/n/k", "v")
    etcd.put("/n/%watch", "a key with that name")   # shown escaped: %25watch
    r = reader(mnt.p("n", WATCH))
    r.start()
    r2 = reader(mnt.p(WATCH))
    r2.start()
    assert sorted(os.listdir(mnt.p("n"))) == ["%25watch", "k"]
    assert read(mnt.p("n", "%25watch")) == b"a key with that name"
    assert os.listdir(mnt.path) == ["n"]
    for d in (mnt.path, mnt.p("n")):
        p = run(["ls", "-a", d], text=True)
        assert p.returncode == 0 and not [x for x in p.stdout.split() if "watch" in x
                                          and x != "%25watch"], p.stdout
    p = run(["find", mnt.path], text=True)
    assert "%watch" not in p.stdout and p.returncode == 0, p.stdout
    etcd.put("/n/k", "w")
    r.expect(history(etcd, "/n/", etcd.revision(), etcd.revision()))
    # stat by name: a new lookup, an unopened stream, size 0
    st = os.stat(mnt.p("n", WATCH))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, oct(st.st_mode)
    assert st.st_size == 0, st
    st = os.stat(mnt.p(WATCH + "@1"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o444, oct(st.st_mode)
    assert etcd.keys() == [b"/n/%watch", b"/n/k"]


def test_watch_refuses_every_change(etcd, mnt, reader):
    etcd.put("/ro/k", "v")
    path = mnt.p("ro", WATCH)
    other = mnt.p("ro", "k")

    def opener(flags):
        return lambda: os.close(os.open(path, flags, 0o644))

    changes = {
        "open O_WRONLY": opener(os.O_WRONLY),
        "open O_RDWR": opener(os.O_RDWR),
        "open O_WRONLY|O_APPEND": opener(os.O_WRONLY | os.O_APPEND),
        "open O_CREAT": opener(os.O_WRONLY | os.O_CREAT),
        "open O_RDONLY|O_TRUNC": opener(os.O_RDONLY | os.O_TRUNC),
        "truncate": lambda: os.truncate(path, 0),
        "chmod": lambda: os.chmod(path, 0o644),
        "utime": lambda: os.utime(path, (1, 1)),
        "unlink": lambda: os.unlink(path),
        "rename from": lambda: os.rename(path, mnt.p("ro", "renamed")),
        "rename onto": lambda: os.rename(other, path),
        "setxattr": lambda: os.setxattr(path, "user.x", b"1"),
        "@REV open O_WRONLY": lambda: os.close(os.open(path + "@1", os.O_WRONLY)),
        "@REV unlink": lambda: os.unlink(path + "@1"),
    }
    got = {what: harness.errname(errno_of(fn)) for what, fn in changes.items()}
    assert got == {what: "EROFS" for what in changes}, got
    for cmd in ("echo x > %s", "echo x >> %s", ": > %s", "rm -f %s", "mv %s %s.moved"):
        p = run(["/bin/sh", "-c", cmd % ((shlex.quote(path),) * cmd.count("%s"))],
                env=dict(os.environ, LC_ALL="C"), text=True)
        assert p.returncode != 0 and "Read-only file system" in p.stderr, (cmd, p.stderr)
    # nothing changed, in etcd or in the stream
    assert etcd.keys(with_values=True) == {b"/ro/k": b"v"}
    r = reader(path)
    start = r.start()
    etcd.put("/ro/k", "w")
    r.expect(history(etcd, "/ro/", start + 1, etcd.revision()))


def test_bad_names(etcd, mnt):
    etcd.put("/bn/file", "v")
    etcd.put("/bn/sub/k", "v")
    cases = {
        "bn/%watch@abc": errno.ENOENT, "bn/%watch@0": errno.ENOENT,
        "bn/%watch@-1": errno.ENOENT, "bn/%watch@": errno.ENOENT,
        "bn/%watch@1x": errno.ENOENT, "bn/%watch@+1": errno.ENOENT,
        "bn/%watch@ 1": errno.ENOENT, "%watch@abc": errno.ENOENT,
        "bn/file/%watch": errno.ENOTDIR, "bn/file/%watch@1": errno.ENOTDIR,
        "bn/nodir/%watch": errno.ENOENT, "nodir/%watch": errno.ENOENT,
        "%etcd/%watch": errno.ENOENT, "bn/%watch/x": errno.ENOTDIR,
    }
    got = {}
    for rel, want in cases.items():
        got[rel] = (harness.errname(errno_of(os.stat, mnt.p(rel))),
                    harness.errname(errno_of(lambda: os.close(os.open(mnt.p(rel),
                                                                      os.O_RDONLY)))))
    assert got == {rel: (harness.errname(w),) * 2 for rel, w in cases.items()}, got
    # the good ones are found
    for rel in ("bn/%watch", "bn/sub/%watch", "%watch", "bn/%watch@1"):
        assert stat.S_ISREG(os.stat(mnt.p(rel)).st_mode), rel


# ---------------------------------------------------------------- 8. interrupts

def test_a_blocked_reader_dies_at_once_on_sigterm_and_sigkill(etcd, mnt, reader):
    etcd.put("/s/k", "v")
    other = reader(mnt.p("s", WATCH))
    start = other.start()
    for sig in (signal.SIGTERM, signal.SIGKILL, signal.SIGINT):
        r = reader(mnt.p("s", WATCH))
        r.start()
        wait_blocked(r)
        r.proc.send_signal(sig)
        status = r.wait_exit(2)
        assert status == -sig, "cat still there 2 s after signal %d: state %s" % (
            sig, harness._state(r.proc.pid))
    # the mount and the other stream go on
    etcd.put("/s/k", "after")
    other.expect(history(etcd, "/s/", start + 1, etcd.revision()))
    assert read(mnt.p("s", "k")) == b"after"


def test_a_signal_interrupts_a_read_and_the_stream_goes_on(etcd, mnt, reader):
    etcd.put("/i/k", "v")
    time.sleep(WATCH_SETTLE)
    r = reader(pyreader(mnt.p("i", WATCH)))
    start = r.start()
    for i in range(3):
        wait_blocked(r)
        r.proc.send_signal(signal.SIGUSR1)
        assert r._wait(lambda: r.err.count("ERRNO EINTR") > i, STREAM_WAIT), \
            "read not interrupted by SIGUSR1: %r, %s" % (r.notes(), harness._state(r.proc.pid))
        etcd.put("/i/k", "after interrupt %d" % i)
        r.expect(history(etcd, "/i/", etcd.revision(), etcd.revision()))
    r.quiet()
    assert r.notes() == ["OPEN"] + ["ERRNO EINTR"] * 3
    assert r.out.count(b"\n") == 4 and start < etcd.revision()


NONBLOCK = r'''
import errno, fcntl, json, os, subprocess, sys, time
path, put = sys.argv[1], json.loads(sys.argv[2])
out = {}
def rd(fd):
    try:
        return os.read(fd, 65536).decode()
    except OSError as e:
        return errno.errorcode[e.errno]
fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
out["first"] = rd(fd)
out["second"] = rd(fd)
subprocess.run(put, check=True, stdout=subprocess.DEVNULL, timeout=30)
deadline = time.monotonic() + 10
seen = []
while time.monotonic() < deadline:
    seen.append(rd(fd))
    if seen[-1] != "EAGAIN":
        break
    time.sleep(0.01)
out["after put"] = seen[-1]
out["then"] = rd(fd)
os.close(fd)
# O_NONBLOCK set after the open, as tail -f does
fd = os.open(path, os.O_RDONLY)
out["blocking first"] = rd(fd)
fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
out["after fcntl"] = rd(fd)
print(json.dumps(out))
'''


def test_nonblocking_read_at_the_end_gives_eagain(etcd, mnt):
    etcd.put("/nb/k", "v")
    time.sleep(WATCH_SETTLE)
    put = etcd.ctl_argv("put", "/nb/k", "w")
    p = run([sys.executable, "-c", NONBLOCK, mnt.p("nb", WATCH), json.dumps(put)],
            env=ctl_env(), timeout=60, text=True)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert field(parse_line(out["first"].encode()), "type") == "START", out
    assert out["second"] == "EAGAIN", out
    ev = parse_line(out["after put"].encode())
    assert ev == history(etcd, "/nb/", etcd.revision(), etcd.revision())[0], out
    assert out["then"] == "EAGAIN", out
    assert field(parse_line(out["blocking first"].encode()), "type") == "START", out
    assert out["after fcntl"] == "EAGAIN", out


# ---------------------------------------------------------------- 9. one etcd watch

def test_many_readers_cost_one_etcd_watch_and_each_gets_every_event(own_etcd, mounter, reader):
    e = own_etcd
    e.put("/a/0", "0")
    e.put("/b/0", "0")
    m = mounter(etcd=e)
    first = reader(m.p(WATCH))
    start0 = first.start()
    e.put("/a/1", "1")
    first.expect(history(e, "/", start0 + 1, e.revision()))
    before = steady_watchers(e)
    dirs = ["a"] * 8 + ["b"] * 8 + [""] * 4
    rs = [(d, reader(m.p(d, WATCH) if d else m.p(WATCH))) for d in dirs]
    starts = [r.start() for _, r in rs]
    for _, r in rs:
        wait_blocked(r)
    during = watchers(e)
    assert during == before, "etcd watchers, streams: %r with 20 readers, %r before" % (
        during, before)
    # with 20 reads blocked the mount still answers everything else
    p = run(["/bin/sh", "-c", "ls %s %s && cat %s" % (m.p("a"), m.p("b"), m.p("a", "0"))],
            timeout=STREAM_WAIT)
    assert p.returncode == 0 and p.stdout.endswith(b"0"), p
    for i in range(5):
        e.put("/a/x%d" % i, "a%d" % i)
        e.put("/b/y/%d" % i, "b%d" % i)
    e.delete("/a/x0")
    txn(e, "put /b/t1 1", "put /a/t2 2")
    last = e.revision()
    full = history(e, "/", min(starts) + 1, last)
    for (d, r), start in zip(rs, starts):
        prefix = ("/%s/" % d if d else "/").encode()
        r.expect([ev for ev in full if key_of(ev).startswith(prefix) and
                  field(ev, "mod_revision") > start], "reader of %s/%%watch" % d)
    assert steady_watchers(e) == before


def test_a_rev_reader_has_an_etcd_watch_only_until_it_caught_up(own_etcd, mounter, reader):
    e = own_etcd
    for i in range(50):
        e.put("/hist/k%d" % (i % 5), "v%d" % i)
    m = mounter(etcd=e)
    live = reader(m.p(WATCH))
    start = live.start()
    e.put("/hist/k0", "mark")
    live.expect(history(e, "/", start + 1, e.revision()))
    before = steady_watchers(e)
    r = reader(m.p("hist", WATCH + "@2"))
    assert r.start() == 1
    r.expect(history(e, "/hist/", 2, e.revision()), "%watch@2 replay")
    e.put("/hist/k1", "live")
    r.expect(history(e, "/hist/", e.revision(), e.revision()), "%watch@2 live")
    assert wait_until(lambda: watchers(e) == before, timeout=10), \
        "etcd watchers, streams: %r after catching up, %r before" % (watchers(e), before)
    for i in range(3):
        e.put("/hist/k2", "after %d" % i)
    r.expect(history(e, "/hist/", e.revision() - 2, e.revision()), "%watch@2 on the mount's")
    r.quiet()


# ---------------------------------------------------------------- 10. streams

def test_every_open_is_its_own_stream(etcd, mnt, reader):
    etcd.put("/o/k", "0")
    a = reader(mnt.p("o", WATCH))
    b = reader(pyreader(mnt.p("o", WATCH), "size=7"))   # small reads
    sa, sb = a.start(), b.start()
    etcd.put("/o/k", "1")
    e1 = history(etcd, "/o/", etcd.revision(), etcd.revision())
    a.expect(e1, "a")
    b.expect(e1, "b")
    # two descriptors of one process are two streams too
    fd1 = os.open(mnt.p("o", WATCH), os.O_RDONLY | os.O_NONBLOCK)
    fd2 = os.open(mnt.p("o", WATCH), os.O_RDONLY | os.O_NONBLOCK)
    try:
        l1, l2 = os.read(fd1, 4096), os.read(fd2, 4096)
        assert field(parse_line(l1), "type") == "START" and l1 == l2
    finally:
        os.close(fd1)
        os.close(fd2)
    a.stop()
    etcd.put("/o/k", "2")
    e2 = history(etcd, "/o/", etcd.revision(), etcd.revision())
    b.expect(e2, "b after a closed")
    # a new open starts afresh, from now (b has seen e2: so has the mount)
    c = reader(mnt.p("o", WATCH))
    sc = c.start()
    assert sc >= field(e2[0], "mod_revision"), (sc, e2)
    etcd.put("/o/k", "3")
    e3 = history(etcd, "/o/", sc + 1, etcd.revision())
    c.expect(e3, "c")
    b.expect(e3[-1:], "b")
    for r in (b, c):
        r.quiet(0.3)


# ---------------------------------------------------------------- stat

STAT = r'''
import json, os, sys, time
path = sys.argv[1]
fa = os.open(path, os.O_RDONLY)
a = os.read(fa, 65536)
print(json.dumps({"a": [len(a), os.fstat(fa).st_size]}), flush=True)
sys.stdin.readline()           # the test puts an event
a += os.read(fa, 65536)
fb = os.open(path, os.O_RDONLY)
b = os.read(fb, 65536)
sa, sb = os.fstat(fa), os.fstat(fb)
print(json.dumps({"a": [len(a), sa.st_size, sa.st_mtime_ns], "b": [len(b), sb.st_size],
                  "now": time.time_ns()}), flush=True)
sys.stdin.readline()           # and another, a second later
a += os.read(fa, 65536)
sa2 = os.fstat(fa)
print(json.dumps({"a": [len(a), sa2.st_size, sa2.st_mtime_ns], "now": time.time_ns()}),
      flush=True)
'''


def test_fstat_shows_the_streams_size_and_last_line_time(etcd, mnt, reader):
    etcd.put("/st/k", "v")
    r = reader([sys.executable, "-c", STAT, mnt.p("st", WATCH)], stdin=True)
    one = json.loads(r.line())
    assert one["a"][0] == one["a"][1], "fstat size %d after reading START (%d bytes)" % (
        one["a"][1], one["a"][0])
    t0 = time.time_ns()
    etcd.put("/st/k", "a longer value than before")
    r.send(b"\n")
    two = json.loads(r.line())
    assert two["a"][0] == two["a"][1], "stream a: %d bytes read, fstat size %d" % (
        two["a"][0], two["a"][1])
    assert two["b"][0] == two["b"][1], "stream b: %d bytes read, fstat size %d" % (
        two["b"][0], two["b"][1])
    assert t0 - 10**9 <= two["a"][2] <= two["now"] + 10**9, (t0, two)
    time.sleep(1.1)
    etcd.put("/st/k", "third")
    r.send(b"\n")
    three = json.loads(r.line())
    assert three["a"][0] == three["a"][1], three
    assert three["a"][2] > two["a"][2], "mtime did not move with the new line: %r %r" % (
        two, three)


# ---------------------------------------------------------------- 12. unmount

def test_unmount_with_a_blocked_reader(etcd, mounter, reader):
    etcd.put("/u/k", "v")
    m = mounter(etcd=etcd)
    r = reader(m.p("u", WATCH))
    start = r.start()
    wait_blocked(r)
    p = harness.fusermount_u(m.path)
    if p.returncode != 0:
        # busy, as any file system with an open file: the stream goes on
        assert is_etcdfs_mounted(m.path), p
        etcd.put("/u/k", "still")
        r.expect(history(etcd, "/u/", start + 1, etcd.revision()))
        assert r.proc.poll() is None
    else:
        # unmounted under it: the reader ends
        assert r.wait_exit(STREAM_WAIT) is not None, r._state()
    # the daemon then stops with the reader blocked (SIGTERM, as systemd
    # and kill do): the reader ends, the daemon exits as it does with no
    # reader, with nothing on stderr (a sanitizer's leak report included)
    idle = mounter(etcd=etcd)
    # (no listing first: a directory handle whose release is still on its
    # way when the daemon stops is reported as a leak under ASan)
    os.stat(idle.p("u"))
    status_idle = stop_daemon(idle)
    # a stop asked for is a clean end (etcdfs(1)): systemd must not see a failure
    assert status_idle == 0
    if is_etcdfs_mounted(m.path):
        py = reader(pyreader(m.p("u", WATCH)))
        py.start()
        wait_blocked(r)
        wait_blocked(py)
        assert stop_daemon(m) == status_idle
        assert r.wait_exit(STREAM_WAIT) is not None, r._state()
        assert py.wait_exit(STREAM_WAIT) is not None, py._state()
        assert not py.notes()[1:] or py.notes()[1] in ("EOF", "ERRNO ENOTCONN", "ERRNO EIO",
                                                       "ERRNO ECONNABORTED"), py.notes()
    else:
        assert m.proc.wait(STREAM_WAIT) == 0


# ---------------------------------------------------------------- 13. outages

OUTAGE_OPTS = ("--command-timeout=2s", "--dial-timeout=1s")


def test_etcd_restart_loses_and_repeats_nothing(own_etcd, mounter, reader):
    e = own_etcd
    e.put("/f/k", "0")
    m = mounter(*OUTAGE_OPTS, etcd=e, allowed_stderr=DOWN_STDERR)
    r = reader(m.p("f", WATCH))
    root = reader(m.p(WATCH))
    start, root_start = r.start(), root.start()
    for i in range(3):
        e.put("/f/k", "before %d" % i)
    r.expect(history(e, "/f/", start + 1, e.revision()), "before the restart")
    seen = e.revision()
    e.stop()
    time.sleep(1)
    e.restart()
    for i in range(3):
        e.put("/f/k", "after %d" % i)
    e.put("/f/new", "n")
    e.delete("/f/k")
    # the events that cannot be lost: put right after the restart
    r.expect(history(e, "/f/", seen + 1, e.revision()), "after the restart", timeout=30)
    root.expect(history(e, "/", root_start + 1, e.revision()), "root", timeout=30)
    r.quiet()
    root.quiet(0.2)
    # and it stays live
    e.put("/f/last", "l")
    r.expect(history(e, "/f/", e.revision(), e.revision()), "later")


def test_a_compaction_during_an_outage_ends_the_stream(own_etcd, proxy, mounter, reader):
    e = own_etcd
    e.put("/g/k", "0")
    m = mounter("--endpoints=" + proxy.endpoint, "--pin-endpoints", *OUTAGE_OPTS,
                allowed_stderr=DOWN_STDERR + (r"watch",))
    r = reader(pyreader(m.p("g", WATCH), "errors=2"))
    start = r.start()
    e.put("/g/k", "1")
    seen = r.expect(history(e, "/g/", start + 1, e.revision()), "before the cut")
    proxy.cut()
    time.sleep(0.5)
    e.put("/g/k", "2")     # missed, then compacted away
    e.put("/g/k", "3")
    compacted = e.revision()
    e.compact(compacted)
    proxy.resume()
    assert r.event(30) == (("type", "ERROR"), ("error", "compacted"),
                           ("compact_revision", compacted)), seen
    assert r.wait_exit(STREAM_WAIT) == 3, r._state()
    assert r.notes() == ["OPEN", "ERRNO EIO", "ERRNO EIO"]
    assert r.out[r.pos:] == b""
    # a new stream works
    r2 = reader(m.p("g", WATCH))
    assert r2.start() >= compacted
    e.put("/g/k", "4")
    r2.expect(history(e, "/g/", e.revision(), e.revision()))


# ---------------------------------------------------------------- refused

@pytest.fixture
def alice_etcd():
    """An etcd with auth on, whose user alice may read and write /app/ only."""
    from secure import AuthEtcd, add_user, enable_auth
    e = AuthEtcd("auth").start()
    try:
        enable_auth(e)
        add_user(e, "alice", "alice-pw", ("readwrite", "/app/", "--prefix"))
    except BaseException:
        e.destroy()
        raise
    yield e
    e.destroy()


def test_a_mount_whose_watch_etcd_refuses_refuses_opens(alice_etcd, tmp_path, mounter,
                                                       reader):
    e = alice_etcd
    e.put("/app/x", "1")
    pw = tmp_path / "pw"
    pw.write_text("alice-pw\n")
    os.chmod(pw, 0o600)
    # the role may read /app/ only: etcd refuses the mount's Watch of everything
    m = mounter("--user=alice", "--password-file=%s" % pw, "--command-timeout=2s",
                etcd=e, allowed_stderr=[r"watch refused: .*permission denied"])
    assert os.listdir(m.p("app")) == ["x"]

    def opens(rel):
        return harness.errname(errno_of(lambda: os.close(os.open(m.p(rel), os.O_RDONLY))))
    assert wait_until(lambda: opens(WATCH) == "EACCES", timeout=STREAM_WAIT), opens(WATCH)
    got = {rel: opens(rel) for rel in (WATCH, "app/" + WATCH, "app/%s@1" % WATCH)}
    assert got == {rel: "EACCES" for rel in got}, got


# ---------------------------------------------------------------- slow readers

BIG = 1300 * 1000   # bytes of one big value (etcd takes requests up to 1.5 MiB)
BIG_COUNT = 60      # 78 MB of lines: more than 64 MiB, etcd's batch in one message
SLOW_COUNT = 25     # 32 MB: far more than a stream holds for a reader (about 10 MiB)


def put_big(e, prefix, count=BIG_COUNT):
    """count puts of BIG-byte values under prefix (keys k0..k2 in turn);
    returns the first one's revision."""
    for i in range(count):
        e.put("%sk%d" % (prefix, i % 3), ("%04d" % i) + "x" * BIG)
    return e.revision() - count + 1


def big_event(prefix, first, i):
    """The line of put_big's i-th put (its first put at revision first)."""
    return put_event(("%sk%d" % (prefix, i % 3)).encode(), (("%04d" % i) + "x" * BIG).encode(),
                     first + i % 3, first + i, i // 3 + 1)


def held_reader(reader, path):
    """A reader that reads the START line, then nothing until released()."""
    r = reader(pyreader(path, "hold"), stdin=True)
    start = r.start()
    r.wait_note("HOLDING")
    return r, start


def test_a_slow_reader_loses_nothing(own_etcd, mounter, reader):
    e = own_etcd
    e.put("/big/k", "0")
    m = mounter(etcd=e)
    time.sleep(WATCH_SETTLE)
    slow, start = held_reader(reader, m.p("big", WATCH))
    fast = reader(m.p("big", WATCH))
    fast_start = fast.start()
    first = put_big(e, "/big/", SLOW_COUNT)
    expected = [big_event("/big/", first, i) for i in range(SLOW_COUNT)]
    # once another reader has every line, the mount has them all
    fast.expect([ev for ev in expected if field(ev, "mod_revision") > fast_start], "fast",
                timeout=60)
    slow.send(b"go\n")
    slow.expect([ev for ev in expected if field(ev, "mod_revision") > start], "slow",
                timeout=60)
    e.put("/big/k", "live")
    slow.expect(history(e, "/big/", e.revision(), e.revision()), "slow, then live")
    slow.quiet()
    assert slow.notes() == ["OPEN", "HOLDING"]


def test_a_slow_reader_whose_lines_etcd_compacted_gets_compacted(own_etcd, mounter, reader):
    e = own_etcd
    e.put("/big/k", "0")
    m = mounter(etcd=e)
    time.sleep(WATCH_SETTLE)
    slow, start = held_reader(reader, m.p("big", "%s@%d" % (WATCH, e.revision() + 1)))
    fast = reader(m.p("big", WATCH))
    fast_start = fast.start()
    first = put_big(e, "/big/", SLOW_COUNT)
    expected = [big_event("/big/", first, i) for i in range(SLOW_COUNT)]
    fast.expect([ev for ev in expected if field(ev, "mod_revision") > fast_start], "fast",
                timeout=60)
    compacted = e.revision()
    e.compact(compacted)
    slow.send(b"go\n")
    got = []
    while True:
        ev = slow.event(60)
        if field(ev, "type") == "ERROR":
            break
        got.append(ev)
    assert ev == (("type", "ERROR"), ("error", "compacted"), ("compact_revision", compacted)), \
        short(ev)
    # what came before is the stream's beginning: no gap, nothing twice
    assert_events(got, expected[:len(got)], "the slow reader's lines")
    assert len(got) < SLOW_COUNT
    assert slow.wait_exit(STREAM_WAIT) == 3, slow._state()
    assert slow.notes()[-1] == "ERRNO EIO", slow.notes()
    assert slow.out[slow.pos:] == b""


def test_a_history_over_64_mib_replays_to_a_reader_that_keeps_up(own_etcd, mounter, reader):
    e = own_etcd
    first = put_big(e, "/big/")
    m = mounter(etcd=e)
    r = reader(m.p("big", "%s@%d" % (WATCH, first)))
    assert r.start() == first - 1
    r.expect([big_event("/big/", first, i) for i in range(BIG_COUNT)],
             "%%watch@%d" % first, timeout=60)
    e.put("/big/k0", "live")
    r.expect(history(e, "/big/", e.revision(), e.revision()), "then live")


def test_a_history_over_64_mib_read_late_loses_nothing(own_etcd, mounter, reader):
    e = own_etcd
    first = put_big(e, "/big/")
    m = mounter(etcd=e)
    r, start = held_reader(reader, m.p("big", "%s@%d" % (WATCH, first)))
    assert start == first - 1
    time.sleep(2)   # etcd sends its 78 MB meanwhile
    r.send(b"go\n")
    r.expect([big_event("/big/", first, i) for i in range(BIG_COUNT)],
             "%%watch@%d read late" % first, timeout=60)
    e.put("/big/k0", "live")
    r.expect(history(e, "/big/", e.revision(), e.revision()), "then live")
    assert r.notes() == ["OPEN", "HOLDING"]


def test_an_outage_with_over_64_mib_of_changes_loses_nothing(own_etcd, proxy, mounter,
                                                              reader):
    e = own_etcd
    e.put("/big/k", "0")
    m = mounter("--endpoints=" + proxy.endpoint, "--pin-endpoints", *OUTAGE_OPTS,
                allowed_stderr=DOWN_STDERR + (r"watch",))
    r = reader(m.p("big", WATCH))
    start = r.start()
    e.put("/big/k", "1")
    r.expect(history(e, "/big/", start + 1, e.revision()), "before the cut")
    proxy.cut()
    time.sleep(0.5)
    first = put_big(e, "/big/")
    proxy.resume()
    r.expect([big_event("/big/", first, i) for i in range(BIG_COUNT)],
             "after the cut", timeout=60)
    e.put("/big/k", "2")
    r.expect(history(e, "/big/", e.revision(), e.revision()), "then live")
