"""Listings read the values too: a directory's pages carry its files'
key-values (within a byte budget), every entry reaches the kernel with its
attributes (readdirplus), and the stat, open and read that follow a listing
cost no round trip to etcd.  Round trips are counted on etcd's side
(/metrics); every value and size is checked against etcdctl."""
import os
import time

from harness import read

import harness


def converge(*probes):
    harness.converge(*probes, timeout=5)


def ls(path):
    return sorted(os.listdir(path))


def check_against_etcd(etcd, m, prefix, names):
    """Every name's size and value on the mount are etcd's."""
    for name in names:
        want = etcd.get(prefix + name)
        assert want is not None, name
        assert os.stat(m.p(prefix.strip("/") + "/" + name)).st_size == len(want), name
        assert read(m.p(prefix.strip("/") + "/" + name)) == want, name


def test_reading_a_listed_tree_costs_no_round_trip(etcd, mounter):
    files = {"/lp/f%04d" % i: "value-%d-" % i + "v" * (i % 50) for i in range(1500)}
    files["/lp/sub/deep"] = "deeper"          # a subdirectory's key: not an entry's value
    files["/lp/both"] = "a-file-and-a-dir"    # listed as a directory; its value is both/%self
    files["/lp/both/inner"] = "inner"
    etcd.put_many(sorted(files.items()))
    m = mounter(etcd=etcd)                   # fresh: nothing cached
    names = ls(m.p("lp"))
    assert names == sorted(["f%04d" % i for i in range(1500)] + ["sub", "both"])
    time.sleep(0.2)
    before = etcd.kv_requests()
    for name in names:
        if name.startswith("f"):
            st = os.stat(m.p("lp/" + name))
            assert st.st_size == len(files["/lp/" + name]), name
            assert read(m.p("lp/" + name)) == files["/lp/" + name].encode(), name
    assert etcd.kv_requests() == before, "reading 1,500 listed files asked etcd"
    # the directories' own keys were not taken for entries' values
    assert ls(m.p("lp/sub")) == ["deep"]
    assert read(m.p("lp/sub/deep")) == b"deeper"
    assert ls(m.p("lp/both")) == ["%self", "inner"]
    assert read(m.p("lp/both/%self")) == b"a-file-and-a-dir"
    check_against_etcd(etcd, m, "/lp/", ["f0000", "f0777", "f1499"])


def test_listing_pages_stay_within_the_value_budget(etcd, mounter):
    # --cache-size=256K: pages of at most 64 KiB.  200 values of 1 KiB need
    # several pages with values; 30 of 40 KiB are too big to prefetch (keys
    # only: the kernel looks each one up); both list and read right.
    small = {"/bud/s/k%03d" % i: ("%03d" % i) * 341 for i in range(200)}
    big = {"/bud/b/k%02d" % i: chr(ord("a") + i % 26) * (40 << 10) for i in range(30)}
    etcd.put_many(sorted(small.items()))
    etcd.put_many(sorted(big.items()))
    m = mounter("--cache-size=256K", etcd=etcd)
    assert ls(m.p("bud/s")) == ["k%03d" % i for i in range(200)]
    time.sleep(0.2)
    before = etcd.kv_requests()
    for k, v in sorted(small.items()):
        assert read(m.p(k.lstrip("/"))) == v.encode(), k
    assert etcd.kv_requests() == before, "values a budgeted listing read were not kept"
    assert ls(m.p("bud/b")) == ["k%02d" % i for i in range(30)]
    for k, v in sorted(big.items()):
        assert os.stat(m.p(k.lstrip("/"))).st_size == len(v), k
        assert read(m.p(k.lstrip("/"))) == v.encode(), k


def test_a_listed_value_follows_later_changes(etcd, mounter):
    etcd.put_many([("/lc/a", "a1"), ("/lc/b", "b1"), ("/lc/c", "c1")])
    m = mounter(etcd=etcd)
    assert ls(m.p("lc")) == ["a", "b", "c"]
    etcd.put("/lc/a", "a2-longer")
    etcd.delete("/lc/b")
    converge(("read lc/a", lambda: harness.attempt(read, m.p("lc/a")), [b"a1", b"a2-longer"]),
             ("read lc/b", lambda: harness.attempt(read, m.p("lc/b")), [b"b1", "ENOENT"]))
    assert os.stat(m.p("lc/a")).st_size == len("a2-longer")
    assert read(m.p("lc/c")) == b"c1"
