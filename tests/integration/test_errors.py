"""etcd going away and coming back; etcd unreachable at mount time;
read-only mounts; compaction."""
import errno
import os
import stat
import time

from harness import (converge, errno_of, errname, is_etcdfs_mounted, mountinfo_entry, read, run,
                     sh, timed, wait_until, write)

# What the daemon may say while etcd is away.
DOWN_STDERR = [r"^etcdfs: "]
COMMAND_TIMEOUT = 2.0
# An operation may take a few requests' worth of the command timeout, and
# the slack covers a slow (sanitized) build.
LIMIT = 2 * COMMAND_TIMEOUT + 1.0
# How long etcd must stay unchanged once the mount is back from an outage.
HOLD = COMMAND_TIMEOUT + 0.5


def full_write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


POPULATED = {b"/d/k1": b"v1", b"/d/k2": b"v2", b"/d/k3": b"v3", b"/top": b"t"}


def populate(etcd):
    for i in range(1, 4):
        etcd.put("/d/k%d" % i, "v%d" % i)
    etcd.put("/top", "t")
    assert etcd.keys(with_values=True) == POPULATED
    return etcd.revision()


def warm_up(m):
    """Reads everything the down operations touch, so that whatever the
    daemon and the kernel cache is cached when etcd goes away."""
    assert read(m.p("top")) == b"t"
    assert sorted(os.listdir(m.p("d"))) == ["k1", "k2", "k3"]
    for i in range(1, 4):
        assert read(m.p("d/k%d" % i)) == b"v%d" % i
    time.sleep(0.3)


def read_ops(m):
    return [
        ("cat", lambda: read(m.p("d/k1")), b"v1"),
        ("stat", lambda: os.stat(m.p("d/k2")).st_size, 2),
        ("ls", lambda: sorted(os.listdir(m.p("d"))), ["k1", "k2", "k3"]),
    ]


def write_ops(m):
    return [
        ("echo >", lambda: full_write(m.p("d/new"), b"x")),
        ("rm", lambda: os.unlink(m.p("d/k3"))),
        ("overwrite", lambda: full_write(m.p("d/k2"), b"changed")),
    ]


def check_op(name, op, want, ok_value=None):
    """op must fail with an errno in want within LIMIT; with ok_value it may
    instead return exactly that (a read served from a still valid cache)."""
    res, took = timed(op)
    assert took < LIMIT, "%s took %.1fs" % (name, took)
    if ok_value is not None and not isinstance(res, OSError):
        assert res == ok_value, "%s returned %r with etcd down" % (name, res)
        return
    assert isinstance(res, OSError), "%s succeeded with etcd down" % name
    assert res.errno in want, "%s: %s, expected %s" % (
        name, errname(res.errno), " or ".join(map(errname, want)))


def check_shell(cmd, want, ok_stdout=None):
    """The shell command must fail within LIMIT and say why with one of the
    errnos in want; with ok_stdout it may instead print exactly that (a
    read served from a still valid cache)."""
    t0 = time.monotonic()
    p = sh(cmd, check=False, timeout=30)
    took = time.monotonic() - t0
    assert took < LIMIT, "%r took %.1fs" % (cmd, took)
    if ok_stdout is not None and p.returncode == 0:
        assert p.stdout == ok_stdout, "%r printed %r with etcd down" % (cmd, p.stdout)
        return
    assert p.returncode != 0, "%r succeeded with etcd down" % cmd
    assert any(os.strerror(e).encode() in p.stderr for e in want), "%r: %r, expected %s" % (
        cmd, p.stderr, " or ".join(map(errname, want)))


