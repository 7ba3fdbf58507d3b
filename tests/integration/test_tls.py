"""TLS: https endpoints, server verification, client certificates.

Every server here is a real etcd serving https only; the certificates are
made by openssl for each module (tests/integration/secure.py)."""

import errno
import fcntl
import os
import shutil
import subprocess
import time

import pytest

import harness
from harness import ETCDFS_BIN, run
from secure import Certs, TlsEtcd


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def tls_etcd(certs):
    """https, any client (no client certificate asked for)."""
    e = TlsEtcd(certs, "tls").start()
    yield e
    e.destroy()


@pytest.fixture(scope="module")
def mtls_etcd(certs):
    """https, and a client certificate signed by "ca" is required."""
    e = TlsEtcd(certs, "mtls", client_ca=certs.ca()).start()
    yield e
    e.destroy()


def refused(args, env=None, mountpoint=None, tmp_path=None):
    """Runs etcdfs expecting it not to mount: (exit status, stderr lines)."""
    mp = mountpoint or str(tmp_path / "never")
    os.makedirs(mp, exist_ok=True)
    p = run([ETCDFS_BIN] + list(args) + [mp, "-f"], timeout=30,
            env=dict(os.environ, **(env or {})))
    assert not harness.mountinfo_entry(mp)
    return p.returncode, [ln for ln in p.stderr.decode().splitlines() if ln.strip()]


def test_reads_writes_and_changes_over_https(tls_etcd, certs, mounter):
    tls_etcd.wipe()
    m = mounter("--cacert=" + certs.ca(), etcd=tls_etcd)
    tls_etcd.put("/app/conf", "one")
    with open(m.path + "/app/conf") as f:
        assert f.read() == "one"
    with open(m.path + "/app/new", "w") as f:
        f.write("written over TLS")
    assert tls_etcd.get("/app/new") == b"written over TLS"
    # the watch runs over TLS too: a change made elsewhere shows
    tls_etcd.put("/app/conf", "two")
    deadline = time.monotonic() + 5
    while open(m.path + "/app/conf").read() != "two":
        assert time.monotonic() < deadline, "the change never showed"
        time.sleep(0.02)
    assert sorted(os.listdir(m.path + "/app")) == ["conf", "new"]


def test_client_certificate_reads_writes_and_locks(mtls_etcd, certs, mounter):
    mtls_etcd.wipe()
    crt, key = certs.leaf("alice", "alice")
    m = mounter("--cacert=" + certs.ca(), "--cert=" + crt, "--key=" + key, etcd=mtls_etcd)
    with open(m.path + "/f", "w") as f:
        f.write("mtls")
    assert mtls_etcd.get("/f") == b"mtls"
    with open(m.path + "/f") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        # the lock is an etcd key: etcdctl sees it through its own TLS
        assert any(k.startswith(b"etcdfs-lock") for k in mtls_etcd.keys())
        fcntl.flock(f, fcntl.LOCK_UN)


def test_options_from_the_environment_and_o(mtls_etcd, certs, mounter):
    mtls_etcd.wipe()
    mtls_etcd.put("/k", "v")
    crt, key = certs.leaf("env", "env")
    env = dict(os.environ, ETCDCTL_CACERT=certs.ca(), ETCDCTL_CERT=crt, ETCDCTL_KEY=key)
    m = mounter(etcd=mtls_etcd, env=env)
    assert open(m.path + "/k").read() == "v"
    # fstab's spelling; the endpoint without a scheme uses TLS because
    # certificate files are given
    m2 = mounter("-o", "endpoints=127.0.0.1:%d,cacert=%s,cert=%s,key=%s"
                 % (mtls_etcd.client_port, certs.ca(), crt, key))
    assert open(m2.path + "/k").read() == "v"


def test_relative_file_names_outlive_the_daemons_chdir(mtls_etcd, certs, tmp_path):
    """The daemon moves to / when it detaches, and reads the files again
    on later connections: relative names must still work then."""
    mtls_etcd.wipe()
    mtls_etcd.put("/k", "v")
    certs.leaf("rel", "rel")
    mp = str(tmp_path / "rel")
    os.makedirs(mp)
    p = subprocess.run([ETCDFS_BIN, "--endpoints=" + mtls_etcd.url, "--cacert=ca.crt",
                        "--cert=rel.crt", "--key=rel.key", mp], cwd=certs.dir,
                       capture_output=True, text=True, timeout=30)
    try:
        assert p.returncode == 0, p.stderr
        assert open(mp + "/k").read() == "v"
    finally:
        harness.fusermount_u(mp)


