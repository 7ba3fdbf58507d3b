"""renameat2(RENAME_EXCHANGE): two files or two directories trade places in
one etcd Txn; a new configuration written next to the live one is swapped
in at once."""

import ctypes
import errno
import os
import threading

from harness import errno_of

_libc = ctypes.CDLL(None, use_errno=True)
RENAME_EXCHANGE = 2
AT_FDCWD = -100


def exchange(a, b):
    if _libc.renameat2(AT_FDCWD, a.encode(), AT_FDCWD, b.encode(), RENAME_EXCHANGE) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))


def test_two_files_trade_places(etcd, mnt):
    lease = etcd.lease_grant(300)
    etcd.put("/a", "value of a", lease=lease)
    etcd.put("/b", "value of b")
    exchange(mnt.path + "/a", mnt.path + "/b")
    assert etcd.get("/a") == b"value of b" and etcd.get("/b") == b"value of a"
    # each value keeps its lease
    assert etcd.kv("/b")["lease"] == lease and etcd.kv("/a")["lease"] == 0
    assert open(mnt.path + "/a").read() == "value of b"
    assert open(mnt.path + "/b").read() == "value of a"


def test_a_config_directory_is_swapped_in_whole(etcd, mnt, mounter):
    old = {"a": "old a", "b": "old b", "c": "old c"}
    new = {"a": "new a", "b": "new b", "d": "new d"}
    etcd.put_many(("/live/" + k, v.replace(" ", "_")) for k, v in old.items())
    etcd.put_many(("/next/" + k, v.replace(" ", "_")) for k, v in new.items())
    reader = mounter(etcd=etcd)
    stop, seen, mixed = threading.Event(), set(), []

    def read_loop():
        while not stop.is_set():
            names = frozenset(os.listdir(reader.path + "/live"))
            seen.add(names)
            if names not in (frozenset(old), frozenset(new)):
                mixed.append(sorted(names))
            snap = etcd.keys(b"/live/", with_values=True)
            gens = {v.split(b"_")[0] for v in snap.values()}
            if len(gens) != 1:
                mixed.append(snap)
    t = threading.Thread(target=read_loop)
    t.start()
    try:
        exchange(mnt.path + "/next", mnt.path + "/live")
    finally:
        stop.set()
        t.join()
    assert mixed == []
    assert etcd.keys(b"/live/", with_values=True) == \
        {b"/live/" + k.encode(): v.replace(" ", "_").encode() for k, v in new.items()}
    assert etcd.keys(b"/next/", with_values=True) == \
        {b"/next/" + k.encode(): v.replace(" ", "_").encode() for k, v in old.items()}
    assert sorted(os.listdir(mnt.path + "/live")) == ["a", "b", "d"]
    assert open(mnt.path + "/live/d").read() == "new_d"
    assert open(mnt.path + "/next/c").read() == "old_c"
    # the other mount follows too
    assert sorted(os.listdir(reader.path + "/next")) == ["a", "b", "c"]


def test_a_file_and_a_directory(etcd, mnt):
    etcd.put("/f", "a file")
    etcd.put("/d/x", "in d")
    exchange(mnt.path + "/f", mnt.path + "/d")
    assert etcd.get("/d") == b"a file" and etcd.get("/f/x") == b"in d"
    assert etcd.get("/f") is None and etcd.get("/d/x") is None
    assert open(mnt.path + "/d").read() == "a file"
    assert os.listdir(mnt.path + "/f") == ["x"]


def test_exchange_errors(etcd, mnt):
    etcd.put("/only", "x")
    assert errno_of(exchange, mnt.path + "/only", mnt.path + "/missing") == errno.ENOENT
    etcd.put_many(("/big/k%d" % i, "v") for i in range(70))
    etcd.put("/small/k", "v")
    assert errno_of(exchange, mnt.path + "/big", mnt.path + "/small") == errno.EXDEV
    assert etcd.get("/only") == b"x" and etcd.get("/small/k") == b"v"
