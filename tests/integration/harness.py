"""Processes and helpers for the etcdfs integration tests.

Everything here starts real processes: an etcd server on loopback ports, the
etcdfs daemon on a real FUSE mount, etcdctl and shell tools.  Every process
and mount is recorded in a registry so that fixture finalizers, a per-test
watchdog and an atexit hook can always take them down again; the etcd
servers additionally die with the test process (PR_SET_PDEATHSIG).

Rules that every helper keeps:
- every subprocess call has a timeout, so nothing can hang the suite;
- keys and values are bytes; etcdctl's JSON output is decoded from base64;
- a change made with etcdctl after the mount has looked at the key must
  show within REMOTE_DELAY (the daemon's cache learns of it through a
  watch), and on the way only as one of the versions etcd had.

Waiting and "never" are kept apart:
- settle() retries a check until it passes.  It is for waiting only: the
  check it retries says "has it arrived yet", and nothing else, because a
  failure it retries is forgotten.
- Whatever must never be seen (a torn value, a key that comes back after
  its delete, a stale read after a fresher one, a state no revision of
  etcd ever had) is checked on every observation with converge() or
  wait_for(), which fail at the first bad one and retry only the wait.
"""
import base64
import ctypes
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

ETCDFS_BIN = os.path.abspath(os.environ.get(
    "ETCDFS_BIN",
    os.path.join(os.path.dirname(__file__), "..", "..", "build", "etcdfs")))

# A subprocess that runs longer than this is killed and the test fails.
CMD_TIMEOUT = 60

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1

_registry_lock = threading.Lock()
_etcds = set()     # Etcd objects that may have a live process
_mounts = set()    # Mount objects that may have a live daemon or mount


def _die_with_parent():
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def scratch_dir(tag):
    """A new private directory, on tmpfs when there is one (etcd fsyncs)."""
    base = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="etcdfs-it-%s-" % tag, dir=base)