def _one_line(rc, lines, *words):
    assert rc == 1, lines
    assert len(lines) == 1, lines
    for w in words:
        assert w in lines[0], lines


def test_an_unknown_ca_is_named_at_mount(tls_etcd, certs, tmp_path):
    rc, lines = refused(["--endpoints=" + tls_etcd.url, "--cacert=" + certs.ca("other")],
                        tmp_path=tmp_path)
    _one_line(rc, lines, "not signed by a trusted CA", certs.ca("other"))
    # without --cacert the system's CAs are used, which do not know ours
    rc, lines = refused(["--endpoints=" + tls_etcd.url], tmp_path=tmp_path)
    _one_line(rc, lines, "not signed by a trusted CA", "system")


def test_a_certificate_for_another_name_is_refused(tls_etcd, certs, tmp_path):
    # the server's certificate is for IP 127.0.0.1 only
    rc, lines = refused(["--endpoints=https://localhost:%d" % tls_etcd.client_port,
                         "--cacert=" + certs.ca()], tmp_path=tmp_path)
    _one_line(rc, lines, "for another host name")


def test_insecure_skip_tls_verify_mounts_with_a_warning(tls_etcd, certs, mounter):
    tls_etcd.wipe()
    tls_etcd.put("/k", "unverified")
    m = mounter("--insecure-skip-tls-verify", etcd=tls_etcd,
                allowed_stderr=[r"is not verified \(--insecure-skip-tls-verify\)"])
    assert open(m.path + "/k").read() == "unverified"
    assert "is not verified" in m.stderr()


def test_no_client_certificate(mtls_etcd, certs, tmp_path):
    rc, lines = refused(["--endpoints=" + mtls_etcd.url, "--cacert=" + certs.ca()],
                        tmp_path=tmp_path)
    _one_line(rc, lines, "client certificate")


def test_a_client_certificate_from_another_ca(mtls_etcd, certs, tmp_path):
    crt, key = certs.leaf("stranger", "stranger", ca="other")
    rc, lines = refused(["--endpoints=" + mtls_etcd.url, "--cacert=" + certs.ca(),
                         "--cert=" + crt, "--key=" + key], tmp_path=tmp_path)
    _one_line(rc, lines, "refused the client certificate")


def test_an_expired_client_certificate(mtls_etcd, certs, tmp_path):
    crt, key = certs.leaf("old", "root", days=-1)
    rc, lines = refused(["--endpoints=" + mtls_etcd.url, "--cacert=" + certs.ca(),
                         "--cert=" + crt, "--key=" + key], tmp_path=tmp_path)
    _one_line(rc, lines, "client certificate", "expired on")


def test_an_expired_server_certificate(certs, tmp_path):
    e = TlsEtcd(certs, "expired", server=certs.leaf("oldserver", "etcd", days=-1))
    e.client_port = harness.free_port()
    e.peer_port = harness.free_port()
    e._spawn()
    try:
        # etcdctl cannot check it either: wait for the port instead
        deadline = time.monotonic() + 20
        while harness.port_is_free(e.client_port):
            assert time.monotonic() < deadline, e.log_tail()
            time.sleep(0.1)
        rc, lines = refused(["--endpoints=" + e.url, "--cacert=" + certs.ca()],
                            tmp_path=tmp_path)
        _one_line(rc, lines, "server's certificate has expired")
    finally:
        e.destroy()


def test_mistakes_in_tls_options(tls_etcd, certs, tmp_path):
    crt, key = certs.leaf("mis", "mis")
    cases = [
        (["--cacert=/nonexistent/ca.pem"],
         "cannot read CA file /nonexistent/ca.pem: No such file or directory"),
        (["--cert=" + crt], "both a cert and a key"),
        (["--cacert=" + certs.ca(), "--cert=" + crt, "--key=" + certs.path("ca.key")],
         "key does not match"),
        (["--insecure-transport=maybe"], "--insecure-transport takes true or false"),
    ]
    for args, words in cases:
        rc, lines = refused(["--endpoints=" + tls_etcd.url] + args, tmp_path=tmp_path)
        _one_line(rc, lines, words)
    # a plain endpoint next to TLS options is a mistake unless allowed
    rc, lines = refused(["--endpoints=http://127.0.0.1:1", "--cacert=" + certs.ca()],
                        tmp_path=tmp_path)
    _one_line(rc, lines, "plain text", "--insecure-transport")
    # every mistake is told, each in its line, before any connection
    rc, lines = refused(["--endpoints=127.0.0.1:1", "--insecure-transport=maybe",
                         "--dial-timeout=soon", "--cache-size=lots"], tmp_path=tmp_path)
    assert rc == 1 and len(lines) == 3, lines


