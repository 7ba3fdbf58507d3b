"""TLS, client certificates and etcd's auth on a three-member cluster whose
leader dies under a read/write loop: the handshake, the token and its
renewal work on whichever member serves the mount."""

import os
import threading
import time

import pytest

import harness
from harness import errname
from secure import Certs, add_user, enable_auth, jwt_token_args

LEAVING = r"leaving 127\.0\.0\.1:\d+|cannot connect|connection"


@pytest.fixture
def secure_cluster(tmp_path_factory):
    certs = Certs(str(tmp_path_factory.mktemp("certs")))
    server = certs.leaf("server", "etcd", san="IP:127.0.0.1")
    root = certs.leaf("root", "root")
    keys = str(tmp_path_factory.mktemp("jwt"))
    c = harness.EtcdCluster(
        "secure", scheme="https",
        member_args=["--cert-file", server[0], "--key-file", server[1],
                     "--trusted-ca-file", certs.ca(), "--client-cert-auth"] +
        jwt_token_args(keys, "2s"),
        ctl_args=["--cacert=" + certs.ca(), "--cert=" + root[0], "--key=" + root[1]])
    c.certs = certs
    c.start()
    enable_auth(c)
    add_user(c, "writer", "writer-pw", ("readwrite", "", "--prefix"))
    yield c
    c.destroy()


def test_the_leader_dies_under_a_tls_and_auth_mount(secure_cluster, mounter, tmp_path):
    c = secure_cluster
    leader = c.leader()
    crt, key = c.certs.leaf("client", "client")
    pw = tmp_path / "pw"
    pw.write_text("writer-pw\n")
    # the mount starts on the leader, and must move to a follower
    eps = c.endpoints_from(leader)
    m = mounter("--endpoints=" + ",".join(eps), "--cacert=" + c.certs.ca(), "--cert=" + crt,
                "--key=" + key, "--user=writer", "--password-file=" + str(pw),
                allowed_stderr=[LEAVING, r"watch"])
    stop = threading.Event()
    failures, done = [], []

    def loop(t):
        i = 0
        while not stop.is_set():
            path, value = "%s/t%d_%d" % (m.path, t, i % 10), "v%d" % i
            try:
                with open(path, "w") as f:
                    f.write(value)
                with open(path) as f:
                    assert f.read() == value
                os.listdir(m.path)
                done.append(1)
            except OSError as e:
                failures.append((path, errname(e.errno)))
            i += 1

    threads = [threading.Thread(target=loop, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    time.sleep(1)
    c.kill(leader)
    # long enough for a new leader, and for the 2 s tokens to expire twice
    time.sleep(5)
    stop.set()
    for t in threads:
        t.join()
    assert not failures, failures[:10]
    assert len(done) > 100
    survivor = [i for i in range(3) if i != leader][0]
    assert c.connected(m) in [i for i in range(3) if i != leader]
    assert c.member(survivor).get("/t0_0") is not None
