"""The watch-driven cache: what anyone changes in etcd is what the next read
on every mount sees, while cached reads cost no round trip to etcd.

Round trips are counted with etcd's own gRPC metrics (/metrics on the client
port), so "served from cache" is observed on the server, not assumed.
"""
import errno
import os
import re
import select
import socket
import subprocess
import threading
import time
import urllib.request

import pytest

import harness
from harness import errno_of, read, wait_until, write

WATCH_SETTLE = 5   # seconds a change may take to reach a mount (it takes ms)


def kv_requests(etcd):
    """RPCs the KV service has started so far (Range, Txn, Put, ...)."""
    with urllib.request.urlopen("http://%s/metrics" % etcd.endpoint, timeout=10) as r:
        text = r.read().decode()
    total = 0
    for m in re.finditer(r'^grpc_server_started_total\{[^}]*grpc_service="etcdserverpb\.KV"'
                         r'[^}]*\} (\d+)', text, re.M):
        total += int(m.group(1))
    return total


def eventually(pred, what, timeout=WATCH_SETTLE):
    assert wait_until(pred, timeout=timeout, interval=0.01), what


def test_cached_read_costs_no_round_trip(etcd, mnt):
    etcd.put("/c/f", "cached value")
    assert read(mnt.p("c/f")) == b"cached value"
    assert os.listdir(mnt.p("c")) == ["f"]
    time.sleep(0.2)   # let the watch settle
    before = kv_requests(etcd)
    for _ in range(50):
        assert read(mnt.p("c/f")) == b"cached value"
        os.stat(mnt.p("c/f"))
        assert os.listdir(mnt.p("c")) == ["f"]
    assert kv_requests(etcd) == before


def test_external_put_is_seen_by_next_read(etcd, mnt):
    etcd.put("/e/v", "one")
    assert read(mnt.p("e/v")) == b"one"
    for i in range(20):
        value = ("value %d " % i) * (i % 4 + 1)
        etcd.put("/e/v", value)
        # no sleep: the put has returned, the watch event is in flight
        eventually(lambda: read(mnt.p("e/v")) == value.encode(), "stale value %d" % i)
        assert os.stat(mnt.p("e/v")).st_size == len(value)


def test_external_delete_gives_enoent_and_leaves_listing(etcd, mnt):
    etcd.put("/d/gone", "x")
    etcd.put("/d/stays", "y")
    assert sorted(os.listdir(mnt.p("d"))) == ["gone", "stays"]
    assert read(mnt.p("d/gone")) == b"x"
    etcd.delete("/d/gone")
    eventually(lambda: errno_of(read, mnt.p("d/gone")) == errno.ENOENT, "deleted key readable")
    assert os.listdir(mnt.p("d")) == ["stays"]
    assert errno_of(os.stat, mnt.p("d/gone")) == errno.ENOENT


def test_external_create_appears(etcd, mnt):
    etcd.put("/n/a", "1")
    assert os.listdir(mnt.p("n")) == ["a"]
    assert errno_of(os.stat, mnt.p("n/b")) == errno.ENOENT
    etcd.put("/n/b", "2")
    eventually(lambda: sorted(os.listdir(mnt.p("n"))) == ["a", "b"], "new key not listed")
    assert read(mnt.p("n/b")) == b"2"
    # a key that creates directories on its way
    etcd.put("/n/sub/deeper/c", "3")
    eventually(lambda: sorted(os.listdir(mnt.p("n"))) == ["a", "b", "sub"], "new dir not listed")
    assert read(mnt.p("n/sub/deeper/c")) == b"3"
    # a key that makes a file a directory too: its value moves to %self
    etcd.put("/n/a/child", "4")
    eventually(lambda: os.path.isdir(mnt.p("n/a")), "file did not become a directory")
    assert sorted(os.listdir(mnt.p("n/a"))) == ["%self", "child"]
    assert read(mnt.p("n/a/%self")) == b"1"


def test_two_mounts_see_each_other(etcd, mounter):
    a = mounter(etcd=etcd)
    b = mounter(etcd=etcd)
    write(a.p("shared"), b"from a")
    assert read(b.p("shared")) == b"from a"
    for i in range(10):
        src, dst = (a, b) if i % 2 else (b, a)
        write(src.p("shared"), b"round %d" % i)
        assert etcd.get("/shared") == b"round %d" % i
        eventually(lambda: read(dst.p("shared")) == b"round %d" % i, "other mount stale")
    os.unlink(a.p("shared"))
    eventually(lambda: not os.path.exists(b.p("shared")), "delete not seen by other mount")


