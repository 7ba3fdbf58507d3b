"""Command line: endpoint forms, prefixes, owner and mode options, timeouts,
foreground and daemon forms, mount -t fuse.etcdfs, -d, -s."""
import errno
import os
import re
import stat
import subprocess
import sys
import time

import pytest

import harness
from harness import (attempt, converge, errno_of, is_etcdfs_mounted, mountinfo_entry, read, run,
                     sh, timed, write)


def works(etcd, m, key="/probe", rel="probe"):
    """The mount shows etcd's keys and writes to it."""
    etcd.put(key, "from etcdctl")
    converge(("read " + rel, lambda: attempt(read, m.p(rel)), ["ENOENT", b"from etcdctl"]))
    write(m.p(rel + "-w"), "from the mount")
    assert etcd.get(key + "-w") == b"from the mount"


def test_endpoints_positional(etcd, mounter):
    m = mounter(etcd.endpoint)
    works(etcd, m)
    assert mountinfo_entry(m.path)["fstype"] == "fuse.etcdfs"


def test_endpoints_option_forms(etcd, mounter):
    works(etcd, mounter("-o", "endpoints=" + etcd.endpoint))
    works(etcd, mounter("--endpoints=http://" + etcd.endpoint), key="/probe2", rel="probe2")


def test_endpoints_from_environment(etcd, mounter):
    env = dict(os.environ, ETCDCTL_ENDPOINTS=etcd.endpoint)
    works(etcd, mounter(env=env))


def test_endpoints_first_dead(etcd, mounter):
    dead = harness.free_port()
    m = mounter("--endpoints=127.0.0.1:%d,%s" % (dead, etcd.endpoint), "--dial-timeout=1s",
                allowed_stderr=[r"^etcdfs: "])
    works(etcd, m)


def test_default_endpoint(mounter):
    if not harness.port_is_free(2379):
        pytest.skip("127.0.0.1:2379 is in use")
    e = harness.Etcd("default")
    try:
        e.start(client_port=2379)
        env = dict(os.environ)
        env.pop("ETCDCTL_ENDPOINTS", None)
        m = mounter(env=env)
        works(e, m)
        assert m.close() == []
    finally:
        e.destroy()


def test_prefix(etcd, mounter):
    etcd.put("/app/x", "in app")
    etcd.put("/app/sub/y", "deeper")
    etcd.put("/apple", "outside")
    etcd.put("/other/z", "outside")
    for args in (["--prefix=/app"], ["-o", "prefix=/app/"]):
        m = mounter(*args, etcd=etcd)
        assert sorted(os.listdir(m.path)) == ["sub", "x"]
        assert read(m.p("x")) == b"in app"
        assert read(m.p("sub/y")) == b"deeper"
        write(m.p("new"), "made")
        assert etcd.get("/app/new") == b"made"
        sh("mkdir -p %s && echo -n q > %s" % (m.p("a/b"), m.p("a/b/c")))
        assert etcd.get("/app/a/b/c") == b"q"
        sh("rm -r " + m.p("a"))
        os.unlink(m.p("new"))
        assert etcd.keys(with_values=True) == {
            b"/app/x": b"in app", b"/app/sub/y": b"deeper", b"/apple": b"outside",
            b"/other/z": b"outside"}


def test_empty_prefix(etcd, mounter):
    etcd.put("foo", "no slash")
    etcd.put("web1/port", "80")
    etcd.put("/slashed", "under %")
    m = mounter("--prefix=", etcd=etcd)
    assert sorted(os.listdir(m.path)) == ["%", "foo", "web1"]
    assert read(m.p("foo")) == b"no slash"
    assert read(m.p("web1/port")) == b"80"
    assert read(m.p("%/slashed")) == b"under %"
    write(m.p("bar"), "b")
    assert etcd.get("bar") == b"b"
    assert etcd.get("/bar") is None


