"""How keys map to paths (escapes, %self, long names, odd bytes, big
listings) and to attributes (mode, owner, size, times, inode numbers)."""
import errno
import os
import random
import stat
import time

from harness import attempt, converge, errno_of, errname, read, sh, wait_for, write

ODD_CREATE_NAMES = ["a%b", "%zz", "%41", "%2e", "x%2E", "%2E%2Ex", "%2", "%%", "%2E%2E%2E",
                    "%2f", "%0"]


def names(path):
    return sorted(os.listdir(path))


def test_value_and_children(etcd, mnt):
    etcd.put("/a", "va")
    etcd.put("/a/b", "vb")
    assert os.path.isdir(mnt.p("a"))
    assert names(mnt.p("a")) == ["%self", "b"]
    assert read(mnt.p("a/%self")) == b"va"
    assert read(mnt.p("a/b")) == b"vb"
    assert os.stat(mnt.p("a/%self")).st_size == 2
    assert stat.S_ISREG(os.stat(mnt.p("a/%self")).st_mode)

    write(mnt.p("a/%self"), "new value")
    assert etcd.keys("/a", with_values=True) == {b"/a": b"new value", b"/a/b": b"vb"}
    assert read(mnt.p("a/%self")) == b"new value"

    os.unlink(mnt.p("a/%self"))
    assert etcd.keys("/a", with_values=True) == {b"/a/b": b"vb"}
    assert os.path.isdir(mnt.p("a"))
    assert names(mnt.p("a")) == ["b"]


def test_file_turns_into_directory_and_back(etcd, mnt):
    etcd.put("/k", "file")
    assert os.path.isfile(mnt.p("k")) and read(mnt.p("k")) == b"file"
    # k is the file or the directory, never anything in between
    probes = [("read k", lambda: attempt(read, mnt.p("k")), [b"file", "EISDIR"]),
              ("ls k", lambda: attempt(names, mnt.p("k")), ["ENOTDIR", ["%self", "c"]]),
              ("read k/%self", lambda: attempt(read, mnt.p("k/%self")), ["ENOTDIR", b"file"])]
    etcd.put("/k/c", "child")
    converge(*probes)
    assert os.path.isdir(mnt.p("k"))
    etcd.delete("/k/c")
    converge(*[(what, obs, states[::-1]) for what, obs, states in probes])
    assert os.path.isfile(mnt.p("k"))


def test_self_only_shown_with_children(etcd, mnt):
    etcd.put("/only/f", "x")
    assert names(mnt.p("only")) == ["f"]
    assert errno_of(os.stat, mnt.p("only/%self")) == errno.ENOENT
    assert errno_of(os.stat, mnt.p("only/f/%self")) in (errno.ENOENT, errno.ENOTDIR)


def test_empty_components(etcd, mnt):
    etcd.put("/e1//y", "vy")          # empty component
    etcd.put("/e2/", "vslash")        # trailing slash
    etcd.put("/e3/", "v3")            # both: e3/% is a directory with a value
    etcd.put("/e3//y", "v3y")
    assert names(mnt.p("e1")) == ["%"]
    assert os.path.isdir(mnt.p("e1/%"))
    assert names(mnt.p("e1/%")) == ["y"]
    assert read(mnt.p("e1/%/y")) == b"vy"
    assert names(mnt.p("e2")) == ["%"]
    assert os.path.isfile(mnt.p("e2/%"))
    assert read(mnt.p("e2/%")) == b"vslash"
    assert names(mnt.p("e3/%")) == ["%self", "y"]
    assert read(mnt.p("e3/%/%self")) == b"v3"
    assert read(mnt.p("e3/%/y")) == b"v3y"

    # and the other way round
    write(mnt.p("e1/%/z"), "vz")
    assert etcd.get("/e1//z") == b"vz"
    os.mkdir(mnt.p("e4"))
    write(mnt.p("e4/%"), "v4")
    assert etcd.get("/e4/") == b"v4"
    assert etcd.keys("/e4") == [b"/e4/"]


