"""The watch-driven cache: what anyone changes in etcd is what the next read
on every mount sees, while cached reads cost no round trip to etcd.

Round trips are counted with etcd's own gRPC metrics (/metrics on the client
port), so "served from cache" is observed on the server, not assumed.  Every
read made while a change travels to a mount is checked (converge()): it
shows the state before or the state after, never anything else.
"""
import errno
import os
import select
import socket
import subprocess
import threading
import time

import pytest

import harness
from harness import attempt, converge, errno_of, read, wait_until, write

WATCH_SETTLE = 5   # seconds a change may take to reach a mount (it takes ms)


def converge(*probes):
    harness.converge(*probes, timeout=WATCH_SETTLE)


def ls(path):
    return attempt(lambda: sorted(os.listdir(path)))


def test_cached_read_costs_no_round_trip(etcd, mnt):
    etcd.put("/c/f", "cached value")
    assert read(mnt.p("c/f")) == b"cached value"
    assert os.listdir(mnt.p("c")) == ["f"]
    time.sleep(0.2)   # let the watch settle
    before = etcd.kv_requests()
    for _ in range(50):
        assert read(mnt.p("c/f")) == b"cached value"
        os.stat(mnt.p("c/f"))
        assert os.listdir(mnt.p("c")) == ["f"]
    assert etcd.kv_requests() == before


def test_external_put_is_seen_by_next_read(etcd, mnt):
    etcd.put("/e/v", "one")
    assert read(mnt.p("e/v")) == b"one"
    for i in range(20):
        value = ("value %d " % i) * (i % 4 + 1)
        old = read(mnt.p("e/v"))
        etcd.put("/e/v", value)
        # no sleep: the put has returned, the watch event is in flight
        converge(("read e/v", lambda: read(mnt.p("e/v")), [old, value.encode()]))
        assert os.stat(mnt.p("e/v")).st_size == len(value)


def test_external_delete_gives_enoent_and_leaves_listing(etcd, mnt):
    etcd.put("/d/gone", "x")
    etcd.put("/d/stays", "y")
    assert sorted(os.listdir(mnt.p("d"))) == ["gone", "stays"]
    assert read(mnt.p("d/gone")) == b"x"
    etcd.delete("/d/gone")
    converge(("read d/gone", lambda: attempt(read, mnt.p("d/gone")), [b"x", "ENOENT"]))
    assert os.listdir(mnt.p("d")) == ["stays"]
    assert errno_of(os.stat, mnt.p("d/gone")) == errno.ENOENT


def test_external_create_appears(etcd, mnt):
    etcd.put("/n/a", "1")
    assert os.listdir(mnt.p("n")) == ["a"]
    assert errno_of(os.stat, mnt.p("n/b")) == errno.ENOENT
    etcd.put("/n/b", "2")
    converge(("ls n", lambda: ls(mnt.p("n")), [["a"], ["a", "b"]]))
    assert read(mnt.p("n/b")) == b"2"
    # a key that creates directories on its way
    etcd.put("/n/sub/deeper/c", "3")
    converge(("ls n", lambda: ls(mnt.p("n")), [["a", "b"], ["a", "b", "sub"]]))
    assert read(mnt.p("n/sub/deeper/c")) == b"3"
    # a key that makes a file a directory too: its value moves to %self
    etcd.put("/n/a/child", "4")
    converge(("read n/a", lambda: attempt(read, mnt.p("n/a")), [b"1", "EISDIR"]),
             ("ls n/a", lambda: ls(mnt.p("n/a")), ["ENOTDIR", ["%self", "child"]]))
    assert read(mnt.p("n/a/%self")) == b"1"


def test_two_mounts_see_each_other(etcd, mounter):
    a = mounter(etcd=etcd)
    b = mounter(etcd=etcd)
    write(a.p("shared"), b"from a")
    assert read(b.p("shared")) == b"from a"
    for i in range(10):
        src, dst = (a, b) if i % 2 else (b, a)
        old = read(dst.p("shared"))
        write(src.p("shared"), b"round %d" % i)
        assert etcd.get("/shared") == b"round %d" % i
        converge(("read on the other mount", lambda: read(dst.p("shared")),
                  [old, b"round %d" % i]))
    os.unlink(a.p("shared"))
    converge(("read on the other mount", lambda: attempt(read, b.p("shared")),
              [b"round 9", "ENOENT"]))