def assert_back(etcd, m, rev, may_land=()):
    """The mount works again, and nothing it was asked to do while etcd was
    away reached etcd, then or later, except the effects in may_land: a
    write sent before it timed out (etcd stopped, not gone) may be applied
    when etcd resumes, whole.  An effect is (key, value), or (key, None) for
    a delete.  For a while after the mount is back, every key holds what
    populate() put or what one of those effects made of it, no other key
    exists, and the revision moved by no more than one per effect and at
    least one per key changed."""
    ok = wait_until(lambda: errno_of(read, m.p("top")) is None, timeout=15)
    assert ok, "etcdfs did not recover: %s" % errname(errno_of(read, m.p("top")))
    # a call still in flight when etcd went away ends within a command
    # timeout: whatever failed must not land in that time either
    deadline = time.monotonic() + HOLD
    while True:
        keys, now = etcd.keys(with_values=True), etcd.revision()
        changed = 0
        for k in set(keys) | set(POPULATED):
            allowed = {POPULATED.get(k)} | {v for kk, v in may_land if kk == k}
            assert keys.get(k) in allowed, (
                "etcd changed, though nothing could be written while it was away: %r "
                "holds %r at revision %d (was %d)" % (k, keys.get(k), now, rev))
            changed += keys.get(k) != POPULATED.get(k)
        assert changed <= now - rev <= len(may_land), (
            "etcd's revision moved from %d to %d for %d changed keys (%d writes may land): %r"
            % (rev, now, changed, len(may_land), keys))
        if time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    # the mount shows what etcd holds, and changes it again
    final = etcd.keys("/d/", with_values=True)
    assert sorted(os.listdir(m.p("d"))) == sorted(k[len(b"/d/"):].decode() for k in final)
    for k, v in final.items():
        assert read(m.p(k[1:].decode())) == v, k
    write(m.p("d/after"), "back")
    assert etcd.get("/d/after") == b"back"
    final[b"/d/after"] = b"back"
    victim = min(k for k in final if k != b"/d/after")
    os.unlink(m.p(victim[1:].decode()))
    del final[victim]
    assert etcd.keys("/d/", with_values=True) == final


def test_etcd_killed_and_restarted(own_etcd, mounter):
    rev = populate(own_etcd)
    m = mounter("--command-timeout=2s", etcd=own_etcd, allowed_stderr=DOWN_STDERR)
    warm_up(m)
    own_etcd.kill()
    time.sleep(0.5)   # the daemon has seen the connection close by now
    # Nothing can be trusted once the connection is gone: even what was
    # cached fails, with ENOTCONN, and fast (connections are refused).
    for name, op, _ in read_ops(m):
        check_op(name, op, [errno.ENOTCONN])
    for name, op in write_ops(m):
        check_op(name, op, [errno.ENOTCONN])
    for cmd in ("cat " + m.p("d/k1"), "ls " + m.p("d"), "echo x > " + m.p("d/k2"),
                "rm " + m.p("d/k1"), "cat " + m.p("top")):
        check_shell(cmd, [errno.ENOTCONN])
    own_etcd.restart()
    assert_back(own_etcd, m, rev)
    assert own_etcd.keys("/d/new") == []   # the failed write left nothing


def test_etcd_stopped_and_continued(own_etcd, mounter):
    rev = populate(own_etcd)
    m = mounter("--command-timeout=2s", etcd=own_etcd, allowed_stderr=DOWN_STDERR)
    warm_up(m)
    own_etcd.sigstop()
    try:
        # The connection stays open and silent: a request times out.  A read
        # the daemon can serve from its cache may still succeed (nothing can
        # change in a stopped etcd), but must then be right; a write must
        # reach etcd, so it fails: the first with ETIMEDOUT, later ones, once
        # the daemon gave up on the connection, maybe with ENOTCONN.
        for i, (name, op) in enumerate(write_ops(m)):
            check_op(name, op, [errno.ETIMEDOUT] if i == 0 else [errno.ETIMEDOUT,
                                                                  errno.ENOTCONN])
        down = [errno.ETIMEDOUT, errno.ENOTCONN]
        for name, op, ok in read_ops(m):
            check_op(name, op, down, ok_value=ok)
        check_shell("echo x > " + m.p("d/k2"), down)
        check_shell("rm " + m.p("d/k1"), down)
        check_shell("cat " + m.p("d/k1"), down, ok_stdout=b"v1")
        check_shell("ls " + m.p("d"), down, ok_stdout=b"k1\nk2\nk3\n")
    finally:
        own_etcd.sigcont()
    # A write sent to the stopped etcd before it timed out (the names were
    # known, so it needed no lookup first) may be applied when etcd resumes:
    # which ones were sent before the daemon gave up on the connection is a
    # matter of timing.  Each lands whole or not at all.
    assert_back(own_etcd, m, rev, may_land=[
        (b"/d/new", b"x"), (b"/d/k3", None), (b"/d/k2", b"changed"),
        (b"/d/k2", b"x\n"), (b"/d/k1", None)])


