"""The child side of ``scripts/crash_living.py``: a writer that a parent kills (SIGKILL), and the pieces
both sides share (the documents' vectors, a model-free stand-in encoder, the acknowledgement log, the crash
points). Not run on its own.

The child opens a living collection, reads its starting state from the last line of its acknowledgement
log, prints ``ready <pid>`` and runs a random sequence of writes: add batches (new ids and upserts of existing
ids) with precomputed vectors (``c.add(docs, vectors={"sparse": ...})``: no model, no torch), deletions,
commits, merges (``c.merge()``, ``c.merge(max_segments=k)``). Before each commit or merge it appends an
``intent`` line (the generation and the live documents the commit will make) and after it an ``ack`` line
(what the commit made), each fsynced before it goes on. A document's vector and text follow from its id and
version (:func:`vector`, :func:`text`), so the parent can check every stored row.

``LSR_CRASH_AT=<point>`` (one of :data:`POINTS`), ``LSR_CRASH_NTH=<n>`` and ``LSR_CRASH_OP=commit|merge|any``
make the child kill itself (``os.kill(os.getpid(), 9)``) at the n-th time it reaches that point (during that
kind of operation; the fork server below takes them in each command instead). The points are reached by
wrapping, in this process only, the functions the writer calls (``lsr.living.write_segment``,
``os.replace``, ``shutil.rmtree``, ``pathlib.Path.unlink``, ``lsr.segments.collect_garbage``): the library
has no hook for them.

Usage (by the parent): ``_crash_child.py run COLLECTION LOG --seed S --life L [--ops N]`` (a fresh process:
about a second to import lsr and initialise Numba before it can write), or ``_crash_child.py serve SCRATCH``:
a fork server that imports and warms up once (every Numba kernel loaded), then forks one child per command
(a separate process with its own files and locks, killed for real; the same :func:`run`). A child exits 0
when its operations ran out (the crash point was not reached), 2 on an error (traceback on stderr), 3 when
the log and the collection disagree at start.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import re
import shutil
import sys
import traceback
import zlib
from pathlib import Path

import numpy as np

from lsr import living
from lsr import segments as S
from lsr.collection import Collection
from lsr.params import BuildConfig
from lsr.searcher import Searcher
from lsr.types import SparseBatch

VOCAB = 400
AVG_TERMS = 12
#: the collection's build settings: SPLADE vectors only (stored exactly), small blocks
CONFIG = BuildConfig(dense=None, bm25=False, sparse_idf=False, quantization="float32", block_size=8)
#: the collection's encoder as its manifest records it (not a real model: loading it fails loudly)
STUB_NAME = "crash-test/random-vectors"

#: where a crash can be injected, and whether the commit being made is durable when the child dies there
POINTS = {
    "segment.unfinished": ("the new segment's folder written up to its manifest (still a temporary folder)",
                           False),
    "segment.written": ("the new segment's folder renamed into place, not yet in a commit point", False),
    "deletes.partial": ("half a new deletion bitmap written under its temporary name", False),
    "deletes.written": ("a new deletion bitmap renamed into place, not yet in a commit point", False),
    "commit.partial": ("half the new commit point written under its temporary name", False),
    "commit.written": ("the commit point renamed into place (committed), before garbage collection", True),
    "gc.commit_removed": ("garbage collection has removed an older commit point", True),
    "gc.partial": ("garbage collection half-way through removing a segment folder", True),
    "gc.base_partial": ("garbage collection half-way through removing the first build's files (segment "
                        "\".\" named no more)", True),
    "gc.done": ("garbage collected; the writer not yet moved to the new state", True),
    "ack.before": ("commit() returned; the acknowledgement not yet logged", True),
}


# -- documents ----------------------------------------------------------------------------------------------
def vector(doc_id: str, version: str) -> tuple[np.ndarray, np.ndarray]:
    """(terms ascending, float32 weights) of document ``doc_id`` at ``version``: a fixed function of both."""
    rng = np.random.default_rng(zlib.crc32(f"{doc_id}\x00{version}".encode()))
    n = int(rng.integers(0, 2 * AVG_TERMS + 1))
    p = 1.0 / np.arange(1, VOCAB + 1) ** 0.8
    terms = np.sort(rng.choice(VOCAB, size=n, replace=False, p=p / p.sum())).astype(np.int32)
    return terms, rng.uniform(0.05, 3.0, n).astype(np.float32)


def text(doc_id: str, version: str) -> str:
    return f"document {doc_id} v{version}"


def parse_text(body: str) -> tuple[str, str] | None:
    """(id, version) back from :func:`text`, or None."""
    m = re.fullmatch(r"document (\S+) v(\S+)", body or "")
    return (m.group(1), m.group(2)) if m else None


def batch(pairs: list[tuple[str, str]]) -> SparseBatch:
    """The vectors of ``(id, version)`` pairs as one SparseBatch."""
    rows = [vector(d, v) for d, v in pairs]
    indptr = np.concatenate([[0], np.cumsum([len(t) for t, _ in rows])]).astype(np.int64)
    terms = np.concatenate([t for t, _ in rows]) if rows else np.zeros(0, np.int32)
    vals = np.concatenate([w for _, w in rows]) if rows else np.zeros(0, np.float32)
    return SparseBatch(indptr, terms.astype(np.int32), vals.astype(np.float32), VOCAB)


def query(seed: int) -> SparseBatch:
    """A random query of a few terms (weights in (0.1, 2))."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 8))
    terms = np.unique(rng.integers(0, VOCAB, n)).astype(np.int32)
    return SparseBatch(np.array([0, terms.size]), terms, rng.uniform(0.1, 2.0, terms.size).astype(np.float32),
                       VOCAB)