def test_dot_components(etcd, mnt):
    etcd.put("/d/./a", "va")
    etcd.put("/d/../b", "vb")
    etcd.put("/d/.hidden", "vh")
    etcd.put("/d/...", "v3")
    assert names(mnt.p("d")) == sorted(["%2E", "%2E%2E", ".hidden", "..."])
    assert read(mnt.p("d/%2E/a")) == b"va"
    assert read(mnt.p("d/%2E%2E/b")) == b"vb"
    assert read(mnt.p("d/.hidden")) == b"vh"
    assert read(mnt.p("d/...")) == b"v3"
    # the kernel's . and .. are untouched
    assert os.path.samefile(mnt.p("d/."), mnt.p("d"))

    write(mnt.p("d/%2E%2E/c"), "vc")
    assert etcd.get("/d/../c") == b"vc"
    os.mkdir(mnt.p("f"))
    write(mnt.p("f/%2E"), "dot")
    write(mnt.p("f/%2E%2E"), "dotdot")
    assert etcd.keys("/f", with_values=True) == {b"/f/.": b"dot", b"/f/..": b"dotdot"}


def test_percent_escapes(etcd, mnt):
    etcd.put("/pc/100%", "v1")
    etcd.put("/pc/%", "v2")
    etcd.put("/pc/%25", "v3")
    etcd.put("/pc/%self", "v4")
    etcd.put("/pc/%2E", "v5")
    assert names(mnt.p("pc")) == sorted(["100%25", "%25", "%2525", "%25self", "%252E"])
    assert read(mnt.p("pc/100%25")) == b"v1"
    assert read(mnt.p("pc/%25")) == b"v2"
    assert read(mnt.p("pc/%2525")) == b"v3"
    assert read(mnt.p("pc/%25self")) == b"v4"
    assert read(mnt.p("pc/%252E")) == b"v5"

    write(mnt.p("pc/new%25x"), "made")
    assert etcd.get("/pc/new%x") == b"made"
    assert "new%25x" in os.listdir(mnt.p("pc"))


def test_names_with_stray_percent_are_refused(etcd, mnt):
    etcd.put("/pc/a%b", "stored by etcdctl")   # shown as a%25b only
    os.mkdir(mnt.p("new"))
    rev = etcd.revision()
    for name in ODD_CREATE_NAMES:
        got = errno_of(os.open, mnt.p("new", name), os.O_CREAT | os.O_WRONLY, 0o644)
        assert got == errno.EINVAL, "create %r: %s" % (name, errname(got))
        got = errno_of(os.mkdir, mnt.p("new", name))
        assert got == errno.EINVAL, "mkdir %r: %s" % (name, errname(got))
        got = errno_of(os.stat, mnt.p("pc", name))
        assert got == errno.ENOENT, "stat %r: %s" % (name, errname(got))
    assert os.listdir(mnt.p("new")) == []
    assert etcd.revision() == rev
    assert names(mnt.p("pc")) == ["a%25b"]
    assert read(mnt.p("pc/a%25b")) == b"stored by etcdctl"
    # a shell redirect gets the same answer
    p = sh("echo x > '%s'" % mnt.p("new/a%b"), check=False)
    assert p.returncode != 0 and b"Invalid argument" in p.stderr


def test_long_components_hidden(etcd, mnt):
    etcd.put("/long/" + "a" * 300, "too long")
    etcd.put("/long/" + "b" * 255, "just fits")
    etcd.put("/long/" + "c" * 253 + "%", "too long once escaped")
    etcd.put("/long/" + "d" * 252 + "%", "fits escaped")
    etcd.put("/long/short", "s")
    etcd.put("/long/" + "e" * 300 + "/child", "under a long directory")
    assert names(mnt.p("long")) == sorted(["b" * 255, "d" * 252 + "%25", "short"])
    assert read(mnt.p("long", "b" * 255)) == b"just fits"
    assert read(mnt.p("long", "d" * 252 + "%25")) == b"fits escaped"
    assert sh("ls %s | wc -l" % mnt.p("long")).stdout.strip() == b"3"
    # the keys themselves are untouched
    assert len(etcd.keys("/long/")) == 6


