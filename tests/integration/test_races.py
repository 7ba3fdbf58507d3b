"""Races and POSIX conformance: lost updates, resurrected keys, torn reads
and directory semantics that a single slow request or two requests at once
get wrong.

Each racy test loops a bounded number of times (and for a bounded time)
because one iteration only opens a window; the assertions themselves are
about outcomes that are illegal in every interleaving.  "Must never be seen"
is checked once the daemon has had its chance (after a pause, and again
after unmounting, which waits for every request the kernel sent), never
retried until it goes away.
"""
import ctypes
import errno
import os
import random
import select
import socket
import stat
import threading
import time

import pytest

import harness

from harness import REMOTE_DELAY, errno_of, read, settle, sh, wait_for, write


def arrives(observe, want):
    """Waits until observe() shows want (and keeps showing it); what it
    shows on the way is not this helper's to judge: the callers check that
    where it matters."""
    wait_for(observe, lambda o: o == want, lambda o, seen: None)

_libc = ctypes.CDLL(None, use_errno=True)

# How long a late RELEASE or Put may take to land after the system calls
# that caused it have returned; only used before looking for something
# that must never appear (unmounting is the real barrier, checked after).
LATE = 0.5


def close_all(fds):
    """Closes fds with one close_range(2) per run of consecutive numbers:
    the kernel flushes each file, then releases them all on the way back to
    user space, so their RELEASE requests reach the daemon back to back."""
    fds = sorted(fds)
    i = 0
    while i < len(fds):
        j = i
        while j + 1 < len(fds) and fds[j + 1] == fds[j] + 1:
            j += 1
        if _libc.close_range(ctypes.c_uint(fds[i]), ctypes.c_uint(fds[j]), 0) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        i = j + 1


def unmount_checked(m):
    """Unmounts m (the daemon has then answered every request) and fails on
    the problems the mounter fixture would report."""
    problems = m.close()
    assert problems == [], problems


def run_threads(fns, stop, background=None, timeout=60):
    """Runs each fn in a thread, and background while they run; re-raises
    the first exception any of them raised."""
    errors = []

    def guard(fn):
        def run():
            try:
                fn()
            except BaseException as e:   # re-raised in the test's thread
                errors.append(e)
                stop.set()
        return threading.Thread(target=run)
    threads = [guard(fn) for fn in fns]
    bg = guard(background) if background else None
    if bg:
        bg.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    stop.set()
    if bg:
        bg.join(timeout)
    assert not any(t.is_alive() for t in threads + ([bg] if bg else [])), "a thread hung"
    if errors:
        raise errors[0]


# ---------------------------------------------------------------- a proxy that delays

def _varint(buf, i):
    v = shift = 0
    while True:
        c = buf[i]
        i += 1
        v |= (c & 0x7f) << shift
        shift += 7
        if not c & 0x80:
            return v, i


def count_watch_events(payload):
    """Watch events in the gRPC messages of one HTTP/2 DATA payload: the
    top-level field 11 (WatchResponse.events), which no KV response has.
    0 when the payload is not whole messages."""
    n = i = 0
    try:
        while i + 5 <= len(payload):
            mlen = int.from_bytes(payload[i + 1:i + 5], "big")
            j, end = i + 5, i + 5 + mlen
            if end > len(payload):
                return n
            while j < end:
                tag, j = _varint(payload, j)
                wt = tag & 7
                if wt == 0:
                    _, j = _varint(payload, j)
                elif wt == 2:
                    ln, j = _varint(payload, j)
                    j += ln
                elif wt == 1:
                    j += 8
                elif wt == 5:
                    j += 4
                else:
                    return n
                if tag >> 3 == 11 and wt == 2:
                    n += 1
            i = end
    except IndexError:
        pass
    return n


class _Conn:
    def __init__(self, client, server):
        self.client, self.server = client, server
        self.send_lock = threading.Lock()
        self.held = []         # (batch, frame bytes) of the watch stream, in order
        self.watch_sids = set()


