"""etcd's users and roles: logging in, tokens that expire under a busy
mount, what a role may read and write, and passwords kept out of sight.

The server is a real etcd with auth enabled (root, plus users whose roles
the tests grant), issuing JWT tokens that expire TOKEN_TTL seconds after
they were made, used or not; etcdctl, logged in as root, checks the other
side. (etcd's default "simple" tokens expire when left unused for
--auth-token-ttl: test_simple_tokens_forgotten_when_idle.)"""

import errno
import fcntl
import os
import pty
import select
import signal
import subprocess
import termios
import threading
import time

import pytest

import harness
from harness import ETCDFS_BIN, errno_of, run
from secure import AuthEtcd, Certs, TlsEtcd, add_user, enable_auth, jwt_token_args

TOKEN_TTL = 2   # seconds a token lives


@pytest.fixture(scope="module")
def auth_etcd(tmp_path_factory):
    keys = str(tmp_path_factory.mktemp("jwt"))
    e = AuthEtcd("auth", extra=jwt_token_args(keys, "%ds" % TOKEN_TTL)).start()
    enable_auth(e)
    add_user(e, "alice", "alice-pw", ("readwrite", "/app/", "--prefix"))
    add_user(e, "reader", "reader-pw", ("read", "", "--prefix"))
    add_user(e, "writer", "writer-pw", ("readwrite", "", "--prefix"))
    yield e
    e.destroy()


@pytest.fixture
def etcd_a(auth_etcd):
    auth_etcd.wipe()
    return auth_etcd


def pwfile(tmp_path, password, name="pw"):
    p = tmp_path / name
    p.write_text(password + "\n")
    os.chmod(p, 0o600)
    return str(p)


def refused(args, tmp_path, env=None):
    mp = str(tmp_path / "never")
    os.makedirs(mp, exist_ok=True)
    p = run([ETCDFS_BIN] + list(args) + [mp, "-f"], timeout=30,
            env=dict(os.environ, **(env or {})))
    assert not harness.mountinfo_entry(mp)
    return p.returncode, [ln for ln in p.stderr.decode().splitlines() if ln.strip()]


def test_user_and_password_file(etcd_a, mounter, tmp_path):
    etcd_a.put("/app/conf", "v1")
    m = mounter("--prefix=/app", "--user=alice", "--password-file=" + pwfile(tmp_path, "alice-pw"),
                etcd=etcd_a)
    assert open(m.path + "/conf").read() == "v1"
    with open(m.path + "/new", "w") as f:
        f.write("by alice")
    assert etcd_a.get("/app/new") == b"by alice"
    # the watch runs as alice too: a change made elsewhere shows
    etcd_a.put("/app/conf", "v2")
    deadline = time.monotonic() + 5
    while open(m.path + "/conf").read() != "v2":
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_credentials_file_and_environment(etcd_a, mounter, tmp_path):
    etcd_a.put("/k", "v")
    cred = pwfile(tmp_path, "writer:writer-pw", "cred")
    m = mounter("-o", "credentials=" + cred, etcd=etcd_a)
    assert open(m.path + "/k").read() == "v"
    env = dict(os.environ, ETCDCTL_USER="writer", ETCDCTL_PASSWORD="writer-pw")
    m2 = mounter(etcd=etcd_a, env=env)
    assert open(m2.path + "/k").read() == "v"
    # etcdctl's NAME:PASSWORD spelling of --user
    m3 = mounter("--user=writer:writer-pw", etcd=etcd_a)
    assert open(m3.path + "/k").read() == "v"


def test_a_wrong_password_is_told_at_mount(etcd_a, tmp_path):
    rc, lines = refused(["--endpoints=" + etcd_a.endpoint, "--user=alice",
                         "--password-file=" + pwfile(tmp_path, "not-it")], tmp_path)
    assert rc == 1 and len(lines) == 1, lines
    assert "authentication failed for user alice" in lines[0], lines
    assert "not-it" not in lines[0]


def test_no_password_and_no_terminal(etcd_a, tmp_path):
    p = subprocess.run([ETCDFS_BIN, "--endpoints=" + etcd_a.endpoint, "--user=alice",
                        str(tmp_path), "-f"], stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30, start_new_session=True)
    assert p.returncode == 1
    assert p.stderr.strip().startswith("etcdfs: no password for user alice"), p.stderr