def test_write_close_fails_when_etcd_dies(own_etcd, mounter):
    own_etcd.put("/w", "old")
    m = mounter("--command-timeout=2s", etcd=own_etcd, allowed_stderr=DOWN_STDERR)
    fd = os.open(m.p("w"), os.O_WRONLY | os.O_TRUNC)
    os.write(fd, b"new")
    own_etcd.kill()
    res, took = timed(os.close, fd)
    assert isinstance(res, OSError) and res.errno == errno.ENOTCONN, res
    assert took < LIMIT
    own_etcd.restart()
    assert own_etcd.get("/w") == b"old"
    assert wait_until(lambda: errno_of(read, m.p("w")) is None, timeout=15)
    assert read(m.p("w")) == b"old"


def test_unmount_while_etcd_down(own_etcd, mounter):
    populate(own_etcd)
    m = mounter("--command-timeout=2s", etcd=own_etcd, allowed_stderr=DOWN_STDERR)
    assert read(m.p("top")) == b"t"
    own_etcd.kill()
    time.sleep(0.5)
    assert errno_of(os.listdir, m.p("d")) == errno.ENOTCONN
    t0 = time.monotonic()
    assert m.close() == []
    assert time.monotonic() - t0 < 10
    assert not is_etcdfs_mounted(m.path)
    assert m.proc.returncode == 0


def unreachable_case(mounter, args, foreground, limit):
    m = mounter(*args, foreground=foreground, start=False)
    t0 = time.monotonic()
    p = run(m.argv(), timeout=30)
    took = time.monotonic() - t0
    assert p.returncode == 1, p
    lines = p.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("etcdfs: "), lines
    assert took < limit, "took %.1fs" % took
    assert mountinfo_entry(m.path) is None
    assert os.listdir(m.path) == []


def closed_port():
    import harness
    while True:
        port = harness.free_port()
        if harness.port_is_free(port):
            return port


def test_unreachable_at_mount_foreground(mounter):
    unreachable_case(mounter, ["--endpoints=127.0.0.1:%d" % closed_port()], True, 5)


def test_unreachable_at_mount_daemon(mounter):
    unreachable_case(mounter, ["127.0.0.1:%d" % closed_port()], False, 5)


def test_unreachable_several_endpoints(mounter):
    eps = ",".join("127.0.0.1:%d" % closed_port() for _ in range(3))
    unreachable_case(mounter, ["--endpoints=" + eps, "--dial-timeout=500ms"], True, 5)


def test_stopped_etcd_at_mount(own_etcd, mounter):
    # connections are accepted by the kernel but nothing answers
    own_etcd.sigstop()
    try:
        unreachable_case(mounter, ["--endpoints=" + own_etcd.endpoint, "--dial-timeout=1s",
                                   "--command-timeout=2s"], True, 1 + 2 + 3)
    finally:
        own_etcd.sigcont()


def ro_ops(m):
    """Every way to change something, each on its own (names are fresh
    where an existing one would give EEXIST first)."""
    g, f = m.p("g"), m.p("d/f")

    def opener(path, flags):
        return lambda: os.close(os.open(path, flags, 0o644))
    return [
        ("write", opener(g, os.O_WRONLY)),
        ("read-write open", opener(g, os.O_RDWR)),
        ("append", opener(g, os.O_WRONLY | os.O_APPEND)),
        ("truncating open", opener(g, os.O_WRONLY | os.O_TRUNC)),
        ("create", opener(m.p("new"), os.O_WRONLY | os.O_CREAT)),
        ("exclusive create", opener(m.p("d/new"), os.O_WRONLY | os.O_CREAT | os.O_EXCL)),
        ("truncate", lambda: os.truncate(g, 0)),
        ("extend", lambda: os.truncate(g, 100)),
        ("unlink", lambda: os.unlink(g)),
        ("unlink in a directory", lambda: os.unlink(f)),
        ("mkdir", lambda: os.mkdir(m.p("nd"))),
        ("rmdir", lambda: os.rmdir(m.p("d"))),
        ("rename", lambda: os.rename(g, m.p("h"))),
        ("rename over a file", lambda: os.rename(g, f)),
        ("rename a directory", lambda: os.rename(m.p("d"), m.p("e"))),
        ("link", lambda: os.link(g, m.p("hard"))),
        ("symlink", lambda: os.symlink("g", m.p("sym"))),
        ("mknod", lambda: os.mknod(m.p("node"), 0o644 | stat.S_IFREG)),
        ("setxattr", lambda: os.setxattr(g, "user.etcd.version", b"1")),
        ("setxattr other", lambda: os.setxattr(g, "user.other", b"1")),
        ("removexattr", lambda: os.removexattr(g, "user.etcd.version")),
        ("chmod", lambda: os.chmod(g, 0o600)),
        ("chown", lambda: os.chown(g, os.getuid(), os.getgid())),
        ("utime", lambda: os.utime(g, (1e9, 1e9))),
    ]


