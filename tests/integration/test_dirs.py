"""Directories and names: mkdir (in memory until a key is written), rmdir,
rm, rm -r, and rename as one etcd transaction (EXDEV beyond its limit)."""
import errno
import os
import stat

from harness import attempt, converge, errno_of, read, sh, write


def test_mkdir_lives_in_memory(etcd, mnt):
    rev = etcd.revision()
    os.mkdir(mnt.p("d"))
    sh("mkdir -p " + mnt.p("d/e/f"))
    assert os.path.isdir(mnt.p("d/e/f"))
    assert os.listdir(mnt.p("d")) == ["e"] and os.listdir(mnt.p("d/e/f")) == []
    assert stat.S_IMODE(os.stat(mnt.p("d/e")).st_mode) == 0o755
    assert "d" in os.listdir(mnt.path)
    assert etcd.keys() == [] and etcd.revision() == rev


def test_mkdir_p_then_write(etcd, mnt):
    sh("mkdir -p %s && echo x > %s" % (mnt.p("a/b"), mnt.p("a/b/c")))
    assert etcd.keys(with_values=True) == {b"/a/b/c": b"x\n"}
    assert read(mnt.p("a/b/c")) == b"x\n"
    # the key now carries the directories: they stay after a remote change
    etcd.put("/a/b/d", "y")
    converge(("ls a/b", lambda: sorted(os.listdir(mnt.p("a/b"))), [["c"], ["c", "d"]]))


def test_mkdir_existing(etcd, mnt):
    etcd.put("/ex/f", "v")
    assert errno_of(os.mkdir, mnt.p("ex")) == errno.EEXIST
    assert errno_of(os.mkdir, mnt.p("ex/f")) == errno.EEXIST
    os.mkdir(mnt.p("loc"))
    assert errno_of(os.mkdir, mnt.p("loc")) == errno.EEXIST
    assert etcd.keys() == [b"/ex/f"]


def test_rmdir(etcd, mnt):
    etcd.put("/full/k", "v")
    etcd.put("/full/sub/k", "v")
    assert errno_of(os.rmdir, mnt.p("full")) == errno.ENOTEMPTY
    assert errno_of(os.rmdir, mnt.p("full/sub")) == errno.ENOTEMPTY
    assert sh("rmdir " + mnt.p("full"), check=False).returncode != 0
    assert etcd.keys() == [b"/full/k", b"/full/sub/k"]
    assert os.path.isdir(mnt.p("full/sub"))

    os.mkdir(mnt.p("empty"))
    os.rmdir(mnt.p("empty"))
    assert not os.path.exists(mnt.p("empty"))
    assert errno_of(os.rmdir, mnt.p("empty")) == errno.ENOENT
    assert errno_of(os.rmdir, mnt.p("full/k")) == errno.ENOTDIR
    sh("mkdir -p x/y/z && rmdir -p x/y/z", cwd=mnt.path)
    assert not os.path.exists(mnt.p("x"))
    assert etcd.keys() == [b"/full/k", b"/full/sub/k"]


def test_rm_deletes_one_key(etcd, mnt):
    for k in ("/f", "/f2", "/fdir/x", "/g"):
        etcd.put(k, "v")
    os.unlink(mnt.p("f"))
    assert etcd.keys() == [b"/f2", b"/fdir/x", b"/g"]
    sh("rm " + mnt.p("g"))
    assert etcd.keys() == [b"/f2", b"/fdir/x"]
    assert errno_of(os.unlink, mnt.p("f")) == errno.ENOENT
    assert errno_of(os.unlink, mnt.p("fdir")) in (errno.EISDIR, errno.EPERM)
    assert sorted(os.listdir(mnt.path)) == ["f2", "fdir"]


def test_rm_r(etcd, mnt):
    keys = ["/dir/a", "/dir/b/c", "/dir/b/d/e", "/dir/%x", "/dir//y"]
    for k in keys + ["/dirx", "/dir-y/z", "/di"]:
        etcd.put(k, k)
    sh("rm -r " + mnt.p("dir"))
    assert etcd.keys("/dir/") == []
    assert etcd.keys() == [b"/di", b"/dir-y/z", b"/dirx"]
    assert not os.path.exists(mnt.p("dir"))
    assert sorted(os.listdir(mnt.path)) == ["di", "dir-y", "dirx"]


def test_rm_r_large(etcd, mnt):
    etcd.put_many(("/many/d%d/k%03d" % (i % 7, i), "v") for i in range(700))
    etcd.put("/keep", "v")
    sh("rm -r " + mnt.p("many"), timeout=120)
    assert etcd.keys() == [b"/keep"]


def test_find_delete(etcd, mnt):
    for k in ("/fd/a/1", "/fd/a/2", "/fd/b/3", "/fd/4"):
        etcd.put(k, "v")
    sh("find %s -delete" % mnt.p("fd"))
    assert etcd.keys() == []
    assert not os.path.exists(mnt.p("fd"))


def test_rename_file(etcd, mnt):
    etcd.put("/src", "value")
    lease = etcd.lease_grant(600)
    etcd.put("/leased", "lv", lease=lease)
    rev = etcd.revision()
    os.rename(mnt.p("src"), mnt.p("dst"))
    kv = etcd.kv("/dst")
    assert kv["value"] == b"value"
    assert etcd.get("/src") is None
    assert etcd.revision() == rev + 1 == kv["mod_revision"]
    assert read(mnt.p("dst")) == b"value"
    assert errno_of(os.stat, mnt.p("src")) == errno.ENOENT
    # keys keep their lease
    os.rename(mnt.p("leased"), mnt.p("leased2"))
    assert etcd.kv("/leased2")["lease"] == lease