def test_o_user_is_refused(etcd_a, tmp_path):
    """mount(8) takes "user=" in fstab as its own option, which lets every
    user mount the line: etcdfs names the safe spellings instead."""
    rc, lines = refused(["--endpoints=" + etcd_a.endpoint, "-o", "user=writer:writer-pw"],
                        tmp_path)
    assert rc == 1 and len(lines) == 1, lines
    assert "username=" in lines[0] and "credentials=" in lines[0], lines
    assert "writer-pw" not in lines[0]


def test_a_user_against_an_etcd_without_auth(etcd, tmp_path):
    rc, lines = refused(["--endpoints=" + etcd.endpoint, "--user=alice:x"], tmp_path)
    assert rc == 1 and len(lines) == 1 and "not enabled" in lines[0], lines


def test_the_password_is_asked_on_the_terminal(etcd_a, tmp_path):
    etcd_a.put("/app/k", "asked")
    mp = str(tmp_path / "tty")
    os.makedirs(mp)
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(ETCDFS_BIN, [ETCDFS_BIN, "--endpoints=" + etcd_a.endpoint, "--prefix=/app",
                              "--user=alice", mp])
    try:
        out = b""
        deadline = time.monotonic() + 10
        while b"Password for alice:" not in out:
            assert time.monotonic() < deadline, out
            if select.select([fd], [], [], 0.5)[0]:
                out += os.read(fd, 1024)
        os.write(fd, b"alice-pw\n")
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 0
        assert open(mp + "/k").read() == "asked"
    finally:
        harness.fusermount_u(mp)
        os.close(fd)


def test_ctrl_c_at_the_prompt_leaves_the_echo_on(etcd_a, tmp_path):
    master, slave = os.openpty()

    def own_terminal():
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
    p = subprocess.Popen([ETCDFS_BIN, "--endpoints=" + etcd_a.endpoint, "--user=alice",
                          str(tmp_path)], stdin=slave, stdout=slave, stderr=slave,
                         preexec_fn=own_terminal)
    try:
        out = b""
        deadline = time.monotonic() + 10
        while b"Password for alice:" not in out:
            assert time.monotonic() < deadline, out
            if select.select([master], [], [], 0.5)[0]:
                out += os.read(master, 1024)
        assert not termios.tcgetattr(slave)[3] & termios.ECHO
        os.write(master, b"\x03")
        assert p.wait(10) == -signal.SIGINT
        assert termios.tcgetattr(slave)[3] & termios.ECHO
    finally:
        if p.poll() is None:
            p.kill()
        os.close(master)
        os.close(slave)


def test_token_expiry_in_a_busy_loop_fails_nothing(etcd_a, mounter, tmp_path):
    """Tokens expire every TOKEN_TTL seconds in the middle of a read/write
    loop: no operation fails, and the mount logged in again each time."""
    m = mounter("--user=writer", "--password-file=" + pwfile(tmp_path, "writer-pw"),
                etcd=etcd_a)
    logins = logins_so_far(etcd_a)
    ops, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 3 * TOKEN_TTL + 1:
        path = "%s/f%d" % (m.path, ops % 10)
        with open(path, "w") as f:
            f.write("%d" % ops)
        assert open(path).read() == "%d" % ops
        ops += 1
    assert logins_so_far(etcd_a) >= logins + 3
    assert etcd_a.get("/f%d" % ((ops - 1) % 10)) == b"%d" % (ops - 1)
    # the watch, opened with a token long expired, still delivers
    etcd_a.put("/f0", "remote")
    deadline = time.monotonic() + 5
    while open(m.path + "/f0").read() != "remote":
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.fixture
def simple_etcd():
    """etcd's default tokens, forgotten when unused for TOKEN_TTL seconds;
    stopped after the test's mounts are gone."""
    e = AuthEtcd("simple", extra=["--auth-token-ttl", str(TOKEN_TTL)]).start()
    enable_auth(e)
    add_user(e, "writer", "writer-pw", ("readwrite", "", "--prefix"))
    yield e
    e.destroy()