def free_port():
    """A loopback TCP port that was free a moment ago (the caller retries on
    a clash)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def run(cmd, timeout=CMD_TIMEOUT, check=False, input=None, env=None, cwd=None,
        text=False):
    """subprocess.run with a timeout and captured output.

    A timeout raises AssertionError (after killing the command), so a hanging
    file system fails the test instead of the suite."""
    try:
        return subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                              check=check, env=env, cwd=cwd, text=text)
    except subprocess.TimeoutExpired as e:
        raise AssertionError("command timed out after %ss: %r" % (timeout, cmd)) from e


def sh(script, timeout=CMD_TIMEOUT, check=True, cwd=None, env=None):
    """Runs a shell script; with check, a non-zero exit fails with its output."""
    p = run(["/bin/sh", "-c", script], timeout=timeout, cwd=cwd, env=env, text=False)
    if check and p.returncode != 0:
        raise AssertionError("shell command failed (exit %d): %s\nstdout: %r\nstderr: %r"
                             % (p.returncode, script, p.stdout[-2000:], p.stderr[-2000:]))
    return p


def timed(fn, *args, **kwargs):
    """Calls fn; returns (result or raised OSError, seconds taken)."""
    t0 = time.monotonic()
    try:
        res = fn(*args, **kwargs)
    except OSError as e:
        res = e
    return res, time.monotonic() - t0


def errno_of(fn, *args, **kwargs):
    """The errno fn fails with, or None if it succeeds."""
    try:
        fn(*args, **kwargs)
    except OSError as e:
        return e.errno
    return None


def errname(code):
    return errno.errorcode.get(code, str(code)) if code is not None else "success"


def b(x):
    return x if isinstance(x, bytes) else x.encode()


# ---------------------------------------------------------------- etcd

class EtcdCtl:
    """etcdctl on the endpoints a subclass names (ctl_argv); keys and values
    are bytes."""

    def ctl(self, *args, input=None, check=True, timeout=30):
        """Runs etcdctl; returns stdout bytes (fails the test on error)."""
        env = dict(os.environ, ETCDCTL_API="3")
        env.pop("ETCDCTL_ENDPOINTS", None)
        p = run(self.ctl_argv(*args), input=input, env=env, timeout=timeout)
        if check and p.returncode != 0:
            raise AssertionError("etcdctl %r failed: %r" % (args, p.stderr))
        return p.stdout if check else p

    def put(self, key, value, lease=None):
        """Puts bytes exactly (the value goes through stdin, so NUL bytes and
        trailing newlines survive)."""
        args = ["put", b(key)]
        if lease is not None:
            args.append("--lease=%x" % lease)
        if value in ("", b""):
            # etcdctl reads no empty value from stdin: give it as an argument
            self.ctl(*(args + ["--", ""]))
        else:
            self.ctl(*args, input=b(value))

    def put_many(self, items):
        """Puts many (key, text value) pairs, 100 per transaction."""
        items = list(items)
        for i in range(0, len(items), 100):
            lines = [b""]   # no compares: the section is an empty line
            for k, v in items[i:i + 100]:
                # etcdctl's txn syntax ends a value at its first blank
                assert b" " not in b(k) and b" " not in b(v) and b"\n" not in b(v)
                lines.append(b"put " + b(k) + b" " + b(v))
            lines += [b"", b"", b""]
            out = self.ctl("txn", input=b"\n".join(lines))
            assert out.startswith(b"SUCCESS"), out

    def delete(self, key, prefix=False):
        args = ["del", b(key)] + (["--prefix"] if prefix else [])
        return int(self.ctl(*args).strip() or 0)

    def wipe(self):
        self.ctl("del", "", "--from-key")

    def get_json(self, key, prefix=False, from_key=False):
        args = ["get", b(key), "-w", "json"]
        if prefix:
            args.append("--prefix")
        if from_key:
            args.append("--from-key")
        return json.loads(self.ctl(*args))

    def kvs(self, key, prefix=False, from_key=False):
        """Decoded KeyValues: dicts with bytes key/value and int revisions."""
        out = []
        for kv in self.get_json(key, prefix, from_key).get("kvs", []):
            out.append({
                "key": base64.b64decode(kv["key"]),
                "value": base64.b64decode(kv.get("value", "")),
                "create_revision": int(kv.get("create_revision", 0)),
                "mod_revision": int(kv.get("mod_revision", 0)),
                "version": int(kv.get("version", 0)),
                "lease": int(kv.get("lease", 0)),
            })
        return out

    def kv(self, key):
        """The KeyValue of key, or None if absent."""
        kvs = self.kvs(key)
        assert len(kvs) <= 1
        return kvs[0] if kvs else None

    def get(self, key):
        """The value of key as bytes, or None if absent."""
        kv = self.kv(key)
        return kv["value"] if kv else None

    def keys(self, prefix=b"", with_values=False):
        """Every key under prefix ("" = the whole keyspace), sorted."""
        kvs = self.kvs(prefix or b"", from_key=not prefix, prefix=bool(prefix))
        if with_values:
            return {kv["key"]: kv["value"] for kv in kvs}
        return [kv["key"] for kv in kvs]

    def revision(self):
        return int(self.get_json("/")["header"]["revision"])

    def lease_grant(self, ttl=300):
        out = self.ctl("lease", "grant", str(ttl)).decode()
        m = re.search(r"lease ([0-9a-f]+) granted", out)
        assert m, out
        return int(m.group(1), 16)

    def compact(self, rev):
        self.ctl("compaction", str(rev))


class Etcd(EtcdCtl):
    """One single-member etcd server on free loopback ports (or, made by
    EtcdCluster, one member of a cluster)."""

    def __init__(self, tag="etcd", name="t", dir=None):
        self.dir = dir or scratch_dir(tag)
        self.name = name
        self.data_dir = os.path.join(self.dir, "data")
        self.log_path = os.path.join(self.dir, "etcd.log")
        self.proc = None
        self.client_port = None
        self.peer_port = None
        self.stopped = False   # SIGSTOPped

    @property
    def endpoint(self):
        return "127.0.0.1:%d" % self.client_port

    @property
    def endpoints(self):
        """What mounter() gives --endpoints, as for a cluster."""
        return [self.endpoint]

    @property
    def peer_url(self):
        return "http://127.0.0.1:%d" % self.peer_port

    def _cluster_argv(self):
        return ["--initial-cluster", "%s=%s" % (self.name, self.peer_url)]

    def _argv(self):
        c = "http://127.0.0.1:%d" % self.client_port
        p = self.peer_url
        return ["etcd", "--name", self.name, "--data-dir", self.data_dir,
                "--listen-client-urls", c, "--advertise-client-urls", c,
                "--listen-peer-urls", p, "--initial-advertise-peer-urls", p,
                "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn"] + \
            self._cluster_argv()

    def _spawn(self):
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self._argv(), stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=log,
                                         preexec_fn=_die_with_parent)
        finally:
            log.close()
        with _registry_lock:
            _etcds.add(self)

    def start(self, client_port=None, tries=5):
        """Starts etcd and waits until it answers; picks new ports on a clash."""
        last = None
        for _ in range(tries):
            self.client_port = client_port or free_port()
            self.peer_port = free_port()
            if self.peer_port == self.client_port:
                continue
            self._spawn()
            try:
                self.wait_healthy()
                return self
            except AssertionError as e:
                last = e
                self.kill()
                shutil.rmtree(self.data_dir, ignore_errors=True)
                if client_port:
                    time.sleep(0.5)
        raise last or AssertionError("could not start etcd")

    def restart(self):
        """Starts etcd again on the same ports with the same data dir."""
        assert self.proc is None or self.proc.poll() is not None, "etcd still running"
        for _ in range(20):
            self._spawn()
            try:
                self.wait_healthy()
                return self
            except AssertionError:
                self.kill()
                time.sleep(0.5)   # the port may still be held for a moment
        raise AssertionError("etcd did not come back on %s\n%s" % (self.endpoint, self.log_tail()))

    def wait_healthy(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("etcd exited with %s\n%s" % (self.proc.returncode,
                                                                 self.log_tail()))
            p = run(self.ctl_argv("--dial-timeout=1s", "--command-timeout=2s",
                                  "endpoint", "health"), timeout=10)
            if p.returncode == 0:
                return
            time.sleep(0.1)
        raise AssertionError("etcd on %s not healthy after %ss\n%s"
                             % (self.endpoint, timeout, self.log_tail()))

    def log_tail(self, n=30):
        try:
            with open(self.log_path, "rb") as f:
                return b"\n".join(f.read().splitlines()[-n:]).decode(errors="replace")
        except OSError:
            return ""

    def sigstop(self):
        """Stops etcd and returns once every thread of it has stopped
        (kill() returns before a busy process is stopped)."""
        self.proc.send_signal(signal.SIGSTOP)
        self.stopped = True
        deadline = time.monotonic() + 5
        while _state(self.proc.pid) not in ("T", None) and time.monotonic() < deadline:
            time.sleep(0.005)

    def sigcont(self):
        self.proc.send_signal(signal.SIGCONT)
        self.stopped = False

    def kill(self):
        """SIGKILL, as a crash would."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self.stopped = False

    def stop(self):
        """Graceful stop; SIGKILL after 10 s."""
        if self.proc and self.proc.poll() is None:
            if self.stopped:
                self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.stopped = False

    def destroy(self):
        self.stop()
        with _registry_lock:
            _etcds.discard(self)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ---- etcdctl

    def ctl_argv(self, *args):
        return ["etcdctl", "--endpoints=" + self.endpoint] + [a for a in args]

    # ---- etcd's own counters (Prometheus text on the client URL)

    def metrics(self):
        """{"name{labels}": value} from GET /metrics on the client URL."""
        with urllib.request.urlopen("http://%s/metrics" % self.endpoint, timeout=10) as r:
            text = r.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def grpc_started(self, service, metrics=None):
        """{method: calls started} for one gRPC service, e.g. "etcdserverpb.KV"."""
        out = {}
        for name, v in (metrics or self.metrics()).items():
            if name.startswith("grpc_server_started_total{") and \
                    'grpc_service="%s"' % service in name:
                method = re.search(r'grpc_method="([^"]*)"', name).group(1)
                out[method] = out.get(method, 0) + int(v)
        return out

    def kv_requests(self):
        """RPCs the KV service has started so far (Range, Txn, Put, ...)."""
        return sum(self.grpc_started("etcdserverpb.KV").values())

    def write_counters(self):
        """Counters that move whenever a client asks etcd to change anything:
        the raft proposals committed (one per Put, DeleteRange, Compact,
        lease call or writing Txn, whether or not its compare then holds; a
        Range or a read-only Txn makes none) and the calls started of every
        method that can only write.  Compare two snapshots with ==."""
        m = self.metrics()
        out = {"raft proposals": int(m.get("etcd_server_proposals_committed_total", 0))}
        for service, methods in WRITE_METHODS.items():
            started = self.grpc_started(service, m)
            for method in methods:
                out[service + "/" + method] = started.get(method, 0)
        return out