@pytest.fixture
def own_tls():
    """TlsEtcd servers of one test, stopped after its mounts are gone."""
    servers = []
    yield servers
    for e in servers:
        e.destroy()


def test_a_renewed_client_certificate_is_used_without_remount(certs, own_tls, mounter,
                                                              tmp_path):
    """The client certificate is replaced on disk by one from a new CA and
    etcd restarted to trust only that CA: the next connection carries the
    new certificate."""
    client_ca = str(tmp_path / "client-ca.crt")
    shutil.copy(certs.ca("ca1"), client_ca)
    e = TlsEtcd(certs, "renew", client_ca=client_ca)
    own_tls.append(e)
    e.ctl_cert = certs.leaf("root1", "root", ca="ca1")
    e.start()
    crt, key = str(tmp_path / "client.crt"), str(tmp_path / "client.key")
    c1 = certs.leaf("client1", "root", ca="ca1")
    shutil.copy(c1[0], crt)
    shutil.copy(c1[1], key)
    m = mounter("--cacert=" + certs.ca(), "--cert=" + crt, "--key=" + key, etcd=e,
                allowed_stderr=[r"TLS files changed: loaded again",
                                r"leaving|cannot connect|connection"])
    with open(m.path + "/before", "w") as f:
        f.write("1")
    # renewal: new files in place (as cert-manager does, by rename)
    c2 = certs.leaf("client2", "root", ca="ca2")
    for src, dst in ((c2[0], crt), (c2[1], key)):
        shutil.copy(src, dst + ".new")
        os.rename(dst + ".new", dst)
    shutil.copy(certs.ca("ca2"), client_ca)
    e.ctl_cert = certs.leaf("root2", "root", ca="ca2")
    e.kill()
    e.restart()
    deadline = time.monotonic() + 15
    while True:
        try:
            with open(m.path + "/after", "w") as f:
                f.write("2")
            break
        except OSError:
            assert time.monotonic() < deadline, m.stderr()
            time.sleep(0.2)
    assert e.get("/after") == b"2"
    assert "loaded again" in m.stderr()


class _TwoListeners(TlsEtcd):
    """Serves clients over https and plain http, and tells both in its
    member list (a member set up to take either)."""

    def __init__(self, certs):
        super().__init__(certs, "both")
        self.http_port = harness.free_port()
        self.https_off = False

    def _argv(self):
        argv = super()._argv()
        http = "http://127.0.0.1:%d" % self.http_port
        urls = http if self.https_off else self.url + "," + http
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            argv[argv.index(flag) + 1] = urls
        return argv

    def ctl_argv(self, *args):
        if self.https_off:
            return ["etcdctl", "--endpoints=127.0.0.1:%d" % self.http_port] + list(args)
        return super().ctl_argv(*args)


@pytest.fixture
def two_listeners(certs):
    e = _TwoListeners(certs).start()
    yield e
    e.destroy()


def test_a_plain_url_learned_from_the_member_list_is_not_used(two_listeners, certs, mounter):
    """Mounted over https (the CA trusted system-wide, so no certificate
    option is given), the mount learns the member's http:// URL too; when
    https goes away it must not carry on in plain text."""
    e = two_listeners
    e.put("/k", "v")
    m = mounter(etcd=e, env=dict(os.environ, SSL_CERT_FILE=certs.ca()),
                allowed_stderr=[r"cannot connect|connection|leaving|watch"])
    assert open(m.path + "/k").read() == "v"
    time.sleep(6)   # the member list is read again every 5 s
    e.kill()
    e.https_off = True
    e.restart()
    e.put("/k2", "plain")
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        ports = {remote for _, remote in harness.tcp_connections(m.pid())}
        assert e.http_port not in ports, "the mount went on in plain text"
        try:
            os.stat(m.path + "/k2")
            raise AssertionError("a lookup answered without TLS")
        except OSError as err:
            assert err.errno in (errno.ENOTCONN, errno.ETIMEDOUT, errno.EAGAIN), err
        time.sleep(0.5)
