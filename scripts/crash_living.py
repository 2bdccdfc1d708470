"""Crash safety of the living collection (issue 14): kill a writer with SIGKILL many times, at random moments
and at chosen points inside commits and merges, and check what it left.

Each kill: a child process (``scripts/_crash_child.py``, a real ``subprocess.Popen`` of this Python; no
model, no torch) opens the collection and runs random writes (add batches with precomputed vectors, upserts,
deletes, commits, merges), logging every acknowledged commit (fsynced) before it goes on. The parent kills it
after a random delay, or the child kills itself at a crash point (``LSR_CRASH_AT``: a new segment half
written or written but not committed, a deletion bitmap half written or written, the commit point half
written or renamed into place, garbage collection under way or done, the acknowledgement not yet logged).
Then the parent checks:

* the collection opens (``Collection.open(verify=True)``: every file's sha256);
* its state (generation, live ids, each one's version) is one of the committed states: the last
  acknowledged one, or the next one when the kill came inside a commit after its commit point; a crash
  point before the commit point must leave the acknowledged state, one after it the next state;
* every live row's stored vector is the one that was written for that id and version;
* ``safe`` and ``exact`` sparse searches return the brute-force top-k over the live documents' stored
  vectors (k = 1, 10, 50);
* the next writer (open, one upsert, commit: garbage collection) works, and then no stray file is left: only
  ``write.lock``, ``manifest.json``, the commit points the garbage collection had to keep (the newest and
  the one the writer itself had open), the segments and deletion bitmaps they name, the first build's files
  while a kept commit point names segment ".", and nothing unfinished or temporary anywhere.

A failure is printed with its kill (number, plan). The children's operations follow from ``--seed`` (and
the kill's number), the crash points too; random-delay kills land where the clock says, so a run is
repeatable but not to the operation; ``--workdir DIR`` keeps the collection, the logs and the children's
stderr.

Usage::

    .venv/bin/python scripts/crash_living.py --kills 300 --seed 1
    .venv/bin/python scripts/crash_living.py --kills 40 --seed 3 --json     # the summary as one JSON line
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import _crash_child as child  # beside this script: the child, the vectors, the log, the crash points
import numpy as np

from lsr.collection import Collection
from lsr.manifest import load_manifest
from lsr.searcher import Searcher
from lsr.segments import COMMIT_RE, DELETES_DIR, SEGMENTS_DIR, commit_generations, read_commit, referenced

CHILD = Path(__file__).resolve().parent / "_crash_child.py"
UNFINISHED = ".lsr-unfinished"
#: (point, operation) pairs a crash-point kill cycles through (a merge writes no deletion bitmap of its own
#: when no deletion arrives while it runs, which one single-threaded child never does; the first build's
#: files go once per collection: that point is the first kill's plan, see :func:`plans`)
POINT_PLANS = [(p, op) for p in child.POINTS for op in ("commit", "merge")
               if (not p.startswith("deletes.") or op == "commit") and p != "gc.base_partial"]


@dataclass
class Kill:
    """One kill: its plan and what the parent found."""

    n: int
    plan: str                    # "random" or "<op>:<point>"
    killed: bool = False         # False: the child ran out of operations first (not counted as a kill)
    phase: str = ""              # where it died: between commits, inside a commit / merge (from the log)
    state: str = ""              # "acked" (last acknowledged state) or "next" (committed, not acknowledged)
    generation: int = 0
    segments: int = 0
    live: int = 0
    strays_after_kill: int = 0   # files the kill left that the next commit's garbage collection removed
    seconds: float = 0.0         # the whole kill: the child's life, then the checks
    child_seconds: float = 0.0
    failures: list = field(default_factory=list)


# -- the collection -----------------------------------------------------------------------------------------
def base_files(folder: Path) -> set[str]:
    """The first build's files at the root (what segment "." is made of)."""
    own = load_manifest(folder, own=True)
    files = {own.ids_file, "metadata"} | ({own.docstore} if own.docstore else set())
    return files | {e.dir for e in own.retrievers.values() if e.dir != "."}


