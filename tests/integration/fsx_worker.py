"""One worker process of test_fsx.py, and the value format they share.

    python3 fsx_worker.py CONFIG_JSON

A worker does random operations on a few files until its deadline and logs
each one as a JSON line: kind, file name(s), time.monotonic() just before its
first system call and just after its last one (CLOCK_MONOTONIC is one clock
for every process, so times compare across workers), the result ("ok" or an
errno name) and, for writes, what it wrote.  Kinds:

  file-system workers, on one mount:
    write     open(O_WRONLY|O_CREAT|O_TRUNC), write one new record, close
    append    open(O_RDWR|O_APPEND), read the whole value (the base), write a
              new record, close: the daemon guards the Put on the revision it
              read at open, so a concurrent change fails close with ESTALE
    shrink    open(O_RDWR), read the base, ftruncate off its last record, close
    create    open(O_WRONLY|O_CREAT|O_TRUNC), close, no write: an empty value
    truncate  truncate(path, 0)
    unlink    unlink(path)
    rename    rename(a, b), b another of the names (over it if it exists)
    read      open(O_RDONLY), read the whole value, close
    listdir   listdir(the directory)
  and pairs done back to back (create+unlink, rename+read, rename+append),
  each op logged on its own: they make the races the daemon is known to
  lose frequent enough to show in a short run.

  the etcdctl worker (slow: a process per call, so a low rate):
    put / del / get through `etcdctl -w json`, whose header carries the exact
    revision of the call.

Workers on one mount serialise their operations on each name with flock on
local lock files (a rename takes both names in order): processes sharing a
mount share a file's write buffer, as on any local file system, so two
writers on one mount interleave and a reader sees a writer's unpublished
buffer; that is not what this test checks.  Across mounts and etcdctl
nothing is serialised.

Values are sequences of self-describing records:
    "[" WW ":" SSSSSS ":" LLLL "|" body "]"
WW the writer id, SSSSSS its operation sequence number, LLLL the record's
whole length and body a pattern derived from (WW, SSSSSS), so a torn or mixed
value fails to parse.  Every write and append makes a record no one else
makes, so a value is identified by the ids of its records.
"""
import base64
import errno
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import time

HEADER = re.compile(rb"\[(\d\d):(\d{6}):(\d{4})\|")
MIN_RECORD = 17          # a header, "]" and an empty body