# gRPC methods that change etcd's data (Txn can also just read: etcdfs looks
# names up with one, so writing Txns are counted as raft proposals instead).
WRITE_METHODS = {
    "etcdserverpb.KV": ("Put", "DeleteRange", "Compact"),
    "etcdserverpb.Lease": ("LeaseGrant", "LeaseRevoke", "LeaseKeepAlive"),
    "v3lockpb.Lock": ("Lock", "Unlock"),
}


def tcp_connections(pid):
    """(local port, remote port) of every established TCP connection of
    process pid, from /proc (what ss -tnp shows, without parsing it)."""
    fd_dir = "/proc/%d/fd" % pid
    inodes = set()
    for fd in os.listdir(fd_dir):
        try:
            link = os.readlink(os.path.join(fd_dir, fd))
        except OSError:
            continue   # closed meanwhile
        if link.startswith("socket:["):
            inodes.add(link[len("socket:["):-1])
    conns = set()
    for table in ("tcp", "tcp6"):
        try:
            with open("/proc/%d/net/%s" % (pid, table)) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue   # no IPv6
        for row in rows:
            fields = row.split()
            # addresses are hex addr:port; state 01 is ESTABLISHED (a
            # connection whose peer died is in CLOSE_WAIT until dropped)
            if fields[3] == "01" and fields[9] in inodes:
                conns.add(tuple(int(a.rsplit(":", 1)[1], 16) for a in fields[1:3]))
    return conns