class StubEncoder:
    """A model-free encoder: document vectors from the texts :func:`text` writes, queries from the text's
    hash. Builds the base collection and answers the writer's and the searcher's calls without torch."""

    vocab_size = VOCAB
    max_length = 256
    tokenizer = None

    def describe(self) -> dict:
        return {"name": STUB_NAME, "max_length": 256, "vocab_size": VOCAB}

    def encode_documents(self, texts, batch_size: int = 32, **_: object) -> SparseBatch:
        pairs = [parse_text(t.strip()) for t in texts]
        if any(p is None for p in pairs):
            raise ValueError("the stub encoder only encodes texts written by text()")
        return batch(pairs)  # type: ignore[arg-type]

    def encode_queries(self, texts, batch_size: int = 64, **_: object) -> SparseBatch:
        return SparseBatch.concat([query(zlib.crc32(t.encode())) for t in texts])


def install_stub(c) -> None:
    """Give the opened collection the stub as its SPLADE encoder: ``Writer.commit`` looks up the SPLADE
    encoder's tokenizer even when no retriever needs one, and would load the model the manifest names."""
    c.retrievers["sparse"].encoder = StubEncoder()


# -- the acknowledgement log --------------------------------------------------------------------------------
def log_line(f, obj: dict) -> None:
    f.write(json.dumps(obj, sort_keys=True) + "\n")
    f.flush()
    os.fsync(f.fileno())


def read_log(path: Path) -> list[dict]:
    """The log's complete lines (a line the kill cut short is dropped)."""
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