def test_simple_tokens_forgotten_when_idle(simple_etcd, mounter, tmp_path):
    """etcd's default tokens expire unused for --auth-token-ttl: the next
    write, and the unlock of a lock held meanwhile (the Lock service says
    so in other words), log in again instead of failing."""
    e = simple_etcd
    m = mounter("--user=writer", "--password-file=" + pwfile(tmp_path, "writer-pw"),
                etcd=e)
    with open(m.path + "/a", "w") as f:
        f.write("1")
    f = open(m.path + "/a")
    fcntl.flock(f, fcntl.LOCK_EX)
    logins = logins_so_far(e)
    time.sleep(TOKEN_TTL + 2)
    with open(m.path + "/b", "w") as g:
        g.write("2")
    fcntl.flock(f, fcntl.LOCK_UN)
    f.close()
    assert logins_so_far(e) > logins
    deadline = time.monotonic() + 5
    while any(k.startswith(b"etcdfs-lock") for k in e.keys()):
        assert time.monotonic() < deadline, "the lock's key stayed after the unlock"
        time.sleep(0.1)
    assert [e.get(k) for k in ("/a", "/b")] == [b"1", b"2"]


def test_a_change_of_roles_under_a_jwt_mount(mounter, tmp_path, tmp_path_factory):
    """A JWT token carries the revision of etcd's users and roles: after
    any change there etcd refuses it ("revision of auth store is old")."""
    e = AuthEtcd("jwt300", extra=jwt_token_args(str(tmp_path_factory.mktemp("jwt300")),
                                                "300s")).start()
    try:
        enable_auth(e)
        add_user(e, "writer", "writer-pw", ("readwrite", "", "--prefix"))
        e.put("/k", "v")
        m = mounter("--user=writer", "--password-file=" + pwfile(tmp_path, "writer-pw"),
                    etcd=e, allowed_stderr=[r"watch refused: .*auth store is old"])
        assert open(m.path + "/k").read() == "v"
        add_user(e, "someone", "else", ("read", "/x", ))
        with open(m.path + "/k", "w") as f:
            f.write("after the change")
        assert e.get("/k") == b"after the change"
        assert sorted(os.listdir(m.path)) == ["k"]
        e.put("/k", "remote")
        deadline = time.monotonic() + 5
        while open(m.path + "/k").read() != "remote":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert m.close() == []
    finally:
        e.destroy()


def logins_so_far(e):
    return sum(v for k, v in e.metrics().items()
               if k.startswith("grpc_server_started_total{") and "Authenticate" in k)