def stray_files(folder: Path, keep: set[int]) -> list[str]:
    """What does not belong in ``folder`` once garbage is collected, with ``keep`` the commit points that
    may remain (relative paths)."""
    strays: list[str] = []
    segs: set[str] = set()
    dels: set[str] = set()
    for g in commit_generations(folder):
        if g not in keep:
            strays.append(f"commit-{g}.json")
            continue
        s, d = referenced(read_commit(folder, g))
        segs |= s
        dels |= d
    allowed = {"manifest.json", "write.lock", SEGMENTS_DIR, DELETES_DIR}
    if "." in segs:
        allowed |= base_files(folder)
    for p in sorted(folder.iterdir()):
        if not COMMIT_RE.match(p.name) and p.name not in allowed:
            strays.append(p.name)
    for sub, named in ((SEGMENTS_DIR, segs), (DELETES_DIR, dels)):
        if (folder / sub).is_dir():
            strays += [f"{sub}/{p.name}" for p in sorted((folder / sub).iterdir())
                       if f"{sub}/{p.name}" not in named]
    for rel in sorted(segs - {"."}):
        for p in (folder / rel).rglob("*"):
            if p.name == UNFINISHED or ".tmp-" in p.name:
                strays.append(str(p.relative_to(folder)))
    return strays


def stored_vectors(c) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every row's stored SPLADE vector (terms, weights) in the collection's row order."""
    parts = [s.retrievers["sparse"].index for s in c.segments] if c.segments is not None else \
        [c.retrievers["sparse"].index]
    out = []
    for idx in parts:
        indptr, terms, imp = idx.forward()
        scale = float(idx.scale) if idx.quantization == "uint8" else 1.0
        for a, b in zip(indptr[:-1].tolist(), indptr[1:].tolist(), strict=True):
            out.append((np.asarray(terms[a:b]), np.asarray(imp[a:b], np.float64) * scale))
    return out


# -- the checks ---------------------------------------------------------------------------------------------
def diff(found: dict, want: dict) -> str:
    lost = sorted(set(want) - set(found))
    extra = sorted(set(found) - set(want))
    changed = sorted(d for d in set(found) & set(want) if found[d] != want[d])
    return (f"{len(lost)} missing {lost[:5]}, {len(extra)} extra {extra[:5]}, {len(changed)} at another "
            f"version {[(d, found[d], want[d]) for d in changed[:5]]}")


def check_state(c, entries: list[dict], kill: Kill, expect: str | None) -> dict | None:
    """Match the opened collection against the log's committed states; the state found (id -> version)."""
    acks = [e for e in entries if e["kind"] == "ack"]
    allowed = [("acked", acks[-1])]
    if entries[-1]["kind"] == "intent":
        allowed.append(("next", entries[-1]))
        kill.phase = f"inside {entries[-1]['op']}"
    else:
        kill.phase = "between commits"
    gen = c.manifest.generation
    found = child.live_state(c)
    kill.generation, kill.live = gen, len(found)
    kill.segments = len(c.manifest.segments) if c.manifest.segments else 1
    for name, e in allowed:
        if e["gen"] == gen and e["live"] == found:
            kill.state = name
            break
    else:
        kill.failures.append(f"generation {gen} with {len(found)} live documents is no committed state: " +
                             "; ".join(f"{name} (generation {e['gen']}): {diff(found, e['live'])}"
                                       for name, e in allowed))
        return None
    if expect is not None and kill.state != expect:
        kill.failures.append(f"a kill at {kill.plan} must leave the {expect} state, found the {kill.state} "
                             f"one (generation {gen})")
    if len(c) != len(found):
        kill.failures.append(f"len(collection) is {len(c)}, {len(found)} live ids")
    return found


def check_vectors(c, found: dict, kill: Kill) -> None:
    rows = np.arange(c.n_rows) if c.live is None else np.flatnonzero(c.live)
    vectors = stored_vectors(c)
    bad = []
    for r in rows.tolist():
        d = str(c.ids[r])
        terms, weights = child.vector(d, found[d])
        t, w = vectors[r]
        if not (np.array_equal(t, terms) and np.allclose(w, weights, rtol=1e-6, atol=0)):
            bad.append(d)
    if bad:
        kill.failures.append(f"{len(bad)} live rows store another vector than was written: {bad[:5]}")


