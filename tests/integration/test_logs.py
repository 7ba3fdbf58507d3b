"""Where a detached daemon's warnings go: syslog (the journal, under
systemd), not the /dev/null its stderr became.

The daemon runs in a private mount namespace whose /dev is a tmpfs holding
/dev/fuse and /dev/null (bound from the real ones) and a /dev/log socket
that the test reads: nothing of the machine's syslog is touched."""

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from harness import ETCDFS_BIN

# Run by the test under `unshare --mount --propagation private`: sets up
# /dev, mounts etcdfs detached, holds a flock on a file, lets the caller
# revoke the mount's lock lease (a warning follows), prints what syslog got.
INNER = textwrap.dedent(r'''
    import fcntl, os, socket, subprocess, sys, time
    bin, endpoint, scratch, mnt = sys.argv[1:5]
    for dev in ("fuse", "null"):
        open(os.path.join(scratch, dev), "w").close()
        subprocess.run(["mount", "--bind", "/dev/" + dev, os.path.join(scratch, dev)], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "none", "/dev"], check=True)
    for dev in ("fuse", "null"):
        open("/dev/" + dev, "w").close()
        subprocess.run(["mount", "--bind", os.path.join(scratch, dev), "/dev/" + dev], check=True)
    log = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    log.bind("/dev/log")
    log.settimeout(20)
    p = subprocess.run([bin, "--endpoints=" + endpoint, "--lock-ttl=3s", mnt],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stderr == "", p.stderr
    path = os.path.join(mnt, "held")
    open(path, "w").close()
    f = open(path)
    fcntl.flock(f, fcntl.LOCK_EX)
    print("LOCKED", flush=True)
    sys.stdin.readline()            # the caller revoked the lease
    got = []
    try:
        while not any("lease" in g and "lost" in g for g in got):
            got.append(log.recv(4096).decode(errors="replace"))
    finally:
        f.close()
        subprocess.run(["fusermount3", "-u", mnt])
        for g in got:
            print("SYSLOG", g, flush=True)
''')


def test_a_detached_daemons_warnings_go_to_syslog(etcd, tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare(1) for a private /dev")
    scratch, mnt = tmp_path / "scratch", tmp_path / "mnt"
    scratch.mkdir()
    mnt.mkdir()
    p = subprocess.Popen(["unshare", "--mount", "--propagation", "private", sys.executable,
                          "-c", INNER, ETCDFS_BIN, etcd.endpoint, str(scratch), str(mnt)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    try:
        assert p.stdout.readline().strip() == "LOCKED", p.stderr.read()
        leases = [kv["lease"] for kv in etcd.kvs(b"etcdfs-lock", prefix=True)]
        assert leases and leases[0]
        etcd.ctl("lease", "revoke", "%x" % leases[0])
        out, err = p.communicate("go\n", timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    lines = [ln[len("SYSLOG "):] for ln in out.splitlines() if ln.startswith("SYSLOG ")]
    # "<12>Dec  1 06:00:00 etcdfs[PID]: etcdfs: the lock lease ... is gone": a
    # warning (priority 4) of the daemon facility (3 << 3)
    hits = [ln for ln in lines if "lease" in ln and "lost" in ln]
    assert hits, lines
    assert hits[0].startswith("<%d>" % (3 * 8 + 4)), hits[0]
    assert "etcdfs[" in hits[0], hits[0]
