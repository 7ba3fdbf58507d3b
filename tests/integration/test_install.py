"""etcdfs mounted as an installed system tool is: mount -t fuse.etcdfs, the
lines of contrib/fstab.example (mount -a, mount MOUNTPOINT, umount) and the
mount command systemd runs for contrib/systemd/srv-etcd.mount and for the
units its fstab generator makes.

mount(8) clears PATH, and mount.fuse3 then runs "etcdfs SOURCE MOUNTPOINT -o
OPTIONS" from the default system path only. Each test works in a private
mount namespace in which /usr/local/sbin is a directory holding the built
binary and /etc/fstab a file of the test's: nothing is installed, the
system's fstab is untouched, and the mounts exist in that namespace alone.
Root only (mount namespaces, mount(8) without fusermount3)."""

import configparser
import glob
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

import harness
from harness import ETCDFS_BIN, read, run, write
from secure import Certs, TlsEtcd, add_user, enable_auth

TOP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FSTAB_EXAMPLE = os.path.join(TOP, "contrib", "fstab.example")
UNIT_DIR = os.path.join(TOP, "contrib", "systemd")
GENERATOR = "/lib/systemd/system-generators/systemd-fstab-generator"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0,
                       reason="needs root: a private mount namespace, mount(8) as root"),
    pytest.mark.skipif(not all(shutil.which(t) for t in ("unshare", "nsenter", "mount.fuse3")),
                       reason="needs unshare and nsenter (util-linux) and mount.fuse3 (fuse3)"),
]


class Namespace:
    """A private mount namespace kept alive by a sleeping process; commands
    run in it through nsenter, and its files are reached from here through
    /proc/PID/root, which resolves paths with that namespace's mounts."""

    def __init__(self, dir):
        sbin = os.path.join(dir, "sbin")
        os.makedirs(sbin)
        os.symlink(ETCDFS_BIN, os.path.join(sbin, "etcdfs"))
        self.fstab = os.path.join(dir, "fstab")
        open(self.fstab, "w").close()
        self.dir = dir
        self.sanlog_dir = os.path.join(dir, "sanitizer")
        os.makedirs(self.sanlog_dir)
        self.mountpoints = []
        script = ('mount --bind "$1" /usr/local/sbin && mount --bind "$2" /etc/fstab && '
                  'echo ready && exec sleep 100000')
        self.holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "--",
             "/bin/sh", "-c", script, "sh", sbin, self.fstab],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            preexec_fn=harness._die_with_parent)
        line = self.holder.stdout.readline()
        if line != b"ready\n":
            self.holder.kill()
            raise AssertionError("no mount namespace: %r" % self.holder.stderr.read())
        # unshare execs its command: the pid is that of the namespace's holder
        self.pid = self.holder.pid

    def run(self, *argv, timeout=60):
        # A daemon's stderr goes to /dev/null: sanitizer reports go to files
        # (mount(8) and mount.fuse3 pass the environment on, PATH aside).
        env = dict(os.environ)
        for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
            opts = env.get(var, "")
            env[var] = (opts + ":" if opts else "") + "log_path=" + \
                os.path.join(self.sanlog_dir, var.split("_")[0].lower())
        return run(["nsenter", "-t", str(self.pid), "-m", "--"] + list(argv), timeout=timeout,
                   env=env)

    def sanitizer_reports(self):
        out = ""
        for n in sorted(os.listdir(self.sanlog_dir)):
            with open(os.path.join(self.sanlog_dir, n), errors="replace") as f:
                out += f.read()
        return out

    def mountpoint(self, name):
        mp = os.path.join(self.dir, name)
        os.makedirs(mp)
        self.mountpoints.append(mp)
        return mp

    def path(self, p):
        return "/proc/%d/root%s" % (self.pid, p)

    def entries(self, mp):
        """Mounts stacked on mp in the namespace (mountinfo fields)."""
        out = []
        with open("/proc/%d/mountinfo" % self.pid) as f:
            for line in f:
                fields = line.split()
                sep = fields.index("-")
                if re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                          fields[4]) == mp:
                    out.append({"options": fields[5], "fstype": fields[sep + 1],
                                "source": re.sub(r"\\([0-7]{3})",
                                                 lambda m: chr(int(m.group(1), 8)),
                                                 fields[sep + 2])})
        return out

    def set_fstab(self, lines):
        with open(self.fstab, "w") as f:
            f.write("".join(" ".join(fields) + "\n" for fields in lines))

    def close(self):
        """Takes down what a failed test left; returns what it found."""
        left = []
        for mp in self.mountpoints:
            if self.entries(mp):
                left.append("%s left mounted" % mp)
                self.run("umount", "-l", mp, timeout=20)
            for pid in harness.pids_of_mount(mp):
                left.append("%s: etcdfs pid %d left running" % (mp, pid))
                os.kill(pid, signal.SIGKILL)
        self.holder.kill()
        self.holder.wait()
        reports = self.sanitizer_reports()
        if reports:
            left.append("daemon reported an error:\n" + reports[:4000])
        return left


