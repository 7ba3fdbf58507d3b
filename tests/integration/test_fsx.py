"""fsx: random concurrent operations on two mounts and etcdctl, checked
against etcd's complete history: no acknowledged write is lost, no deleted
key comes back, no read is torn.

Seven processes (fsx_worker.py: two mixed workers and a reader on each of
two mounts of one etcd, plus an etcdctl worker) do random writes, appends,
shrinks, creates, truncates, renames, unlinks, reads and listings on six
files of one directory for ETCDFS_FSX_SECONDS (default 20: about 30 s in
all), from seed ETCDFS_FSX_SEED (default: a new one, printed).  The seed
fixes every choice each worker makes; the interleaving is the machine's.

The run, on its own etcd (nothing compacts it), is then checked against the
complete history, read with `etcdctl watch --rev 1` up to a marker key put
after the workers stopped.  Each logged operation gets the revisions at which
its effect can lie, its candidates:

- an acknowledged write (close returned 0) is the first Put that holds its
  record: on its key, of exactly the value it wrote (an append: the base it
  read plus its record, over a previous value equal to that base).  A write
  whose close failed with ESTALE or EFBIG must be in no Put;
- create and truncate are single Puts of an empty value on their key, a
  shrink a Put of its base less the last record over that base, unlink a
  single Delete, rename one transaction that puts the source's previous
  value on the target and deletes the source;
- a read is the revisions at which its key had the value read (no key, for
  ENOENT); a value that is not whole records is a torn read, one the key
  never had in etcd is reported too; etcdctl's calls carry their revision.

Real-time order then narrows the candidates until nothing moves: if op A
returned before op B started, both on one key, then rev(A) < rev(B) for two
changes (and for a read before a change: a read cannot return what was
written after it returned); rev(A) <= rev(B) when B is a read on A's mount
or by etcdctl (read-your-writes: other mounts may lag behind by the watch).
An acknowledged operation left with no candidate is a failure: a lost
update, a resurrection (a Put landing after a Delete that started after the
Put's close returned), a stale read on the writer's own mount.  Every event
in the history must be a value some operation wrote, made while it was in
progress (a Put that lands after its close returned is a failure too), and
at the end both mounts must show etcd's final values and names.

Long run, outside CI (the watchdog follows ETCDFS_FSX_SECONDS):
    ETCDFS_FSX_SECONDS=600 bash tests/run -- -k fsx
Replay the choices of a failed run with ETCDFS_FSX_SEED=<the seed printed>.
The op logs and history of every run are saved in the test's tmp_path
(run.json); `/usr/bin/python3 tests/integration/test_fsx.py run.json` checks a
saved run again.
"""
import base64
import bisect
import collections
import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

import harness
from fsx_worker import MIN_RECORD, parse, record, vkey, whole_records

SECONDS = float(os.environ.get("ETCDFS_FSX_SECONDS", "20"))
NAMES = ["f0", "f1", "f2", "f3", "f4", "f5"]
KEEP = "keep"                       # a key nobody touches: the directory stays
DIR = "/fsx/d/"                     # the files' keys are DIR + name
END_KEY = b"/fsx/end"               # put after the run: the history ends there
ROLES = ["mixed", "mixed", "reader"]
CTL_PAUSE = 0.2                     # seconds between etcdctl calls (about)
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fsx_worker.py")

# The per-test watchdog (conftest) allows this module this long.
TEST_TIMEOUT = max(180.0, SECONDS * 1.5 + 150)

# The failures a close may report without its Put having been made: ESTALE
# (the guard found the key changed) and EFBIG (etcd refused the size).  Any
# other failure of close (ENOTCONN, ETIMEDOUT, EIO...) may come after etcd
# applied the Put, so such an operation may or may not be in the history.
NOT_APPLIED = {"ESTALE", "EFBIG"}


def not_applied(op):
    """True if op failed in a way that says it changed nothing: at open,
    with ESTALE or EFBIG, or a name not found by truncate, unlink, rename."""
    res, step = op.res, op.e.get("step")
    return res != "ok" and (step == "open" or res in NOT_APPLIED or
                            (res == "ENOENT" and step in ("truncate", "unlink", "rename")))

# The failures each kind may legitimately see here, and at which step (the
# system call); any other is reported.  ENOENT is where a name is looked up,
# and means the key was absent; ESTALE where a guarded change is made.
ALLOWED = {
    "append": {"ENOENT": {"open"}, "ESTALE": {"close"}},
    "shrink": {"ENOENT": {"open"}, "ESTALE": {"close"}},
    "truncate": {"ENOENT": {"truncate"}, "ESTALE": {"truncate"}},
    "unlink": {"ENOENT": {"unlink"}},
    "rename": {"ENOENT": {"rename"}, "ESTALE": {"rename"}},
    "read": {"ENOENT": {"open", "read"}},     # read: deleted elsewhere since open
}

# A Put at the last close of a file (release) happens after close returned
# and can only be logged when it fails.
ALLOWED_STDERR = [r"etcdfs: could not write a file at its last close: Stale file handle"]

INF = 1 << 62


def is_torn(v):
    return v is not None and v.startswith("!")


def show(v, limit=160):
    if v is None:
        return "<absent>"
    if v == "":
        return "''"
    s = v if not is_torn(v) else "TORN " + bytes.fromhex(v[1:]).decode("latin-1")
    return repr(s if len(s) <= limit else s[:limit] + "...(%d chars)" % len(s))


def rid(rec):
    return "%d.%d" % (rec[0], rec[1])


# ------------------------------------------------------------------ history