def check_search(c, kill: Kill, rng: np.random.Generator, *, queries: int = 4) -> None:
    """``safe`` and ``exact`` against brute force over the live rows' stored vectors."""
    rows = np.arange(c.n_rows) if c.live is None else np.flatnonzero(c.live)
    vectors = stored_vectors(c)
    dense = np.zeros((c.n_rows, child.VOCAB))
    for r in rows.tolist():
        t, w = vectors[r]
        dense[r, t] = w
    s = Searcher(c)
    texts = [f"query {int(rng.integers(1 << 30))}" for _ in range(queries)]
    Q = child.StubEncoder().encode_queries(texts)
    for k in (1, 10, 50):
        for speed in ("safe", "exact"):
            results = s.query(texts, s.params(k=k, mode="sparse", speed=speed), threads=1)
            for i, res in enumerate(results):
                q = np.zeros(child.VOCAB)
                a, b = Q.indptr[i], Q.indptr[i + 1]
                np.add.at(q, Q.indices[a:b], Q.values[a:b].astype(np.float64))
                truth = dense @ q
                pos = rows[truth[rows] > 0]
                want = np.sort(truth[pos])[::-1][:k]
                where = f"{speed} k={k} {texts[i]!r}"
                if len(res) != len(want):
                    kill.failures.append(f"search {where}: {len(res)} hits, brute force {len(want)}")
                elif not np.allclose(res.scores, want, rtol=1e-5, atol=1e-6):
                    kill.failures.append(f"search {where}: scores {res.scores[:5]} != brute force {want[:5]}")
                elif not (np.isin(res.rows, pos).all() and np.allclose(truth[res.rows], res.scores, rtol=1e-5,
                                                                        atol=1e-6)):
                    kill.failures.append(f"search {where}: hits that are deleted or scored wrongly")
                elif len(set(res.ids.tolist())) != len(res):
                    kill.failures.append(f"search {where}: repeated ids")


def next_writer(c, folder: Path, found: dict, life: str, rng: np.random.Generator, kill: Kill
                ) -> tuple[int, dict] | None:
    """The next writer on the opened collection ``c``: one upsert, commit (garbage collection), close; then
    the new state and the files are checked. (generation, state) after it, or None when the collection
    cannot take it."""
    opened = c.manifest.generation
    kill.strays_after_kill = len(stray_files(folder, set(commit_generations(folder))))
    d = str(rng.choice(sorted(found))) if found else f"{life}-p"
    pair = (d, f"{life}.p")
    try:
        c.add([{"id": d, "title": "", "text": child.text(*pair)}], vectors={"sparse": child.batch([pair])})
        info = c.commit()
    except Exception as e:  # the finding: the collection does not take the next write
        kill.failures.append(f"the next commit fails: {type(e).__name__}: {str(e)[:300]}")
        return None
    state = {**found, d: pair[1]}
    now = child.live_state(c)  # the state the commit installed (its commit point, opened from disk)
    if c.manifest.generation != info.generation or now != state:
        kill.failures.append(f"after the next commit: generation {c.manifest.generation}, {diff(now, state)}")
    c.close()
    gc.collect()  # drop this process's leases on older commit points before the next child runs
    strays = stray_files(folder, {info.generation, opened})
    if strays:
        kill.failures.append(f"stray files after the next commit: {strays[:8]}")
    return info.generation, state


