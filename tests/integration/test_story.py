"""The README's story, end to end: etcdctl on one side, shell tools on the
mount on the other, every step checked on both sides."""
import os
import random
import re
import stat

import pytest

from harness import is_etcdfs_mounted, read, sh

DOCKER = {
    b"/docker/node/n01": b"192.168.100.111",
    b"/docker/node/n02": b"192.168.100.112",
    b"/docker/node/n03": b"192.168.100.113",
    b"/docker/service/s01": b"1005",
    b"/docker/service/s02": b"1007",
}


@pytest.fixture
def docker(etcd):
    for k, v in DOCKER.items():
        etcd.ctl("put", k, v)   # as the README does it: value as an argument
    assert etcd.keys("/docker/", with_values=True) == DOCKER
    return etcd


def ls(path):
    return sh("ls %s" % quote(path)).stdout.decode().split()


def quote(p):
    return "'" + p.replace("'", "'\\''") + "'"


def test_ls_and_cat(docker, mnt):
    assert ls(mnt.p("docker")) == ["node", "service"]
    assert ls(mnt.p("docker/node")) == ["n01", "n02", "n03"]
    assert sorted(os.listdir(mnt.p("docker/service"))) == ["s01", "s02"]
    before = docker.kv("/docker/node/n01")
    assert sh("cat " + mnt.p("docker/node/n01")).stdout == b"192.168.100.111"
    for k, v in DOCKER.items():
        assert read(mnt.p(k.decode().lstrip("/"))) == v
    # reading wrote nothing
    assert docker.kv("/docker/node/n01") == before
    st = os.stat(mnt.p("docker/node/n01"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_size == len(b"192.168.100.111")
    st = os.stat(mnt.p("docker/node"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755


def test_echo_creates_key(docker, mnt):
    sh("echo -n 1009 > " + mnt.p("docker/service/s03"))
    kv = docker.kv("/docker/service/s03")
    assert kv["value"] == b"1009" and kv["version"] == 1
    assert sh("ETCDCTL_API=3 etcdctl --endpoints=%s get /docker/service/s03 --print-value-only"
              % docker.endpoint).stdout == b"1009\n"
    assert read(mnt.p("docker/service/s03")) == b"1009"
    assert ls(mnt.p("docker/service")) == ["s01", "s02", "s03"]


def test_getfattr_shows_revisions(docker, mnt):
    kv = docker.kv("/docker/node/n01")
    out = sh("getfattr -d --absolute-names " + mnt.p("docker/node/n01")).stdout.decode()
    attrs = dict(re.findall(r'^(user\.etcd\.\w+)="(\d+)"$', out, re.M))
    assert attrs == {
        "user.etcd.create_revision": str(kv["create_revision"]),
        "user.etcd.mod_revision": str(kv["mod_revision"]),
        "user.etcd.version": str(kv["version"]),
        "user.etcd.lease": "0",
    }, out


def test_sed_in_place(docker, mnt):
    old = docker.kv("/docker/service/s01")
    sh("sed -i s/1005/1006/ " + mnt.p("docker/service/s01"))
    new = docker.kv("/docker/service/s01")
    assert new["value"] == b"1006"
    assert new["version"] == old["version"] + 1
    # sed's temporary file was renamed over s01: nothing else is left
    assert docker.keys("/docker/") == sorted(DOCKER)
    assert read(mnt.p("docker/service/s01")) == b"1006"
    assert ls(mnt.p("docker/service")) == ["s01", "s02"]


def test_mv(docker, mnt):
    rev = docker.revision()
    sh("mv %s %s" % (mnt.p("docker/service/s02"), mnt.p("docker/service/s09")))
    assert docker.get("/docker/service/s02") is None
    kv = docker.kv("/docker/service/s09")
    assert kv["value"] == b"1007"
    # one transaction: put and delete share one revision
    assert docker.revision() == rev + 1 == kv["mod_revision"]
    assert ls(mnt.p("docker/service")) == ["s01", "s09"]
    assert not os.path.exists(mnt.p("docker/service/s02"))


def test_cp_r_within_mount(docker, mnt):
    sh("cp -r %s %s" % (mnt.p("docker/node"), mnt.p("docker/node-copy")))
    assert docker.keys("/docker/node-copy/", with_values=True) == {
        k.replace(b"/node/", b"/node-copy/"): v for k, v in DOCKER.items() if b"/node/" in k}
    assert docker.keys("/docker/node/", with_values=True) == {
        k: v for k, v in DOCKER.items() if b"/node/" in k}
    assert ls(mnt.p("docker/node-copy")) == ["n01", "n02", "n03"]
    assert read(mnt.p("docker/node-copy/n02")) == b"192.168.100.112"


def make_tree(root):
    """A small local tree: files 0644, directories 0755, one binary file."""
    rnd = random.Random(7)
    blob = bytes(rnd.randrange(256) for _ in range(5000)) + b"\0\0\n"
    files = {
        "conf/app.conf": b"listen 8080\nworkers 4\n",
        "conf/empty": b"",
        "conf/sub/blob.bin": blob,
        "conf/sub/deeper/x.txt": b"x\n",
    }
    for rel, data in files.items():
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, 0o644)
    for d in ("conf", "conf/sub", "conf/sub/deeper"):
        os.chmod(os.path.join(root, d), 0o755)
    return files


def test_cp_r_into_mount(docker, mnt, tmp_path):
    files = make_tree(str(tmp_path / "src"))
    sh("cp -r %s %s" % (tmp_path / "src" / "conf", mnt.p("docker/conf")))
    assert docker.keys("/docker/conf/", with_values=True) == {
        ("/docker/" + k).encode(): v for k, v in files.items()}
    sh("diff -r %s %s" % (tmp_path / "src" / "conf", mnt.p("docker/conf")))


def test_cp_a_into_mount(docker, mnt, tmp_path):
    # cp -a restores owner, mode and times: all accepted as they are shown
    files = make_tree(str(tmp_path / "src"))
    sh("cp -a %s %s" % (tmp_path / "src" / "conf", mnt.p("conf")))
    assert docker.keys("/conf/", with_values=True) == {
        ("/" + k).encode(): v for k, v in files.items()}


def test_tar_extract_into_mount(docker, mnt, tmp_path):
    files = make_tree(str(tmp_path / "src"))
    tarball = tmp_path / "t.tar"
    sh("tar -cf %s -C %s conf" % (tarball, tmp_path / "src"))
    p = sh("tar -xf %s -C %s" % (tarball, mnt.p("docker")))
    assert p.stderr == b""
    assert docker.keys("/docker/conf/", with_values=True) == {
        ("/docker/" + k).encode(): v for k, v in files.items()}
    sh("diff -r %s %s" % (tmp_path / "src" / "conf", mnt.p("docker/conf")))
    for rel in files:
        assert stat.S_IMODE(os.stat(mnt.p("docker", rel)).st_mode) == 0o644
    assert stat.S_IMODE(os.stat(mnt.p("docker/conf/sub")).st_mode) == 0o755
    # and back out of the mount
    listing = sh("tar -cf - -C %s conf | tar -tf -" % mnt.p("docker")).stdout.decode().split()
    assert sorted(listing) == sorted(["conf/", "conf/sub/", "conf/sub/deeper/"] + list(files))


def test_mkdir_p_and_write(docker, mnt):
    rev = docker.revision()
    sh("mkdir -p " + mnt.p("docker/a/b/c"))
    assert os.path.isdir(mnt.p("docker/a/b/c"))
    assert docker.revision() == rev and docker.keys("/docker/a") == []
    sh("echo hi > " + mnt.p("docker/a/b/c/f"))
    assert docker.keys("/docker/a", with_values=True) == {b"/docker/a/b/c/f": b"hi\n"}
    assert docker.revision() == rev + 1


def test_rm(docker, mnt):
    sh("rm " + mnt.p("docker/node/n02"))
    assert docker.keys("/docker/node/") == [b"/docker/node/n01", b"/docker/node/n03"]
    assert ls(mnt.p("docker/node")) == ["n01", "n03"]
    assert not os.path.exists(mnt.p("docker/node/n02"))


def test_rm_r(docker, mnt):
    sh("rm -r " + mnt.p("docker/node"))
    assert docker.keys("/docker/node/") == []
    assert docker.keys("/docker/") == [b"/docker/service/s01", b"/docker/service/s02"]
    assert ls(mnt.p("docker")) == ["service"]
    assert not os.path.exists(mnt.p("docker/node"))


def test_truncate(docker, mnt):
    f = mnt.p("docker/service/s01")
    sh("truncate -s 2 " + f)
    assert docker.get("/docker/service/s01") == b"10"
    assert os.stat(f).st_size == 2 and read(f) == b"10"
    sh("truncate -s 5 " + f)
    assert docker.get("/docker/service/s01") == b"10\0\0\0"
    assert read(f) == b"10\0\0\0"


def test_append(docker, mnt):
    old = docker.kv("/docker/service/s02")
    sh("echo -n 8 >> " + mnt.p("docker/service/s02"))
    kv = docker.kv("/docker/service/s02")
    assert kv["value"] == b"10078" and kv["version"] == old["version"] + 1
    assert read(mnt.p("docker/service/s02")) == b"10078"


def test_ls_R_find_grep(docker, mnt):
    out = sh("cd %s && ls -R docker" % mnt.path).stdout.decode()
    assert out.split("\n\n") == [
        "docker:\nnode\nservice",
        "docker/node:\nn01\nn02\nn03",
        "docker/service:\ns01\ns02\n",
    ]
    out = sh("cd %s && find docker -type f | sort" % mnt.path).stdout.decode().split()
    assert out == [k.decode().lstrip("/") for k in sorted(DOCKER)]
    out = sh("cd %s && find docker -type d | sort" % mnt.path).stdout.decode().split()
    assert out == ["docker", "docker/node", "docker/service"]
    out = sh("cd %s && grep -r 192.168.100 docker | sort" % mnt.path).stdout.decode()
    assert out.splitlines() == ["docker/node/n01:192.168.100.111",
                                "docker/node/n02:192.168.100.112",
                                "docker/node/n03:192.168.100.113"]
    out = sh("cd %s && grep -rl 1007 ." % mnt.path).stdout.decode()
    assert out.split() == ["./docker/service/s02"]


def test_df(docker, mnt):
    out = sh("df " + mnt.path).stdout.decode().splitlines()
    assert len(out) == 2 and out[1].endswith(mnt.path)
    st = os.statvfs(mnt.path)
    assert st.f_bsize > 0 and st.f_namemax >= 255


def test_fusermount_u(docker, mnt):
    assert read(mnt.p("docker/node/n01")) == b"192.168.100.111"
    problems = mnt.close()
    assert problems == []
    assert not is_etcdfs_mounted(mnt.path)
    assert mnt.proc.returncode == 0
    # the keys stay in etcd, the mount point is an empty directory again
    assert docker.keys("/docker/", with_values=True) == DOCKER
    assert os.listdir(mnt.path) == []


def test_readme_quick_start(etcd, mounter):
    """The README's commands, with the daemon in the background as there."""
    etcd.ctl("put", "/docker/node/n01", "192.168.100.111")
    etcd.ctl("put", "/docker/service/s01", "1005")
    m = mounter(etcd=etcd, foreground=False)
    assert ls(m.p("docker/node")) == ["n01"]
    assert sh("cat " + m.p("docker/node/n01")).stdout == b"192.168.100.111"
    sh("echo -n 1009 > " + m.p("docker/service/s03"))
    assert etcd.ctl("get", "/docker/service/s03") == b"/docker/service/s03\n1009\n"
    out = sh("getfattr -d " + m.p("docker/node/n01")).stdout.decode()
    for name in ("create_revision", "mod_revision", "version", "lease"):
        assert "user.etcd.%s=" % name in out
    assert m.close() == []
    assert not is_etcdfs_mounted(m.path)