def test_rename_over_existing_file(etcd, mnt):
    etcd.put("/a", "new")
    etcd.put("/b", "old")
    rev = etcd.revision()
    sh("mv %s %s" % (mnt.p("a"), mnt.p("b")))
    assert etcd.keys(with_values=True) == {b"/b": b"new"}
    assert etcd.revision() == rev + 1
    assert read(mnt.p("b")) == b"new"
    assert os.listdir(mnt.path) == ["b"]


def test_rename_into_other_directory(etcd, mnt):
    etcd.put("/x/f", "v")
    etcd.put("/y/g", "w")
    os.rename(mnt.p("x/f"), mnt.p("y/f"))
    assert etcd.keys(with_values=True) == {b"/y/f": b"v", b"/y/g": b"w"}
    os.mkdir(mnt.p("z"))
    os.rename(mnt.p("y/g"), mnt.p("z/g"))
    assert etcd.keys(with_values=True) == {b"/y/f": b"v", b"/z/g": b"w"}
    assert os.listdir(mnt.p("z")) == ["g"]


def test_rename_small_directory(etcd, mnt):
    keys = {"/d1/a": "1", "/d1/b/c": "2", "/d1/b/d/e": "3", "/d1/%x": "4", "/d1": "self",
            "/d1x": "sibling"}
    for k, v in keys.items():
        etcd.put(k, v)
    rev = etcd.revision()
    os.rename(mnt.p("d1"), mnt.p("d2"))
    assert etcd.revision() == rev + 1
    assert etcd.keys(with_values=True) == {
        b"/d2/a": b"1", b"/d2/b/c": b"2", b"/d2/b/d/e": b"3", b"/d2/%x": b"4",
        b"/d2": b"self", b"/d1x": b"sibling"}
    assert sorted(os.listdir(mnt.p("d2"))) == ["%25x", "%self", "a", "b"]
    assert read(mnt.p("d2/b/d/e")) == b"3"
    assert not os.path.exists(mnt.p("d1"))


def test_rename_directory_with_60_keys(etcd, mnt):
    etcd.put_many(("/sixty/k%02d" % i, "v%d" % i) for i in range(60))
    rev = etcd.revision()
    sh("mv %s %s" % (mnt.p("sixty"), mnt.p("moved")))
    assert etcd.revision() == rev + 1
    assert etcd.keys(with_values=True) == {b"/moved/k%02d" % i: b"v%d" % i for i in range(60)}


def test_rename_large_directory_exdev(etcd, mnt):
    want = {b"/large/d%d/k%03d" % (i % 3, i): b"v%d" % i for i in range(150)}
    etcd.put_many((k.decode(), v.decode()) for k, v in want.items())
    rev = etcd.revision()
    assert errno_of(os.rename, mnt.p("large"), mnt.p("renamed")) == errno.EXDEV
    assert etcd.revision() == rev and etcd.keys(with_values=True) == want
    # mv falls back to copy and delete
    sh("mv %s %s" % (mnt.p("large"), mnt.p("renamed")), timeout=120)
    assert etcd.keys(with_values=True) == {
        k.replace(b"/large/", b"/renamed/"): v for k, v in want.items()}
    assert not os.path.exists(mnt.p("large"))
    assert len(os.listdir(mnt.p("renamed/d1"))) == 50


def test_rename_local_directory(etcd, mnt):
    os.mkdir(mnt.p("empty"))
    os.rename(mnt.p("empty"), mnt.p("still-empty"))
    assert os.listdir(mnt.path) == ["still-empty"]
    assert etcd.keys() == []


def test_editor_style_replace(etcd, mnt):
    """Write a temporary file, then rename it over the original."""
    etcd.put("/cfg/app.conf", "port=1\n")
    tmp = mnt.p("cfg/.app.conf.swp")
    write(tmp, "port=2\n")
    assert etcd.get("/cfg/.app.conf.swp") == b"port=2\n"
    os.rename(tmp, mnt.p("cfg/app.conf"))
    assert etcd.keys("/cfg/", with_values=True) == {b"/cfg/app.conf": b"port=2\n"}
    sh("sed -i 's/port=2/port=3/' " + mnt.p("cfg/app.conf"))
    assert etcd.keys("/cfg/", with_values=True) == {b"/cfg/app.conf": b"port=3\n"}


def test_directory_listing_follows_remote_changes(etcd, mnt):
    etcd.put("/l/a", "v")
    assert os.listdir(mnt.p("l")) == ["a"]
    etcd.put("/l/b", "v")
    etcd.put("/l/sub/c", "v")
    # the two puts may show one after the other, never otherwise
    converge(("ls l", lambda: sorted(os.listdir(mnt.p("l"))),
              [["a"], ["a", "b"], ["a", "b", "sub"]]))
    assert read(mnt.p("l/sub/c")) == b"v"
    # one DeleteRange: all of l goes at once
    etcd.delete("/l/", prefix=True)
    # ESTALE: listed in the moment the daemon knows and the kernel not yet
    converge(("ls l", lambda: attempt(lambda: sorted(os.listdir(mnt.p("l")))),
              [["a", "b", "sub"], "ESTALE", "ENOENT"]),
             ("ls", lambda: os.listdir(mnt.path), [["l"], []]))
    assert errno_of(os.stat, mnt.p("l/sub/c")) == errno.ENOENT
