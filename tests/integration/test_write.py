"""Write semantics: one Put per close of a written file, none for readers,
buffers that support offsets, appends and truncation, ESTALE instead of lost
updates, EFBIG for values etcd refuses, concurrent writers."""
import errno
import os
import subprocess
import time

from harness import converge, errname, errno_of, read, run, sh, write


def test_reading_never_writes(etcd, mnt):
    etcd.put("/r", "value")
    before = etcd.kv("/r")
    rev = etcd.revision()
    for _ in range(3):
        assert sh("cat " + mnt.p("r")).stdout == b"value"
    assert read(mnt.p("r")) == b"value"
    fd = os.open(mnt.p("r"), os.O_RDONLY)
    assert os.read(fd, 100) == b"value"
    os.close(fd)
    sh("head -c 2 %s >/dev/null; wc -c %s; cp %s /dev/null" % ((mnt.p("r"),) * 3))
    assert etcd.kv("/r") == before
    assert etcd.revision() == rev


def test_echo_is_exactly_one_put(etcd, mnt):
    etcd.put("/e", "old value")
    v = etcd.kv("/e")["version"]
    sh("echo hello > " + mnt.p("e"))
    kv = etcd.kv("/e")
    assert kv["value"] == b"hello\n"
    assert kv["version"] == v + 1
    # a new file: created by exactly one Put too
    rev = etcd.revision()
    sh("echo new > " + mnt.p("fresh"))
    kv = etcd.kv("/fresh")
    assert kv["value"] == b"new\n" and kv["version"] == 1
    assert kv["create_revision"] == kv["mod_revision"] == rev + 1 == etcd.revision()


def test_truncating_open_publishes_nothing_before_close(etcd, mnt):
    etcd.put("/tr", "old")
    rev = etcd.revision()
    fd = os.open(mnt.p("tr"), os.O_WRONLY | os.O_TRUNC)
    try:
        # readers still see the old value: no empty value was published
        assert etcd.get("/tr") == b"old" and etcd.revision() == rev
        os.write(fd, b"new")
        assert etcd.get("/tr") == b"old"
    finally:
        os.close(fd)
    assert etcd.get("/tr") == b"new"
    assert etcd.revision() == rev + 1


def test_many_writes_one_put(etcd, mnt):
    rev = etcd.revision()
    chunk = bytes(range(256)) * 4
    with open(mnt.p("many"), "wb", buffering=0) as f:
        for _ in range(200):
            assert f.write(chunk) == len(chunk)
        assert etcd.get("/many") is None and etcd.revision() == rev
    kv = etcd.kv("/many")
    assert kv["value"] == chunk * 200
    assert kv["version"] == 1
    assert etcd.revision() == rev + 1
    assert os.stat(mnt.p("many")).st_size == len(chunk) * 200


def test_touch_creates_empty_key(etcd, mnt):
    sh("touch " + mnt.p("empty"))
    kv = etcd.kv("/empty")
    assert kv is not None and kv["value"] == b""
    assert os.stat(mnt.p("empty")).st_size == 0
    assert "empty" in os.listdir(mnt.path)
    # touching again keeps the value and makes a new revision (mtime moves)
    sh("touch " + mnt.p("empty"))
    again = etcd.kv("/empty")
    assert again["value"] == b"" and again["version"] == kv["version"] + 1
    assert again["mod_revision"] > kv["mod_revision"]


def test_overwrite_with_shorter_value(etcd, mnt):
    etcd.put("/o", "a much longer old value")
    write(mnt.p("o"), "short")
    assert etcd.get("/o") == b"short"
    assert read(mnt.p("o")) == b"short"
    assert os.stat(mnt.p("o")).st_size == 5


def test_append(etcd, mnt):
    etcd.put("/ap", "line1\n")
    v = etcd.kv("/ap")["version"]
    sh("echo line2 >> %s" % mnt.p("ap"))
    assert etcd.get("/ap") == b"line1\nline2\n"
    with open(mnt.p("ap"), "ab") as f:
        f.write(b"line3\n")
        f.flush()
        f.write(b"line4\n")
    kv = etcd.kv("/ap")
    assert kv["value"] == b"line1\nline2\nline3\nline4\n"
    assert kv["version"] == v + 2
    assert read(mnt.p("ap")) == kv["value"]
    # appending to a key that does not exist yet creates it
    sh("echo x >> %s" % mnt.p("ap-new"))
    assert etcd.get("/ap-new") == b"x\n"


def test_write_at_offsets(etcd, mnt):
    etcd.put("/off", "0123456789")
    sh("printf AB | dd of=%s bs=1 seek=3 conv=notrunc status=none" % mnt.p("off"))
    assert etcd.get("/off") == b"012AB56789"
    fd = os.open(mnt.p("off"), os.O_RDWR)
    try:
        assert os.pwrite(fd, b"Z", 0) == 1
        assert os.pwrite(fd, b"END", 12) == 3   # past the end: a hole of zeros
        assert os.pread(fd, 100, 0) == b"Z12AB56789\0\0END"
    finally:
        os.close(fd)
    assert etcd.get("/off") == b"Z12AB56789\0\0END"
    assert read(mnt.p("off")) == b"Z12AB56789\0\0END"