@functools.lru_cache(maxsize=1 << 16)
def record(wid, seq, length):
    """The record of writer wid's operation seq, length bytes long."""
    head = b"[%02d:%06d:%04d|" % (wid, seq, length)
    n = length - len(head) - 1
    assert n >= 0 and length <= 9999
    stream = hashlib.sha256(b"%d:%d" % (wid, seq)).hexdigest().encode()
    return head + (stream * (n // len(stream) + 1))[:n] + b"]"


def parse(value):
    """The (wid, seq, length) of each record value is made of, or None if it
    is not a sequence of whole records."""
    out = []
    pos = 0
    while pos < len(value):
        m = HEADER.match(value, pos)
        if not m:
            return None
        w, s, n = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if n < MIN_RECORD or value[pos:pos + n] != record(w, s, n):
            return None
        out.append((w, s, n))
        pos += n
    return out


def whole_records(value):
    """The (wid, seq) of every whole record found anywhere in value, for
    telling which writes a torn value holds."""
    out = []
    for m in HEADER.finditer(value):
        w, s, n = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if n >= MIN_RECORD and value[m.start():m.start() + n] == record(w, s, n):
            out.append((w, s))
    return out


def vkey(value):
    """A short exact name of a value: None for no key, the record ids
    "w.s w.s ..." ("" for the empty value) when it parses, else "!" and the
    bytes in hex (a torn value)."""
    if value is None:
        return None
    recs = parse(value)
    if recs is None:
        return "!" + value.hex()
    return " ".join("%d.%d" % (w, s) for w, s, _ in recs)


def errname(code):
    return errno.errorcode.get(code, str(code))


def read_all(fd):
    parts = []
    while True:
        chunk = os.read(fd, 1 << 16)
        if not chunk:
            return b"".join(parts)
        parts.append(chunk)


def write_all(fd, data):
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class Failed(Exception):
    """An OSError with the step of the operation it came from."""

    def __init__(self, step, err):
        super().__init__(step, err)
        self.step = step
        self.errno = err


def step(name, fn, *args):
    try:
        return fn(*args)
    except OSError as e:
        raise Failed(name, e.errno) from None


def close_after(fd, fn):
    """Runs fn(fd), then closes fd; the first failure wins."""
    try:
        fn(fd)
    except Failed:
        try:
            os.close(fd)
        except OSError:
            pass
        raise
    step("close", os.close, fd)


FS_WEIGHTS = {
    "mixed": {"write": 4, "append": 4, "shrink": 1.5, "create": 1, "truncate": 1,
              "unlink": 1.5, "rename": 2, "read": 3, "listdir": 0.3,
              "create+unlink": 1, "rename+read": 1, "rename+append": 1},
    "reader": {"read": 10, "listdir": 1},
}


class FsWorker:
    def __init__(self, cfg, log):
        self.cfg = cfg
        self.wid = cfg["wid"]
        self.mount = cfg["mount"]
        self.dir = cfg["dir"]
        self.names = cfg["names"]
        self.rng = random.Random("%s:%d" % (cfg["seed"], self.wid))
        self.seq = 0
        self.log = log
        self.locks = {}
        for n in self.names:
            path = os.path.join(cfg["lockdir"], "%s.%s" % (self.mount, n))
            self.locks[n] = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        w = FS_WEIGHTS[cfg["role"]]
        self.kinds = list(w)
        self.weights = [w[k] for k in self.kinds]

    def p(self, name):
        return os.path.join(self.dir, name)

    def new_record(self, lo, hi):
        self.seq += 1
        n = self.rng.randint(lo, hi)
        return [self.wid, self.seq, n], record(self.wid, self.seq, n)

    def run_op(self, e, fn):
        """Runs fn(e), which fills e; logs e with times and result."""
        e["w"] = self.wid
        e["m"] = self.mount
        e["t0"] = time.monotonic()
        try:
            fn(e)
            e["res"] = "ok"
        except Failed as f:
            e["res"] = errname(f.errno)
            e["step"] = f.step
        e["t1"] = time.monotonic()
        self.log.write(json.dumps(e) + "\n")
        return e["res"] == "ok"

    # ---- the operations: each fills in what it wrote and read

    def op_write(self, k):
        rec, data = self.new_record(MIN_RECORD, 240)

        def fn(e):
            fd = step("open", os.open, self.p(k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            close_after(fd, lambda fd: step("write", write_all, fd, data))
        return self.run_op({"op": "write", "k": [k], "rec": rec}, fn)

    def op_append(self, k):
        rec, data = self.new_record(MIN_RECORD, 80)

        def fn(e):
            fd = step("open", os.open, self.p(k), os.O_RDWR | os.O_APPEND)

            def body(fd):
                e["base"] = vkey(step("read", read_all, fd))
                step("write", write_all, fd, data)
            close_after(fd, body)
        return self.run_op({"op": "append", "k": [k], "rec": rec}, fn)

    def op_shrink(self, k):
        def fn(e):
            fd = step("open", os.open, self.p(k), os.O_RDWR)

            def body(fd):
                base = step("read", read_all, fd)
                e["base"] = vkey(base)
                recs = parse(base)
                if recs:
                    cut = len(base) - recs[-1][2]
                    e["new"] = vkey(base[:cut])
                    step("ftruncate", os.ftruncate, fd, cut)
            close_after(fd, body)
        return self.run_op({"op": "shrink", "k": [k]}, fn)

    def op_create(self, k):
        def fn(e):
            fd = step("open", os.open, self.p(k), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            step("close", os.close, fd)
        return self.run_op({"op": "create", "k": [k]}, fn)

    def op_truncate(self, k):
        return self.run_op({"op": "truncate", "k": [k]},
                           lambda e: step("truncate", os.truncate, self.p(k), 0))

    def op_unlink(self, k):
        return self.run_op({"op": "unlink", "k": [k]},
                           lambda e: step("unlink", os.unlink, self.p(k)))

    def op_rename(self, a, b):
        return self.run_op({"op": "rename", "k": [a, b]},
                           lambda e: step("rename", os.rename, self.p(a), self.p(b)))

    def op_read(self, k):
        def fn(e):
            fd = step("open", os.open, self.p(k), os.O_RDONLY)

            def body(fd):
                e["v"] = vkey(step("read", read_all, fd))
            close_after(fd, body)
        return self.run_op({"op": "read", "k": [k]}, fn)

    def op_listdir(self):
        def fn(e):
            e["names"] = sorted(step("listdir", os.listdir, self.dir))
        return self.run_op({"op": "listdir", "k": []}, fn)

    # ---- one step of the random walk

    def one(self):
        kind = self.rng.choices(self.kinds, self.weights)[0]
        a = self.rng.choice(self.names)
        b = self.rng.choice([n for n in self.names if n != a])
        if kind == "listdir":
            self.op_listdir()
            return
        held = sorted({a, b}) if kind.startswith("rename") else [a]
        for n in held:
            fcntl.flock(self.locks[n], fcntl.LOCK_EX)
        try:
            if kind == "create+unlink":
                self.op_create(a) and self.op_unlink(a)
            elif kind == "rename+read":
                self.op_rename(a, b) and self.op_read(b)
            elif kind == "rename+append":
                self.op_rename(a, b) and self.op_append(b)
            elif kind == "rename":
                self.op_rename(a, b)
            else:
                getattr(self, "op_" + kind)(a)
        finally:
            for n in reversed(held):
                fcntl.flock(self.locks[n], fcntl.LOCK_UN)
        if self.rng.random() < 0.05:
            time.sleep(self.rng.random() * 0.002)


class CtlWorker:
    """etcdctl put/del/get on the same keys, a few times a second."""

    def __init__(self, cfg, log):
        self.cfg = cfg
        self.wid = cfg["wid"]
        self.rng = random.Random("%s:%d" % (cfg["seed"], self.wid))
        self.seq = 0
        self.log = log
        self.env = dict(os.environ, ETCDCTL_API="3")
        self.env.pop("ETCDCTL_ENDPOINTS", None)

    def ctl(self, e, *args):
        """Runs etcdctl -w json; returns its decoded output, or None after
        recording the failure in e."""
        argv = ["etcdctl", "--endpoints=" + self.cfg["endpoint"], "-w", "json"] + list(args)
        try:
            p = subprocess.run(argv, capture_output=True, timeout=20, env=self.env)
        except subprocess.TimeoutExpired:
            e["res"] = "timeout"
            return None
        if p.returncode != 0:
            e["res"] = "exit %d: %s" % (p.returncode, p.stderr.decode(errors="replace")[:200])
            return None
        e["res"] = "ok"
        return json.loads(p.stdout)

    def one(self):
        k = self.rng.choice(self.cfg["names"])
        key = self.cfg["prefix"] + k
        kind = self.rng.choices(["put", "del", "get"], [4, 2, 4])[0]
        e = {"op": "ctl" + kind, "k": [k], "w": self.wid, "m": "ctl"}
        if kind == "put":
            self.seq += 1
            n = self.rng.randint(MIN_RECORD, 120)
            e["rec"] = [self.wid, self.seq, n]
            args = ["put", key, record(self.wid, self.seq, n).decode()]
        else:
            args = [kind, key]
        e["t0"] = time.monotonic()
        out = self.ctl(e, *args)
        e["t1"] = time.monotonic()
        if out is not None:
            e["rev"] = int(out["header"]["revision"])
            if kind == "del":
                e["deleted"] = int(out.get("deleted", 0))
            elif kind == "get":
                kvs = out.get("kvs") or []
                e["v"] = vkey(base64.b64decode(kvs[0].get("value", ""))) if kvs else None
        self.log.write(json.dumps(e) + "\n")
        time.sleep(self.cfg["ctl_pause"] * (0.5 + self.rng.random()))


def main():
    cfg = json.loads(sys.argv[1])
    with open(cfg["log"], "w") as log:
        worker = (CtlWorker if cfg["role"] == "ctl" else FsWorker)(cfg, log)
        # everyone starts together
        time.sleep(max(0.0, cfg["start"] - time.monotonic()))
        while time.monotonic() < cfg["deadline"]:
            worker.one()
    return 0


if __name__ == "__main__":
    sys.exit(main())