class _Member(Etcd):
    """One member of an EtcdCluster: an Etcd whose flags name its peers."""

    def __init__(self, cluster, index):
        name = "m%d" % index
        super().__init__(name=name, dir=os.path.join(cluster.dir, name))
        os.mkdir(self.dir)
        self.cluster = cluster
        self.state = "new"

    @property
    def endpoint(self):
        if self.cluster.scheme == "http":
            return super().endpoint
        return "%s://127.0.0.1:%d" % (self.cluster.scheme, self.client_port)

    def _argv(self):
        argv = super()._argv()
        for flag in ("--listen-client-urls", "--advertise-client-urls"):
            argv[argv.index(flag) + 1] = "%s://127.0.0.1:%d" % (self.cluster.scheme,
                                                                 self.client_port)
        return argv + list(self.cluster.member_args)

    def ctl_argv(self, *args):
        return self.cluster._ctl_argv_of([self.cluster.members.index(self)], *args)

    def _cluster_argv(self):
        c = self.cluster
        return ["--initial-cluster",
                ",".join("%s=%s" % (m.name, m.peer_url) for i, m in enumerate(c.members)
                         if i not in c.removed),
                "--initial-cluster-token", c.token, "--initial-cluster-state", self.state,
                "--heartbeat-interval", str(c.heartbeat_ms),
                "--election-timeout", str(c.election_ms),
                # members are removed without waiting for the others to have
                # been connected for 5 s (remove_member in a fresh cluster)
                "--strict-reconfig-check=false"]


