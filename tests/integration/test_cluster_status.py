"""The cluster's state on the mount: %etcd/{members,status,health}[.json]
compared field by field with etcdctl's output for the same cluster, the
root's cluster attributes, and df."""
import errno
import json
import os
import time

import pytest
from harness import errname, read, write

from test_cluster import LEAVING, OPTS, mount_on, others

STATUS_DIR = "%etcd"
FILES = ["health", "health.json", "members", "members.json", "status", "status.json"]


def ctl_text(cluster, *args):
    return cluster.ctl(*args).decode()


def table(text):
    """Rows of an etcdctl table as dicts keyed by its upper-case headers."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(head, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[1:]]


def stable(read_both, tries=10):
    """read_both() -> (ours, etcdctl's); retried while they differ, since a
    write between the two reads moves raft indexes and sizes."""
    for _ in range(tries):
        ours, theirs = read_both()
        if ours == theirs:
            return ours, theirs
        time.sleep(0.2)
    return ours, theirs


def test_the_status_directory_is_there_but_not_listed(cluster, mounter):
    m = mounter(etcd=cluster)
    write(m.p("k"), "v")
    assert os.listdir(m.p("")) == ["k"]
    assert sorted(os.listdir(m.p(STATUS_DIR))) == FILES
    assert os.path.isdir(m.p(STATUS_DIR))
    for name, err in (("x", "EROFS"), ("members", "EROFS")):
        try:
            write(m.p(STATUS_DIR, name), "no")
        except OSError as e:
            assert errname(e.errno) == err, (name, errname(e.errno))
        else:
            raise AssertionError("wrote %s/%s" % (STATUS_DIR, name))
    with pytest.raises(OSError) as e:
        os.unlink(m.p(STATUS_DIR, "members"))
    assert e.value.errno == errno.EROFS
    with pytest.raises(OSError) as e:
        os.rename(m.p("k"), m.p(STATUS_DIR, "k"))
    assert e.value.errno == errno.EROFS
    # nothing of it reached etcd
    assert cluster.keys() == [b"/k"]


def test_members_is_etcdctl_member_list(cluster, mounter):
    m = mounter(etcd=cluster)
    assert read(m.p(STATUS_DIR, "members")).decode() == ctl_text(cluster, "member", "list")
    ours = json.loads(read(m.p(STATUS_DIR, "members.json")))
    theirs = json.loads(ctl_text(cluster, "member", "list", "-w", "json"))
    assert ours["members"] == theirs["members"]
    assert ours["header"]["cluster_id"] == theirs["header"]["cluster_id"]
    assert ours["header"]["member_id"] in [mb["ID"] for mb in theirs["members"]]


def test_status_is_etcdctl_endpoint_status_for_every_member(cluster, mounter):
    m = mounter(etcd=cluster)
    ours, theirs = stable(lambda: (
        table(read(m.p(STATUS_DIR, "status")).decode()),
        table(ctl_text(cluster, "endpoint", "status", "--cluster", "-w", "table"))))
    assert len(ours) == 3
    key = lambda row: row["ENDPOINT"]   # noqa: E731
    assert sorted(ours, key=key) == sorted(theirs, key=key)
    ours, theirs = stable(lambda: (
        json.loads(read(m.p(STATUS_DIR, "status.json"))),
        json.loads(ctl_text(cluster, "endpoint", "status", "--cluster", "-w", "json"))))
    key = lambda st: st["Endpoint"]     # noqa: E731
    assert sorted(ours, key=key) == sorted(theirs, key=key)


def test_health_for_every_member_and_a_dead_one(cluster, mounter):
    m = mount_on(cluster, mounter, 0, *OPTS)
    urls = sorted("http://" + cluster.member(i).endpoint for i in range(3))
    lines = read(m.p(STATUS_DIR, "health")).decode().splitlines()
    assert sorted(ln.split(" ")[0] for ln in lines) == urls
    for ln in lines:
        assert " is healthy: successfully committed proposal: took = " in ln, ln
    got = json.loads(read(m.p(STATUS_DIR, "health.json")))
    assert sorted(h["endpoint"] for h in got) == urls
    assert all(h["health"] is True and "error" not in h for h in got), got
    # etcdctl's own words for the same cluster
    theirs = json.loads(ctl_text(cluster, "endpoint", "health", "--cluster", "-w", "json"))
    assert sorted(h["endpoint"] for h in theirs) == urls

    dead = others(cluster, 0)[0]
    cluster.kill(dead)
    t0 = time.monotonic()
    got = {h["endpoint"]: h for h in json.loads(read(m.p(STATUS_DIR, "health.json")))}
    took = time.monotonic() - t0
    # one command timeout per member, asked at once: never a hang
    assert took < 2.0 + 1.5, took
    url = "http://" + cluster.member(dead).endpoint
    assert got[url]["health"] is False and got[url]["error"], got[url]
    assert all(h["health"] for u, h in got.items() if u != url), got
    line = [ln for ln in read(m.p(STATUS_DIR, "health")).decode().splitlines()
            if ln.startswith(url + " ")]
    assert line and line[0].startswith(url + " is unhealthy: failed to commit proposal: "), line
    # status shows the dead member with its error, the others as before
    rows = {r["ENDPOINT"]: r for r in table(read(m.p(STATUS_DIR, "status")).decode())}
    assert rows[url]["ERRORS"] and not rows[url]["ID"], rows[url]
    assert sum(1 for r in rows.values() if r["IS LEADER"] == "true") == 1


def test_the_roots_cluster_attributes(cluster, mounter):
    m = mount_on(cluster, mounter, 1, *OPTS, allowed_stderr=(LEAVING,))
    members = json.loads(ctl_text(cluster, "member", "list", "-w", "json"))
    assert os.getxattr(m.p(""), "user.etcd.cluster_id").decode() == \
        "%x" % members["header"]["cluster_id"]
    mine = [mb for mb in members["members"]
            if mb["clientURLs"] == ["http://" + cluster.member(1).endpoint]][0]
    assert os.getxattr(m.p(""), "user.etcd.member_id").decode() == "%x" % mine["ID"]
    cluster.member(2).put("/x", "1")
    rev = cluster.member(2).revision()
    assert int(os.getxattr(m.p(""), "user.etcd.revision")) == rev
    assert sorted(os.listxattr(m.p(""))) == ["user.etcd.cluster_id", "user.etcd.member_id",
                                             "user.etcd.revision"]


def test_df_shows_the_database_against_its_quota(cluster, mounter):
    m = mounter("--backend-quota=1G", etcd=cluster)
    st = os.statvfs(m.p(""))
    assert st.f_frsize * st.f_blocks == 1 << 30
    status = json.loads(ctl_text(cluster, "endpoint", "status", "-w", "json"))
    sizes = [s["Status"]["dbSize"] for s in status]
    used = (st.f_blocks - st.f_bfree) * st.f_frsize
    # the member the mount talks to, rounded up to whole blocks
    assert any(0 <= used - size < st.f_frsize for size in sizes), (used, sizes)
    # writing makes the database grow, and df shows it
    for i in range(50):
        write(m.p("big%d" % i), "x" * 100000)
    st2 = os.statvfs(m.p(""))
    assert st2.f_bfree < st.f_bfree, (st.f_bfree, st2.f_bfree)
