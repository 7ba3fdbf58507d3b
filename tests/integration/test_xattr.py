"""The read-only user.etcd.* extended attributes."""
import errno
import os
import re

from harness import attempt, converge, errno_of, errname, sh, write

NAMES = ["user.etcd.create_revision", "user.etcd.mod_revision", "user.etcd.version",
         "user.etcd.lease"]


def expected(kv):
    return {
        "user.etcd.create_revision": str(kv["create_revision"]).encode(),
        "user.etcd.mod_revision": str(kv["mod_revision"]).encode(),
        "user.etcd.version": str(kv["version"]).encode(),
        "user.etcd.lease": str(kv["lease"]).encode(),
    }


def xattrs(path):
    return {n: os.getxattr(path, n) for n in NAMES}


def converge_xattrs(path, before, after):
    """Each attribute goes from its value in before to the one in after
    (a dict, or an errno name for all), and never shows anything else."""
    def states(n):
        return [s if isinstance(s, str) else s[n] for s in (before, after)]
    converge(*[("%s of %s" % (n, os.path.basename(path)),
                (lambda n=n: attempt(os.getxattr, path, n)), states(n)) for n in NAMES])


def test_values_match_etcd(etcd, mnt):
    etcd.put("/x", "1")
    etcd.put("/other", "o")
    etcd.put("/x", "2")
    etcd.put("/x", "3")
    kv = etcd.kv("/x")
    assert kv["version"] == 3 and kv["create_revision"] < kv["mod_revision"]
    assert xattrs(mnt.p("x")) == expected(kv)
    assert sorted(n for n in os.listxattr(mnt.p("x")) if n.startswith("user.")) == \
        sorted(NAMES + ["user.etcd.lock_name"])
    # the lock's name (test_locks.py): the default prefix, the key, a final %
    assert os.getxattr(mnt.p("x"), "user.etcd.lock_name") == b"etcdfs-lock/x%"


def test_getfattr_dump(etcd, mnt):
    etcd.put("/g", "v")
    etcd.put("/g", "w")
    kv = etcd.kv("/g")
    out = sh("getfattr -d --absolute-names " + mnt.p("g")).stdout.decode()
    got = dict(re.findall(r'^(user\.etcd\.\w+)="(\d+)"$', out, re.M))
    assert {k: v.encode() for k, v in got.items()} == expected(kv), out
    out = sh("getfattr --only-values -n user.etcd.mod_revision " + mnt.p("g")).stdout
    assert out == str(kv["mod_revision"]).encode()


def test_lease(etcd, mnt):
    lease = etcd.lease_grant(600)
    etcd.put("/leased", "v", lease=lease)
    kv = etcd.kv("/leased")
    assert kv["lease"] == lease
    assert os.getxattr(mnt.p("leased"), "user.etcd.lease") == str(lease).encode()
    assert xattrs(mnt.p("leased")) == expected(kv)


def test_values_follow_changes(etcd, mnt):
    etcd.put("/c", "v")
    assert xattrs(mnt.p("c")) == expected(etcd.kv("/c"))
    write(mnt.p("c"), "through the mount")
    written = etcd.kv("/c")
    assert xattrs(mnt.p("c")) == expected(written)
    etcd.put("/c", "through etcdctl")
    kv = etcd.kv("/c")
    assert kv["version"] == 3
    converge_xattrs(mnt.p("c"), expected(written), expected(kv))
    # %self of a key with children
    etcd.put("/c/child", "x")
    converge_xattrs(mnt.p("c/%self"), "ENOTDIR", expected(kv))
    assert xattrs(mnt.p("c/child")) == expected(etcd.kv("/c/child"))


def test_read_only(etcd, mnt):
    etcd.put("/ro", "v")
    before = etcd.kv("/ro")
    rev = etcd.revision()
    f = mnt.p("ro")
    # etcdfs(1): "Setting or removing them fails with EPERM; other
    # attributes cannot be stored (ENOTSUP)."
    for name in NAMES:
        for flags in (0, os.XATTR_CREATE, os.XATTR_REPLACE):
            got = errno_of(os.setxattr, f, name, b"7", flags)
            assert got == errno.EPERM, "setxattr %s (flags %d): %s" % (name, flags, errname(got))
        got = errno_of(os.removexattr, f, name)
        assert got == errno.EPERM, "removexattr %s: %s" % (name, errname(got))
    for name in ("user.other", "user.etcd", "trusted.x"):
        got = errno_of(os.setxattr, f, name, b"x")
        assert got == errno.ENOTSUP, "setxattr %s: %s" % (name, errname(got))
    p = sh("setfattr -n user.etcd.version -v 9 " + f, check=False)
    assert p.returncode != 0 and b"Operation not permitted" in p.stderr, p
    p = sh("setfattr -n user.mine -v 9 " + f, check=False)
    assert p.returncode != 0 and b"Operation not supported" in p.stderr, p
    assert etcd.kv("/ro") == before and etcd.revision() == rev
    assert xattrs(f) == expected(before)


def test_unknown_attribute(etcd, mnt):
    etcd.put("/u", "v")
    assert errno_of(os.getxattr, mnt.p("u"), "user.nope") == errno.ENODATA
    assert errno_of(os.getxattr, mnt.p("u"), "user.etcd.nope") == errno.ENODATA
    assert errno_of(os.getxattr, mnt.p("nofile"), "user.etcd.version") == errno.ENOENT