class EtcdCluster(EtcdCtl):
    """Members m0..m2 of one etcd cluster on free loopback ports.

    Elections are quick (50 ms heartbeats, a 500 ms election timeout: etcd
    wants at least 5 heartbeats per election timeout), so a lost leader is
    replaced within about a second.  ctl() and the etcdctl helpers go to
    every member; member(i) is the Etcd of member i alone.  Members are
    registered like any Etcd: the atexit hook takes them down too, and each
    dies with the test process."""

    def __init__(self, tag="cluster", size=3, heartbeat_ms=50, election_ms=500,
                 scheme="http", member_args=(), ctl_args=()):
        """scheme "https" with member_args naming the certificates makes
        the members serve clients over TLS; ctl_args are etcdctl's for it."""
        self.scheme = scheme
        self.member_args = list(member_args)
        self.ctl_args = list(ctl_args)
        self.ctl_user = None   # "name:password" once auth is on
        self.dir = scratch_dir(tag)
        # Cluster and member IDs derive from the token: a member of another
        # cluster that lands on one of these ports later is refused, not
        # joined.
        self.token = os.path.basename(self.dir)
        self.heartbeat_ms = heartbeat_ms
        self.election_ms = election_ms
        self.members = [_Member(self, i) for i in range(size)]
        self.down = set()   # members killed here and not restarted
        self.removed = set()   # members taken out of the cluster

    @property
    def endpoints(self):
        return [m.endpoint for m in self.members]

    def endpoints_from(self, i):
        """Every endpoint, member i's first (etcdfs tries them in order)."""
        eps = self.endpoints
        return eps[i:] + eps[:i]

    def member(self, i):
        return self.members[i]

    def running(self):
        """Indices of the members neither killed nor stopped."""
        return [i for i, m in enumerate(self.members) if i not in self.down and not m.stopped]

    def _ctl_argv_of(self, indices, *args):
        eps = ",".join(self.members[i].endpoint for i in indices)
        user = ["--user=" + self.ctl_user] if self.ctl_user else []
        return ["etcdctl", "--endpoints=" + eps] + self.ctl_args + user + list(args)

    def ctl_argv(self, *args):
        return self._ctl_argv_of(range(len(self.members)), *args)

    def start(self, tries=3):
        """Starts every member and waits until each answers; picks new ports
        on a clash."""
        last = None
        for _ in range(tries):
            ports = []
            while len(ports) < 2 * len(self.members):
                port = free_port()
                if port not in ports:
                    ports.append(port)
            for i, m in enumerate(self.members):
                m.client_port, m.peer_port = ports[2 * i], ports[2 * i + 1]
            # All at once: a new member serves nothing until a quorum is up.
            for m in self.members:
                m._spawn()
            try:
                self.wait_healthy()
                return self
            except AssertionError as e:
                last = e
                for m in self.members:
                    m.kill()
                    shutil.rmtree(m.data_dir, ignore_errors=True)
        self.destroy()   # no fixture finalizer runs for a failed start
        raise last

    def logs(self, n=30):
        return "\n".join("---- %s on %s ----\n%s" % (m.name, m.endpoint, m.log_tail(n))
                         for m in self.members)

    def wait_healthy(self, timeout=20):
        """Waits until every member neither killed nor stopped answers
        etcdctl endpoint health: a quorum read through it, so it follows a
        leader.  A member that died unasked fails at once; the timeout fails
        with every member's log."""
        deadline = time.monotonic() + timeout
        while True:
            died = [m.name for i, m in enumerate(self.members)
                    if i not in self.down and m.proc.poll() is not None]
            if died:
                raise AssertionError("etcd %s exited\n%s" % (", ".join(died), self.logs()))
            up = self.running()
            assert up, "no member runs"
            # A probe sent before the first election waits for it, up to its
            # command timeout: keep that short, a fresh cluster's first
            # election now and then takes a second or two.
            p = run(self._ctl_argv_of(up, "--dial-timeout=1s", "--command-timeout=1s",
                                      "endpoint", "health"), timeout=20)
            if p.returncode == 0:
                return
            if time.monotonic() >= deadline:
                raise AssertionError("etcd cluster not healthy after %ss: %s\n%s"
                                     % (timeout, p.stderr.decode(errors="replace").strip(),
                                        self.logs()))
            time.sleep(0.05)

    def status(self):
        """{index: etcdctl endpoint status} of the running members that answer
        within a second."""
        up = self.running()
        p = run(self._ctl_argv_of(up, "--dial-timeout=1s", "--command-timeout=1s",
                                  "endpoint", "status", "-w", "json"), timeout=20)
        try:
            answers = json.loads(p.stdout or b"[]")
        except ValueError:
            answers = []
        # A member that does not answer is missing from the list (etcdctl
        # then exits 1): match answers by endpoint, never by position.
        index = {self.members[i].endpoint: i for i in up}
        return {index[a["Endpoint"]]: a["Status"] for a in answers if a["Endpoint"] in index}

    def leader(self, timeout=10):
        """Index of the leader: the member that every running member,
        itself included, names as leader.  Waits through an election."""
        deadline = time.monotonic() + timeout
        while True:
            st = self.status()
            named = {s.get("leader", 0) for s in st.values()}
            if len(st) == len(self.running()) and len(named) == 1:
                lid = named.pop()
                for i, s in st.items():
                    if s["header"]["member_id"] == lid:
                        return i
            if time.monotonic() >= deadline:
                raise AssertionError("no leader all members follow after %ss: %r"
                                     % (timeout, st))
            time.sleep(0.05)

    def kill(self, i):
        """SIGKILL of member i, as a crash would."""
        self.down.add(i)
        self.members[i].kill()

    def terminate(self, i):
        """SIGTERM of member i: a graceful stop (GOAWAY to its clients, the
        calls it took answered); returns at once, while it is stopping."""
        self.down.add(i)
        self.members[i].proc.send_signal(signal.SIGTERM)

    def stop(self, i):
        """SIGSTOP of member i: its connections stay open and silent."""
        self.members[i].sigstop()

    def cont(self, i):
        self.members[i].sigcont()

    def restart(self, i):
        """Starts killed member i again, same data dir and ports; returns once
        it answers a quorum read (it has caught up with the leader)."""
        m = self.members[i]
        m.state = "existing"
        self.down.discard(i)
        m.restart()

    def restart_all(self):
        """Starts every killed member again at once (none alone has a
        quorum); returns once all answer."""
        for i in sorted(self.down - self.removed):
            self.members[i].state = "existing"
            self.members[i]._spawn()
        self.down &= self.removed
        self.wait_healthy()

    def remove_member(self, i):
        """etcdctl member remove of member i, then its process goes."""
        ids = {m["name"]: m["ID"] for m in json.loads(
            self._ctl(self.running(), "member", "list", "-w", "json"))["members"]}
        self._ctl([j for j in self.running() if j != i], "member", "remove",
                  "%x" % ids[self.members[i].name])
        self.removed.add(i)
        self.kill(i)
        self.wait_healthy()

    def add_member(self):
        """etcdctl member add of a new member, started on free ports;
        returns its index once it has caught up with the leader."""
        m = _Member(self, len(self.members))
        m.client_port, m.peer_port = free_port(), free_port()
        m.state = "existing"
        self._ctl(self.running(), "member", "add", m.name, "--peer-urls=" + m.peer_url)
        self.members.append(m)
        m._spawn()
        self.wait_healthy()
        return len(self.members) - 1

    def _ctl(self, indices, *args):
        p = run(self._ctl_argv_of(indices, *args), timeout=30)
        assert p.returncode == 0, (args, p.stderr)
        return p.stdout

    def connected(self, mount):
        """Index of the member the mount's daemon is connected to (seen from
        outside, in /proc), or None."""
        ports = {remote for _, remote in tcp_connections(mount.pid())}
        hits = [i for i, m in enumerate(self.members) if m.client_port in ports]
        assert len(hits) <= 1, "etcdfs is connected to members %s" % hits
        return hits[0] if hits else None

    def destroy(self):
        # SIGKILL: members stopped together take seconds each to leave
        # gracefully, and nothing here is kept.
        for m in self.members:
            m.kill()
            m.destroy()
        shutil.rmtree(self.dir, ignore_errors=True)