def test_mtime_advances_on_external_put(etcd, mnt):
    etcd.put("/t/conf", "v1")
    st1 = os.stat(mnt.p("t/conf"))
    time.sleep(0.05)
    etcd.put("/t/conf", "v2")
    eventually(lambda: os.stat(mnt.p("t/conf")).st_mtime_ns > st1.st_mtime_ns,
               "mtime did not move")
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
    before = kv_requests(etcd)
    write(mnt.p("ryw"), b"second")      # one Put (a Txn guarded or not)
    assert read(mnt.p("ryw")) == b"second"
    assert os.stat(mnt.p("ryw")).st_size == 6
    time.sleep(0.2)                      # the echo of our Put arrives
    assert read(mnt.p("ryw")) == b"second"
    assert kv_requests(etcd) - before == 1


def test_small_value_cache_stays_correct(etcd, mounter):
    m = mounter("-o", "cache_size=2K", etcd=etcd)
    values = {"k%d" % i: os.urandom(700) for i in range(12)}
    for k, v in values.items():
        etcd.put("/lru/" + k, v)
    for _ in range(3):
        for k, v in values.items():
            assert read(m.p("lru", k)) == v
    etcd.put("/lru/k0", b"changed")
    eventually(lambda: read(m.p("lru/k0")) == b"changed", "evicted value went stale")


@pytest.mark.parametrize("opt", ["--serializable", "--consistency=s", "-oconsistency=l"])
def test_consistency_options(etcd, mounter, opt):
    m = mounter(opt, etcd=etcd)
    etcd.put("/s/x", "serial")
    assert read(m.p("s/x")) == b"serial"
    write(m.p("s/y"), b"written")
    assert etcd.get("/s/y") == b"written"
    etcd.put("/s/x", "changed")
    eventually(lambda: read(m.p("s/x")) == b"changed", "stale with " + opt)


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
    m = mounter("--endpoints=" + proxy.endpoint, "--command-timeout=2s",
                allowed_stderr=CUT_STDERR)
    assert read(m.p("g/k")) == b"before"
    proxy.cut()
    # while cut off, the mount must not serve what it cannot vouch for
    eventually(lambda: errno_of(read, m.p("g/k")) is not None, "served while cut off")
    own_etcd.put("/g/k", "during the cut")
    own_etcd.put("/g/new", "created during the cut")
    proxy.resume()
    assert read_when_back(m.p("g/k")) == b"during the cut"
    eventually(lambda: sorted(os.listdir(m.p("g"))) == ["k", "new"], "new key not listed")
    # and the watch is live again
    own_etcd.put("/g/k", "after")
    eventually(lambda: read(m.p("g/k")) == b"after", "watch not resumed")


def test_compaction_while_cut_off_refreshes_everything(own_etcd, proxy, mounter):
    own_etcd.put("/cp/a", "a1")
    own_etcd.put("/cp/b", "b1")
    m = mounter("--endpoints=" + proxy.endpoint, "--command-timeout=2s",
                allowed_stderr=CUT_STDERR)
    assert read(m.p("cp/a")) == b"a1" and read(m.p("cp/b")) == b"b1"
    assert sorted(os.listdir(m.p("cp"))) == ["a", "b"]
    proxy.cut()
    eventually(lambda: errno_of(read, m.p("cp/a")) is not None, "served while cut off")
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
    eventually(lambda: read(m.p("cp/c")) == b"c2", "watch not resumed after compaction")


# --------------------------------------------------- directories made here

def test_new_directory_answers_absent_names_itself(etcd, mnt):
    os.mkdir(mnt.p("fresh"))
    write(mnt.p("fresh/one"), b"1")
    time.sleep(0.2)
    before = kv_requests(etcd)
    for i in range(30):
        assert errno_of(os.stat, mnt.p("fresh/absent%d" % i)) == errno.ENOENT
    assert kv_requests(etcd) == before
    # creating names there costs the Put alone
    for i in range(10):
        write(mnt.p("fresh/f%d" % i), b"x")
    assert kv_requests(etcd) - before == 10
    assert sorted(os.listdir(mnt.p("fresh"))) == ["f%d" % i for i in range(10)] + ["one"]