def test_mtime_advances_on_external_put(etcd, mnt):
    etcd.put("/t/conf", "v1")
    st1 = os.stat(mnt.p("t/conf"))
    time.sleep(0.05)
    etcd.put("/t/conf", "v2")

    def check(mtime, seen):
        assert mtime >= st1.st_mtime_ns, "mtime went back"
        moved = [t for t in seen if t != st1.st_mtime_ns]
        assert not moved or mtime == moved[0], "mtime moved twice"
    harness.wait_for(lambda: os.stat(mnt.p("t/conf")).st_mtime_ns,
                     lambda mtime: mtime != st1.st_mtime_ns, check, timeout=WATCH_SETTLE,
                     what="mtime of t/conf")
    st2 = os.stat(mnt.p("t/conf"))
    assert st2.st_ctime_ns == st2.st_mtime_ns
    # an unchanged key keeps its time
    time.sleep(0.05)
    assert os.stat(mnt.p("t/conf")).st_mtime_ns == st2.st_mtime_ns


def test_inotify_delete_self_on_external_delete(etcd, mnt):
    etcd.put("/i/watched", "x")
    path = mnt.p("i/watched")
    assert read(path) == b"x"
    p = subprocess.Popen(["inotifywait", "-t", "20", "-e", "delete_self", path],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # inotifywait prints "Watches established." on stderr once ready
        lines = b""
        while b"established" not in lines:
            assert select.select([p.stderr], [], [], 10)[0], "inotifywait did not start"
            # os.read, not readline: a buffered reader would hide the
            # second line from select()
            chunk = os.read(p.stderr.fileno(), 4096)
            assert chunk, "inotifywait exited: %r" % lines
            lines += chunk
        etcd.delete("/i/watched")
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, (out, err)
    assert b"DELETE_SELF" in out


def test_read_your_writes_without_refetch(etcd, mnt):
    write(mnt.p("ryw"), b"first")
    assert read(mnt.p("ryw")) == b"first"
    time.sleep(0.2)
    before = etcd.kv_requests()
    write(mnt.p("ryw"), b"second")      # one Put (a Txn guarded or not)
    assert read(mnt.p("ryw")) == b"second"
    assert os.stat(mnt.p("ryw")).st_size == 6
    time.sleep(0.2)                      # the echo of our Put arrives
    assert read(mnt.p("ryw")) == b"second"
    assert etcd.kv_requests() - before == 1


def test_small_value_cache_stays_correct(etcd, mounter):
    m = mounter("-o", "cache_size=2K", etcd=etcd)
    values = {"k%d" % i: os.urandom(700) for i in range(12)}
    for k, v in values.items():
        etcd.put("/lru/" + k, v)
    for _ in range(3):
        for k, v in values.items():
            assert read(m.p("lru", k)) == v
    etcd.put("/lru/k0", b"changed")
    converge(("read lru/k0", lambda: read(m.p("lru/k0")), [values["k0"], b"changed"]))


@pytest.mark.parametrize("opt", ["--serializable", "--consistency=s", "-oconsistency=l"])
def test_consistency_options(etcd, mounter, opt):
    m = mounter(opt, etcd=etcd)
    etcd.put("/s/x", "serial")
    assert read(m.p("s/x")) == b"serial"
    write(m.p("s/y"), b"written")
    assert etcd.get("/s/y") == b"written"
    etcd.put("/s/x", "changed")
    converge(("read s/x with " + opt, lambda: read(m.p("s/x")), [b"serial", b"changed"]))


def test_bad_consistency_is_refused(etcd, tmp_path):
    mp = tmp_path / "m"
    mp.mkdir()
    p = subprocess.run([harness.ETCDFS_BIN, "--endpoints=" + etcd.endpoint,
                        "--consistency=x", str(mp)], capture_output=True, timeout=30)
    assert p.returncode == 1
    assert p.stderr.decode().startswith("etcdfs: ") and p.stderr.count(b"\n") == 1
    assert not harness.is_etcdfs_mounted(str(mp))


# ------------------------------------------------------------------ cut-offs

class CutProxy:
    """A loopback TCP proxy in front of etcd that the test can cut: cut()
    closes every connection and refuses new ones until resume()."""

    def __init__(self, target_port):
        self.target = ("127.0.0.1", target_port)
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.lock = threading.Lock()
        self.conns = []
        self.cutting = False
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self.closed:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            with self.lock:
                if self.cutting or self.closed:
                    c.close()
                    continue
                try:
                    u = socket.create_connection(self.target, timeout=5)
                except OSError:
                    c.close()
                    continue
                self.conns += [c, u]
            for a, b in ((c, u), (u, c)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self):
        with self.lock:
            self.cutting = True
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self):
        with self.lock:
            self.cutting = False

    def close(self):
        self.closed = True
        self.cut()
        self.lsock.close()