# -- crash points -------------------------------------------------------------------------------------------
class Crasher:
    """Counts the points reached (during ``op``) and kills this process at the ``nth`` one of ``point``."""

    def __init__(self, point: str | None, nth: int, op: str) -> None:
        if point is not None and point not in POINTS:
            raise SystemExit(f"unknown crash point {point!r}; one of {sorted(POINTS)}")
        self.point, self.nth, self.op = point, nth, op
        self.current = "staging"  # the operation running: staging, commit, merge
        self.committed = False  # whether the running operation has renamed its commit point into place
        self.seen = 0

    def begin(self, op: str) -> None:
        self.current, self.committed = op, False

    def reached(self, point: str, prepare=None) -> None:
        """Count ``point``; at the chosen one run ``prepare`` (e.g. cut a file short) and die."""
        if point != self.point or self.current == "staging" or self.op not in ("any", self.current):
            return
        if point.startswith("gc.") and not self.committed:  # a collection before this operation's commit
            return
        self.seen += 1
        if self.seen >= self.nth:
            if prepare is not None:
                prepare()
            os.kill(os.getpid(), 9)

    def install(self, folder: Path) -> None:
        if self.point is None:
            return
        folder = folder.resolve()
        orig_write_segment, orig_write_manifest = living.write_segment, living.write_manifest
        orig_replace, orig_rmtree = os.replace, shutil.rmtree
        orig_unlink, orig_gc = pathlib.Path.unlink, S.collect_garbage

        def write_segment(*a, **k):
            ref = orig_write_segment(*a, **k)
            self.reached("segment.written")
            return ref

        def write_manifest(path, *a, **k):
            if Path(path).resolve().parent == folder / S.SEGMENTS_DIR:
                self.reached("segment.unfinished")
            return orig_write_manifest(path, *a, **k)

        def replace(src, dst, *a, **k):
            dst_p = Path(dst).resolve()
            kind = "deletes" if dst_p.parent == folder / S.DELETES_DIR else \
                "commit" if dst_p.parent == folder and S.COMMIT_RE.match(dst_p.name) else None
            if kind is not None:
                self.reached(f"{kind}.partial", lambda: os.truncate(src, os.path.getsize(src) // 2))
            out = orig_replace(src, dst, *a, **k)
            if kind == "commit":
                self.committed = True
            if kind is not None:
                self.reached(f"{kind}.written")
            return out

        def rmtree(path, *a, **k):
            p = Path(path)

            def half() -> None:
                files = sorted(f for f in p.rglob("*") if f.is_file())
                for f in files[: max(len(files) // 2, 1)]:
                    orig_unlink(f)

            if p.is_dir() and folder in p.resolve().parents:
                self.reached("gc.base_partial" if p.resolve().parent == folder else "gc.partial", half)
            return orig_rmtree(path, *a, **k)

        def unlink(p, *a, **k):
            out = orig_unlink(p, *a, **k)
            if S.COMMIT_RE.match(p.name) and p.parent.resolve() == folder:
                self.reached("gc.commit_removed")
            return out

        def collect_garbage(*a, **k):
            out = orig_gc(*a, **k)
            self.reached("gc.done")
            return out

        living.write_segment, living.write_manifest = write_segment, write_manifest
        os.replace, shutil.rmtree = replace, rmtree
        pathlib.Path.unlink, S.collect_garbage = unlink, collect_garbage  # type: ignore[method-assign]


# -- the child ----------------------------------------------------------------------------------------------
def live_state(c) -> dict[str, str]:
    """The collection's live documents as {id: version} (versions read back from the stored texts)."""
    ids = c.ids.tolist() if c.live is None else c.ids[c.live].tolist()
    out = {}
    for d, doc in zip(ids, c.docstore.get_many(ids), strict=True):
        parsed = parse_text(doc.text) if doc is not None else None
        out[d] = parsed[1] if parsed is not None else "?"
    return out


def run(folder: Path, log_path: Path, *, seed: int, life: str, ops: int, crasher: Crasher) -> int:
    """The writes (see the module docstring); prints ``ready <pid>`` once the collection is open."""
    c = Collection.open(folder, load_encoders=False)
    install_stub(c)
    entries = read_log(log_path)
    last = entries[-1] if entries else None
    if last is None or last.get("kind") != "ack" or last["gen"] != c.manifest.generation:
        print(f"log/collection mismatch: log ends with {last and {k: last[k] for k in ('kind', 'gen')}}, "
              f"the collection is at generation {c.manifest.generation}", file=sys.stderr)
        return 3
    state: dict[str, str] = dict(last["live"])
    crasher.install(folder)
    rng = np.random.default_rng(seed)
    counter = 0
    f = open(log_path, "a", encoding="utf-8")
    print(f"ready {os.getpid()}", flush=True)
    for _ in range(ops):
        r = rng.random()
        if r < 0.7:  # one batch of adds / upserts / deletes, then commit
            nxt = dict(state)
            for _ in range(int(rng.integers(1, 4))):
                if rng.random() < 0.75:
                    n_new, n_up = int(rng.integers(0, 8)), int(rng.integers(0, 5))
                    live = sorted(nxt)
                    up = rng.choice(live, size=min(n_up, len(live)), replace=False).tolist() if live else []
                    pairs = []
                    for d in [f"{life}-{counter + j}" for j in range(n_new)] + up:
                        pairs.append((d, f"{life}.{counter}"))
                        counter += 1
                    if not pairs:
                        continue
                    c.add([{"id": d, "title": "", "text": text(d, v)} for d, v in pairs],
                          vectors={"sparse": batch(pairs)})
                    nxt.update(pairs)
                else:
                    live = sorted(nxt)
                    n_del = int(rng.integers(1, 6)) + (len(live) > 260) * 20
                    gone = rng.choice(live, size=min(n_del, len(live)), replace=False).tolist() \
                        if live else []
                    c.delete(gone + ["never-added"])
                    for d in gone:
                        nxt.pop(d, None)
            crasher.begin("commit")
            log_line(f, {"kind": "intent", "op": "commit", "gen": c.manifest.generation + 1, "live": nxt})
            info = c.commit()
            crasher.reached("ack.before")
            gen = info.generation if info is not None else c.manifest.generation
            state = nxt if info is not None else state
            log_line(f, {"kind": "ack", "op": "commit", "gen": gen, "live": state,
                         "segments": len(c.manifest.segments or [None])})
        else:  # a merge: the tiered policy's next one, or down to a few segments
            max_segments = None if rng.random() < 0.6 else int(rng.integers(1, 4))
            crasher.begin("merge")
            log_line(f, {"kind": "intent", "op": "merge", "gen": c.manifest.generation + 1, "live": state})
            info = c.merge(max_segments=max_segments)
            if info is not None:
                crasher.reached("ack.before")
            log_line(f, {"kind": "ack", "op": "merge", "gen": c.manifest.generation, "live": state,
                         "merged": info is not None, "segments": len(c.manifest.segments or [None])})
        crasher.begin("staging")
    c.close()
    return 0


def build_base(folder: Path, n_docs: int) -> tuple[int, dict]:
    """A fresh collection of ``n_docs`` documents at version "0" (stub vectors); (generation, state)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    corpus = folder.with_name(folder.name + "-corpus.jsonl")
    ids = [f"b{i}" for i in range(n_docs)]
    corpus.write_text("".join(json.dumps({"_id": d, "title": "", "text": text(d, "0")}) + "\n" for d in ids),
                      encoding="utf-8")
    Collection.build(corpus, folder, config=CONFIG, encoder=StubEncoder(), show_progress=False)
    c = Collection.open(folder, load_encoders=False)
    gen = c.manifest.generation
    c.close()
    return gen, {d: "0" for d in ids}


def warm_up(folder: Path) -> None:
    """Load every Numba kernel a child uses (build, open, commit, merge, search) once, then drop the
    collection: forked children start warm and share nothing open."""
    build_base(folder, 20)
    c = Collection.open(folder, load_encoders=False)
    install_stub(c)
    for j in range(3):
        pairs = [(f"w{j}-{i}", "1") for i in range(4)]
        c.add([{"id": d, "title": "", "text": text(d, v)} for d, v in pairs],
              vectors={"sparse": batch(pairs)})
        c.delete([f"b{j}"])
        c.commit()
    c.merge(max_segments=1)
    s = Searcher(c)
    for speed in ("safe", "exact"):
        s.query(["warm"], s.params(k=5, mode="sparse", speed=speed))
    c.close()
    del c, s
    gc.collect()
    shutil.rmtree(folder.parent, ignore_errors=True)


def serve(scratch: Path) -> int:
    """Fork server: warm up, print ``serving``, then per JSON line on stdin (``folder``, ``log``, ``seed``,
    ``life``, ``ops``, ``stderr``, ``point``, ``nth``, ``op``) fork a child that runs :func:`run`; print
    ``pid <pid>`` and, once it is gone, ``exit <pid> <code>`` (-9: killed)."""
    warm_up(scratch / "warm" / "coll")
    print("serving", flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:  # the child: its own process, killed for real
            code = 2
            try:
                fd = os.open(cmd["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                crasher = Crasher(cmd.get("point"), int(cmd.get("nth", 1)), cmd.get("op", "any"))
                code = run(Path(cmd["folder"]), Path(cmd["log"]), seed=int(cmd["seed"]), life=cmd["life"],
                           ops=int(cmd["ops"]), crasher=crasher)
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {pid} {os.waitstatus_to_exitcode(status)}", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    one = sub.add_parser("run", help="one child (the crash point from LSR_CRASH_AT/NTH/OP)")
    one.add_argument("collection", type=Path)
    one.add_argument("log", type=Path)
    one.add_argument("--seed", type=int, required=True)
    one.add_argument("--life", required=True, help="this child's tag in new ids and versions")
    one.add_argument("--ops", type=int, default=200)
    many = sub.add_parser("serve", help="a fork server (commands on stdin)")
    many.add_argument("scratch", type=Path)
    args = ap.parse_args(argv)
    if args.cmd == "serve":
        return serve(args.scratch)
    crasher = Crasher(os.environ.get("LSR_CRASH_AT") or None, int(os.environ.get("LSR_CRASH_NTH", "1")),
                      os.environ.get("LSR_CRASH_OP", "any"))
    try:
        return run(args.collection, args.log, seed=args.seed, life=args.life, ops=args.ops, crasher=crasher)
    except Exception:
        traceback.print_exc()
        return 2


if __name__ == "__main__":
    sys.exit(main())