class H2Proxy:
    """A TCP proxy between etcdfs and etcd (cleartext HTTP/2) that can
    - stall everything the daemon sends (requests wait; watch events, which
      flow from etcd, keep coming), and
    - hold back the DATA frames of the watch stream (events arrive late, as
      they may on any network), releasing them in batches, in order, while
      every other frame passes at once.
    Frames of different streams carry no order between them, and those of
    the watch stream keep theirs, so neither breaks HTTP/2."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.cond = threading.Condition()
        self.up_stalled = False   # protected by cond
        self.gated = False        # protected by cond
        self.batch = 0            # protected by cond
        self.seen = 0             # protected by cond: watch events seen
        self.conns = []           # protected by cond
        self.stopping = False
        self.threads = []
        self._spawn(self._accept)

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _accept(self):
        while not self.stopping:
            r, _, _ = select.select([self.lsock], [], [], 0.1)
            if not r:
                continue
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            srv = socket.create_connection(self.target, timeout=10)
            for x in (c, srv):
                x.setblocking(True)
                x.settimeout(None)
                x.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(c, srv)
            with self.cond:
                self.conns.append(conn)
            self._spawn(self._pump_up, conn)
            self._spawn(self._pump_down, conn)

    def _recv(self, sock):
        while not self.stopping:
            r, _, _ = select.select([sock], [], [], 0.1)
            if r:
                try:
                    return sock.recv(1 << 16)
                except OSError:
                    return b""
        return b""

    def _pump_up(self, conn):
        while True:
            data = self._recv(conn.client)
            if not data:
                break
            # Checked after the read too: data that arrives while stalled
            # (the first request after stall_requests()) is held as well.
            with self.cond:
                while self.up_stalled and not self.stopping:
                    self.cond.wait(0.1)
            try:
                conn.server.sendall(data)
            except OSError:
                break
        self._shut(conn)

    def _pump_down(self, conn):
        buf = b""
        while True:
            data = self._recv(conn.server)
            if not data:
                break
            buf += data
            out = []
            while len(buf) >= 9:
                flen = int.from_bytes(buf[:3], "big")
                if len(buf) < 9 + flen:
                    break
                frame, buf = buf[:9 + flen], buf[9 + flen:]
                ftype, flags = frame[3], frame[4]
                sid = int.from_bytes(frame[5:9], "big") & 0x7fffffff
                if ftype == 0:   # DATA
                    payload = frame[9:]
                    if flags & 0x8:
                        payload = payload[1:len(payload) - payload[0]]
                    if sid not in conn.watch_sids and count_watch_events(payload):
                        conn.watch_sids.add(sid)
                    if sid in conn.watch_sids:
                        n = count_watch_events(payload)
                        with self.cond:
                            self.seen += n
                            self.cond.notify_all()
                            if self.gated or conn.held:
                                conn.held.append((self.batch, frame, n))
                                continue
                out.append(frame)
            if out and not self._send(conn, b"".join(out)):
                break
        self._shut(conn)

    def _send(self, conn, data):
        try:
            with conn.send_lock:
                conn.client.sendall(data)
            return True
        except OSError:
            return False

    def _shut(self, conn):
        for x in (conn.client, conn.server):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---- control

    def stall_requests(self):
        with self.cond:
            self.up_stalled = True

    def resume_requests(self):
        with self.cond:
            self.up_stalled = False
            self.cond.notify_all()

    def hold_events(self):
        """Holds watch events from now on, in batch 0 until mark()."""
        with self.cond:
            self.gated = True
            self.batch = 0

    def mark(self):
        """Events arriving from now on go to the next batch."""
        with self.cond:
            self.batch += 1

    def events_seen(self):
        """Watch events that reached the proxy so far (held or not)."""
        with self.cond:
            return self.seen

    def wait_seen(self, n, timeout=5):
        """Waits until n watch events have reached the proxy."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.seen < n:
                left = deadline - time.monotonic()
                assert left > 0, "only %d of %d watch events reached the proxy" % (self.seen, n)
                self.cond.wait(left)

    def release(self, upto=None):
        """Sends the held frames of batches <= upto (all if None), in order;
        with upto None, stops holding."""
        with self.cond:
            if upto is None:
                self.gated = False
            for c in self.conns:
                keep = []
                go = []
                for b, f, n in c.held:
                    (go if (upto is None or b <= upto) and not keep else keep).append((b, f, n))
                c.held = keep
                if go:
                    self._send(c, b"".join(f for _, f, _ in go))

    def close(self):
        self.resume_requests()
        self.release()
        self.stopping = True
        for t in self.threads:
            t.join(5)
        for c in self.conns:
            for x in (c.client, c.server):
                x.close()
        self.lsock.close()


@pytest.fixture
def proxy(etcd):
    """An H2Proxy in front of the shared etcd; request it before mounter,
    so that it outlives the mounts."""
    p = H2Proxy(etcd.client_port)
    yield p
    p.close()


# Generous timeouts, so that a stall the test makes is never mistaken for
# a dead server (a PING unanswered for dial-timeout kills the connection).
PROXY_OPTS = ("--dial-timeout=10s", "--command-timeout=20s")