RO_SHELL = ["echo x > {g}", "echo x >> {g}", "rm {g}", "rm -r {d}", "mkdir {m}/nd",
            "mv {g} {m}/h", "touch {m}/new", "truncate -s 0 {g}", "sed -i s/w/W/ {g}",
            "cp /etc/hostname {g}", "setfattr -n user.etcd.version -v 9 {g}"]


def test_read_only_mount(etcd, mounter):
    """-o ro: every change fails with EROFS, and etcdfs asks etcd for no
    write at all (etcd's raft proposals and write calls stay where they
    were), not even for reads."""
    etcd.put("/d/f", "v")
    etcd.put("/g", "w")
    keys = etcd.keys(with_values=True)
    m = mounter("-o", "ro", etcd=etcd)
    rev = etcd.revision()
    counters = etcd.write_counters()

    def unchanged(what):
        assert etcd.revision() == rev, "%s: etcd's revision moved" % what
        now = etcd.write_counters()
        assert now == counters, "%s: etcd was asked to write: %r" % (
            what, {k: now[k] - v for k, v in counters.items() if now[k] != v})

    # reading works, and writes nothing
    assert read(m.p("d/f")) == b"v" and read(m.p("g")) == b"w"
    assert sorted(os.listdir(m.path)) == ["d", "g"]
    assert os.getxattr(m.p("g"), "user.etcd.version") == b"1"
    assert sh("cat %s %s" % (m.p("g"), m.p("d/f"))).stdout == b"wv"
    unchanged("reading")
    for name, op in ro_ops(m):
        got = errno_of(op)
        assert got == errno.EROFS, "%s: %s, expected EROFS" % (name, errname(got))
        unchanged(name)
    for cmd in RO_SHELL:
        cmd = cmd.format(g=m.p("g"), d=m.p("d"), m=m.path)
        p = sh(cmd, check=False)
        assert p.returncode != 0 and b"Read-only file system" in p.stderr, (cmd, p)
        unchanged(cmd)
    assert etcd.keys(with_values=True) == keys
    assert read(m.p("g")) == b"w" and sorted(os.listdir(m.path)) == ["d", "g"]
    e = mountinfo_entry(m.path)
    assert "ro" in e["options"].split(",") and "ro" in e["super_options"].split(",")


def test_compaction(own_etcd, mounter):
    for i in range(5):
        own_etcd.put("/c", "v%d" % i)
    own_etcd.put("/d/x", "x")
    m = mounter(etcd=own_etcd)
    assert read(m.p("c")) == b"v4"
    fd = os.open(m.p("c"), os.O_RDWR)
    own_etcd.compact(own_etcd.revision())
    os.write(fd, b"V")
    os.close(fd)                      # no concurrent change: no ESTALE
    assert own_etcd.get("/c") == b"V4"
    own_etcd.put("/c", "v5")
    own_etcd.compact(own_etcd.revision())
    converge(("read c", lambda: read(m.p("c")), [b"V4", b"v5"]))
    assert sorted(os.listdir(m.path)) == ["c", "d"]
    write(m.p("d/y"), "y")
    assert own_etcd.keys("/d/", with_values=True) == {b"/d/x": b"x", b"/d/y": b"y"}
    assert str(own_etcd.kv("/c")["mod_revision"]).encode() == \
        os.getxattr(m.p("c"), "user.etcd.mod_revision")