def test_truncate_shrink_and_extend(etcd, mnt):
    etcd.put("/tt", "abcdef")
    os.truncate(mnt.p("tt"), 3)
    assert etcd.get("/tt") == b"abc"
    assert os.stat(mnt.p("tt")).st_size == 3
    os.truncate(mnt.p("tt"), 6)
    assert etcd.get("/tt") == b"abc\0\0\0"
    sh("truncate -s 0 " + mnt.p("tt"))
    assert etcd.get("/tt") == b""
    fd = os.open(mnt.p("tt"), os.O_RDWR)
    try:
        os.write(fd, b"hello world")
        os.ftruncate(fd, 5)
        os.ftruncate(fd, 7)
        assert os.fstat(fd).st_size == 7
    finally:
        os.close(fd)
    assert etcd.get("/tt") == b"hello\0\0"
    assert read(mnt.p("tt")) == b"hello\0\0"


def test_fsync_publishes(etcd, mnt):
    fd = os.open(mnt.p("fs"), os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    try:
        os.write(fd, b"first")
        os.fsync(fd)
        assert etcd.get("/fs") == b"first"
        os.write(fd, b" second")
    finally:
        os.close(fd)
    kv = etcd.kv("/fs")
    assert kv["value"] == b"first second" and kv["version"] == 2


def estale_case(etcd, mnt, key, flags, sync=False):
    etcd.put(key, "base")
    fd = os.open(mnt.p(key.lstrip("/")), flags)
    os.write(fd, b"mine")
    etcd.put(key, "theirs")
    err = None
    try:
        if sync:
            os.fsync(fd)
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    assert err == errno.ESTALE, "got %s" % errname(err)
    assert etcd.get(key) == b"theirs"
    # what failed to be written is never shown
    converge(("read " + key, lambda: read(mnt.p(key.lstrip("/"))), [b"base", b"theirs"]))


def test_estale_after_concurrent_change_rw(etcd, mnt):
    estale_case(etcd, mnt, "/st1", os.O_RDWR)


def test_estale_after_concurrent_change_append(etcd, mnt):
    estale_case(etcd, mnt, "/st2", os.O_WRONLY | os.O_APPEND)


def test_estale_at_fsync(etcd, mnt):
    estale_case(etcd, mnt, "/st3", os.O_RDWR, sync=True)


def test_failed_buffer_is_not_reopened(etcd, mnt):
    """Bug (fsx, 300 s run): after a close reported ESTALE, the buffer it
    failed to Put stayed while the file was still open elsewhere (here a
    dup'ed descriptor; in fsx, the RELEASE the kernel sends after close
    returns), and the next open for writing built on it, and readers saw
    it: a value etcd never held.  The next writer and reader start from
    etcd's value."""
    etcd.put("/fb", "base")
    fd = os.open(mnt.p("fb"), os.O_WRONLY | os.O_APPEND)
    keep = os.dup(fd)                   # the file stays open: no RELEASE yet
    os.write(fd, b"+mine")
    etcd.put("/fb", "theirs")
    assert errno_of(os.close, fd) == errno.ESTALE
    try:
        # a reader sees etcd's value, never the refused one
        converge(("read fb", lambda: read(mnt.p("fb")), [b"base", b"theirs"]))
        fd2 = os.open(mnt.p("fb"), os.O_RDWR | os.O_APPEND)
        try:
            assert os.read(fd2, 100) == b"theirs"
            os.write(fd2, b"+next")
        finally:
            os.close(fd2)
        assert etcd.get("/fb") == b"theirs+next"
    finally:
        os.close(keep)
    assert etcd.get("/fb") == b"theirs+next"
    assert read(mnt.p("fb")) == b"theirs+next"


def test_no_estale_without_concurrent_change(etcd, mnt):
    etcd.put("/ok", "base")
    fd = os.open(mnt.p("ok"), os.O_RDWR)
    os.pwrite(fd, b"B", 0)
    etcd.put("/other", "unrelated")   # a change elsewhere does not matter
    os.close(fd)
    assert etcd.get("/ok") == b"Base"


def test_truncating_open_replaces_concurrent_value(etcd, mnt):
    etcd.put("/rep", "base")
    fd = os.open(mnt.p("rep"), os.O_WRONLY | os.O_TRUNC)
    etcd.put("/rep", "theirs")
    os.write(fd, b"mine")
    os.close(fd)
    assert etcd.get("/rep") == b"mine"


def test_million_byte_value(etcd, mnt, tmp_path):
    data = os.urandom(1000000)
    (tmp_path / "m").write_bytes(data)
    sh("cp %s %s" % (tmp_path / "m", mnt.p("mb")))
    assert etcd.get("/mb") == data
    assert os.stat(mnt.p("mb")).st_size == 1000000
    assert read(mnt.p("mb")) == data


def efbig_case(etcd, mnt, size):
    etcd.put("/big", "previous")
    before = etcd.kv("/big")
    err = None
    fd = os.open(mnt.p("big"), os.O_WRONLY | os.O_TRUNC)
    try:
        data = os.urandom(size)
        while data:
            n = os.write(fd, data[:131072])
            data = data[n:]
    except OSError as e:
        err = e.errno
    try:
        os.close(fd)
    except OSError as e:
        err = err or e.errno
    assert err == errno.EFBIG, "got %s" % errname(err)
    assert etcd.kv("/big") == before
    assert read(mnt.p("big")) == b"previous"


def test_value_too_large_for_etcd(etcd, mnt):
    efbig_case(etcd, mnt, 1600000)


def test_value_too_large_at_write(etcd, mnt):
    efbig_case(etcd, mnt, 3 * 1024 * 1024)


def test_value_too_large_shell(etcd, mnt, tmp_path):
    etcd.put("/big2", "previous")
    (tmp_path / "b").write_bytes(b"x" * 1600000)
    p = sh("cp %s %s" % (tmp_path / "b", mnt.p("big2")), check=False)
    assert p.returncode != 0 and b"File too large" in p.stderr
    assert etcd.get("/big2") == b"previous"


def test_sixteen_concurrent_writers(etcd, mnt):
    os.mkdir(mnt.p("conc"))
    for rnd in range(4):
        procs = [subprocess.Popen(["/bin/sh", "-c", "echo -n v%d-%d > %s" %
                                   (i, rnd, mnt.p("conc/f%d" % i))],
                                  stderr=subprocess.PIPE) for i in range(16)]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
        got = etcd.keys("/conc/", with_values=True)
        assert got == {b"/conc/f%d" % i: b"v%d-%d" % (i, rnd) for i in range(16)}
    assert all(kv["version"] == 4 for kv in etcd.kvs("/conc/", prefix=True))
    for i in range(16):
        assert read(mnt.p("conc/f%d" % i)) == b"v%d-3" % i


def test_sixteen_concurrent_readers_and_writers(etcd, mnt):
    etcd.put_many(("/cr/r%d" % i, "r%d" % i) for i in range(16))
    rev = etcd.revision()
    t0 = time.monotonic()
    readers = [subprocess.Popen(["cat", mnt.p("cr/r%d" % i)], stdout=subprocess.PIPE)
               for i in range(16)]
    writers = [subprocess.Popen(["/bin/sh", "-c", "echo -n w%d > %s" % (i, mnt.p("cr/w%d" % i))])
               for i in range(16)]
    for i, p in enumerate(readers):
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0 and out == b"r%d" % i
    for p in writers:
        assert p.wait(timeout=60) == 0
    assert time.monotonic() - t0 < 30
    assert etcd.revision() == rev + 16
    got = etcd.keys("/cr/", with_values=True)
    assert len(got) == 32
    assert all(got[b"/cr/w%d" % i] == b"w%d" % i for i in range(16))


def test_python_writes_many_files(etcd, mnt):
    # a plain loop through the mount: each file one key, one revision
    rev = etcd.revision()
    for i in range(50):
        write(mnt.p("loop%02d" % i), "%d" % i)
    assert etcd.revision() == rev + 50
    assert etcd.keys("/loop", with_values=True) == {
        b"/loop%02d" % i: b"%d" % i for i in range(50)}
    assert run(["ls", mnt.path]).stdout.split() == [b"loop%02d" % i for i in range(50)]


def test_create_without_write_is_put_at_close(etcd, mnt):
    """A file created or truncated and closed without a write exists in
    etcd (empty) when close returns, not only when the kernel's release
    arrives after it; a shell's `: > f` too, still as one Put."""
    os.mkdir(mnt.p("cw"))
    for i in range(5):
        os.close(os.open(mnt.p("cw/f%d" % i), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644))
        assert etcd.get("/cw/f%d" % i) == b"", i
    # a child still holding the descriptor delays the release: the
    # opener's close alone must make the key exist, the child's close
    # must not Put again
    fd = os.open(mnt.p("cw/held"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    child = subprocess.Popen(["sleep", "1"], pass_fds=[fd])
    os.close(fd)
    try:
        assert etcd.get("/cw/held") == b""
    finally:
        child.wait(10)
    assert etcd.kv("/cw/held")["version"] == 1
    etcd.put("/cw/old", "old value")
    v = etcd.kv("/cw/old")["version"]
    os.close(os.open(mnt.p("cw/old"), os.O_WRONLY | os.O_TRUNC))
    assert etcd.kv("/cw/old")["value"] == b""
    etcd.put("/cw/sh", "old value")
    v = etcd.kv("/cw/sh")["version"]
    sh(": > " + mnt.p("cw/sh"))
    kv = etcd.kv("/cw/sh")
    assert kv["value"] == b"" and kv["version"] == v + 1