# ---------------------------------------------------------------- mounts

def mountinfo_entry(path):
    """The /proc/self/mountinfo fields of the mount at path, or None."""
    path = os.path.realpath(path)
    with open("/proc/self/mountinfo", "rb") as f:
        for line in f:
            fields = line.decode(errors="replace").split()
            sep = fields.index("-")
            mp = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
            if mp == path:
                return {"mountpoint": mp, "options": fields[5], "fstype": fields[sep + 1],
                        "source": fields[sep + 2], "super_options": fields[sep + 3]}
    return None


def is_etcdfs_mounted(path):
    e = mountinfo_entry(path)
    return e is not None and e["fstype"] == "fuse.etcdfs"


def pids_of_mount(mnt):
    """Pids of etcdfs processes whose command line names mnt."""
    real = os.path.realpath(mnt).encode()
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if argv and os.path.basename(argv[0]) == b"etcdfs" and \
                any(os.path.realpath(a) == real for a in argv[1:] if a.startswith(b"/")):
            pids.append(int(d))
    return pids


def fusermount_u(mnt, lazy=False, timeout=20):
    argv = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [mnt]
    return run(argv, timeout=timeout)


# Daemon stderr that always fails a test, whatever is whitelisted.
FATAL_PATTERNS = [re.compile(p) for p in (
    r"runtime error", r"ERROR: AddressSanitizer", r"LeakSanitizer", r"Sanitizer",
    r"^==\d+==", r"SUMMARY: ", r"Segmentation fault", r"Assertion .* failed",
    r"\*\*\* ", r"CRITICAL", r"-WARNING \*\*", r"double free", r"stack smashing",
)]