@pytest.fixture
def ns(tmp_path):
    n = Namespace(str(tmp_path / "ns"))
    yield n
    left = n.close()
    assert not left, "leftovers: %s" % left


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return Certs(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture(scope="module")
def secure_etcd(certs):
    """TLS with client certificates and etcd's users: alice may use /app/;
    the certificate a mount brings is CN=nobody's, who may use nothing, so
    that what works proves the credentials file was read."""
    e = TlsEtcd(certs, "install", client_ca=certs.ca()).start()
    enable_auth(e)
    add_user(e, "alice", "alice-pw", ("readwrite", "/app/", "--prefix"))
    add_user(e, "nobody", "nobody-pw")
    yield e
    e.destroy()


def etc_etcdfs(tmp_path, certs, credentials="alice:alice-pw"):
    """A stand-in for the examples' /etc/etcdfs: ca.crt, client.crt,
    client.key and credentials (root-only)."""
    d = tmp_path / "etc-etcdfs"
    d.mkdir()
    crt, key = certs.leaf("nobody", "nobody")
    shutil.copy(certs.ca(), str(d / "ca.crt"))
    shutil.copy(crt, str(d / "client.crt"))
    shutil.copy(key, str(d / "client.key"))
    (d / "credentials").write_text(credentials + "\n")
    for f in d.iterdir():
        os.chmod(str(f), 0o600)
    return str(d)


def example_fstab():
    """fstab.example's entries, each split into its six fields."""
    lines = []
    with open(FSTAB_EXAMPLE) as f:
        for line in f:
            if line.strip() and not line.lstrip().startswith("#"):
                fields = line.split()
                assert len(fields) == 6, line
                lines.append(fields)
    return lines


def adapted(fields, source, mp, etc_dir):
    """An example fstab entry pointed at a test etcd, mount point and files."""
    return [source, mp, fields[2], fields[3].replace("/etc/etcdfs/", etc_dir + "/"),
            fields[4], fields[5]]


def wait_daemon_gone(mp, timeout=10):
    deadline = time.monotonic() + timeout
    while harness.pids_of_mount(mp):
        assert time.monotonic() < deadline, "etcdfs still running after umount of %s" % mp
        time.sleep(0.05)


def umount(ns, mp):
    p = ns.run("umount", mp)
    assert p.returncode == 0, p.stderr
    assert ns.entries(mp) == []
    wait_daemon_gone(mp)


def test_mount_t_fuse_etcdfs(etcd, ns):
    etcd.put("/app/conf", "v1")
    mp = ns.mountpoint("m")
    # mount(8), mount.fuse3 and libfuse each take their share of these:
    # none may reach etcdfs as an option it does not know
    p = ns.run("mount", "-t", "fuse.etcdfs", etcd.endpoint, mp, "-o",
               "prefix=/app,_netdev,nofail,auto,x-systemd.automount,"
               "x-systemd.idle-timeout=1min,noatime,nodev")
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    [e] = ns.entries(mp)
    assert e["fstype"] == "fuse.etcdfs" and e["source"] == etcd.endpoint, e
    assert {"noatime", "nodev"} <= set(e["options"].split(",")), e
    assert read(ns.path(mp + "/conf")) == b"v1"
    write(ns.path(mp + "/new"), "by mount -t")
    assert etcd.get("/app/new") == b"by mount -t"
    umount(ns, mp)


def test_fstab_example(etcd, secure_etcd, certs, ns, tmp_path):
    plain, tls = example_fstab()
    etc_dir = etc_etcdfs(tmp_path, certs)
    secure_etcd.wipe()
    etcd.put("/app/conf", "plain")
    secure_etcd.put("/app/conf", "tls")
    mp1, mp2 = ns.mountpoint("config"), ns.mountpoint("etcd")
    ns.set_fstab([adapted(plain, etcd.endpoint, mp1, etc_dir),
                  adapted(tls, "%s,%s" % (secure_etcd.url, secure_etcd.url), mp2, etc_dir)])
    for _ in range(2):
        # the second mount -a finds both mounted: their sources are the
        # fstab's first fields, as given
        p = ns.run("mount", "-a")
        assert p.returncode == 0 and p.stderr == b"", p.stderr
        assert (len(ns.entries(mp1)), len(ns.entries(mp2))) == (1, 1), "mounted twice"
    assert ns.entries(mp1)[0]["source"] == etcd.endpoint
    assert ns.entries(mp2)[0]["source"] == "%s,%s" % (secure_etcd.url, secure_etcd.url)
    assert read(ns.path(mp1 + "/conf")) == b"plain"
    assert read(ns.path(mp2 + "/conf")) == b"tls"
    # nobody's certificate may not write: this is alice, from the credentials file
    write(ns.path(mp2 + "/new"), "by alice")
    assert secure_etcd.get("/app/new") == b"by alice"
    # the password shows nowhere in the mount table
    with open("/proc/%d/mountinfo" % ns.pid) as f:
        assert "alice-pw" not in f.read()
    umount(ns, mp1)
    umount(ns, mp2)
    # mount MOUNTPOINT takes the rest from the fstab line
    p = ns.run("mount", mp2)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert read(ns.path(mp2 + "/new")) == b"by alice"
    umount(ns, mp2)


def test_fstab_wrong_credentials(secure_etcd, certs, ns, tmp_path):
    etc_dir = etc_etcdfs(tmp_path, certs, credentials="alice:not-her-password")
    mp = ns.mountpoint("etcd")
    ns.set_fstab([adapted(example_fstab()[1], secure_etcd.url, mp, etc_dir)])
    p = ns.run("mount", mp)
    assert p.returncode != 0
    assert b"etcdfs: authentication failed for user alice" in p.stderr, p.stderr
    assert ns.entries(mp) == []
    assert harness.pids_of_mount(mp) == []


def mount_section(unit_file):
    c = configparser.ConfigParser(interpolation=None, strict=False)
    c.optionxform = str
    c.read(unit_file)
    return c["Mount"]


def systemd_mount(ns, section):
    """What systemd runs to start a .mount unit: mount WHAT WHERE -t TYPE -o
    OPTIONS, less nofail, noauto and auto, which are systemd's own."""
    opts = ",".join(o for o in section["Options"].split(",")
                    if o not in ("nofail", "noauto", "auto"))
    return ns.run("mount", section["What"], section["Where"], "-t", section["Type"],
                  "-o", opts)


def test_systemd_mount_unit(secure_etcd, certs, ns, tmp_path):
    if not shutil.which("systemd-analyze"):
        pytest.skip("no systemd-analyze")
    # systemd's own check of both examples (a mount unit's name must be its
    # mount point's); any complaint fails
    p = run(["systemd-analyze", "verify", "--man=no"] +
            sorted(glob.glob(os.path.join(UNIT_DIR, "srv-etcd.*"))))
    assert p.returncode == 0 and p.stdout + p.stderr == b"", p.stdout + p.stderr
    etc_dir = etc_etcdfs(tmp_path, certs)
    secure_etcd.wipe()
    secure_etcd.put("/app/conf", "from the unit")
    mp = ns.mountpoint("unit")
    section = dict(mount_section(os.path.join(UNIT_DIR, "srv-etcd.mount")))
    section.update(What=secure_etcd.url, Where=mp,
                   Options=section["Options"].replace("/etc/etcdfs/", etc_dir + "/"))
    p = systemd_mount(ns, section)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    [e] = ns.entries(mp)
    assert e["fstype"] == "fuse.etcdfs" and e["source"] == secure_etcd.url, e
    assert read(ns.path(mp + "/conf")) == b"from the unit"
    write(ns.path(mp + "/new"), "by alice")
    assert secure_etcd.get("/app/new") == b"by alice"
    umount(ns, mp)


def test_fstab_generator(etcd, ns, tmp_path):
    """The fstab example through systemd's generator: _netdev makes network
    mounts of both, x-systemd.automount an automount unit; then the plain
    line's generated unit mounts."""
    if not os.access(GENERATOR, os.X_OK):
        pytest.skip("no systemd-fstab-generator")
    plain, tls = example_fstab()
    etcd.put("/app/conf", "generated")
    mp1, mp2 = ns.mountpoint("config"), ns.mountpoint("etcd")
    ns.set_fstab([adapted(plain, etcd.endpoint, mp1, "/nowhere"),
                  adapted(tls, "https://127.0.0.1:1", mp2, "/nowhere")])
    out = tmp_path / "units"
    out.mkdir()
    p = run([GENERATOR, str(out), str(out), str(out)],
            env=dict(os.environ, SYSTEMD_FSTAB=ns.fstab, SYSTEMD_LOG_LEVEL="err"))
    assert p.returncode == 0, p.stderr

    def unit(mp, suffix):
        name = run(["systemd-escape", "-p", "--suffix=" + suffix, mp],
                   text=True).stdout.strip()
        return name, str(out / name)

    name1, file1 = unit(mp1, "mount")
    name2, file2 = unit(mp2, "automount")
    # nofail: wanted, not required, by remote-fs.target (a network mount)
    assert os.path.exists(str(out / "remote-fs.target.wants" / name1))
    assert os.path.exists(str(out / "remote-fs.target.wants" / name2))
    auto = configparser.ConfigParser(interpolation=None, strict=False)
    auto.read(file2)
    assert auto["Automount"]["TimeoutIdleSec"] == "10min"
    section = mount_section(file1)
    assert section["What"] == etcd.endpoint and section["Type"] == "fuse.etcdfs"
    p = systemd_mount(ns, section)
    assert p.returncode == 0 and p.stderr == b"", p.stderr
    assert read(ns.path(mp1 + "/conf")) == b"generated"
    umount(ns, mp1)