def test_mount_t_fuse_etcdfs(etcd, mounter, tmp_path):
    """mount(8) runs mount.fuse3, which runs "etcdfs" from the standard PATH
    (mount(8) resets PATH for helpers): link the binary there meanwhile."""
    if os.getuid() != 0:
        pytest.skip("mount(8) needs root")
    link = "/usr/local/sbin/etcdfs"
    if os.path.lexists(link) and os.path.realpath(link) != os.path.realpath(harness.ETCDFS_BIN):
        pytest.skip("another etcdfs is installed at " + link)
    created = not os.path.lexists(link)
    if created:
        os.makedirs(os.path.dirname(link), exist_ok=True)
        os.symlink(harness.ETCDFS_BIN, link)
    try:
        etcd.put("/app/x", "via mount(8)")
        path = str(tmp_path / "mt")
        os.mkdir(path)
        m = mounter(foreground=False, path=path, start=False)
        p = run(["mount", "-t", "fuse.etcdfs", etcd.endpoint, path, "-o", "prefix=/app"],
                timeout=30)
        m.proc = p   # for the teardown: something was started
        assert p.returncode == 0, p.stderr
        assert is_etcdfs_mounted(path)
        m.dpid = (harness.pids_of_mount(path) or [None])[0]
        assert os.listdir(path) == ["x"]
        assert read(os.path.join(path, "x")) == b"via mount(8)"
        write(os.path.join(path, "y"), "written")
        assert etcd.get("/app/y") == b"written"
        assert run(["umount", path], timeout=30).returncode == 0
        assert not is_etcdfs_mounted(path)
        assert wait_gone(m)
    finally:
        if created:
            os.unlink(link)


def wait_gone(m):
    return harness.wait_until(lambda: not m.alive(), timeout=15)


def test_daemon_form(etcd, mounter):
    m = mounter(etcd=etcd, foreground=False)
    assert m.dpid and m.alive()
    works(etcd, m)
    assert m.close() == []
    assert not is_etcdfs_mounted(m.path)
    assert not m.alive()


def test_uid_gid(etcd, mounter):
    etcd.put("/d/f", "v")
    m = mounter("-o", "uid=1234,gid=4321", etcd=etcd)
    for p in (m.path, m.p("d"), m.p("d/f")):
        st = os.stat(p)
        assert (st.st_uid, st.st_gid) == (1234, 4321), p
    os.mkdir(m.p("loc"))
    assert (os.stat(m.p("loc")).st_uid, os.stat(m.p("loc")).st_gid) == (1234, 4321)
    # chown to what is shown is accepted, anything else refused
    os.chown(m.p("d/f"), 1234, 4321)
    assert errno_of(os.chown, m.p("d/f"), 0, 0) == errno.EPERM


def test_umask(etcd, mounter):
    etcd.put("/d/f", "v")
    m = mounter("-o", "umask=027", etcd=etcd)
    assert stat.S_IMODE(os.stat(m.p("d/f")).st_mode) == 0o640
    assert stat.S_IMODE(os.stat(m.p("d")).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(m.path).st_mode) == 0o750
    os.mkdir(m.p("loc"))
    write(m.p("loc/g"), "w")
    assert stat.S_IMODE(os.stat(m.p("loc")).st_mode) == 0o750
    assert stat.S_IMODE(os.stat(m.p("loc/g")).st_mode) == 0o640
    os.chmod(m.p("d/f"), 0o640)
    assert errno_of(os.chmod, m.p("d/f"), 0o644) == errno.EPERM
    m2 = mounter("-o", "umask=0", etcd=etcd)
    assert stat.S_IMODE(os.stat(m2.p("d/f")).st_mode) == 0o666
    assert stat.S_IMODE(os.stat(m2.p("d")).st_mode) == 0o777


def as_nobody(cmd):
    return run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                "/bin/sh", "-c", cmd], timeout=30)


def test_allow_other(etcd, mounter):
    if os.getuid() != 0:
        pytest.skip("needs root to act as another user")
    etcd.put("/shared", "for everyone")
    private = mounter(etcd=etcd, public=True)
    p = as_nobody("cat " + private.p("shared"))
    assert p.returncode != 0 and b"Permission denied" in p.stderr, p
    public = mounter("-o", "allow_other", etcd=etcd, public=True)
    p = as_nobody("cat " + public.p("shared"))
    assert p.returncode == 0 and p.stdout == b"for everyone", p.stderr
    # the shown permissions are enforced: 0644 root-owned is not writable
    p = as_nobody("echo x > " + public.p("shared"))
    assert p.returncode != 0 and b"Permission denied" in p.stderr
    assert etcd.get("/shared") == b"for everyone"