def _text_of(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


class Mount:
    """One etcdfs process and its mount.

    start() returns once the mount shows in /proc/self/mountinfo; close()
    unmounts with fusermount3 -u, expects the daemon to exit 0, and returns
    the problems seen (unexpected stderr lines, exit status)."""

    def __init__(self, path, args, foreground=True, env=None, allowed_stderr=(),
                 stderr_free=False, stderr_path=None):
        self.path = path
        self.args = list(args)
        self.foreground = foreground
        self.env = env
        self.allowed = [re.compile(p) for p in allowed_stderr]
        self.stderr_free = stderr_free   # any line goes, except FATAL_PATTERNS
        self.proc = None
        self.dpid = None                 # the daemon's pid in the daemonizing form
        self.stderr_path = stderr_path or path.rstrip("/") + ".stderr"
        # GLib's debug lines (-d) go to stdout: kept apart, checked alike
        self.stdout_path = re.sub(r"(\.stderr)?$", ".stdout", self.stderr_path, count=1)
        self.sanlog_dir = None
        self.closed = False

    def argv(self):
        return [ETCDFS_BIN] + self.args + [self.path] + (["-f"] if self.foreground else [])

    def start(self, timeout=20):
        env = dict(os.environ if self.env is None else self.env)
        if not self.foreground:
            # A daemon's stderr goes to /dev/null: send sanitizer reports to files.
            self.sanlog_dir = tempfile.mkdtemp(prefix="etcdfs-san-")
            for var in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
                opts = env.get(var, "")
                env[var] = (opts + ":" if opts else "") + "log_path=" + \
                    os.path.join(self.sanlog_dir, var.split("_")[0].lower())
        err = open(self.stderr_path, "wb")
        out = open(self.stdout_path, "wb")
        try:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=env)
        finally:
            err.close()
            out.close()
        with _registry_lock:
            _mounts.add(self)
        deadline = time.monotonic() + timeout
        if not self.foreground:
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError("etcdfs did not return within %ss" % timeout)
            assert rc == 0, "etcdfs exited %d: %s" % (rc, self.stderr())
            # "returns once the mount is live": no waiting allowed here
            assert is_etcdfs_mounted(self.path), \
                "etcdfs returned but %s is not mounted" % self.path
            self.dpid = (pids_of_mount(self.path) or [None])[0]
            return self
        while time.monotonic() < deadline:
            if is_etcdfs_mounted(self.path):
                return self
            if self.proc.poll() is not None:
                raise AssertionError("etcdfs exited with %d before mounting: %s"
                                     % (self.proc.returncode, self.stderr()))
            time.sleep(0.02)
        raise AssertionError("%s not mounted after %ss; stderr: %s"
                             % (self.path, timeout, self.stderr()))

    def stderr(self):
        return _text_of(self.stderr_path)

    def stdout(self):
        return _text_of(self.stdout_path)

    def sanitizer_logs(self):
        out = ""
        if self.sanlog_dir and os.path.isdir(self.sanlog_dir):
            for n in sorted(os.listdir(self.sanlog_dir)):
                with open(os.path.join(self.sanlog_dir, n), "rb") as f:
                    out += f.read().decode(errors="replace")
        return out

    def pid(self):
        """The daemon's pid, foreground or daemonized."""
        return self.proc.pid if self.foreground else self.dpid

    def alive(self):
        if self.foreground:
            return self.proc is not None and self.proc.poll() is None
        return self.dpid is not None and os.path.exists("/proc/%d" % self.dpid) and \
            _state(self.dpid) != "Z"

    def _wait_exit(self, timeout):
        """Waits for the daemon; returns its exit status (None if unknown)."""
        if self.foreground:
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                return "timeout"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                return None   # not our child: the status is not ours to see
            time.sleep(0.05)
        return "timeout"

    def kill(self):
        for pid in ([self.proc.pid] if self.foreground and self.proc else []) + \
                ([self.dpid] if self.dpid else []):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def unmount(self):
        """fusermount3 -u (lazily if busy); returns the problems seen."""
        problems = []
        if is_etcdfs_mounted(self.path):
            p = fusermount_u(self.path)
            for _ in range(20):
                if p.returncode == 0 or not is_etcdfs_mounted(self.path):
                    break
                time.sleep(0.1)   # a tool may still hold a file open
                p = fusermount_u(self.path)
            if is_etcdfs_mounted(self.path):
                problems.append("fusermount3 -u failed: %r; unmounted lazily"
                                % p.stderr.strip())
                fusermount_u(self.path, lazy=True)
        status = self._wait_exit(30)
        if status == "timeout":
            problems.append("etcdfs did not exit after unmount; killed")
            self.kill()
        elif status is not None and status != 0:
            problems.append("etcdfs exited with status %d after unmount" % status)
        return problems

    def check_stderr(self):
        """Problems in the daemon's stderr and stdout: a sanitizer report or
        crash (quoted once, from its first line), else each unexpected line."""
        lines = [ln for ln in (self.stderr() + self.stdout() + self.sanitizer_logs()).splitlines()
                 if ln.strip()]
        for i, line in enumerate(lines):
            if any(p.search(line) for p in FATAL_PATTERNS):
                return ["daemon reported an error:\n    " + "\n    ".join(lines[i:i + 40])]
        if self.stderr_free:
            return []
        unexpected = [ln for ln in lines if not any(p.search(ln) for p in self.allowed)]
        return ["unexpected daemon output: " + ln for ln in unexpected[:20]]

    def close(self):
        """Unmounts and returns a list of problems (empty when all is well)."""
        if self.closed:
            return []
        self.closed = True
        problems = self.unmount() + self.check_stderr()
        with _registry_lock:
            _mounts.discard(self)
        if self.sanlog_dir:
            shutil.rmtree(self.sanlog_dir, ignore_errors=True)
        return problems

    def abort(self):
        """Takes the mount down by force (watchdog, atexit)."""
        self.kill()
        if mountinfo_entry(self.path):
            fusermount_u(self.path, lazy=True, timeout=10)

    def crash(self):
        """SIGKILL of the daemon, as a crash would, and the mount taken
        down lazily; the mount counts as closed (its teardown expects
        nothing more)."""
        self.abort()
        self.closed = True
        with _registry_lock:
            _mounts.discard(self)

    def p(self, *parts):
        """A path inside the mount."""
        return os.path.join(self.path, *parts)

    def pb(self, *parts):
        """A bytes path inside the mount."""
        return os.path.join(os.fsencode(self.path), *[b(x) for x in parts])