def test_nul_byte_in_key(etcd, mnt):
    write(mnt.p("n%00ul"), "x")
    kvs = etcd.kvs("/n", prefix=True)
    assert [(kv["key"], kv["value"]) for kv in kvs] == [(b"/n\0ul", b"x")]
    assert names(mnt.path) == ["n%00ul"]
    assert read(mnt.p("n%00ul")) == b"x"
    sh("echo -n more >> '%s'" % mnt.p("n%00ul"))
    assert etcd.kvs("/n", prefix=True)[0]["value"] == b"xmore"
    os.unlink(mnt.p("n%00ul"))
    assert etcd.kvs("/n", prefix=True) == []


def test_non_utf8_and_unicode_names(etcd, mnt):
    etcd.put(b"/u/\xff\xfe", "latin")
    etcd.put("/u/\u00e9t\u00e9", "utf8")
    etcd.put(b"/u/sp ace\ttab\nnl", "ws")
    assert sorted(os.listdir(mnt.pb("u"))) == sorted(
        [b"\xff\xfe", "\u00e9t\u00e9".encode(), b"sp ace\ttab\nnl"])
    assert read(mnt.pb("u", b"\xff\xfe")) == b"latin"
    assert read(mnt.pb("u", "\u00e9t\u00e9".encode())) == b"utf8"
    assert read(mnt.pb("u", b"sp ace\ttab\nnl")) == b"ws"
    write(mnt.pb("u", b"\xe9\xff"), "made")
    assert etcd.get(b"/u/\xe9\xff") == b"made"


def test_name_prefix_of_sibling(etcd, mnt):
    """foo.txt, foo-x, foo0 and fo sort around the directory foo/."""
    for k in ("/sh/foo.txt", "/sh/foo/bar", "/sh/foo-x", "/sh/foo0", "/sh/fo", "/sh/foo/baz/q"):
        etcd.put(k, k)
    assert names(mnt.p("sh")) == sorted(["foo.txt", "foo", "foo-x", "foo0", "fo"])
    assert os.path.isdir(mnt.p("sh/foo"))
    assert names(mnt.p("sh/foo")) == ["bar", "baz"]
    for f in ("foo.txt", "foo-x", "foo0", "fo"):
        assert os.path.isfile(mnt.p("sh", f)) and read(mnt.p("sh", f)) == b"/sh/" + f.encode()
    assert read(mnt.p("sh/foo/baz/q")) == b"/sh/foo/baz/q"
    assert sh("ls -l %s" % mnt.p("sh")).stdout.count(b"?") == 0


def test_large_listing_is_never_cut(etcd, mnt):
    keys = ["/big/k%05d" % i for i in range(3000)]
    etcd.put_many((k, "v") for k in keys)
    assert len(etcd.keys("/big/")) == 3000
    got = os.listdir(mnt.p("big"))
    assert len(got) == 3000
    assert sorted(got) == [k[5:] for k in keys]
    assert sh("ls %s | wc -l" % mnt.p("big")).stdout.strip() == b"3000"
    assert read(mnt.p("big/k02999")) == b"v"


def test_listing_with_big_subdirectory(etcd, mnt):
    etcd.put_many(("/big2/sub/k%05d" % i, "v") for i in range(2500))
    etcd.put_many(("/big2/f%d" % i, "v") for i in range(5))
    etcd.put("/big2/sub2/x", "v")
    assert names(mnt.p("big2")) == ["f0", "f1", "f2", "f3", "f4", "sub", "sub2"]
    assert sh("find %s -type f | wc -l" % mnt.p("big2")).stdout.strip() == b"2506"


