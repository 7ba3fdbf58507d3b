"""--revision=N: the keyspace as it was at revision N (etcdctl get --rev),
read-only, checked against etcdctl."""

import errno
import fcntl
import os

from harness import ETCDFS_BIN, errno_of, mountinfo_entry, run


def test_a_past_revision_shows_old_values_and_refuses_changes(etcd, mounter):
    etcd.put("/app/a", "old a")
    etcd.put("/app/b", "old b")
    rev = etcd.revision()
    etcd.put("/app/a", "new a")
    etcd.delete("/app/b")
    etcd.put("/app/c", "born later")
    m = mounter("--revision=%d" % rev, etcd=etcd)
    assert sorted(os.listdir(m.path + "/app")) == ["a", "b"]
    assert open(m.path + "/app/a").read() == "old a"
    assert open(m.path + "/app/b").read() == "old b"
    assert errno_of(os.stat, m.path + "/app/c") == errno.ENOENT
    # the revisions are the old ones too
    kv = etcd.kvs("/app/a")[0]
    assert int(os.getxattr(m.path + "/app/a", "user.etcd.mod_revision")) < kv["mod_revision"]
    # every change is refused, and etcd is untouched

    def write():
        with open(m.path + "/app/a", "w") as f:
            f.write("x")
    assert errno_of(write) == errno.EROFS
    assert errno_of(os.unlink, m.path + "/app/a") == errno.EROFS
    assert errno_of(os.mkdir, m.path + "/d") == errno.EROFS
    assert errno_of(os.rename, m.path + "/app/a", m.path + "/app/z") == errno.EROFS
    with open(m.path + "/app/a") as f:
        assert errno_of(fcntl.flock, f, fcntl.LOCK_EX) == errno.ENOLCK
    assert etcd.get("/app/a") == b"new a"
    assert "ro" in mountinfo_entry(m.path)["options"].split(",")
    # a later change does not show: the past does not move
    etcd.put("/app/a", "newer")
    assert open(m.path + "/app/a").read() == "old a"


def test_a_compacted_or_future_revision_is_refused_at_mount(own_etcd, tmp_path):
    e = own_etcd
    e.put("/k", "1")
    old = e.revision()
    e.put("/k", "2")
    e.compact(e.revision())
    mp = str(tmp_path / "m")
    os.makedirs(mp)
    for rev, words in ((old, "has been compacted"), (e.revision() + 100, "in the future")):
        p = run([ETCDFS_BIN, "--endpoints=" + e.endpoint, "--revision=%d" % rev, mp, "-f"],
                timeout=30)
        lines = p.stderr.decode().splitlines()
        assert p.returncode == 1 and len(lines) == 1 and words in lines[0], lines
        assert mountinfo_entry(mp) is None
    p = run([ETCDFS_BIN, "--endpoints=" + e.endpoint, "--revision=soon", mp, "-f"], timeout=30)
    assert p.returncode == 1 and b"revision number" in p.stderr


def test_a_files_value_at_a_revision(own_etcd, mounter):
    e = own_etcd
    e.put("/conf", "version one\n")
    r1 = e.revision()
    e.put("/conf", "version two\n")
    m = mounter(etcd=e)
    path = m.path + "/conf"
    assert os.getxattr(path, "user.etcd.rev.%d" % r1) == b"version one\n"
    assert os.getxattr(path, "user.etcd.rev.%d" % e.revision()) == b"version two\n"
    # diff against the older version is one command
    p = run(["bash", "-c", "diff <(getfattr --only-values -n user.etcd.rev.%d %s) %s"
             % (r1, path, path)])
    assert p.returncode == 1 and b"< version one" in p.stdout and b"> version two" in p.stdout
    assert errno_of(os.getxattr, path, "user.etcd.rev.1") == errno.ENODATA   # not born yet
    assert errno_of(os.getxattr, path, "user.etcd.rev.x") == errno.ENODATA
    e.compact(e.revision())
    assert errno_of(os.getxattr, path, "user.etcd.rev.%d" % r1) == errno.EIO