def test_concurrent_callers_share_one_login(etcd_a, mounter, tmp_path):
    n = 8
    for i in range(n):
        etcd_a.put("/c%d" % i, "x%d" % i)
    m = mounter("--user=writer", "--password-file=" + pwfile(tmp_path, "writer-pw"),
                etcd=etcd_a)
    for i in range(n):
        os.stat("%s/c%d" % (m.path, i))
    time.sleep(TOKEN_TTL + 1)
    logins = logins_so_far(etcd_a)
    start = threading.Barrier(n)
    errors = []

    def writer(i):
        # each close is a Put of its own, sent at the same moment
        with open("%s/c%d" % (m.path, i), "w") as f:
            f.write("y%d" % i)
            start.wait()
            try:
                f.close()
            except OSError as e:
                errors.append(e)
    threads = [threading.Thread(target=writer, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # every caller found the token expired; one of them logged in
    assert logins_so_far(etcd_a) == logins + 1
    assert [etcd_a.get("/c%d" % i) for i in range(n)] == [b"y%d" % i for i in range(n)]


def test_a_read_only_role(etcd_a, mounter, tmp_path):
    etcd_a.put("/cfg", "original")
    m = mounter("--user=reader", "--password-file=" + pwfile(tmp_path, "reader-pw"),
                etcd=etcd_a)
    assert open(m.path + "/cfg").read() == "original"

    def write():
        with open(m.path + "/cfg", "w") as f:
            f.write("changed")
    assert errno_of(write) == errno.EACCES
    assert errno_of(os.unlink, m.path + "/cfg") == errno.EACCES
    assert errno_of(os.rename, m.path + "/cfg", m.path + "/moved") == errno.EACCES
    assert etcd_a.get("/cfg") == b"original"
    assert etcd_a.get("/moved") is None
    assert os.listdir(m.path) == ["cfg"]


def test_a_role_limited_to_a_prefix(etcd_a, mounter, tmp_path):
    etcd_a.put("/app/x", "mine")
    etcd_a.put("/other", "not mine")
    pw = pwfile(tmp_path, "alice-pw")
    # the whole keyspace: what the role may read, and nothing else
    m = mounter("--user=alice", "--password-file=" + pw, etcd=etcd_a,
                allowed_stderr=[r"watch refused: .*permission denied"])
    assert errno_of(os.listdir, m.path) == errno.EACCES
    assert os.listdir(m.path + "/app") == ["x"]
    assert open(m.path + "/app/x").read() == "mine"
    assert errno_of(lambda: open(m.path + "/other").read()) == errno.EACCES

    def write_other():
        with open(m.path + "/other", "w") as f:
            f.write("stolen")
    assert errno_of(write_other) == errno.EACCES
    assert etcd_a.get("/other") == b"not mine"
    # a mount of the role's prefix is a whole, coherent file system
    m2 = mounter("--prefix=/app", "--user=alice", "--password-file=" + pw, etcd=etcd_a)
    assert os.listdir(m2.path) == ["x"]
    os.mkdir(m2.path + "/d")
    with open(m2.path + "/d/y", "w") as f:
        f.write("deep")
    assert etcd_a.get("/app/d/y") == b"deep"


def test_the_password_shows_nowhere(etcd_a, mounter, tmp_path):
    secret = "s3cr3t-writer"
    etcd_a.ctl("user", "passwd", "writer", "--interactive=false", input=secret.encode())
    try:
        m = mounter("--user=writer:" + secret, etcd=etcd_a, foreground=False)
        m1 = mounter("--user=writer", "-o", "password=" + secret, etcd=etcd_a)
        m2 = mounter("--user=writer", etcd=etcd_a,
                     env=dict(os.environ, ETCDCTL_PASSWORD=secret))
        m3 = mounter(etcd=etcd_a, env=dict(os.environ, ETCDCTL_USER="writer:" + secret))
        m4 = mounter("-o", "username=writer:" + secret, etcd=etcd_a)
        for mount in (m, m1, m2, m3, m4):
            pid = mount.pid()
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                assert secret.encode() not in f.read()
            with open("/proc/%d/environ" % pid, "rb") as f:
                assert secret.encode() not in f.read()
        ps = run(["ps", "axww", "-o", "args"]).stdout.decode()
        assert "etcdfs" in ps and secret not in ps
        with open("/proc/self/mountinfo") as f:
            assert secret not in f.read()
        assert all(secret not in mount.stderr() for mount in (m, m1, m2, m3, m4))
    finally:
        etcd_a.ctl("user", "passwd", "writer", "--interactive=false", input=b"writer-pw")


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def mtls_auth_etcd(certs):
    e = TlsEtcd(certs, "mtls-auth", client_ca=certs.ca()).start()
    enable_auth(e)
    add_user(e, "alice", "alice-pw", ("readwrite", "/app/", "--prefix"))
    add_user(e, "nobody", "nobody-pw")
    yield e
    e.destroy()


def test_the_client_certificates_cn_is_the_user(mtls_auth_etcd, certs, mounter):
    e = mtls_auth_etcd
    e.wipe()
    e.put("/app/x", "for alice")
    crt, key = certs.leaf("alice", "alice")
    m = mounter("--prefix=/app", "--cacert=" + certs.ca(), "--cert=" + crt, "--key=" + key,
                etcd=e)
    assert open(m.path + "/x").read() == "for alice"
    with open(m.path + "/y", "w") as f:
        f.write("written as alice")
    assert e.get("/app/y") == b"written as alice"
    crt, key = certs.leaf("nobody", "nobody")
    m2 = mounter("--prefix=/app", "--cacert=" + certs.ca(), "--cert=" + crt, "--key=" + key,
                 etcd=e, allowed_stderr=[r"watch refused: .*permission denied"])
    assert errno_of(lambda: open(m2.path + "/x").read()) == errno.EACCES