def test_binary_values_round_trip(etcd, mnt, tmp_path):
    rnd = random.Random(1)
    data = bytes(range(256)) + b"\0" * 100 + bytes(rnd.randrange(256) for _ in range(100000))
    local = tmp_path / "blob"
    local.write_bytes(data)
    sh("cp %s %s" % (local, mnt.p("blob")))
    assert etcd.get("/blob") == data
    assert os.stat(mnt.p("blob")).st_size == len(data)
    sh("cmp %s %s" % (local, mnt.p("blob")))

    other = b"\n\0\xff" + bytes(rnd.randrange(256) for _ in range(5000)) + b"\n"
    etcd.put("/blob2", other)
    assert etcd.get("/blob2") == other
    converge(("size of blob2", lambda: attempt(lambda: os.stat(mnt.p("blob2")).st_size),
              ["ENOENT", len(other)]))
    assert read(mnt.p("blob2")) == other
    sh("cp %s %s" % (mnt.p("blob2"), tmp_path / "copy"))
    assert (tmp_path / "copy").read_bytes() == other


def test_modes_owner_and_size_before_open(etcd, mnt):
    etcd.put("/attr/f", b"z" * 12345)
    etcd.put("/attr/empty", b"")
    st = os.stat(mnt.p("attr/f"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o644
    assert st.st_size == 12345
    assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    st = os.stat(mnt.p("attr/empty"))
    assert stat.S_ISREG(st.st_mode) and st.st_size == 0
    for d in ("attr", ""):
        st = os.stat(mnt.p(d))
        assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
        assert (st.st_uid, st.st_gid) == (os.getuid(), os.getgid())
    os.mkdir(mnt.p("attr/local"))
    st = os.stat(mnt.p("attr/local"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o755
    # the size is there for ls -l too, before anything reads the file
    out = sh("ls -ln %s" % mnt.p("attr")).stdout.decode()
    assert [ln.split()[4] for ln in out.splitlines() if ln.endswith(" f")] == ["12345"]


def converge_value(path, old, new):
    """Reads path until it shows new.  Every read on the way must be the
    whole old value or the whole new one and every size one of theirs;
    neither may show old again once it showed new."""
    converge(("read", lambda: read(path), [old, new]),
             ("size", lambda: os.stat(path).st_size, [len(old), len(new)]))


def test_remote_changes_show(etcd, mnt):
    etcd.put("/s", "hello")
    assert read(mnt.p("s")) == b"hello"
    etcd.put("/s", "hello world")
    converge_value(mnt.p("s"), b"hello", b"hello world")
    etcd.put("/s", "hi")
    converge_value(mnt.p("s"), b"hello world", b"hi")
    etcd.delete("/s")
    converge(("read s", lambda: attempt(read, mnt.p("s")), [b"hi", "ENOENT"]),
             ("ls", lambda: names(mnt.path), [["s"], []]))
    assert errno_of(os.stat, mnt.p("s")) == errno.ENOENT
    etcd.put("/new/key", "v")
    converge(("read new/key", lambda: attempt(read, mnt.p("new/key")), ["ENOENT", b"v"]),
             ("ls", lambda: names(mnt.path), [[], ["new"]]))


def test_remote_changes_show_within_bound(etcd, mnt):
    """The cache may lag behind etcd by the watch's delay, never longer."""
    vals = [b"v0", b"v1", b"v2v2", b"short", b"a much longer value this time", b"w"]
    etcd.put("/lag", vals[0])
    assert read(mnt.p("lag")) == vals[0]
    for old, new in zip(vals, vals[1:]):
        etcd.put("/lag", new)
        converge_value(mnt.p("lag"), old, new)


def test_times_follow_mod_revision(etcd, mnt):
    etcd.put("/t", "1")
    st1 = os.stat(mnt.p("t"))
    time.sleep(1.2)
    st2 = os.stat(mnt.p("t"))
    assert (st2.st_mtime_ns, st2.st_ctime_ns) == (st1.st_mtime_ns, st1.st_ctime_ns)
    etcd.put("/t", "2")
    old = (st1.st_mtime_ns, st1.st_ctime_ns)

    def check(obs, seen):
        # both times move together, forward, and once
        assert obs == old or (obs[0] > old[0] and obs[1] > old[1]), "times %r, before %r" \
            % (obs, old)
        moved = [o for o in seen if o != old]
        assert not moved or obs == moved[0], "times changed again: %r, then %r" % (moved[0], obs)
    def times():
        st = os.stat(mnt.p("t"))
        return (st.st_mtime_ns, st.st_ctime_ns)
    wait_for(times, lambda obs: obs != old, check, what="mtime and ctime of t")
    st3 = os.stat(mnt.p("t"))
    assert st3.st_mtime >= time.time() - 30
    time.sleep(1.2)
    write(mnt.p("t"), "3")
    st4 = os.stat(mnt.p("t"))
    assert st4.st_mtime_ns > st3.st_mtime_ns


def test_inode_numbers_stable(etcd, mnt):
    etcd.put("/i/a", "1")
    etcd.put("/i/b", "2")
    ia = os.stat(mnt.p("i/a")).st_ino
    ib = os.stat(mnt.p("i/b")).st_ino
    idir = os.stat(mnt.p("i")).st_ino
    assert len({ia, ib, idir}) == 3
    etcd.put("/i/a", "changed")
    write(mnt.p("i/b"), "written")
    os.listdir(mnt.p("i"))
    assert os.stat(mnt.p("i/a")).st_ino == ia
    assert os.stat(mnt.p("i/b")).st_ino == ib
    assert os.stat(mnt.p("i")).st_ino == idir
    assert {e.name: e.inode() for e in os.scandir(mnt.p("i"))} == {"a": ia, "b": ib}


def test_chmod_chown(etcd, mnt):
    etcd.put("/p/f", "v")
    rev = etcd.revision()
    f, d = mnt.p("p/f"), mnt.p("p")
    os.chmod(f, 0o644)
    os.chmod(d, 0o755)
    os.chown(f, os.getuid(), os.getgid())
    os.chown(d, -1, os.getgid())
    sh("chmod 644 %s && chmod u+rw,go+r %s && chown %d:%d %s"
       % (f, f, os.getuid(), os.getgid(), f))
    assert errno_of(os.chmod, f, 0o600) == errno.EPERM
    assert errno_of(os.chmod, f, 0o755) == errno.EPERM
    assert errno_of(os.chmod, d, 0o700) == errno.EPERM
    assert errno_of(os.chown, f, os.getuid() + 1, -1) == errno.EPERM
    assert errno_of(os.chown, d, -1, os.getgid() + 1) == errno.EPERM
    assert sh("chmod 600 " + f, check=False).returncode != 0
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o644
    assert etcd.revision() == rev


def test_explicit_times_accepted_without_effect(etcd, mnt):
    etcd.put("/tm", "v")
    before = os.stat(mnt.p("tm"))
    rev = etcd.revision()
    sh("touch -d 2001-02-03 " + mnt.p("tm"))
    os.utime(mnt.p("tm"), (1e9, 1e9))
    after = os.stat(mnt.p("tm"))
    assert after.st_mtime_ns == before.st_mtime_ns
    assert etcd.revision() == rev
    assert etcd.get("/tm") == b"v"


def test_missing_names(etcd, mnt):
    etcd.put("/m/x", "v")
    assert errno_of(os.stat, mnt.p("nope")) == errno.ENOENT
    assert errno_of(os.open, mnt.p("m/nope"), os.O_RDONLY) == errno.ENOENT
    assert errno_of(os.listdir, mnt.p("nope")) == errno.ENOENT
    assert errno_of(os.listdir, mnt.p("m/x")) == errno.ENOTDIR
    assert errno_of(os.stat, mnt.p("m/x/y")) == errno.ENOTDIR
