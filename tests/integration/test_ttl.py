"""user.etcd.ttl: a file on a lease (etcdctl lease grant + put --lease,
lease timetolive), checked on both sides."""

import errno
import os
import subprocess
import time

from harness import errno_of


def setttl(path, value):
    os.setxattr(path, "user.etcd.ttl", value.encode())


def getttl(path):
    return int(os.getxattr(path, "user.etcd.ttl"))


def lease_of(etcd, key):
    kv = etcd.kv(key)
    return kv["lease"] if kv else None


def test_a_ttl_file_disappears_on_its_own(etcd, mnt):
    path = mnt.path + "/svc"
    with open(path, "w") as f:
        f.write("10.0.0.1")
    setttl(path, "2")
    lease = lease_of(etcd, "/svc")
    assert lease
    assert int(os.getxattr(path, "user.etcd.lease")) == lease
    assert b"granted with TTL(2s)" in etcd.ctl("lease", "timetolive", "%x" % lease)
    assert 0 <= getttl(path) <= 2
    assert "user.etcd.ttl" in os.listxattr(path)
    t0 = time.monotonic()
    while "svc" in os.listdir(mnt.path):
        assert time.monotonic() - t0 < 2 + 1.5, "still listed after its TTL"
        time.sleep(0.1)
    assert etcd.get("/svc") is None
    assert errno_of(os.stat, path) == errno.ENOENT


def test_setting_it_again_refreshes(etcd, mnt):
    path = mnt.path + "/beat"
    with open(path, "w") as f:
        f.write("alive")
    setttl(path, "3s")
    for _ in range(3):
        time.sleep(1.5)
        setttl(path, "3")      # a heartbeat
    assert etcd.get("/beat") == b"alive"
    time.sleep(3 + 1.5)
    assert etcd.get("/beat") is None


def test_writes_and_renames_keep_the_lease(etcd, mnt):
    path = mnt.path + "/conf"
    with open(path, "w") as f:
        f.write("one")
    setttl(path, "60")
    lease = lease_of(etcd, "/conf")
    with open(path, "w") as f:
        f.write("two")
    assert etcd.get("/conf") == b"two"
    assert lease_of(etcd, "/conf") == lease
    os.rename(path, mnt.path + "/moved")
    assert lease_of(etcd, "/moved") == lease
    # removing the attribute takes the key off its lease
    os.removexattr(mnt.path + "/moved", "user.etcd.ttl")
    assert lease_of(etcd, "/moved") == 0
    assert errno_of(os.getxattr, mnt.path + "/moved", "user.etcd.ttl") == errno.ENODATA
    assert etcd.get("/moved") == b"two"


def test_a_key_put_with_a_lease_elsewhere(etcd, mnt):
    lease = etcd.lease_grant(100)
    etcd.put("/leased", "v", lease=lease)
    assert 90 <= getttl(mnt.path + "/leased") <= 100
    assert int(os.getxattr(mnt.path + "/leased", "user.etcd.lease")) == lease


def test_bad_ttls(etcd, mnt):
    path = mnt.path + "/f"
    with open(path, "w") as f:
        f.write("x")
    for bad in ("soon", "-5", "1e3"):
        assert errno_of(setttl, path, bad) == errno.EINVAL
    os.mkdir(mnt.path + "/d")
    assert errno_of(setttl, mnt.path + "/d", "5") == errno.EPERM
    assert errno_of(os.getxattr, path, "user.etcd.ttl") == errno.ENODATA
    assert lease_of(etcd, "/f") == 0


def register(path, ttl):
    """A shell that registers a service: its key lives while fd 3 is open."""
    script = ("exec 3>%s; echo 10.0.0.5 >&3; setfattr -n user.etcd.session -v %d %s; "
              "echo ready; sleep 60" % (path, ttl, path))
    p = subprocess.Popen(["bash", "-c", script], stdout=subprocess.PIPE)
    assert p.stdout.readline() == b"ready\n"
    return p


def gone_within(etcd, key, seconds):
    t0 = time.monotonic()
    while etcd.get(key) is not None:
        assert time.monotonic() - t0 < seconds, "%s still there" % key
        time.sleep(0.05)


def test_a_key_lives_as_long_as_its_file_is_open(etcd, mnt):
    os.makedirs(mnt.path + "/services/web")
    p = register(mnt.path + "/services/web/host1", 2)
    try:
        kv = etcd.kv("/services/web/host1")
        assert kv["value"] == b"10.0.0.5\n" and kv["lease"]
        # kept alive past its TTL while the file is open
        time.sleep(2 * 2 + 1)
        assert etcd.get("/services/web/host1") == b"10.0.0.5\n"
    finally:
        p.kill()
        p.wait()
    # the killed process's descriptor closed: the key goes at once
    gone_within(etcd, "/services/web/host1", 1.5)
    assert not os.path.exists(mnt.path + "/services/web/host1")


def test_a_session_key_outlives_a_dead_daemon_by_its_ttl_at_most(etcd, mounter):
    m = mounter(etcd=etcd)
    p = register(m.path + "/svc", 2)
    try:
        assert etcd.get("/svc") == b"10.0.0.5\n"
        m.crash()
        gone_within(etcd, "/svc", 2 + 1.5)
    finally:
        p.kill()
        p.wait()


def test_a_session_needs_an_open_file(etcd, mnt):
    path = mnt.path + "/closed"
    with open(path, "w") as f:
        f.write("x")
    assert errno_of(os.setxattr, path, "user.etcd.session", b"5") == errno.EBADF
    with open(path) as f:
        assert errno_of(os.setxattr, path, "user.etcd.session", b"0") == errno.EINVAL
    assert etcd.kv("/closed")["lease"] == 0