def _state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def abort_everything():
    """Kills every daemon and etcd we started and lazily unmounts; for the
    watchdog and for exit paths that bypass the fixtures."""
    with _registry_lock:
        mounts, etcds = list(_mounts), list(_etcds)
    for m in mounts:
        m.abort()
    return mounts, etcds


def cleanup_at_exit():
    mounts, etcds = abort_everything()
    for e in etcds:
        try:
            e.kill()
        except Exception:
            pass
        shutil.rmtree(e.dir, ignore_errors=True)
    return mounts, etcds


# ---------------------------------------------------------------- file helpers

def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data, mode="wb"):
    with open(path, mode) as f:
        f.write(b(data))


# How long a change made with etcdctl may take to show on a mount that has
# already looked at the key (the daemon learns of it through its watch).
REMOTE_DELAY = 2.0


def settle(check, timeout=REMOTE_DELAY):
    """Runs check, a function that asserts, until it passes; after timeout
    its last failure (AssertionError or OSError) propagates.

    For waiting only: every failure before the last is forgotten, so check
    may only say "not there yet".  What must never be seen on the way goes
    in converge() or wait_for() instead."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, OSError):
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.02)


def wait_until(pred, timeout=10, interval=0.1):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def attempt(fn, *args):
    """fn(*args), or the name of the errno it fails with ("ENOENT"): an
    observation for converge() in which an error is one of the states."""
    try:
        return fn(*args)
    except OSError as e:
        return errname(e.errno)


def _history(seen, limit=12):
    """seen as runs, "value x count", the last `limit` runs."""
    runs = []
    for v in seen:
        if runs and runs[-1][0] == v:
            runs[-1][1] += 1
        else:
            runs.append([v, 1])
    text = ["%r x%d" % (v, n) if n > 1 else repr(v) for v, n in runs[-limit:]]
    return ("... " if len(runs) > limit else "") + ", ".join(text)


def wait_for(observe, arrived, check, timeout=REMOTE_DELAY, confirm=3, what="the change",
             interval=0.01):
    """Observes until a change has arrived, checking every observation.

    observe() is called about every `interval` seconds; check(obs, seen)
    asserts what must hold for EVERY observation (seen: the ones before
    it) and its failure is never retried; arrived(obs) says whether the
    wait is over.  Once it is, `confirm` more observations are made and
    checked too, and each must still be arrived (nothing goes back).  An
    OSError from observe fails at once: use attempt() where an error is a
    state.  Returns the last observation."""
    seen = []
    deadline = time.monotonic() + timeout
    more = None
    while True:
        obs = observe()
        try:
            check(obs, seen)
            if more is not None:
                assert arrived(obs), "went back after it had arrived"
        except AssertionError as e:
            raise AssertionError("%s: bad observation %r: %s\n  observations before it: %s"
                                 % (what, obs, e, _history(seen))) from None
        seen.append(obs)
        if more is None and arrived(obs):
            more = confirm
        if more is not None:
            if more == 0:
                return obs
            more -= 1
        elif time.monotonic() >= deadline:
            raise AssertionError("%s did not arrive within %ss; observations: %s"
                                 % (what, timeout, _history(seen)))
        time.sleep(interval)


def converge(*probes, timeout=REMOTE_DELAY, confirm=3):
    """Waits until every probe shows its last state; fails at once on any
    observation on the way that is not one of the states, or that is a
    state before one its probe has already shown.

    A probe is (what, observe, states): observe() returns what is seen
    now, states lists every value it may return in the order in which they
    may appear (the old value first, the one waited for last; any may be
    skipped).  Each round observes every probe once, in the order given.
    So a read that is neither the whole old value nor the whole new one, a
    deleted key that comes back, or a stale read after a fresh one fails
    the test even when the new state arrives later."""
    # a state equal to the one before it is the same state (two lengths
    # of an old and a new value that happen to be equal)
    probes = [(name, obs, [st for i, st in enumerate(states) if i == 0 or st != states[i - 1]])
              for name, obs, states in probes]

    def observe():
        return tuple(obs() for _, obs, _ in probes)

    def index(i, value):
        for j, state in enumerate(probes[i][2]):
            if state == value:
                return j
        return None

    def check(obs, seen):
        for i, (name, _, states) in enumerate(probes):
            j = index(i, obs[i])
            assert j is not None, "%s shows %r: none of %r" % (name, obs[i], states)
            before = [index(i, o[i]) for o in seen]
            assert not before or j >= max(before), \
                "%s went back to %r after showing %r" % (name, obs[i],
                                                         states[max(before)])

    def arrived(obs):
        return all(index(i, o) == len(probes[i][2]) - 1 for i, o in enumerate(obs))

    what = " and ".join(name for name, _, _ in probes)
    return wait_for(observe, arrived, check, timeout=timeout, confirm=confirm, what=what)