def test_new_directory_sees_remote_entries(etcd, mnt):
    os.mkdir(mnt.p("nd"))
    assert errno_of(os.stat, mnt.p("nd/remote")) == errno.ENOENT
    etcd.put("/nd/remote", "r")
    eventually(lambda: errno_of(read, mnt.p("nd/remote")) is None, "remote file hidden")
    assert read(mnt.p("nd/remote")) == b"r"
    etcd.put("/nd/sub/deep", "d")
    eventually(lambda: os.path.isdir(mnt.p("nd/sub")), "remote directory hidden")
    assert read(mnt.p("nd/sub/deep")) == b"d"
    # after a remote delete the set is no longer trusted: names are looked up
    etcd.delete("/nd/remote")
    eventually(lambda: errno_of(read, mnt.p("nd/remote")) == errno.ENOENT, "deleted file seen")
    etcd.put("/nd/again", "a")
    eventually(lambda: errno_of(read, mnt.p("nd/again")) is None, "recreated file hidden")
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
    eventually(lambda: sorted(os.listdir(mnt.p("near"))) == ["mine", "theirs"],
               "remote directory not listed")
    time.sleep(0.2)
    # the remote keys changed nothing about near/mine: it still knows it is
    # empty, so looking up names there costs nothing
    before = kv_requests(etcd)
    for i in range(20):
        assert errno_of(os.stat, mnt.p("near/mine/x%d" % i)) == errno.ENOENT
    assert kv_requests(etcd) == before
    assert read(mnt.p("near/theirs/k3")) == b"v"


def test_existing_directory_learns_its_names(etcd, mnt):
    """A directory another client made: the first lookup there reads a page
    of it in the same Txn, so later absent names and creates cost no lookup
    round trip, while remote changes still show."""
    etcd.put("/ex/a", "1")
    etcd.put("/ex/sub/b", "2")
    assert errno_of(os.stat, mnt.p("ex/absent0")) == errno.ENOENT
    time.sleep(0.2)
    before = kv_requests(etcd)
    for i in range(1, 20):
        assert errno_of(os.stat, mnt.p("ex/absent%d" % i)) == errno.ENOENT
    assert kv_requests(etcd) == before
    for i in range(10):
        write(mnt.p("ex/f%d" % i), b"x")
    assert kv_requests(etcd) - before == 10
    assert os.stat(mnt.p("ex")).st_nlink == 3       # ".", "..", and sub's ".."
    assert sorted(os.listdir(mnt.p("ex"))) == ["a"] + ["f%d" % i for i in range(10)] + ["sub"]
    assert etcd.keys("/ex/") == sorted([b"/ex/a", b"/ex/sub/b"] +
                                       [b"/ex/f%d" % i for i in range(10)])
    # the set follows remote changes: a new name shows, a deleted one goes
    etcd.put("/ex/remote", "r")
    eventually(lambda: errno_of(read, mnt.p("ex/remote")) is None, "remote file hidden")
    etcd.put("/ex/newdir/x", "y")
    eventually(lambda: os.path.isdir(mnt.p("ex/newdir")), "remote directory hidden")
    etcd.delete("/ex/a")
    eventually(lambda: errno_of(os.stat, mnt.p("ex/a")) == errno.ENOENT, "deleted file seen")
    etcd.put("/ex/again", "a")
    eventually(lambda: errno_of(read, mnt.p("ex/again")) is None, "recreated file hidden")


def test_listed_directory_answers_absent_names_itself(etcd, mnt):
    etcd.put_many(("/ls/k%03d" % i, "v") for i in range(50))
    assert len(os.listdir(mnt.p("ls"))) == 50
    time.sleep(0.2)
    before = kv_requests(etcd)
    for i in range(20):
        assert errno_of(os.stat, mnt.p("ls/absent%d" % i)) == errno.ENOENT
    assert kv_requests(etcd) == before
    assert os.stat(mnt.p("ls")).st_nlink == 2


def test_large_directory_names_still_looked_up(etcd, mnt):
    """Past one page the set is not learned from a lookup: every answer
    still comes from etcd, and is right."""
    etcd.put_many(("/big/k%04d" % i, "v") for i in range(1100))
    assert errno_of(os.stat, mnt.p("big/absent")) == errno.ENOENT
    assert read(mnt.p("big/k1099")) == b"v"
    etcd.put("/big/late", "l")
    eventually(lambda: errno_of(read, mnt.p("big/late")) is None, "new key hidden")
    assert os.stat(mnt.p("big")).st_nlink == 1