def fetch_history(etcd, prefix, end_key, timeout=60):
    """Every event under prefix from revision 1 until the event of end_key:
    [(rev, key bytes, is_put, value bytes)] in revision order.  Gives up
    when no event has arrived for timeout seconds (a long run's history
    takes minutes to stream through etcdctl and json)."""
    env = dict(os.environ, ETCDCTL_API="3")
    env.pop("ETCDCTL_ENDPOINTS", None)
    p = subprocess.Popen(etcd.ctl_argv("watch", "--prefix", prefix, "--rev", "1", "-w", "json"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    events, done, bad = [], threading.Event(), []

    def reader():
        try:
            for line in p.stdout:
                line = line.strip()
                if not line.startswith(b"{"):
                    continue
                resp = json.loads(line)
                if resp.get("Canceled") or resp.get("CompactRevision"):
                    bad.append(line[:300])
                    return
                for ev in resp.get("Events") or []:
                    kv = ev["kv"]
                    key = base64.b64decode(kv["key"])
                    events.append((int(kv["mod_revision"]), key, ev.get("type", 0) == 0,
                                   base64.b64decode(kv.get("value", ""))))
                    if key == end_key:
                        return
        finally:
            done.set()

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    seen, idle = 0, 0.0
    while not done.wait(1) and idle < timeout:
        idle = 0.0 if len(events) != seen else idle + 1
        seen = len(events)
    p.kill()
    p.wait(10)
    t.join(10)
    assert not bad, "the history watch was cancelled: %r" % bad
    assert events and events[-1][1] == end_key, \
        "incomplete history: %d events, no end marker, none for %ss (stderr %r)" \
        % (len(events), timeout, p.stderr.read()[-500:])
    revs = [e[0] for e in events]
    assert revs == sorted(revs), "history out of revision order"
    return events


# ------------------------------------------------------------------ checker

class Cands:
    """Revisions an op's effect can lie at: sorted disjoint (first, last)
    ranges, shared by every op with the same ones; each op narrows them by
    its own bounds (Op.lo, Op.hi) instead of copying."""

    def __init__(self, ranges):
        self.ranges = ranges
        self.starts = [a for a, _ in ranges]
        self.ends = [b for _, b in ranges]

    def first(self, lo, hi):
        """The first candidate in [lo, hi], or None."""
        i = bisect.bisect_left(self.ends, lo)
        if i == len(self.ranges):
            return None
        a = max(self.ranges[i][0], lo)
        return a if a <= hi else None

    def last(self, lo, hi):
        j = bisect.bisect_right(self.starts, hi) - 1
        if j < 0:
            return None
        b = min(self.ranges[j][1], hi)
        return b if b >= lo else None

    def show(self, limit=8):
        parts = ["r%d" % a if a == b else "r%d-%d" % (a, b) for a, b in self.ranges[:limit]]
        if len(self.ranges) > limit:
            parts.append("... (%d ranges)" % len(self.ranges))
        return "{" + ", ".join(parts) + "}"


NO_CANDS = Cands([])


class Op:
    """One logged operation and what the checker learns about it."""
    __slots__ = ("i", "e", "kind", "w", "m", "keys", "t0", "t1", "res", "cls", "cands",
                 "lo", "hi", "lo_by", "hi_by", "exact", "bad")

    def __init__(self, i, e):
        self.i = i
        self.e = e
        self.kind = e["op"]
        self.w = e["w"]
        self.m = e["m"]
        self.keys = tuple(e["k"])
        self.t0 = e["t0"]
        self.t1 = e["t1"]
        self.res = e["res"]
        self.cls = None      # "mut", "mread" (a mount's read), "cread" (etcdctl's) or None
        self.cands = NO_CANDS
        self.lo, self.hi = 0, INF
        self.lo_by = self.hi_by = None
        self.exact = False   # one candidate, a fact of the history: an anchor
        self.bad = False

    def first(self):
        return self.cands.first(self.lo, self.hi)

    def last(self):
        return self.cands.last(self.lo, self.hi)


class Ev:
    """One event of the history; name is None for keys outside the files."""

    def __init__(self, rev, key, name, put, v):
        self.rev, self.key, self.name, self.put, self.v = rev, key, name, put, v

    def __str__(self):
        return "r%d %s %s%s" % (self.rev, "PUT" if self.put else "DEL",
                                self.name or self.key.decode(errors="replace"),
                                " = " + show(self.v) if self.put else "")


class Checker:
    """Checks the logged operations (entries) on names against the history
    (events, up to revision end_rev); run() returns the violations."""

    def __init__(self, names, events, entries, end_rev, t_base):
        self.names = set(names)
        self.end = end_rev
        self.t_base = t_base
        self.events = []
        self.revs = collections.defaultdict(list)
        self.tl = {n: [(0, None)] for n in names}       # name -> [(rev, value)]
        for rev, key, put, value in events:
            name = key[len(DIR):].decode() if key.startswith(DIR.encode()) else None
            ev = Ev(rev, key, name if name in self.names else None, put,
                    vkey(value) if put else None)
            self.events.append(ev)
            self.revs[rev].append(ev)
            if ev.name:
                self.tl[ev.name].append((rev, ev.v))
        self.tl_revs = {n: [r for r, _ in tl] for n, tl in self.tl.items()}
        self.index()
        self.ops = [Op(i, e) for i, e in enumerate(entries)]
        self.extra = []          # pseudo-ops: the base reads of appends and shrinks
        self.written = {rid(op.e["rec"]): op for op in self.ops if "rec" in op.e}
        self.made = []           # (op, revisions of the events it can have made, names)
        self.violations = []

    # ---- the history

    def index(self):
        self.first_put = {}      # record id -> the first Put holding it
        self.segments = {}       # (name, value) -> [(first, last)] revisions it held it
        self.single_puts = collections.defaultdict(list)   # (name, value) -> revisions
        self.puts_over = collections.defaultdict(list)     # (name, value, previous) -> revs
        self.single_dels = collections.defaultdict(list)   # name -> revisions
        self.moves = collections.defaultdict(list)         # (src, dst) -> revisions
        for ev in self.events:
            if ev.name and ev.put and ev.v:
                for r in self.records(ev.v):
                    self.first_put.setdefault(r, ev)
        for name, tl in self.tl.items():
            for i, (rev, v) in enumerate(tl):
                last = tl[i + 1][0] - 1 if i + 1 < len(tl) else self.end
                if rev > last:
                    continue
                seg = self.segments.setdefault((name, v), [])
                if seg and seg[-1][1] == rev - 1:
                    seg[-1] = (seg[-1][0], last)
                else:
                    seg.append((rev, last))
        for rev, evs in self.revs.items():
            if len(evs) == 1 and evs[0].name:
                if evs[0].put:
                    self.single_puts[(evs[0].name, evs[0].v)].append(rev)
                    prev = self.state(evs[0].name, rev - 1)
                    self.puts_over[(evs[0].name, evs[0].v, prev)].append(rev)
                else:
                    self.single_dels[evs[0].name].append(rev)
            elif len(evs) == 2:
                put = [ev for ev in evs if ev.put and ev.name]
                gone = [ev for ev in evs if not ev.put and ev.name]
                if put and gone and self.state(gone[0].name, rev - 1) == put[0].v:
                    self.moves[(gone[0].name, put[0].name)].append(rev)
        self.cache = {}

    @staticmethod
    def records(v):
        """The ids of the whole records in value v (torn or not)."""
        if is_torn(v):
            return ["%d.%d" % r for r in whole_records(bytes.fromhex(v[1:]))]
        return v.split()

    def state(self, name, rev):
        i = bisect.bisect_right(self.tl_revs[name], rev) - 1
        return self.tl[name][i][1]

    def cands(self, key, make):
        """Shared Cands for key, made by make() (a list of revisions or
        ranges) the first time."""
        c = self.cache.get(key)
        if c is None:
            got = sorted(make())
            c = self.cache[key] = Cands([r if isinstance(r, tuple) else (r, r) for r in got])
        return c

    def held(self, name, value):
        """The revisions at which name had value (None: no key)."""
        return self.cands(("held", name, value), lambda: self.segments.get((name, value), []))

    def single(self, rev):
        return len(self.revs[rev]) == 1

    def index_anchors(self):
        """For window(): the anchors by end time with the greatest revision
        so far, and by start time with the least bound from there on."""
        anchors = [op for op in self.ops if op.exact]
        by_end = sorted(anchors, key=lambda o: o.t1)
        self.a_ends = [o.t1 for o in by_end]
        self.a_maxrev = list(itertools.accumulate((o.cands.ranges[0][0] for o in by_end), max))
        by_start = sorted(anchors, key=lambda o: o.t0)
        self.a_starts = [o.t0 for o in by_start]
        # a change is before a later change, and not after a later read
        self.a_minrev = list(itertools.accumulate(
            (o.cands.ranges[0][0] - (o.cls == "mut") for o in reversed(by_start)), min))[::-1]

    def window(self, op):
        """The revisions a change that took effect between its start and its
        return can have, by the anchors alone."""
        i = bisect.bisect_left(self.a_ends, op.t0)
        lo = self.a_maxrev[i - 1] + 1 if i else 1
        j = bisect.bisect_right(self.a_starts, op.t1)
        hi = self.a_minrev[j] if j < len(self.a_minrev) else self.end
        return lo, hi

    # ---- reporting

    def fmt_op(self, op):
        e = op.e
        s = "#%d w%d m%s %s %s [%.6f, %.6f] %s" % (
            op.i, op.w, op.m, op.kind, "->".join(op.keys), op.t0 - self.t_base,
            op.t1 - self.t_base, op.res + ("@" + e["step"] if "step" in e else ""))
        if "rec" in e:
            s += " rec=" + rid(e["rec"])
        for f in ("base", "new", "v"):
            if f in e:
                s += " %s=%s" % (f, show(e[f], 100))
        if "rev" in e:
            s += " rev=%d" % e["rev"]
        if "deleted" in e:
            s += " deleted=%d" % e["deleted"]
        if "names" in e:
            s += " names=%s" % ",".join(e["names"])
        return s

    def fail(self, what, op, msg, revs=(), key=None):
        self.violations.append({"what": what, "op": op, "msg": msg, "revs": list(revs),
                                "key": key})

    def history_lines(self, keys, lo, hi, limit=40):
        """The revisions in [lo, hi] that touch keys, a transaction on one line."""
        out = []
        for rev in range(max(lo, 1), min(hi, self.end) + 1):
            evs = self.revs.get(rev, ())
            if any(ev.name in keys for ev in evs):
                out.append("    " + " & ".join(str(ev) for ev in evs))
        if len(out) > limit:
            out = out[:limit // 2] + ["    ..."] + out[-limit // 2:]
        return out

    def context(self, v):
        """The op log and history around a violation."""
        op = v["op"]
        keys = set(op.keys)
        others = [o for o in (op.lo_by, op.hi_by) if o]
        t0, t1 = op.t0 - 0.02, op.t1 + 0.02
        near = [o for o in self.ops if set(o.keys) & keys and o.t1 >= t0 and o.t0 <= t1]
        near += [o for o in others if o not in near]
        near.sort(key=lambda o: o.t0)
        lines = ["  ops on %s around it (times in s from the start):" % ",".join(sorted(keys))]
        for o in near[:50]:
            lines.append("    " + ("=> " if o.i == op.i else "   ") + self.fmt_op(o))
        if len(near) > 50:
            lines.append("       ... %d more" % (len(near) - 50))
        revs = list(v["revs"])
        if op.lo > 0:
            revs.append(op.lo)
        if op.hi < INF:
            revs.append(op.hi)
        if not revs:
            revs = list(self.window(op))
        if revs:
            lo, hi = min(revs) - 4, max(revs) + 4
            lines.append("  history of %s, r%d-r%d:" % (",".join(sorted(keys)), max(lo, 1), hi))
            lines += self.history_lines(keys, lo, hi)
        return "\n".join(lines)

    def report(self, limit=8, per_kind=2):
        counts = collections.Counter(v["what"] for v in self.violations)
        out = ["%d violations: %s" % (len(self.violations), ", ".join(
            "%s %d" % kv for kv in sorted(counts.items())))]
        shown = collections.Counter()
        rank = ["lost", "failed write applied", "wrong value", "real-time order",
                "change out of time", "read-your-writes", "read of a value", "torn read",
                "torn value", "value nobody wrote", "unexplained"]
        first = sorted(self.violations, key=lambda v: next(
            (i for i, p in enumerate(rank) if v["what"].startswith(p)), len(rank)))
        for v in first:
            if shown[v["what"]] >= per_kind or sum(shown.values()) >= limit:
                continue
            shown[v["what"]] += 1
            out.append("")
            out.append("* %s: %s" % (v["what"], v["msg"]))
            if v["op"]:
                out.append("  op: " + self.fmt_op(v["op"]))
                out.append(self.context(v))
            elif v["key"]:
                r = v["revs"][0]
                out.append("  history of %s:" % v["key"])
                out += self.history_lines({v["key"]}, r - 6, r + 6)
        return "\n".join(out)

    # ---- each operation on its own

    def read_of(self, op, name, value):
        """op read value (None: no key) from name."""
        if is_torn(value):
            self.fail("torn read", op, "read %s from %s: not whole records" % (show(value), name))
            return
        c = self.held(name, value)
        if not c.ranges:
            self.fail("read of a value never in etcd", op,
                      "read %s from %s, a value the key never had" % (show(value), name))
            return
        op.cls, op.cands = "mread", c

    def base_read(self, op):
        """The read an append or shrink made through its own descriptor,
        checked as a read of its own."""
        b = Op(len(self.ops) + len(self.extra), dict(op.e, op=op.kind + ".base", res="ok"))
        b.i = op.i
        self.extra.append(b)
        base, name = op.e["base"], op.keys[0]
        if is_torn(base):
            self.fail("torn read", b, "%s read a base that is not whole records: %s"
                      % (op.kind, show(base)))
            return
        if base == "":
            # an empty base also comes from a key deleted elsewhere after
            # this mount looked it up: the open then starts from nothing
            c = self.cands(("held", name, "", None), lambda: merge(
                self.segments.get((name, ""), []) + self.segments.get((name, None), [])))
        else:
            c = self.held(name, base)
        if not c.ranges:
            self.fail("read of a value never in etcd", b, "%s read a base %s the key never had"
                      % (op.kind, show(base)))
            return
        b.cls, b.cands = "mread", c

    def analyse(self, op):
        e, k, res, kind = op.e, (op.keys or (None,))[0], op.res, op.kind
        expected = res == "ok" or e.get("step") in ALLOWED.get(kind, {}).get(res, ())
        if not expected:
            self.fail("unexpected error", op, "%s failed with %s" % (kind, res))
        if kind in ("append", "shrink") and "base" in e:
            self.base_read(op)
        if res == "ENOENT" and expected:
            # the name was looked up and not found: a read of "no key"
            self.read_of(op, k, None)
        elif kind in ("write", "append", "ctlput"):
            self.analyse_write(op, e, k, res)
        elif kind in ("create", "truncate", "shrink", "unlink", "rename"):
            self.analyse_change(op, e, k, res)
        elif kind == "read" and res == "ok":
            self.read_of(op, k, e["v"])
        elif kind in ("ctldel", "ctlget") and res == "ok":
            self.analyse_ctl(op, e, k)
        elif kind == "listdir" and res == "ok":
            listed = set(e["names"])
            if KEEP not in listed or not listed <= self.names | {KEEP}:
                self.fail("wrong listing", op, "listed %s" % sorted(listed))
            for n in sorted(listed & self.names):
                if not any(v is not None for _, v in self.tl[n]):
                    self.fail("wrong listing", op, "listed %s, which never existed" % n)

    def analyse_write(self, op, e, k, res):
        """write, append, etcdctl put: a new record, so an exact Put."""
        kind = op.kind
        r = rid(e["rec"])
        ev = self.first_put.get(r)
        if ev is not None and not not_applied(op):
            self.made.append((op, [ev.rev], (ev.name,)))
        if res != "ok":
            if ev is not None and not_applied(op):
                self.fail("failed write applied", op, "%s failed with %s, yet record %s "
                          "is in etcd from r%d" % (e.get("step"), res, r, ev.rev), [ev.rev])
            return
        if kind == "append" and is_torn(e["base"]):
            return      # a torn read, reported with the base read
        if ev is None:
            self.fail("lost write", op, "acknowledged, but record %s is in no value of "
                      "etcd's history" % r)
            return
        want = r if kind != "append" else (e["base"] + " " + r).strip()
        problems = []
        if ev.name != k:
            problems.append("it first appears in %s, not %s" % (ev.name, k))
        if ev.v != want:
            problems.append("its first Put (r%d) is %s, not %s" % (ev.rev, show(ev.v),
                                                                  show(want)))
        if not self.single(ev.rev):
            problems.append("its first Put (r%d) is part of a transaction" % ev.rev)
        if kind == "append":
            prev = self.state(ev.name, ev.rev - 1)
            if (prev or "") != e["base"]:
                problems.append("the value before that Put was %s, not the base %s it read "
                                "and extended" % (show(prev), show(e["base"])))
        if kind == "ctlput" and ev.rev != e["rev"]:
            problems.append("etcdctl reported r%d" % e["rev"])
        if problems:
            self.fail("lost update" if kind == "append" else "wrong value", op,
                      "record %s: %s" % (r, "; ".join(problems)), [ev.rev])
            return
        op.cls, op.cands, op.exact = "mut", Cands([(ev.rev, ev.rev)]), True

    def analyse_change(self, op, e, k, res):
        """create, truncate, shrink, unlink, rename: changes whose event is
        known only up to its value."""
        kind = op.kind
        if kind == "shrink":
            if "new" not in e:            # nothing to cut: it only read
                return
            base, new = e["base"], e["new"]
            made = self.single_puts.get((k, new), [])
            c = Cands([(r, r) for r in self.puts_over.get((k, new, base), [])])
        elif kind in ("create", "truncate"):
            made = self.single_puts.get((k, ""), [])
            # at its own empty Put, or where the key already held an empty
            # value (then a Put can be spared)
            c = self.held(k, "")
        elif kind == "unlink":
            made = self.single_dels.get(k, [])
            c = self.cands(("del", k), lambda: made)
        else:
            made = self.moves.get(op.keys, [])
            c = self.cands(("move",) + op.keys, lambda: made)
        if not_applied(op):
            return                        # not made: explains nothing
        self.made.append((op, made, op.keys))     # a shrink's even over another base
        if res != "ok":
            return
        if not c.ranges and kind == "shrink":
            self.fail("lost update", op, "shrink returned 0, but etcd has no Put of %s over "
                      "the base %s it read" % (show(e["new"]), show(e["base"])))
            return
        if not c.ranges:
            if kind == "unlink":
                what = "Delete of " + k
            elif kind == "rename":
                what = "transaction moving %s to %s" % op.keys
            else:
                what = "Put of " + k
            self.fail("lost delete" if kind == "unlink" else "lost write", op,
                      "%s returned 0, but etcd's history has no %s that can be it"
                      % (kind, what))
            return
        op.cls, op.cands = "mut", c

    def analyse_ctl(self, op, e, k):
        rev = e["rev"]
        if op.kind == "ctlget":
            assert self.state(k, rev) == e["v"], \
                "history disagrees with etcdctl get %s at r%d: %s, history %s" % (
                    k, rev, show(e["v"]), show(self.state(k, rev)))
            op.cls, op.cands, op.exact = "cread", Cands([(rev, rev)]), True
        elif e["deleted"]:
            evs = self.revs[rev]
            assert len(evs) == 1 and evs[0].name == k and not evs[0].put, \
                "history disagrees with etcdctl del at r%d: %s" % (rev, [str(x) for x in evs])
            self.made.append((op, [rev], (k,)))
            op.cls, op.cands, op.exact = "mut", Cands([(rev, rev)]), True
        else:
            assert self.state(k, rev) is None, "history disagrees with etcdctl del at r%d" % rev
            op.cls, op.cands, op.exact = "cread", Cands([(rev, rev)]), True

    def check_history(self):
        """Every change in the history must be a value some operation wrote,
        made while that operation was in progress (an operation that failed
        in a way that may have been applied: from its start on)."""
        makers = collections.defaultdict(list)      # (rev, name) -> [op]
        for op, revs, names in self.made:
            lo, hi = self.window(op)
            if op.res != "ok":
                hi = self.end
            for r in revs[bisect.bisect_left(revs, lo):bisect.bisect_right(revs, hi)]:
                for name in names:
                    makers[(r, name)].append(op)
        for ev in self.events:
            if not ev.name:
                continue
            if ev.put and is_torn(ev.v):
                self.fail("torn value in etcd", None, "%s is not whole records" % ev, [ev.rev],
                          ev.name)
                continue    # nothing else can be said of it
            if ev.put:
                unknown = [r for r in ev.v.split() if r not in self.written]
                if unknown:
                    self.fail("value nobody wrote", None, "%s holds records %s that no "
                              "operation wrote" % (ev, unknown), [ev.rev], ev.name)
            if (ev.rev, ev.name) in makers:
                continue
            spans = [(op, self.window(op)) for op, revs, names in self.made
                     if ev.name in names and ev.rev in revs]
            if not spans:
                self.fail("unexplained event", None, "no operation can have made %s" % ev,
                          [ev.rev], ev.name)
                continue
            near = sorted(spans, key=lambda x: min(abs(x[1][0] - ev.rev),
                                                   abs(x[1][1] - ev.rev)))[:3]
            self.fail("change out of time", None, "%s happened while none of the "
                      "operations that can have made it was in progress; the nearest:\n"
                      "    %s" % (ev, "\n    ".join(
                          "%s, in progress over r%d-r%d" % (self.fmt_op(op), lo, hi)
                          for op, (lo, hi) in near)), [ev.rev], ev.name)

    # ---- real-time order
    #
    # Revisions are one global order that etcd assigns while each change is
    # in flight, so a change that returned before another started has the
    # smaller revision, whatever their keys; the same holds for etcdctl's
    # (linearizable) reads.  A mount's read is bound by its own key only: by
    # what its own mount changed before (read-your-writes), and before the
    # changes that started after it returned.
    #
    # First the anchors, the ops whose revision the history gives exactly,
    # bound every op: what that rules out is certain.  Then each pair of ops
    # on one key is checked against those bounds.  Bounds are not carried on
    # through ops whose revision is a guess, so one broken op cannot push
    # the ops after it out of place.

    @staticmethod
    def rule(a_cls, a_m, b_cls, b_m, scope):
        """When op A returned before op B started: rev(B) >= rev(A) + the
        result, or None if that order says nothing."""
        if scope == "global" and "mread" in (a_cls, b_cls):
            return None
        if b_cls == "mut":
            return 1                        # after a change, or after a read
        if b_cls == "cread":
            return 0                        # etcdctl's reads are linearizable
        if a_cls == "mut" and a_m == b_m:
            return 0                        # read-your-writes on one mount
        return None

    def _bound(self, ops, scope):
        """Bounds each of ops from the anchors among them; True if one moved."""
        rule = self.rule
        live = [o for o in ops if not o.bad]
        anchors = [o for o in live if o.exact]
        moved = False
        # from the anchors that returned before each op started
        by_end = sorted(anchors, key=lambda o: o.t1)
        best = {}                    # (cls, mount) -> (greatest revision, its op)
        j = 0
        for b in sorted(live, key=lambda o: o.t0):
            while j < len(by_end) and by_end[j].t1 < b.t0:
                a = by_end[j]
                j += 1
                v = a.first()
                cat = (a.cls, a.m)
                if v is not None and (cat not in best or v > best[cat][0]):
                    best[cat] = (v, a)
            top = None
            for (cls, m), (v, a) in best.items():
                d = rule(cls, m, b.cls, b.m, scope)
                if d is not None and (top is None or v + d > top[0]):
                    top = (v + d, a)
            if top and top[0] > b.lo:
                b.lo, b.lo_by = top
                moved = True
        # from the anchors that started after each op returned
        by_start = sorted(anchors, key=lambda o: o.t0, reverse=True)
        best = {}                    # (cls, mount) -> (least revision, its op)
        j = 0
        for a in sorted(live, key=lambda o: o.t1, reverse=True):
            while j < len(by_start) and by_start[j].t0 > a.t1:
                b = by_start[j]
                j += 1
                v = b.last()
                cat = (b.cls, b.m)
                if v is not None and (cat not in best or v < best[cat][0]):
                    best[cat] = (v, b)
            low = None
            for (cls, m), (v, b) in best.items():
                d = rule(a.cls, a.m, cls, m, scope)
                if d is not None and (low is None or v - d < low[0]):
                    low = (v - d, b)
            if low and low[0] < a.hi:
                a.hi, a.hi_by = low
                moved = True
        return moved

    def _pairs(self, ops):
        """Checks every pair of ops on one key (A returned before B started)
        against their bounds; reports B when no choice fits both."""
        rule = self.rule
        live = [o for o in ops if not o.bad]
        by_end = sorted(live, key=lambda o: o.t1)
        best = {}                    # (cls, mount) -> (greatest first(), its op)
        j = 0
        for b in sorted(live, key=lambda o: o.t0):
            while j < len(by_end) and by_end[j].t1 < b.t0:
                a = by_end[j]
                j += 1
                v = a.first()
                cat = (a.cls, a.m)
                if not a.bad and v is not None and (cat not in best or v > best[cat][0]):
                    best[cat] = (v, a)
            last = b.last()
            if last is None:
                continue
            for (cls, m), (v, a) in best.items():
                d = rule(cls, m, b.cls, b.m, "key")
                if d is not None and v + d > last:
                    b.bad = True
                    self.fail(self._what(b), b, self._explain_pair(a, b, v, d))
                    break

    def _what(self, op):
        if op.cls == "mread":
            return "read-your-writes: " + op.kind + (" (ENOENT)" if op.res == "ENOENT" else "")
        return "real-time order: " + op.kind

    def _explain_empty(self, op):
        what = {"mut": "no revision in etcd's history can be this %s" % op.kind,
                "mread": "no revision at which the key held what this read is recent enough "
                         "for its own mount",
                "cread": "etcdctl's revision contradicts the order of operations"}[op.cls]
        parts = [what, "its candidates are %s" % op.cands.show()]
        if op.lo_by:
            parts.append("but it must be at or after r%d, since this returned before it "
                         "started: %s" % (op.lo, self.fmt_op(op.lo_by)))
        if op.hi_by:
            parts.append("and at or before r%d, since this started after it returned: %s"
                         % (op.hi, self.fmt_op(op.hi_by)))
        return ";\n    ".join(parts)

    def _explain_pair(self, a, b, v, d):
        return ";\n    ".join([
            "it started after this returned: %s" % self.fmt_op(a),
            "which is at r%d or later (candidates %s, bounds r%d-%s)" % (
                v, a.cands.show(), a.lo, "r%d" % a.hi if a.hi < INF else "end"),
            "so this must be at r%d or later, but its candidates are %s and its bounds "
            "r%d-%s" % (v + d, b.cands.show(), b.lo, "r%d" % b.hi if b.hi < INF else "end")])

    def order(self, max_rounds=20):
        """Real-time order: reports the ops it leaves without a revision."""
        everything = [op for op in self.ops + self.extra if op.cls]
        linear = [op for op in everything if op.cls in ("mut", "cread")]
        by_key = collections.defaultdict(list)
        for op in everything:
            for k in op.keys if op.cls == "mut" else op.keys[:1]:
                by_key[k].append(op)
        for _ in range(max_rounds):
            moved = self._bound(linear, "global")
            for ops in by_key.values():
                moved |= self._bound(ops, "key")
            for op in everything:
                if not op.bad and op.first() is None:
                    op.bad = True
                    self.fail(self._what(op), op, self._explain_empty(op))
            if not moved:
                break
        for ops in by_key.values():
            self._pairs(ops)

    def run(self):
        for op in self.ops:
            self.analyse(op)
        self.index_anchors()
        self.check_history()
        self.order()
        return self.violations


def merge(ranges):
    out = []
    for a, b in sorted(ranges):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


# ------------------------------------------------------------------ the test

def ctl_json(etcd, *args):
    return json.loads(etcd.ctl(*(list(args) + ["-w", "json"])))


def summary(entries, violations, seed, seconds, revs):
    rows = collections.defaultdict(collections.Counter)
    for e in entries:
        rows[e["op"]][e["res"] if e["res"] == "ok" or e["res"].isupper() else "other"] += 1
    lines = ["fsx seed %d, %gs, 2 mounts + etcdctl: %d ops, %d revisions, %s"
             % (seed, seconds, len(entries), revs,
                "%d violations" % len(violations) if violations else "no violation")]
    for kind in sorted(rows, key=lambda k: -sum(rows[k].values())):
        c = rows[kind]
        errs = ", ".join("%s %d" % (r, n) for r, n in c.most_common() if r != "ok")
        lines.append("  %-9s %6d  ok %6d%s" % (kind, sum(c.values()), c["ok"],
                                               "  " + errs if errs else ""))
    return "\n".join(lines)


def final_state(etcd, mounts):
    """Problems with what each mount shows once the run is over, after
    giving the watch time to deliver."""
    problems = []

    def check(m):
        want = {k[len(DIR):].decode(): vkey(v) for k, v in etcd.keys(DIR, True).items()}
        names = sorted(os.listdir(m.p("fsx", "d")))
        assert names == sorted(want), "mount %s lists %s, etcd has %s" % (m.path, names,
                                                                          sorted(want))
        for n in NAMES:
            try:
                got = vkey(harness.read(m.p("fsx", "d", n)))
            except FileNotFoundError:
                got = None
            assert got == want.get(n), "mount %s: %s reads %s, etcd has %s" % (
                m.path, n, show(got), show(want.get(n)))

    for m in mounts:
        try:
            harness.settle(lambda: check(m), timeout=5)
        except (AssertionError, OSError) as e:
            problems.append(str(e))
    return problems


def check_run(run):
    """Checks a run (as save_run stores it); returns (violations, checker)."""
    checker = Checker(NAMES, run["events"], run["entries"], run["end_rev"], run["start"])
    violations = checker.run()
    for p in run["problems"]:
        checker.fail("final state", None, p)
    return violations, checker


def save_run(path, run):
    with open(path, "w") as f:
        json.dump(dict(run, events=[[r, base64.b64encode(k).decode(), put,
                                     base64.b64encode(v).decode()]
                                    for r, k, put, v in run["events"]]), f)


def load_run(path):
    with open(path) as f:
        run = json.load(f)
    run["events"] = [(r, base64.b64decode(k), put, base64.b64decode(v))
                     for r, k, put, v in run["events"]]
    return run


def start_workers(etcd, mounts, seed, start, d):
    cfgs = [{"role": role, "mount": str(mi), "dir": m.p("fsx", "d")}
            for mi, m in enumerate(mounts) for role in ROLES]
    cfgs.append({"role": "ctl", "endpoint": etcd.endpoint, "prefix": DIR,
                 "ctl_pause": CTL_PAUSE})
    (d / "locks").mkdir()
    procs = []
    try:
        for wid, cfg in enumerate(cfgs, 1):
            cfg.update(wid=wid, seed=seed, names=NAMES, lockdir=str(d / "locks"), start=start,
                       deadline=start + SECONDS, log=str(d / ("w%d.jsonl" % wid)))
            with open(d / ("w%d.stderr" % wid), "wb") as err:
                procs.append(subprocess.Popen([sys.executable, WORKER, json.dumps(cfg)],
                                              stdin=subprocess.DEVNULL, stdout=err, stderr=err))
    except BaseException:
        stop_workers(procs)
        raise
    return procs


def stop_workers(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


def test_fsx(own_etcd, mounter, tmp_path, capsys):
    etcd = own_etcd
    seed = int(os.environ.get("ETCDFS_FSX_SEED") or random.SystemRandom().randrange(1, 10 ** 9))
    entries = []

    # writer 0: the directory's sentinel and a first value for each name
    etcd.put(DIR + KEEP, "keep")
    for i, n in enumerate(NAMES):
        rec = [0, i + 1, 40]
        t0 = time.monotonic()
        out = ctl_json(etcd, "put", DIR + n, record(*rec).decode())
        entries.append({"op": "ctlput", "w": 0, "m": "ctl", "k": [n], "rec": rec, "t0": t0,
                        "t1": time.monotonic(), "res": "ok",
                        "rev": int(out["header"]["revision"])})
    mounts = [mounter(etcd=etcd, allowed_stderr=ALLOWED_STDERR) for _ in range(2)]
    for m in mounts:
        assert sorted(os.listdir(m.p("fsx", "d"))) == sorted(NAMES + [KEEP])

    start = time.monotonic() + 0.5
    procs = start_workers(etcd, mounts, seed, start, tmp_path)
    try:
        for wid, p in enumerate(procs, 1):
            try:
                rc = p.wait(max(start + SECONDS + 60 - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                raise AssertionError("fsx worker %d did not finish (seed %d)" % (wid, seed))
            assert rc == 0, "fsx worker %d exited %d (seed %d): %s" % (
                wid, rc, seed, (tmp_path / ("w%d.stderr" % wid)).read_text()[-3000:])
    finally:
        stop_workers(procs)

    end_rev = int(ctl_json(etcd, "put", END_KEY, "end")["header"]["revision"])
    events = fetch_history(etcd, "/fsx/", END_KEY)
    assert events[-1][0] == end_rev
    problems = final_state(etcd, mounts)
    for wid in range(1, len(procs) + 1):
        with open(tmp_path / ("w%d.jsonl" % wid)) as f:
            entries += [json.loads(line) for line in f]
    run = {"seed": seed, "seconds": SECONDS, "start": start, "end_rev": end_rev,
           "problems": problems, "entries": entries, "events": events}
    save_run(tmp_path / "run.json", run)

    violations, checker = check_run(run)
    with capsys.disabled():
        print("\n" + summary(entries, violations, seed, SECONDS, end_rev))
    if violations:
        pytest.fail("fsx seed %d (ETCDFS_FSX_SEED=%d replays the choices): %s\n\n"
                    "op logs and history: %s (%s %s %s checks them again)"
                    % (seed, seed, checker.report(), tmp_path, sys.executable, __file__,
                       tmp_path / "run.json"),
                    pytrace=False)


# ------------------------------------------------------------------ the checker's own test

class Sim:
    """A model of the file system the checker expects: every operation
    takes effect at one instant inside its run time (a read at a revision no
    older than its mount's own last change of the key), on one store with
    etcd's revisions.  It logs operations as the workers do, so the checker
    can be run on executions whose outcome is known: it must accept every
    one, and find the faults the model injects on request."""

    def __init__(self, seed, late_create=False):
        self.rng = random.Random(seed)
        self.late_create = late_create   # bug: a create's Put after its close
        self.rev = 1
        self.events = []
        self.tl = {n: [(0, None)] for n in NAMES}
        self.own = {}                    # (mount, name) -> revision of its last change
        self.entries = []

    def value(self, n):
        return self.tl[n][-1][1]

    def at(self, n, rev):
        return [v for r, v in self.tl[n] if r <= rev][-1]

    def change(self, m, changes):
        """Applies [(name, value or None)] as one revision; returns it."""
        self.rev += 1
        for n, v in changes:
            self.events.append((self.rev, (DIR + n).encode(), v is not None, v or b""))
            self.tl[n].append((self.rev, v))
            self.own[(m, n)] = self.rev
        return self.rev

    def run(self, seconds=3.0):
        rng = self.rng
        for i, n in enumerate(NAMES):
            rec = [0, i + 1, 40]
            rev = self.change("ctl", [(n, record(*rec))])
            self.entries.append({"op": "ctlput", "w": 0, "m": "ctl", "k": [n], "rec": rec,
                                 "t0": -1.0 + i * 0.01, "t1": -0.995 + i * 0.01, "res": "ok",
                                 "rev": rev})
        workers = [(w, m) for w, m in enumerate(["0", "0", "0", "1", "1", "1", "ctl"], 1)]
        seq = collections.Counter()
        busy = {}                        # (mount, name) -> until when
        queue = [(rng.random() * 0.001, "free", w, m, None) for w, m in workers]
        while queue:
            queue.sort(key=lambda x: x[0])
            t, what, w, m, e = queue.pop(0)
            if what == "free":
                if t < seconds:
                    self.start(t, w, m, seq, busy, queue)
            else:
                what(t, e)
        self.end = self.change("ctl", [])
        self.events.append((self.end, END_KEY, True, b"end"))
        return self

    def start(self, t, w, m, seq, busy, queue):
        rng = self.rng
        a, b = rng.sample(NAMES, 2)
        kinds = ["put", "del", "get"] if m == "ctl" else \
            ["write", "append", "shrink", "create", "truncate", "unlink", "rename", "read"]
        kind = rng.choice(kinds)
        held = [(m, a), (m, b)] if kind == "rename" else [(m, a)]
        later = max([busy.get(x, 0) for x in held] + [t])
        if later > t:                    # another worker of this mount has the name
            queue.append((later + 1e-6, "free", w, m, None))
            return
        t1 = t + rng.uniform(0.0005, 0.006)
        for x in held:
            busy[x] = t1
        e = {"op": kind if m != "ctl" else "ctl" + kind, "k": [a, b] if kind == "rename" else [a],
             "w": w, "m": m, "t0": t, "t1": t1, "res": "ok"}
        if kind in ("write", "append", "put"):
            seq[w] += 1
            e["rec"] = [w, seq[w], rng.randint(MIN_RECORD, 60)]
        tb = t + (t1 - t) * 0.2
        tl = t + (t1 - t) * rng.uniform(0.3, 0.95)
        if kind in ("append", "shrink"):
            queue.append((tb, self.base, w, m, e))
        queue.append((tl, self.effect, w, m, e))
        if kind == "create" and self.late_create:
            e["late"] = True
            queue.append((t1 + rng.uniform(0.0001, 0.004), self.late, w, m, e))
        self.entries.append(e)
        queue.append((t1 + rng.uniform(0, 0.0005), "free", w, m, None))

    def base(self, t, e):
        n = e["k"][0]
        v = self.value(n)
        if v is None:
            e["res"], e["step"] = "ENOENT", "open"
            return
        e["base"] = vkey(v)
        e["base_mod"] = self.tl[n][-1][0]

    def late(self, t, e):
        self.change(e["m"], [(e["k"][0], b"")])

    def effect(self, t, e):
        if e["res"] != "ok":
            return                       # failed at open
        kind, m, n = e["op"], e["m"], e["k"][0]
        v = self.value(n)
        if kind in ("write", "ctlput"):
            rev = self.change(m, [(n, record(*e["rec"]))])
            if m == "ctl":
                e["rev"] = rev
        elif kind in ("append", "shrink"):
            if self.tl[n][-1][0] != e["base_mod"]:
                e["res"], e["step"] = "ESTALE", "close"
            elif kind == "append":
                self.change(m, [(n, v + record(*e["rec"]))])
            elif v:
                cut = len(v) - parse(v)[-1][2]
                e["new"] = vkey(v[:cut])
                self.change(m, [(n, v[:cut])])
            del e["base_mod"]
        elif kind == "create":
            if not e.get("late"):
                self.change(m, [(n, b"")])
        elif v is None and kind in ("truncate", "unlink", "rename", "read"):
            e["res"], e["step"] = "ENOENT", {"read": "open"}.get(kind, kind)
        elif kind == "truncate":
            self.change(m, [(n, b"")])
        elif kind == "unlink":
            self.change(m, [(n, None)])
        elif kind == "rename":
            self.change(m, [(e["k"][1], v), (n, None)])
        elif kind == "read":
            r = self.rng.randint(self.own.get((m, n), 0), self.rev)
            got = self.at(n, r)
            if got is None:
                e["res"], e["step"] = "ENOENT", "open"
            else:
                e["v"] = vkey(got)
        elif kind == "ctldel":
            e["deleted"] = int(v is not None)
            e["rev"] = self.change(m, [(n, None)]) if v is not None else self.rev
        elif kind == "ctlget":
            e["rev"], e["v"] = self.rev, vkey(v)

    def check(self):
        checker = Checker(NAMES, self.events, self.entries, self.end, 0.0)
        return checker.run(), checker


def test_checker_accepts_linearizable_runs():
    """The checker finds nothing wrong in runs of the model (no false
    positives), and finds what the model breaks: a create's Put made after
    its close returned, a lost append, a torn read."""
    for seed in range(6):
        violations, checker = Sim(seed).run().check()
        assert not violations, "seed %d: %s" % (seed, checker.report())
    violations, _ = Sim(1, late_create=True).run().check()
    assert {"change out of time", "real-time order: unlink"} & {v["what"] for v in violations}

    sim = Sim(2).run()
    appends = [e for e in sim.entries if e["op"] == "append" and e["res"] == "ok"]
    rev = [ev for ev in sim.events if ev[2] and record(*appends[5]["rec"]) in ev[3]][0][0]
    sim.events = [ev if ev[0] != rev else (rev, ev[1], True, b"") for ev in sim.events]
    violations, _ = sim.check()
    assert "lost write" in {v["what"] for v in violations}

    sim = Sim(3).run()
    read = [e for e in sim.entries if e["op"] == "read" and e["res"] == "ok" and e["v"]][0]
    value = [v for _, _, put, v in sim.events if put and vkey(v) == read["v"]][0]
    read["v"] = vkey(value[:-3])
    violations, _ = sim.check()
    assert "torn read" in {v["what"] for v in violations}


def main(path):
    """python3 test_fsx.py RUN_JSON: checks a saved run again; FSX_REPORT=N
    shows N violations in detail."""
    run = load_run(path)
    violations, checker = check_run(run)
    print(summary(run["entries"], violations, run["seed"], run.get("seconds", 0),
                  run["end_rev"]))
    if violations:
        n = int(os.environ.get("FSX_REPORT", "8"))
        print(checker.report(limit=n, per_kind=n))
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