# ---------------------------------------------------------------- 1: resurrected empty files

@pytest.mark.parametrize("setup", ["new-dir", "dir-in-etcd", "existing-keys"])
def test_unlinked_empty_file_stays_deleted(etcd, mnt, setup):
    """Bug: a file created (or truncated) and closed without a write, then
    unlinked at once, comes back: the release publishes the empty buffer
    after the DeleteRange, so the key reappears (version 1, empty) in etcd
    and in ls.  When the Put lands just after the DeleteRange, the unlink
    itself fails with ENOENT, though the file existed since open returned.
    Covers a directory made here, one that exists in etcd already, and
    existing keys opened with O_TRUNC."""
    n = 100
    if setup == "new-dir":
        os.mkdir(mnt.p("rz"))
    elif setup == "dir-in-etcd":
        etcd.put("/rz/other", "kept")
    else:
        etcd.put_many(("/rz/f%d" % i, "old%d" % i) for i in range(n))
    os.listdir(mnt.p("rz"))
    failed = []
    for i in range(n):
        p = mnt.p("rz/f%d" % i)
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        except OSError as e:
            raise AssertionError("creating file %d of %d: %s (%d unlinks failed before)"
                                 % (i, n, e.strerror, len(failed)))
        os.close(fd)
        rc = errno_of(os.unlink, p)
        if rc is not None:
            failed.append("f%d: %s" % (i, errno.errorcode[rc]))
    expected = [b"/rz/other"] if setup == "dir-in-etcd" else []
    time.sleep(LATE)
    keys = etcd.keys("/rz/")
    back = sorted(set(os.listdir(mnt.p("rz"))) - {"other"})
    assert not failed and keys == expected and back == [], \
        "of %d files, %d unlinks failed %s; %d came back: etcd %r, ls %r" % (
            n, len(failed), failed[:5], len(keys) - len(expected), keys[:8], back[:8])
    unmount_checked(mnt)
    assert etcd.keys("/rz/") == expected


# ---------------------------------------------------------------- 2: rename over an existing file

def call_with_release(proxy, fn, *args, wait=2.0):
    """Runs fn in a thread; if it has not returned after wait seconds (a
    daemon may wait for its own events), lets every held event through.
    Returns fn's result or raises its exception."""
    box = {}

    def run():
        try:
            box["ok"] = fn(*args)
        except BaseException as e:   # re-raised in the test's thread
            box["err"] = e
    t = threading.Thread(target=run)
    t.start()
    t.join(wait)
    if t.is_alive():
        proxy.release()
        t.join(30)
    assert not t.is_alive(), "%s hung" % fn.__name__
    if "err" in box:
        raise box["err"]
    return box["ok"]


def test_read_after_rename_over_existing_file(etcd, proxy, mounter):
    """Bug: right after rename(src, dst) over an existing dst, reading dst
    returned dst's old value: the watch event of dst's old value, arriving
    after the rename (events may lag replies by any amount), was applied to
    the renamed inode.  An append made then published the renamed value
    followed by bytes of the old one: a lost update in etcd.

    The proxy holds the watch's events back: those of the two writes are let
    through after the rename returned, the rename's own ones only at the
    end.  The read must be src's value, the append must land on it."""
    m = mounter(*PROXY_OPTS, "--endpoints=" + proxy.endpoint)
    os.mkdir(m.p("d"))
    bad = []
    for i in range(3):
        src, dst = m.p("d/src%d" % i), m.p("d/dst%d" % i)
        new = b"new value %d\n" % i
        old = b"the old, longer value of dst, number %d\n" % i * 3
        seen = proxy.events_seen()
        write(dst, b"first value of dst\n")
        proxy.wait_seen(seen + 1)     # dst exists and its event went through
        proxy.hold_events()
        call_with_release(proxy, write, src, new)
        call_with_release(proxy, write, dst, old)
        proxy.wait_seen(seen + 3)     # the two writes' events are held
        proxy.mark()
        call_with_release(proxy, os.rename, src, dst)
        proxy.release(0)              # the writes' events come in late
        time.sleep(0.1)               # and are applied
        got = call_with_release(proxy, read, dst)
        size = os.stat(dst).st_size

        def append():
            with open(dst, "ab") as f:
                f.write(b"+")
        call_with_release(proxy, append)
        stored = etcd.get("/d/dst%d" % i)
        proxy.release()
        assert etcd.get("/d/src%d" % i) is None
        if got != new or size != len(new) or stored != new + b"+":
            bad.append("round %d: read %r (stat size %d), etcd after the append %r; want %r"
                       % (i, got, size, stored, new + b"+"))
        else:
            arrives(lambda: read(dst), new + b"+")
    assert not bad, "\n".join(bad)