def test_durations(etcd, mounter):
    works(etcd, mounter("--dial-timeout=500ms", "--command-timeout=1m", etcd=etcd))
    works(etcd, mounter("-o", "dial_timeout=2s,command_timeout=1m30s", etcd=etcd),
          key="/probe2", rel="probe2")


@pytest.mark.parametrize("bad", ["--dial-timeout=5x", "--command-timeout=fast",
                                 "-odial_timeout=1h1"])
def test_bad_duration(etcd, mounter, bad):
    m = mounter(bad, etcd=etcd, start=False)
    p = run(m.argv(), timeout=10)
    assert p.returncode != 0
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etcdfs: "), lines
    assert mountinfo_entry(m.path) is None


@pytest.mark.parametrize("bad", ["--bogus=1", "-obogus", "--capath=x"])
def test_an_unknown_option_is_named_before_connecting(mounter, bad):
    # Against an endpoint nothing listens on: the mistake is the option,
    # and that is what the one line says, at once.
    m = mounter("--endpoints=127.0.0.1:1", bad, start=False)
    p = run(m.argv(), timeout=10)
    assert p.returncode == 1
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    assert "unknown option" in lines[0] and bad.lstrip("-o") in lines[0], lines
    assert "connect" not in lines[0], lines
    assert mountinfo_entry(m.path) is None


def test_a_missing_tls_file_is_named_before_connecting(mounter):
    m = mounter("--endpoints=127.0.0.1:1", "--cacert=/nonexistent/ca.crt", start=False)
    p = run(m.argv(), timeout=10)
    assert p.returncode == 1
    lines = p.stderr.decode().splitlines()
    assert lines == ["etcdfs: cannot read CA file /nonexistent/ca.crt: "
                     "No such file or directory"], lines
    assert mountinfo_entry(m.path) is None