# -- children -----------------------------------------------------------------------------------------------
class Fresh:
    """Each child a fresh ``subprocess.Popen`` of this Python (the crash point through ``LSR_CRASH_*``)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def start(self, cmd: dict) -> "Fresh":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "LSR_CRASH_AT": cmd.get("point") or "", "LSR_CRASH_OP": cmd.get("op", "any"),
               "LSR_CRASH_NTH": str(cmd.get("nth", 1))}
        with open(cmd["stderr"], "w") as err:
            args = ["run", cmd["folder"], cmd["log"], "--seed", str(cmd["seed"]), "--life", cmd["life"],
                    "--ops", str(cmd["ops"])]
            self.p = subprocess.Popen([sys.executable, str(CHILD), *args], stdout=subprocess.PIPE, stderr=err,
                                      cwd=self.workdir, env=env, text=True)
        self.ready = self.p.stdout.readline().startswith("ready")
        return self

    def kill(self) -> None:
        self.p.send_signal(signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            return None
        finally:
            self.p.stdout.close()

    def close(self) -> None:
        pass


class Forked:
    """Children forked by one warm fork server (``_crash_child.py serve``, itself a ``Popen`` of this Python):
    each a separate process killed for real, without a second of imports and Numba set-up per kill."""

    def __init__(self, workdir: Path) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        self.server = subprocess.Popen([sys.executable, str(CHILD), "serve", str(workdir / "server")],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=workdir, env=env,
                                       text=True)
        if self.server.stdout.readline().strip() != "serving":
            raise RuntimeError(f"the fork server did not start (exit {self.server.wait()})")

    def start(self, cmd: dict) -> "Forked":
        self.server.stdin.write(json.dumps(cmd) + "\n")
        self.server.stdin.flush()
        self.pid, self.code, self.ready = None, None, False
        while self.pid is None or not (self.ready or self.code is not None):
            self._read()
        return self

    def _read(self) -> None:
        words = self.server.stdout.readline().split()
        if not words:
            raise RuntimeError(f"the fork server died (exit {self.server.wait()})")
        if words[0] == "pid":
            self.pid = int(words[1])
        elif words[0] == "ready":
            self.ready = True
        elif words[0] == "exit":
            self.code = int(words[2])

    def kill(self) -> None:
        if self.code is None:
            os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        timer = threading.Timer(timeout, self.kill)
        timer.start()
        try:
            while self.code is None:
                self._read()
        finally:
            timer.cancel()
        return self.code

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


# -- one kill -----------------------------------------------------------------------------------------------
def kill_once(folder: Path, workdir: Path, launcher, n: int, seed: int, start: tuple[int, dict], *,
              plan: str, delay: float = 0.0, nth: int = 1, ops: int = 40
              ) -> tuple[Kill, tuple[int, dict] | None]:
    """Run one child from the committed state ``start`` and kill it per ``plan``; check; the next state."""
    t0 = time.perf_counter()
    kill = Kill(n=n, plan=plan)
    life = f"k{n}"
    log = workdir / f"log-{n}.jsonl"
    with open(log, "w", encoding="utf-8") as f:
        child.log_line(f, {"kind": "ack", "op": "start", "gen": start[0], "live": start[1]})
    cmd = {"folder": str(folder), "log": str(log), "seed": seed, "life": life, "ops": ops, "nth": nth,
           "stderr": str(workdir / f"child-{n}.err"), "point": None, "op": "any"}
    if plan != "random":
        cmd["op"], cmd["point"] = plan.split(":")
    proc = launcher.start(cmd)
    if proc.ready and plan == "random":
        time.sleep(delay)
        proc.kill()
    code = proc.wait(timeout=120)
    kill.child_seconds = time.perf_counter() - t0
    if code is None:
        kill.failures.append("the child hung (killed after 120 s)")
    kill.killed = code == -signal.SIGKILL
    if code not in (0, -signal.SIGKILL, None):
        tail = Path(cmd["stderr"]).read_text(errors="replace").strip().splitlines()[-6:]
        kill.failures.append(f"the child failed (exit {code}): {' | '.join(tail)}")
    entries = child.read_log(log)
    expect = None
    if plan != "random" and kill.killed:
        expect = "next" if child.POINTS[cmd["point"]][1] else "acked"
    nxt = None
    try:
        c = Collection.open(folder, load_encoders=False, verify=True)
    except Exception as e:
        kill.failures.append(f"the collection does not open: {type(e).__name__}: {str(e)[:300]}")
    else:
        child.install_stub(c)
        rng = np.random.default_rng([seed, n])
        found = check_state(c, entries, kill, expect)
        if found is not None:
            check_vectors(c, found, kill)
            check_search(c, kill, rng)
            nxt = next_writer(c, folder, found, life, rng, kill)
        c.close()
        del c
        gc.collect()
    kill.seconds = time.perf_counter() - t0
    return kill, nxt


def plans(rng: np.random.Generator, count: int, *, random_share: float = 0.4, max_delay: float = 0.6):
    """``count`` plans: the first build's files half removed, then random-delay kills and crash points
    (cycling through :data:`POINT_PLANS`)."""
    order = rng.permutation(len(POINT_PLANS)).tolist()
    i = 0
    yield "any:gc.base_partial", 0.0, 1  # while the first build's files are there
    for _ in range(count - 1):
        if rng.random() < random_share:
            yield "random", float(rng.uniform(0.0, max_delay)), 1
        else:
            point, op = POINT_PLANS[order[i % len(order)]]
            i += 1
            yield f"{op}:{point}", 0.0, int(rng.integers(1, 3))


def run_kills(workdir: Path, *, kills: int, seed: int, n_docs: int = 200, fresh: bool = False,
              verbose: bool = False) -> list[Kill]:
    """Kill ``kills`` children (those whose crash point was not reached do not count; at most 3x as many
    attempts) on one collection in ``workdir``; a collection left unusable is rebuilt after its failure is
    recorded. ``fresh``: a new Python per child instead of the fork server."""
    workdir.mkdir(parents=True, exist_ok=True)
    folder = workdir / "coll"
    state = child.build_base(folder, n_docs)
    rng = np.random.default_rng(seed)
    out: list[Kill] = []
    launcher = Fresh(workdir) if fresh else Forked(workdir)
    try:
        for n, (plan, delay, nth) in enumerate(plans(rng, 3 * kills)):
            if sum(k.killed for k in out) >= kills:
                break
            kill, nxt = kill_once(folder, workdir, launcher, n, seed * 100_003 + n, state, plan=plan,
                                  delay=delay, nth=nth)
            out.append(kill)
            if verbose or kill.failures:
                print(line(kill), flush=True)
                for f in kill.failures:
                    print(f"    {f}", flush=True)
            state = nxt if nxt is not None else child.build_base(folder, n_docs)
    finally:
        launcher.close()
    return out


# -- the report ---------------------------------------------------------------------------------------------
def line(k: Kill) -> str:
    what = "killed" if k.killed else "not reached"
    return (f"#{k.n:<4} {k.plan:<26} {what:<11} {k.phase:<16} {k.state or '-':<6} gen {k.generation:<5} "
            f"{k.segments:>3} seg {k.live:>4} live  strays {k.strays_after_kill:>2}  {k.seconds:5.2f} s "
            f"({k.child_seconds:4.2f} child)  {'FAIL' if k.failures else 'ok'}")


def summary(kills: list[Kill]) -> dict:
    done = [k for k in kills if k.killed]
    by: dict[str, dict] = {}
    for k in done:
        key = f"random, {k.phase}" if k.plan == "random" else k.plan
        row = by.setdefault(key, {"kills": 0, "acked": 0, "next": 0, "failures": 0})
        row["kills"] += 1
        if k.state:
            row[k.state] += 1
        row["failures"] += bool(k.failures)
    return {"kills": len(done), "not_reached": len(kills) - len(done),
            "acked": sum(k.state == "acked" for k in done), "next": sum(k.state == "next" for k in done),
            "inside_commit": sum(k.phase == "inside commit" for k in done),
            "inside_merge": sum(k.phase == "inside merge" for k in done),
            "strays_cleaned": sum(k.strays_after_kill for k in done),
            "max_segments": max((k.segments for k in done), default=0),
            "failures": sum(bool(k.failures) for k in kills), "by_phase": by}


def table(s: dict) -> str:
    rows = [f"{'phase':<30} {'kills':>5} {'acked':>6} {'next':>5} {'fail':>5}"]
    for key in sorted(s["by_phase"]):
        r = s["by_phase"][key]
        rows.append(f"{key:<30} {r['kills']:>5} {r['acked']:>6} {r['next']:>5} {r['failures']:>5}")
    rows.append(f"{'total':<30} {s['kills']:>5} {s['acked']:>6} {s['next']:>5} {s['failures']:>5}")
    rows.append(f"({s['not_reached']} children ran out of operations before their crash point; "
                f"{s['inside_commit']} kills inside a commit, {s['inside_merge']} inside a merge; "
                f"{s['strays_cleaned']} stray files left by kills, removed by the next commit; "
                f"up to {s['max_segments']} segments)")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kills", type=int, default=300)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--docs", type=int, default=200, help="documents in the first build")
    ap.add_argument("--fresh", action="store_true", help="a new Python process per child (slower: about a "
                    "second of imports and Numba set-up each) instead of children forked by a warm server")
    ap.add_argument("--workdir", type=Path, default=None, help="kept (default: a temporary folder)")
    ap.add_argument("--verbose", action="store_true", help="a line per kill")
    ap.add_argument("--json", action="store_true", help="print the summary as one JSON line")
    args = ap.parse_args(argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="lsr-crash-"))
    t0 = time.perf_counter()
    try:
        kills = run_kills(workdir, kills=args.kills, seed=args.seed, n_docs=args.docs,
                          fresh=args.fresh, verbose=args.verbose)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    s = summary(kills)
    s["seconds"] = round(time.perf_counter() - t0, 1)
    how = "a fresh process per child" if args.fresh else "children forked by a warm server"
    print(json.dumps(s) if args.json else f"{table(s)}\n{s['seconds']} s, seed {args.seed}, {how}")
    return 1 if s["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