# ---------------------------------------------------------------- 3: torn reads across mounts

def make_value(seq, size):
    """A value that says what it is: "size:seq:" then a pattern of seq."""
    head = b"%d:%d:" % (size, seq)
    unit = b"%x." % seq
    return head + (unit * ((size - len(head)) // len(unit) + 1))[:size - len(head)]


def value_size(rng):
    r = rng.random()
    if r < 0.2:
        return rng.randint(20, 4096)
    if r < 0.4:
        return rng.randint(4096, 100000)
    return rng.randint(100000, 300000)


def check_value(data):
    """The seq of data if it is exactly a value make_value made, else None."""
    head = data[:40].split(b":", 2)
    try:
        size, seq = int(head[0]), int(head[1])
    except (ValueError, IndexError):
        return None
    return seq if len(data) == size and data == make_value(seq, size) else None


def read_whole(path):
    """open, read to EOF, fstat, close: (data, st_size)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        chunks = []
        while True:
            c = os.read(fd, 1 << 20)
            if not c:
                break
            chunks.append(c)
        return b"".join(chunks), os.fstat(fd).st_size
    finally:
        os.close(fd)


def test_no_torn_reads_across_mounts(etcd, mounter):
    """Bug: while one process rewrites a file on mount A with whole values,
    a reader on mount B sometimes got bytes no writer wrote: values cut at
    page or 128 KiB multiples, new data with an older value's length, tails
    padded with NULs.  Every read must be one whole value some writer wrote;
    fstat of the open descriptor, taken after the read, must give that
    value's length or the length of a value written later (the file may have
    changed since)."""
    a = mounter(etcd=etcd)
    b = mounter(etcd=etcd)
    sizes = {0: 1000}                 # seq -> length, set before the write starts
    write(a.p("f"), make_value(0, 1000))
    assert read(b.p("f")) == make_value(0, 1000)
    stop = threading.Event()
    deadline = time.monotonic() + 9
    bad = []
    reads = [0]
    writes = [0]

    def writer():
        rng = random.Random(7)
        seq = 0
        while not stop.is_set() and time.monotonic() < deadline:
            seq += 1
            size = value_size(rng)
            sizes[seq] = size
            write(a.p("f"), make_value(seq, size))
            writes[0] = seq

    def reader():
        while not stop.is_set() and time.monotonic() < deadline and len(bad) < 10:
            data, st_size = read_whole(b.p("f"))
            reads[0] += 1
            seq = check_value(data)
            if seq is None:
                head = data[:30]
                bad.append("read %d bytes starting %r%s" % (
                    len(data), head, " ending in NULs" if data.endswith(b"\0" * 8) else ""))
            elif st_size != len(data) and not any(
                    sizes.get(s) == st_size for s in range(seq + 1, writes[0] + 2)):
                bad.append("read value %d (%d bytes) but fstat says %d bytes"
                           % (seq, len(data), st_size))

    run_threads([reader, reader], stop, writer)
    assert not bad, "%d of %d reads (%d values written) were not a whole value:\n  %s" % (
        len(bad), reads[0], writes[0], "\n  ".join(bad))
    assert writes[0] > 20 and reads[0] > 100, (writes[0], reads[0])
    want = make_value(writes[0], sizes[writes[0]])
    assert etcd.get("/f") == want
    arrives(lambda: read(b.p("f")), want)


# ---------------------------------------------------------------- 4a: two last releases at once

def test_two_last_releases_publish_the_truncation(etcd, mnt):
    """Bug (found by reading the code): when the last two write handles of
    a file are released at once, both can see writers == 2, neither
    publishes, and the buffer is dropped: `: > f` done twice at the same
    time leaves the old value in etcd.

    Every file is opened twice with O_WRONLY|O_TRUNC, never written; the
    descriptors of 20 files at a time are closed with one close_range(2), so
    each file's two RELEASE requests reach the daemon back to back.  Then
    every key must be empty (the truncation must arrive: settle).  The
    window is a few instructions wide: this rarely fails today."""
    n, batch = 2000, 20
    etcd.put_many(("/tr/f%d" % i, "old-value-%d" % i) for i in range(n))
    names = [mnt.p("tr/f%d" % i) for i in range(n)]
    deadline = time.monotonic() + 8
    done = 0
    for i in range(0, n, batch):
        if time.monotonic() > deadline:
            break
        fds = []
        for p in names[i:i + batch]:
            fds.append(os.open(p, os.O_WRONLY | os.O_TRUNC))
            fds.append(os.open(p, os.O_WRONLY | os.O_TRUNC))
        close_all(fds)
        done = i + batch

    def all_empty():
        vals = etcd.keys("/tr/", with_values=True)
        assert len(vals) == n, len(vals)
        left = sorted(k.decode() for k, v in vals.items()
                      if v != b"" and int(k.rsplit(b"f", 1)[1]) < done)
        assert not left, "%d of %d truncated files kept their old value in etcd: %s" % (
            len(left), done, left[:10])
    settle(all_empty)
    for p in names[:done]:
        assert os.stat(p).st_size == 0
    assert done >= 200


# ---------------------------------------------------------------- 4b: unlink during a Put

def test_unlink_while_close_publishes(etcd, mnt):
    """Bug: unlink sends its DeleteRange without waiting for an in-flight Put
    of the same file, so the Put can land after the delete: the file comes
    back after rm succeeded.

    A writer creates (or truncates) a file, writes 1 MB and closes it (the
    close makes the Put); once open() has returned and the data is written,
    another thread unlinks the file while the close runs.  The file existed
    when unlink was called and close does not make names, so whatever the
    order of the two, unlink must succeed and the file must be gone
    afterwards, in etcd and on the mount."""
    rounds = 16
    value = bytes(range(256)) * 4096          # 1 MiB: the Put takes a while
    os.mkdir(mnt.p("ul"))
    etcd.put_many(("/ul/f%d" % i, "existing") for i in range(1, rounds, 2))
    os.listdir(mnt.p("ul"))
    failures = []
    deadline = time.monotonic() + 10
    for i in range(rounds):
        if time.monotonic() > deadline:
            break
        p = mnt.p("ul/f%d" % i)
        written = threading.Event()
        box = {}

        def writer():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                os.write(fd, value)
            finally:
                written.set()
                box["close"] = errno_of(os.close, fd)

        def unlinker():
            assert written.wait(10)
            time.sleep(random.uniform(0, 0.002))
            box["unlink"] = errno_of(os.unlink, p)
        run_threads([writer, unlinker], threading.Event())
        if box["unlink"] is not None:
            failures.append("f%d: unlink failed: %s" % (i, os.strerror(box["unlink"])))
    time.sleep(LATE)
    left = etcd.keys("/ul/")
    listed = os.listdir(mnt.p("ul"))
    unmount_checked(mnt)
    left_after = etcd.keys("/ul/")
    assert not failures and not left and not listed and not left_after, \
        "unlinked during close: %s; back in etcd: %r, listed: %r, in etcd after unmount: %r" % (
            failures, left, listed, left_after)


# ---------------------------------------------------------------- 4c: directories emptied elsewhere

def test_directory_emptied_by_another_client_disappears(etcd, mnt):
    """Bug: every unlink registers the parent as a directory made here, and
    only this mount's own Puts clear that: after another client deletes the
    remaining keys, this mount shows an empty directory forever.

    Both sides: rm of the last file here leaves its directory (as on any
    file system); a directory whose last key another client deletes is gone
    within REMOTE_DELAY (stat ENOENT, not listed)."""
    etcd.put("/keep/a", "1")
    etcd.put("/d/a", "1")
    etcd.put("/d/b", "2")
    etcd.put("/top", "t")
    assert sorted(os.listdir(mnt.path)) == ["d", "keep", "top"]
    assert sorted(os.listdir(mnt.p("d"))) == ["a", "b"]
    # rm of the last file here: the directory stays
    os.unlink(mnt.p("keep/a"))
    assert etcd.keys("/keep/") == []
    assert stat.S_ISDIR(os.stat(mnt.p("keep")).st_mode)
    assert os.listdir(mnt.p("keep")) == []
    assert "keep" in os.listdir(mnt.path)
    # rm of one file here, the last key deleted by another client
    os.unlink(mnt.p("d/a"))
    assert os.listdir(mnt.p("d")) == ["b"]
    etcd.delete("/d/b")

    def gone():
        assert errno_of(os.stat, mnt.p("d")) == errno.ENOENT
        assert sorted(os.listdir(mnt.path)) == ["keep", "top"]
    settle(gone)
    assert etcd.keys("/d/") == []
    # the directory emptied here is still there, and rmdir removes it
    assert stat.S_ISDIR(os.stat(mnt.p("keep")).st_mode)
    os.rmdir(mnt.p("keep"))
    assert os.listdir(mnt.path) == ["top"]


# ---------------------------------------------------------------- 4d: watch behind a dir lock

def test_events_apply_while_a_directory_op_waits_on_etcd(etcd, proxy, mounter):
    """Bug: the watch thread calls notify_inval_entry itself, which waits for
    the directory's lock; a handler holds that lock (the kernel takes it for
    unlink) while it waits on etcd.  Meanwhile later events are not applied
    and reads are served from a cache they already contradict.

    The proxy stalls every request the daemon sends (etcd is slow for it)
    but lets the watch's events through: an unlink in x/ waits on etcd
    holding x's lock, a key appears in x/ (the kernel's entry must be
    invalidated), then another key, y/f, changes.  Reading y/f needs nothing
    from etcd (the event carries the value) and must show the change within
    REMOTE_DELAY."""
    etcd.put("/x/a", "a")
    etcd.put("/y/f", "old")
    m = mounter(*PROXY_OPTS, "--endpoints=" + proxy.endpoint)
    assert os.listdir(m.p("x")) == ["a"]
    assert read(m.p("y/f")) == b"old"
    seen = proxy.events_seen()
    etcd.put("/y/warm", "w")        # the watch is live and idle after this one
    proxy.wait_seen(seen + 1)
    time.sleep(0.05)
    proxy.stall_requests()
    box = {}

    def unlink():
        box["rc"] = errno_of(os.unlink, m.p("x/a"))
    t = threading.Thread(target=unlink)
    r = None
    try:
        t.start()
        time.sleep(0.3)
        assert t.is_alive(), "unlink did not wait on etcd (rc %r)" % box.get("rc")
        etcd.put("/x/b", "new key in x")
        etcd.put("/y/f", "new value")
        proxy.wait_seen(seen + 3)
        # Read in a thread: should a read wait on etcd, the test must not.
        seen_values = []

        def poll():
            deadline = time.monotonic() + REMOTE_DELAY
            while time.monotonic() < deadline:
                seen_values.append(read(m.p("y/f")))
                if seen_values[-1] == b"new value":
                    return
                time.sleep(0.02)
        r = threading.Thread(target=poll)
        r.start()
        r.join(REMOTE_DELAY + 1)
        assert not r.is_alive(), "reading y/f waited on etcd"
        assert seen_values and seen_values[-1] == b"new value", \
            "y/f still read %r %.1f s after the event reached the daemon " \
            "(an unlink in x/ was waiting on etcd)" % (seen_values[-1:], REMOTE_DELAY)
    finally:
        proxy.resume_requests()
        t.join(30)
        if r:
            r.join(30)
    assert not t.is_alive()
    assert box["rc"] is None, "unlink: %s" % os.strerror(box["rc"])
    assert etcd.get("/x/a") is None
    arrives(lambda: sorted(os.listdir(m.p("x"))), ["b"])
    assert read(m.p("y/f")) == b"new value"


# ---------------------------------------------------------------- 5: POSIX

def test_mkdir_p_directories_stay_after_last_file(etcd, mnt):
    """Bug: after `mkdir -p a/b && cd a/b`, creating a file and deleting it
    made `a` (and so the shell's cwd) vanish, and `rmdir a` gave ENOENT.
    a and a/b must stay until rmdir; rmdir a/b, then rmdir a, succeed."""
    out = sh("mkdir -p a/b && cd a/b && echo x > f && rm f && pwd && ls -a && ls -a ..",
             cwd=mnt.path, check=False)
    assert out.returncode == 0, out.stderr
    assert stat.S_ISDIR(os.stat(mnt.p("a")).st_mode)
    assert stat.S_ISDIR(os.stat(mnt.p("a/b")).st_mode)
    assert os.listdir(mnt.path) == ["a"]
    assert os.listdir(mnt.p("a")) == ["b"]
    assert os.listdir(mnt.p("a/b")) == []
    assert etcd.keys() == []
    # the same from a process that stays in a/b
    r = sh("cd a/b && echo y > g && rm g && ls . .. >/dev/null && echo z > h && cat h",
           cwd=mnt.path, check=False)
    assert r.returncode == 0 and r.stdout == b"z\n", (r.stdout, r.stderr)
    assert etcd.keys() == [b"/a/b/h"]
    os.unlink(mnt.p("a/b/h"))
    assert errno_of(os.rmdir, mnt.p("a")) == errno.ENOTEMPTY
    os.rmdir(mnt.p("a/b"))
    os.rmdir(mnt.p("a"))
    assert os.listdir(mnt.path) == []
    assert etcd.keys() == []


@pytest.mark.parametrize("target", ["in-etcd", "made-here"])
def test_rename_empty_dir_onto_non_empty_dir(etcd, mnt, target):
    """Bug: rename of an empty mkdir'd directory onto a non-empty directory
    succeeded; the target's keys stayed in etcd but listed as -?????????
    and stat gave ENOENT.  It must fail with ENOTEMPTY (or EEXIST) and
    change nothing."""
    if target == "in-etcd":
        etcd.put("/t/x", "1")
        etcd.put("/t/sub/y", "2")
    else:
        os.makedirs(mnt.p("t/sub"))
        write(mnt.p("t/x"), "1")
        write(mnt.p("t/sub/y"), "2")
    os.mkdir(mnt.p("e"))
    before = etcd.keys("", with_values=True)
    assert sorted(os.listdir(mnt.path)) == ["e", "t"]
    rc = errno_of(os.rename, mnt.p("e"), mnt.p("t"))
    assert rc in (errno.ENOTEMPTY, errno.EEXIST), "rename: %s" % os.strerror(rc) if rc else \
        "rename of an empty directory onto a non-empty one succeeded"
    assert etcd.keys("", with_values=True) == before
    assert sorted(os.listdir(mnt.path)) == ["e", "t"]
    assert stat.S_ISDIR(os.stat(mnt.p("e")).st_mode)
    assert stat.S_ISDIR(os.stat(mnt.p("t")).st_mode)
    assert sorted(os.listdir(mnt.p("t"))) == ["sub", "x"]
    assert read(mnt.p("t/x")) == b"1"
    assert read(mnt.p("t/sub/y")) == b"2"


def test_directory_times_move_with_its_entries(etcd, mnt):
    """Bug: directory mtime and ctime never moved.  mkdir, create, unlink
    and rmdir inside a directory must advance both, at least as this mount
    sees its own changes (times compared at second resolution, after a
    pause of more than a second)."""
    for d in ("m1", "m2", "m3", "m4"):
        etcd.put("/%s/keep" % d, "k")
    etcd.put("/m3/gone", "g")
    os.mkdir(mnt.p("m4/sub"))
    os.mkdir(mnt.p("local"))
    ops = {
        "m1": lambda: os.mkdir(mnt.p("m1/new")),
        "m2": lambda: write(mnt.p("m2/new"), "n"),
        "m3": lambda: os.unlink(mnt.p("m3/gone")),
        "m4": lambda: os.rmdir(mnt.p("m4/sub")),
        "local": lambda: write(mnt.p("local/new"), "n"),
    }
    before = {d: os.stat(mnt.p(d)) for d in ops}
    time.sleep(1.1)
    for op in ops.values():
        op()
    stuck = []
    for d in ops:
        st = os.stat(mnt.p(d))
        if st.st_mtime_ns <= before[d].st_mtime_ns or st.st_ctime_ns <= before[d].st_ctime_ns:
            stuck.append("%s: mtime %d -> %d, ctime %d -> %d" % (
                d, before[d].st_mtime_ns, st.st_mtime_ns, before[d].st_ctime_ns,
                st.st_ctime_ns))
        assert st.st_mtime <= time.time() + 1
    assert not stuck, "directory times did not move:\n  " + "\n  ".join(stuck)
    assert etcd.keys() == [b"/local/new", b"/m1/keep", b"/m2/keep", b"/m2/new",
                           b"/m3/keep", b"/m4/keep"]


def test_directory_link_count_counts_subdirectories(etcd, mnt):
    """Bug: a directory's link count was always 2; find and others expect 2
    plus the number of its subdirectories."""
    etcd.put_many([("/n/a/x", "1"), ("/n/b/c/y", "2"), ("/n/f", "3")])
    etcd.put("/n", "the directory's own value")
    os.mkdir(mnt.p("n/local"))
    os.mkdir(mnt.p("empty"))
    links = {d: os.stat(mnt.p(d)).st_nlink for d in ("n", "n/a", "n/b", "empty", "")}
    assert links == {"n": 5, "n/a": 2, "n/b": 3, "empty": 2, "": 4}, links
    assert os.stat(mnt.p("n/f")).st_nlink == 1
    # find -type d relies on it (leaf optimisation): every directory found
    out = sh("find %s -type d | sort" % mnt.p("n")).stdout.decode().split()
    assert [os.path.relpath(x, mnt.path) for x in out] == \
        ["n", "n/a", "n/b", "n/b/c", "n/local"]


def test_touch_existing_file_moves_mtime(etcd, mnt):
    """Bug: touch (utimensat with UTIME_NOW) of an existing file changed
    nothing.  It must move mtime forward; the daemon does that with a Put
    of the same value, so etcd's mod_revision moves and the value stays."""
    etcd.put("/t", "the value")
    kv0 = etcd.kv("/t")
    st0 = os.stat(mnt.p("t"))
    time.sleep(1.1)
    sh("touch " + mnt.p("t"))
    kv1 = etcd.kv("/t")
    st1 = os.stat(mnt.p("t"))
    assert kv1["value"] == b"the value"
    assert kv1["mod_revision"] > kv0["mod_revision"], "touch did not reach etcd"
    assert st1.st_mtime_ns > st0.st_mtime_ns, "touch did not move mtime"
    assert read(mnt.p("t")) == b"the value"
    os.utime(mnt.p("t"))
    kv2 = etcd.kv("/t")
    assert kv2["value"] == b"the value" and kv2["mod_revision"] > kv1["mod_revision"]
    assert kv1["version"] == kv0["version"] + 1 and kv2["version"] == kv0["version"] + 2
    # through an open descriptor too (futimens): published at close
    with open(mnt.p("t"), "r+b") as f:
        os.utime(f.fileno())
    assert etcd.kv("/t")["version"] == kv0["version"] + 3
    assert etcd.get("/t") == b"the value"


def test_rename_keeps_file_inode_number(etcd, mnt):
    """Bug: a file's inode number changed on rename (directories kept
    theirs).  st_ino must be the same after `mv a b`, in stat and in the
    directory listing (ls -i, find -inum)."""
    etcd.put("/ren/a", "file")
    os.mkdir(mnt.p("ren/dir"))
    ino = os.stat(mnt.p("ren/a")).st_ino
    dino = os.stat(mnt.p("ren/dir")).st_ino
    os.rename(mnt.p("ren/a"), mnt.p("ren/b"))
    os.rename(mnt.p("ren/dir"), mnt.p("ren/dir2"))
    assert etcd.keys("/ren/") == [b"/ren/b"]
    assert os.stat(mnt.p("ren/b")).st_ino == ino, "stat: the file's inode number changed"
    got = {e.name: e.inode() for e in os.scandir(mnt.p("ren"))}
    assert got["b"] == ino, "readdir: the file's inode number changed"
    assert os.stat(mnt.p("ren/dir2")).st_ino == dino, "stat: the directory's inode number changed"
    assert got["dir2"] == dino, "readdir: the directory's inode number changed"


def test_fstat_of_unlinked_open_file_has_no_links(etcd, mnt):
    """Bug: fstat of an open, unlinked file showed nlink 1 instead of 0.
    The file stays readable through the descriptor, also once the watch
    has brought the deletion back (today that read returns nothing)."""
    etcd.put("/u", "still readable")
    fd = os.open(mnt.p("u"), os.O_RDONLY)
    try:
        assert os.fstat(fd).st_nlink == 1
        os.unlink(mnt.p("u"))
        assert etcd.get("/u") is None
        assert errno_of(os.stat, mnt.p("u")) == errno.ENOENT
        assert os.fstat(fd).st_nlink == 0
        time.sleep(0.2)   # the deletion's watch event has been applied
        assert os.fstat(fd).st_nlink == 0
        assert os.pread(fd, 100, 0) == b"still readable"
    finally:
        os.close(fd)


def test_listing_of_a_directory_deleted_elsewhere(etcd, proxy, mounter):
    """Bug (seen twice under ASan): another client deletes every key of a
    directory, and the directory is listed before the watch's notice
    reaches the kernel: the listing came back empty, a state that never
    was (etcd went from a, b to no directory at all).  It must fail: with
    ESTALE, since glibc's readdir takes ENOENT for the end of the listing.
    The proxy holds the delete's event, so the kernel still holds the
    directory when it is listed."""
    etcd.put_many([("/gone/a", "1"), ("/gone/b", "2")])
    m = mounter(*PROXY_OPTS, "--endpoints=" + proxy.endpoint)
    assert stat.S_ISDIR(os.stat(m.p("gone")).st_mode)   # known, never listed
    seen = proxy.events_seen()
    proxy.hold_events()
    try:
        etcd.delete("/gone/", prefix=True)
        proxy.wait_seen(seen + 2)       # both deletes are held
        assert errno_of(os.listdir, m.p("gone")) == errno.ESTALE
    finally:
        proxy.release()
    harness.converge(("stat gone", lambda: errno_of(os.stat, m.p("gone")), [None, errno.ENOENT]))