def timed_write_with_etcd_stopped(etcd, m):
    """Stops etcd, writes a new file through m; returns (error, seconds)."""
    def full_write():
        fd = os.open(m.p("new"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
    etcd.sigstop()
    try:
        return timed(full_write)
    finally:
        etcd.sigcont()


def test_command_timeout_option(own_etcd, mounter):
    own_etcd.put("/k", "v")
    m = mounter("-o", "command_timeout=1s", etcd=own_etcd, allowed_stderr=[r"^etcdfs: "])
    assert read(m.p("k")) == b"v"
    res, took = timed_write_with_etcd_stopped(own_etcd, m)
    assert isinstance(res, OSError) and res.errno == errno.ETIMEDOUT, res
    assert 0.9 < took < 3.5, took
    assert harness.wait_until(lambda: errno_of(os.listdir, m.path) is None, timeout=15)
    # A Put that timed out may still be applied once etcd runs again (it
    # was sent; only its answer was late): whichever way it went, the
    # mount must show what etcd has.
    want = own_etcd.get("/new")
    assert want in (None, b"x"), want
    # the mount goes from "no such file" (what it last knew) to etcd's
    # answer, never anything else on the way
    states = ["ENOENT"] + ([want] if want is not None else [])
    harness.converge(("new", lambda: harness.attempt(harness.read, m.p("new")), states),
                     timeout=5)


def test_default_command_timeout(own_etcd, mounter):
    own_etcd.put("/k", "v")
    m = mounter(etcd=own_etcd, allowed_stderr=[r"^etcdfs: "])
    assert read(m.p("k")) == b"v"
    res, took = timed_write_with_etcd_stopped(own_etcd, m)
    assert isinstance(res, OSError) and res.errno == errno.ETIMEDOUT, res
    assert 4.9 < took < 11, took


def fuse_log(text):
    """The requests in a -d log: dicts with unique, op, nodeid, pid and the
    reply ("success" or the errno number) and its outsize."""
    reqs, replies = {}, {}
    for line in text.splitlines():
        m = re.match(r"unique: (\d+), opcode: (\w+) \(\d+\), nodeid: (\d+), insize: \d+, "
                     r"pid: (\d+)$", line)
        if m:
            reqs[int(m.group(1))] = {"op": m.group(2), "nodeid": int(m.group(3)),
                                     "pid": int(m.group(4))}
            continue
        m = re.match(r"\s+unique: (\d+), (success|error: -(\d+) \(.*\)), outsize: (\d+)$",
                     line)
        if m:
            replies[int(m.group(1))] = ("success" if m.group(2) == "success"
                                        else int(m.group(3)), int(m.group(4)))
    return [dict(r, unique=u, reply=replies.get(u, (None, None))[0],
                 outsize=replies.get(u, (None, None))[1]) for u, r in sorted(reqs.items())]


def requests_of(log, pid, op, nodeid=None):
    return [r for r in log if r["pid"] == pid and r["op"] == op and
            (nodeid is None or r["nodeid"] == nodeid)]


def replies(log, pid, op, nodeid):
    """The set of replies to pid's op requests on nodeid (empty if none)."""
    return {r["reply"] for r in requests_of(log, pid, op, nodeid)}


def test_create_costs_four_requests(etcd, mounter):
    """Creating, writing and closing a file in a directory that exists in
    etcd costs the caller LOOKUP (answered here: the directory's names are
    known), CREATE, WRITE and FLUSH (the Put), and no attribute refresh:
    without allow_other only the mounting user reaches the mount, so the
    kernel makes no permission check that would re-read the directory's
    and the new file's attributes.  With allow_other it does (shown modes
    are enforced: test_allow_other)."""
    etcd.put_many([("/cr/k%d" % i, "v") for i in range(20)])
    m = mounter("-d", etcd=etcd, stderr_free=True)
    # the steady state: entries get long timeouts once the mount's watch is
    # up and vouched for, which a loaded machine may take a moment to do
    # (until then the kernel looks cr up again at the first create)
    time.sleep(1)
    assert len(os.listdir(m.p("cr"))) == 20
    code = ("import os, sys\n"
            "for i in range(5):\n"
            "    fd = os.open(sys.argv[1] + '/new%d' % i, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)\n"
            "    os.write(fd, b'x' * 100)\n"
            "    os.close(fd)\n")
    p = subprocess.Popen([sys.executable, "-c", code, m.p("cr")])
    assert p.wait(timeout=30) == 0
    for i in range(5):
        assert etcd.get("/cr/new%d" % i) == b"x" * 100
    assert m.close() == []
    log = [r for r in fuse_log(m.stderr() + m.stdout()) if r["pid"] == p.pid]
    ops = [r["op"] for r in log]
    # the interpreter's own start-up reads nothing on the mount
    assert ops == ["LOOKUP", "CREATE", "WRITE", "FLUSH"] * 5, ops
    assert all(r["reply"] == "success" for r in log if r["op"] != "LOOKUP")
    assert all(r["reply"] == errno.ENOENT for r in log if r["op"] == "LOOKUP")


def test_debug_flag(etcd, mounter):
    """-d prints every FUSE request (with its caller's pid and its reply)
    and every failed etcd call."""
    etcd.put("/f", "hello")
    m = mounter("-d", etcd=etcd, stderr_free=True)
    cat = subprocess.Popen(["cat", m.p("f")], stdout=subprocess.PIPE)
    assert cat.communicate(timeout=30)[0] == b"hello" and cat.returncode == 0
    shell = subprocess.Popen(["/bin/sh", "-c", "printf new > " + m.p("g")])
    assert shell.wait(timeout=30) == 0
    assert etcd.get("/g") == b"new"
    # a value etcd refuses: the failed call is printed, as is the reply
    assert errno_of(write, m.p("big"), b"x" * 1600000) == errno.EFBIG
    assert etcd.keys() == [b"/f", b"/g"]
    f_ino, g_ino = os.stat(m.p("f")).st_ino, os.stat(m.p("g")).st_ino
    assert m.close() == []
    assert m.proc.returncode == 0
    out = m.stderr() + m.stdout()
    log = fuse_log(out)

    def shown(ok, what):
        assert ok, "-d output does not show %s:\n%s" % (what, out[-6000:])

    # cat looked f up in the root, opened it and read its 5 bytes
    shown(any(r["nodeid"] == 1 and r["reply"] == "success"
              for r in requests_of(log, cat.pid, "LOOKUP")),
          "cat's (pid %d) LOOKUP in the root" % cat.pid)
    for op in ("OPEN", "READ", "FLUSH"):
        shown(replies(log, cat.pid, op, f_ino) == {"success"},
              "cat's (pid %d) %s of f (nodeid %d), answered success" % (cat.pid, op, f_ino))
    # reads bypass the page cache: cat's read of the 5 bytes, then its
    # read at the end that finds nothing more
    shown([r["outsize"] for r in requests_of(log, cat.pid, "READ", f_ino)] == [16 + 5, 16],
          "a READ reply of 16 + 5 bytes, then one of 16 (end of file)")
    # the shell created g in the root and wrote it (its FLUSHes: one per
    # close of a descriptor of the file, and the shell has two)
    shown([r["reply"] for r in requests_of(log, shell.pid, "CREATE", 1)] == ["success"],
          "the shell's (pid %d) CREATE in the root" % shell.pid)
    for op in ("WRITE", "FLUSH"):
        shown(replies(log, shell.pid, op, g_ino) == {"success"},
              "the shell's (pid %d) %s of g (nodeid %d)" % (shell.pid, op, g_ino))
    # the close of big failed with EFBIG, because etcd refused the request
    shown(errno.EFBIG in [r["reply"] for r in requests_of(log, os.getpid(), "FLUSH")],
          "the FLUSH of big answered with EFBIG")
    shown(re.search(r"/etcdserverpb\.KV/\w+: .*request is too large", out),
          "the failed etcd call (request is too large)")


def test_single_threaded(etcd, mounter):
    m = mounter("-s", etcd=etcd)
    works(etcd, m)
    for i in range(20):
        write(m.p("s%d" % i), str(i))
    assert len(etcd.keys("/s")) == 20


def test_binary_is_there():
    assert os.access(harness.ETCDFS_BIN, os.X_OK), "no etcdfs binary at %s" % harness.ETCDFS_BIN


def test_help_and_version():
    p = run([harness.ETCDFS_BIN, "--help"], timeout=10)
    assert p.returncode == 0 and b"--endpoints" in p.stdout + p.stderr
    p = run([harness.ETCDFS_BIN, "--version"], timeout=10)
    assert p.returncode == 0 and b"etcdfs" in p.stdout
    # the libraries in use, as the man page says
    for lib in (b"FUSE library version", b"nghttp2 ", b"OpenSSL ", b"protobuf-c ", b"GLib "):
        assert lib in p.stdout, p.stdout


def test_missing_mountpoint():
    p = run([harness.ETCDFS_BIN], timeout=10)
    assert p.returncode != 0 and p.stderr.startswith(b"etcdfs: ")


def test_fsname(etcd, mounter):
    m = mounter(etcd=etcd)
    e = mountinfo_entry(m.path)
    assert e["fstype"] == "fuse.etcdfs"
    # only the mounting user can reach it: no permission checks to make
    assert "default_permissions" not in e["super_options"]
    shared = mountinfo_entry(mounter("-o", "allow_other", etcd=etcd, public=True).path)
    assert "default_permissions" in shared["super_options"]
    assert "allow_other" in shared["super_options"]


def test_two_mounts_one_etcd(etcd, mounter):
    a = mounter(etcd=etcd)
    b = mounter("--prefix=/b", etcd=etcd)
    os.mkdir(a.p("b"))
    write(a.p("b/x"), "from a")
    converge(("read x on b", lambda: attempt(read, b.p("x")), ["ENOENT", b"from a"]))
    write(b.p("y"), "from b")
    converge(("read b/y on a", lambda: attempt(read, a.p("b/y")), ["ENOENT", b"from b"]))
    assert etcd.keys("/b/", with_values=True) == {b"/b/x": b"from a", b"/b/y": b"from b"}