@pytest.fixture
def proxy(own_etcd):
    p = CutProxy(own_etcd.client_port)
    yield p
    p.close()


CUT_STDERR = (r"watch", r"could not write")


def cut_off_read(path):
    """read(path), or "cut off" if it fails as a mount that lost etcd may."""
    try:
        return read(path)
    except OSError as e:
        if e.errno in (errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN):
            return "cut off"
        raise


def read_when_back(path, timeout=20):
    """The first successful read of path once the mount reaches etcd again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            return read(path)
        except OSError as e:
            assert e.errno in (errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN), e
            time.sleep(0.05)
    raise AssertionError("mount did not come back")


def test_gap_while_cut_off_is_replayed(own_etcd, proxy, mounter):
    own_etcd.put("/g/k", "before")
    # pinned: etcd's member list names its own port, behind the proxy
    m = mounter("--endpoints=" + proxy.endpoint, "--pin-endpoints", "--command-timeout=2s",
                allowed_stderr=CUT_STDERR)
    assert read(m.p("g/k")) == b"before"
    proxy.cut()
    # while cut off, the mount must not serve what it cannot vouch for
    converge(("read g/k", lambda: cut_off_read(m.p("g/k")), [b"before", "cut off"]))
    own_etcd.put("/g/k", "during the cut")
    own_etcd.put("/g/new", "created during the cut")
    proxy.resume()
    assert read_when_back(m.p("g/k")) == b"during the cut"
    converge(("ls g", lambda: ls(m.p("g")), [["k"], ["k", "new"]]))
    # and the watch is live again
    own_etcd.put("/g/k", "after")
    converge(("read g/k", lambda: read(m.p("g/k")), [b"during the cut", b"after"]))


def test_compaction_while_cut_off_refreshes_everything(own_etcd, proxy, mounter):
    own_etcd.put("/cp/a", "a1")
    own_etcd.put("/cp/b", "b1")
    # pinned: etcd's member list names its own port, behind the proxy
    m = mounter("--endpoints=" + proxy.endpoint, "--pin-endpoints", "--command-timeout=2s",
                allowed_stderr=CUT_STDERR)
    assert read(m.p("cp/a")) == b"a1" and read(m.p("cp/b")) == b"b1"
    assert sorted(os.listdir(m.p("cp"))) == ["a", "b"]
    proxy.cut()
    converge(("read cp/a", lambda: cut_off_read(m.p("cp/a")), [b"a1", "cut off"]))
    own_etcd.put("/cp/a", "a2")
    own_etcd.delete("/cp/b")
    own_etcd.put("/cp/c", "c1")
    own_etcd.put("/cp/a", "a3")
    own_etcd.compact(own_etcd.revision())
    proxy.resume()
    assert read_when_back(m.p("cp/a")) == b"a3"
    assert errno_of(read, m.p("cp/b")) == errno.ENOENT
    assert sorted(os.listdir(m.p("cp"))) == ["a", "c"]
    own_etcd.put("/cp/c", "c2")
    converge(("read cp/c", lambda: read(m.p("cp/c")), [b"c1", b"c2"]))


def test_the_watch_comes_back_after_a_long_cut(own_etcd, proxy, mounter):
    """A cut longer than the watch's backoff (2 s): once etcd answers again
    the prober's items come every 250 ms, and the watch's wait between two
    tries must end all the same (each item started it over: the watch never
    came back, and the mount served nothing from its caches again)."""
    own_etcd.put("/lc/k", "before")
    m = mounter("--endpoints=" + proxy.endpoint, "--pin-endpoints", "--command-timeout=2s",
                allowed_stderr=CUT_STDERR)
    assert read(m.p("lc/k")) == b"before"
    assert own_etcd.metrics()["etcd_debugging_mvcc_watch_stream_total"] == 1
    proxy.cut()
    time.sleep(8)
    own_etcd.put("/lc/k", "during the cut")
    proxy.resume()
    assert read_when_back(m.p("lc/k")) == b"during the cut"
    deadline = time.monotonic() + 10
    while own_etcd.metrics()["etcd_debugging_mvcc_watch_stream_total"] < 1:
        assert time.monotonic() < deadline, "the watch did not come back"
        time.sleep(0.2)
    # trusted again (once a probe has vouched for the member): reads come
    # from the cache, kept current by the watch
    def reads_are_cached():
        before = own_etcd.kv_requests()
        for _ in range(20):
            assert read(m.p("lc/k")) == b"during the cut"
        return own_etcd.kv_requests() == before
    assert wait_until(reads_are_cached, timeout=10, interval=0.2), "never trusted again"
    own_etcd.put("/lc/k", "after")
    converge(("read lc/k", lambda: read(m.p("lc/k")), [b"during the cut", b"after"]))


def test_a_quiet_mount_keeps_its_watch(etcd, mnt):
    """Nothing changes for longer than the watch's silence limit (15 s): the
    progress it asks for every 5 s keeps it alive, whatever else its thread
    is told meanwhile (the prober's items, every probe, kept it from asking,
    so a quiet mount restarted its watch every 15 s and its cached reads
    went to etcd until trust came back)."""
    etcd.put("/quiet/k", "v")
    def reads_are_cached():
        before = etcd.kv_requests()
        for _ in range(5):
            assert read(mnt.p("quiet/k")) == b"v"
        return etcd.kv_requests() == before
    assert wait_until(reads_are_cached, timeout=10, interval=0.2)
    deadline = time.monotonic() + 20
    before = etcd.kv_requests()
    while time.monotonic() < deadline:
        assert read(mnt.p("quiet/k")) == b"v"
        time.sleep(0.25)
    assert etcd.kv_requests() == before


# --------------------------------------------------- directories made here

def test_new_directory_answers_absent_names_itself(etcd, mnt):
    os.mkdir(mnt.p("fresh"))
    write(mnt.p("fresh/one"), b"1")
    time.sleep(0.2)
    before = etcd.kv_requests()
    for i in range(30):
        assert errno_of(os.stat, mnt.p("fresh/absent%d" % i)) == errno.ENOENT
    assert etcd.kv_requests() == before
    # creating names there costs the Put alone
    for i in range(10):
        write(mnt.p("fresh/f%d" % i), b"x")
    assert etcd.kv_requests() - before == 10
    assert sorted(os.listdir(mnt.p("fresh"))) == ["f%d" % i for i in range(10)] + ["one"]


def test_new_directory_sees_remote_entries(etcd, mnt):
    os.mkdir(mnt.p("nd"))
    assert errno_of(os.stat, mnt.p("nd/remote")) == errno.ENOENT
    etcd.put("/nd/remote", "r")
    converge(("read nd/remote", lambda: attempt(read, mnt.p("nd/remote")), ["ENOENT", b"r"]))
    etcd.put("/nd/sub/deep", "d")
    converge(("ls nd/sub", lambda: ls(mnt.p("nd/sub")), ["ENOENT", ["deep"]]))
    assert read(mnt.p("nd/sub/deep")) == b"d"
    # after a remote delete the set is no longer trusted: names are looked up
    etcd.delete("/nd/remote")
    converge(("read nd/remote", lambda: attempt(read, mnt.p("nd/remote")), [b"r", "ENOENT"]))
    etcd.put("/nd/again", "a")
    converge(("read nd/again", lambda: attempt(read, mnt.p("nd/again")), ["ENOENT", b"a"]))
    # names created and removed here keep the set right
    write(mnt.p("nd/local"), b"l")
    os.rename(mnt.p("nd/local"), mnt.p("nd/moved"))
    assert errno_of(os.stat, mnt.p("nd/local")) == errno.ENOENT
    assert read(mnt.p("nd/moved")) == b"l"
    os.unlink(mnt.p("nd/moved"))
    assert errno_of(os.stat, mnt.p("nd/moved")) == errno.ENOENT
    assert etcd.get("/nd/moved") is None


def test_remote_creates_nearby_keep_known_directories(etcd, mnt):
    os.makedirs(mnt.p("near/mine"))
    for i in range(20):
        etcd.put("/near/theirs/k%d" % i, "v")
    converge(("ls near", lambda: ls(mnt.p("near")), [["mine"], ["mine", "theirs"]]))
    time.sleep(0.2)
    # the remote keys changed nothing about near/mine: it still knows it is
    # empty, so looking up names there costs nothing
    before = etcd.kv_requests()
    for i in range(20):
        assert errno_of(os.stat, mnt.p("near/mine/x%d" % i)) == errno.ENOENT
    assert etcd.kv_requests() == before
    assert read(mnt.p("near/theirs/k3")) == b"v"


def test_existing_directory_learns_its_names(etcd, mnt):
    """A directory another client made: the first lookup there reads a page
    of it in the same Txn, so later absent names and creates cost no lookup
    round trip, while remote changes still show."""
    etcd.put("/ex/a", "1")
    etcd.put("/ex/sub/b", "2")
    assert errno_of(os.stat, mnt.p("ex/absent0")) == errno.ENOENT
    time.sleep(0.2)
    before = etcd.kv_requests()
    for i in range(1, 20):
        assert errno_of(os.stat, mnt.p("ex/absent%d" % i)) == errno.ENOENT
    assert etcd.kv_requests() == before
    for i in range(10):
        write(mnt.p("ex/f%d" % i), b"x")
    assert etcd.kv_requests() - before == 10
    assert os.stat(mnt.p("ex")).st_nlink == 3       # ".", "..", and sub's ".."
    assert sorted(os.listdir(mnt.p("ex"))) == ["a"] + ["f%d" % i for i in range(10)] + ["sub"]
    assert etcd.keys("/ex/") == sorted([b"/ex/a", b"/ex/sub/b"] +
                                       [b"/ex/f%d" % i for i in range(10)])
    # the set follows remote changes: a new name shows, a deleted one goes
    etcd.put("/ex/remote", "r")
    converge(("ex/remote", lambda: attempt(read, mnt.p("ex/remote")), ["ENOENT", b"r"]))
    etcd.put("/ex/newdir/x", "y")
    converge(("ex/newdir", lambda: os.path.isdir(mnt.p("ex/newdir")), [False, True]))
    etcd.delete("/ex/a")
    converge(("ex/a", lambda: attempt(read, mnt.p("ex/a")), [b"1", "ENOENT"]))
    etcd.put("/ex/again", "a")
    converge(("ex/again", lambda: attempt(read, mnt.p("ex/again")), ["ENOENT", b"a"]))


def test_listed_directory_answers_absent_names_itself(etcd, mnt):
    etcd.put_many(("/ls/k%03d" % i, "v") for i in range(50))
    assert len(os.listdir(mnt.p("ls"))) == 50
    time.sleep(0.2)
    # the path there (the root's own names) may still be learned once
    assert errno_of(os.stat, mnt.p("ls/absent")) == errno.ENOENT
    before = etcd.kv_requests()
    for i in range(20):
        assert errno_of(os.stat, mnt.p("ls/absent%d" % i)) == errno.ENOENT
    assert etcd.kv_requests() == before
    assert os.stat(mnt.p("ls")).st_nlink == 2


def test_large_directory_names_still_looked_up(etcd, mnt):
    """Past one page the set is not learned from a lookup: every answer
    still comes from etcd, and is right."""
    etcd.put_many(("/big/k%04d" % i, "v") for i in range(1100))
    assert errno_of(os.stat, mnt.p("big/absent")) == errno.ENOENT
    assert read(mnt.p("big/k1099")) == b"v"
    etcd.put("/big/late", "l")
    converge(("big/late", lambda: attempt(read, mnt.p("big/late")), ["ENOENT", b"l"]))
    assert os.stat(mnt.p("big")).st_nlink == 1
