"""Scale benchmark: our bounded-memory build and single-thread search at 1M .. 8.8M documents (MS MARCO's
passage count), against Seismic (and BMP) where they fit in this machine's memory, in one run.

Input: a collection from ``scripts/gen_synth_stream.py`` (the peer harness's synthetic SPLADE-like model,
``../shared/peerbench/gen_synth.py``). Each size N is the collection's first N documents (one generator,
one topic model, so the curve measures size only). Every engine gets the same float vectors; recall@10 is
against the exact float top-10 (computed here with scipy, chunk by chunk).

Each step runs in its own process (fresh peak memory, ``ru_maxrss``; searches pinned to one core, an
untimed warm-up pass first, then a timed pass with ``perf_counter_ns`` around each call):

    .venv/bin/python scripts/bench_scale.py --data /tmp/s15/syn8m --work /tmp/s15/work \
        --sizes 1000000,2000000,4000000,8841823 --peers seismic:1000000,2000000 --nq 200

Peers run under ``.venv-bench/bin/python`` (``make bench-venv``). Results: ``WORK/results.jsonl`` (one line
per measurement) and a markdown table on stdout (``--table`` prints it again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PEERBENCH = ROOT.parent / "shared" / "peerbench"
VOCAB = 30522
SPEEDS = ("safe", "fast", "fastest")
SEISMIC = [("qc5 hf0.7", 5, 0.7), ("qc10 hf0.8", 10, 0.8), ("qc20 hf0.9", 20, 0.9), ("qc40 hf1.0", 40, 1.0)]
BMP = [("safe a1 b1", 1.0, 1.0), ("a1 b0.8", 1.0, 0.8)]


def npz_member(path: Path, name: str, *, where: bool = False) -> np.ndarray:
    """A member of an uncompressed .npz (np.savez) memory-mapped, without reading it (``where``: its
    (dtype, offset) in the file instead)."""
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{path}:{name} is compressed; memory-mapping needs np.savez (not savez_compressed)")
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        head = f.read(30)
        n, m = struct.unpack("<HH", head[26:30])
        f.seek(info.header_offset + 30 + n + m)
        version = np.lib.format.read_magic(f)
        fmt = np.lib.format
        read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
        shape, fortran, dtype = read(f)
        offset = f.tell()
    if where:
        return dtype, offset
    return np.memmap(path, dtype=dtype, mode="r", shape=shape, offset=offset, order="F" if fortran else "C")


class Data:
    """The collection's CSR arrays: postings read from the file chunk by chunk (not memory-mapped: mapped
    pages of the input would count in the build's peak resident memory)."""

    def __init__(self, folder: Path) -> None:
        d = folder / "docs.npz"
        self.path = d
        self.indptr = np.array(npz_member(d, "indptr"))
        self.indices, self.data = npz_member(d, "indices"), npz_member(d, "data")
        self._where = {k: npz_member(d, k, where=True) for k in ("indices", "data")}
        self.ids = npz_member(d, "ids")
        q = np.load(folder / "queries.npz")
        self.q_indptr, self.q_indices, self.q_data = q["indptr"], q["indices"], q["data"]
        self.n_docs = len(self.indptr) - 1

    def rows(self, s: int, e: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a, b = int(self.indptr[s]), int(self.indptr[e])
        out = [np.asarray(self.indptr[s:e + 1], np.int64) - a]
        for k in ("indices", "data"):
            dtype, offset = self._where[k]
            out.append(np.fromfile(self.path, dtype=dtype, count=b - a, offset=offset + a * dtype.itemsize))
        return out[0], out[1].astype(np.int32, copy=False), out[2].astype(np.float32, copy=False)

    def query(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        s, e = self.q_indptr[i], self.q_indptr[i + 1]
        return self.q_indices[s:e].astype(np.int32), self.q_data[s:e].astype(np.float32)


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def folder_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file()) / 2**20


def pin() -> None:
    try:
        os.sched_setaffinity(0, {max(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass


def timed(search, queries, truth) -> dict:
    for q in queries:  # warm-up
        search(q)
    lat, rec = [], []
    for q, t in zip(queries, truth):
        t0 = time.perf_counter_ns()
        got = search(q)
        lat.append((time.perf_counter_ns() - t0) / 1e6)
        rec.append(len(set(int(x) for x in got[:10]) & set(t.tolist())) / 10)
    lat = np.array(lat)
    return {"mean_ms": float(lat.mean()), "p50_ms": float(np.percentile(lat, 50)),
            "p99_ms": float(np.percentile(lat, 99)), "recall10": float(np.mean(rec))}


# -- children ---------------------------------------------------------------------------------------------
def child_gt(a) -> dict:
    """Exact float top-10 of the first nq queries for every size (one pass over the documents)."""
    import scipy.sparse as sp

    data = Data(Path(a.data))
    sizes = sorted(int(s) for s in a.sizes.split(","))
    nq = a.nq
    Q = np.zeros((VOCAB, nq), np.float32)
    for i in range(nq):
        t, w = data.query(i)
        Q[t, i] = w
    best_s = np.full((nq, 10), -np.inf, np.float32)
    best_r = np.full((nq, 10), -1, np.int64)
    out, step, s = {}, 250_000, 0
    t0 = time.time()
    while s < sizes[-1]:
        e = min(s + step, sizes[-1], *(z for z in sizes if z > s))
        ip, ind, val = data.rows(s, e)
        scores = (sp.csr_matrix((val, ind, ip), shape=(e - s, VOCAB)) @ Q).T  # nq x chunk
        top = np.argpartition(-scores, 10, axis=1)[:, :10] if scores.shape[1] > 10 else \
            np.tile(np.arange(scores.shape[1]), (nq, 1))
        cand_s = np.concatenate([best_s, np.take_along_axis(scores, top, 1)], axis=1)
        cand_r = np.concatenate([best_r, top + s], axis=1)
        order = np.argsort(-cand_s, axis=1, kind="stable")[:, :10]
        best_s, best_r = np.take_along_axis(cand_s, order, 1), np.take_along_axis(cand_r, order, 1)
        s = e
        if s in sizes:
            out[str(s)] = best_r.tolist()
        print(f"\rground truth: {s:,} documents, {time.time() - t0:.0f} s", end="", file=sys.stderr,
              flush=True)
    print(file=sys.stderr)
    return {"gt": out, "seconds": time.time() - t0}


def child_build(a) -> dict:
    from lsr.bulk import BulkBuilder
    from lsr.corpus import Record
    from lsr.params import BuildConfig
    from lsr.types import SparseBatch

    data = Data(Path(a.data))
    n = a.n
    out = Path(a.work) / f"ours-{n}"
    base = peak_mb()
    cfg = BuildConfig(dense=None, bm25=False, sparse_idf=False)
    t0 = time.perf_counter()
    with BulkBuilder(out, config=cfg, segment_docs=a.segment_docs, splade_info={"name": "synthetic"},
                     show_progress=False, overwrite=True) as b:
        step = min(a.segment_docs, 100_000)
        for s in range(0, n, step):
            e = min(n, s + step)
            ip, ind, val = data.rows(s, e)
            b.add([Record(str(i), "", "") for i in data.ids[s:e].tolist()],
                  sparse=SparseBatch(ip, ind, val, VOCAB))
        summary = b.finish(merge=not a.no_merge)
    return {"build_s": time.perf_counter() - t0, "peak_mb": peak_mb(), "base_mb": base,
            "size_mb": folder_mb(out), "postings": summary.postings, "path": str(out)}


def child_query(a) -> dict:
    from lsr.collection import Collection
    from lsr.params import SearchParams
    from lsr.types import SparseBatch

    data = Data(Path(a.data))
    truth = [np.array(t) for t in json.loads(Path(a.gt).read_text())["gt"][str(a.n)]][:a.nq]
    c = Collection.open(Path(a.work) / f"ours-{a.n}", load_encoders=False)
    r = c.retrievers["sparse"]
    rowid = c.ids.astype(np.int64)  # ids are the generator's row numbers
    qs = []
    for i in range(a.nq):
        t, w = data.query(i)
        qs.append(SparseBatch(np.array([0, t.size]), t, w, VOCAB))
    pin()
    out = {"segments": len(c.segments) if c.segments else 1}
    for speed in SPEEDS:
        p = SearchParams.check(k=10, speed=speed)
        out[speed] = timed(lambda q, p=p: rowid[r.search(q, 10, params=p, threads=1)[0][0]], qs, truth)
    out["peak_mb"] = peak_mb()
    return out


def child_peer(a) -> dict:
    sys.path.insert(0, str(PEERBENCH))
    data = Data(Path(a.data))
    truth = [np.array(t) for t in json.loads(Path(a.gt).read_text())["gt"][str(a.n)]][:a.nq]
    work = Path(a.work) / f"{a.engine}-{a.n}"
    work.mkdir(parents=True, exist_ok=True)
    base = peak_mb()
    t0 = time.perf_counter()
    out: dict = {}
    if a.engine == "seismic":
        import seismic

        binp = work / "docs.seismic.bin"
        write_seismic_bin(binp, data, a.n)
        t0 = time.perf_counter()  # the conversion is the harness's, not Seismic's: not timed (said so)
        index = seismic.SeismicIndexRaw.build(str(binp), n_postings=3500, centroid_fraction=0.1,
                                              summary_energy=0.4, max_fraction=1.5, min_cluster_size=2,
                                              doc_cut=15)
        out["build_s"] = time.perf_counter() - t0
        binp.unlink()
        index.save(str(work / "index"))
        out["size_mb"] = folder_mb(work)
        out["peak_mb"], out["base_mb"] = peak_mb(), base
        dim = index.dim
        qs = []
        for i in range(a.nq):
            t, w = data.query(i)
            m = t < dim
            qs.append((np.ascontiguousarray(t[m]), np.ascontiguousarray(w[m])))
        pin()
        for label, qc, hf in SEISMIC:
            out[label] = timed(lambda q, qc=qc, hf=hf: [x[1] for x in index.search(q[0], q[1], 10, qc, hf, 0,
                                                                                    True)], qs, truth)
    elif a.engine == "bmp":
        import bmp

        path = str(work / "index.bmp")
        wmax = max(float(data.rows(s, min(a.n, s + 500_000))[2].max()) for s in range(0, a.n, 500_000))
        ix = bmp.Indexer(path, bsize=32, compress_range=False)
        tok = np.array([str(t) for t in range(VOCAB)], dtype=object)
        for s in range(0, a.n, 100_000):
            ip, ind, val = data.rows(s, min(a.n, s + 100_000))
            q8 = np.clip(np.rint(val / wmax * 255), 1, 255).astype(np.uint8)
            for i in range(len(ip) - 1):
                ix.add_document(str(s + i), dict(zip(tok[ind[ip[i]:ip[i + 1]]].tolist(),
                                                     q8[ip[i]:ip[i + 1]].tolist())))
        ix.finish()
        searcher = bmp.Searcher(path)
        out["build_s"] = time.perf_counter() - t0
        out["size_mb"] = folder_mb(work)
        out["peak_mb"], out["base_mb"] = peak_mb(), base
        qs = []
        for i in range(a.nq):
            t, w = data.query(i)
            qs.append({str(x): float(y) for x, y in zip(t.tolist(), w.tolist())})
        pin()
        for label, alpha, beta in BMP:
            out[label] = timed(lambda q, al=alpha, be=beta: [
                int(d) for d in searcher.search(q, k=10, alpha=al, beta=be)[0]], qs, truth)
    return out


def write_seismic_bin(path: Path, data: Data, n: int) -> None:
    """Seismic's raw input (u32 n; per vector u32 len, u32 comps[len], f32 vals[len]), written in chunks."""
    with open(path, "wb") as f:
        f.write(np.uint32(n).tobytes())
        for s in range(0, n, 100_000):
            ip, ind, val = data.rows(s, min(n, s + 100_000))
            lens = np.diff(ip)
            buf = np.empty(len(lens) + 2 * int(lens.sum()), np.uint32)
            start = np.arange(len(lens), dtype=np.int64) + 2 * ip[:-1]
            buf[start] = lens
            row = np.repeat(np.arange(len(lens)), lens)
            off = np.arange(int(lens.sum())) - ip[:-1][row]
            buf[start[row] + 1 + off] = ind.astype(np.uint32)
            buf[start[row] + 1 + lens[row] + off] = val.view(np.uint32)
            f.write(buf.tobytes())


# -- driver -----------------------------------------------------------------------------------------------
def run_child(a, what: str, *extra: str, python: str | None = None) -> dict:
    cmd = [python or sys.executable, "-P" if python is None else "-u", __file__, "--child", what,
           "--data", a.data, "--work", a.work, "--nq", str(a.nq), "--sizes", a.sizes,
           "--segment-docs", str(a.segment_docs), "--gt", str(Path(a.work) / "gt.json"), *extra]
    if a.no_merge:
        cmd.append("--no-merge")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t0 = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.timeout)
    if p.returncode != 0:
        return {"error": (p.stderr or p.stdout).strip().splitlines()[-1:] or [f"exit {p.returncode}"],
                "rc": p.returncode, "wall_s": time.time() - t0}
    return json.loads(p.stdout.strip().splitlines()[-1])


def record(a, row: dict) -> None:
    row["when"] = time.strftime("%Y-%m-%d %H:%M:%S")
    with open(Path(a.work) / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def table(path: Path) -> str:
    rows = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    out = ["| engine | documents | setting | build s | peak MB (before build) | size MB | mean ms | p50 ms | "
           "p99 ms | R@10 |", "|---|---|---|---|---|---|---|---|---|---|"]
    builds = {(r["engine"], r["n"]): r for r in rows if r.get("step") == "build"}
    for r in rows:
        if r.get("step") != "query":
            continue
        b = builds.get((r["engine"], r["n"]), r)
        for label, m in r.items():
            if isinstance(m, dict) and "mean_ms" in m:
                out.append(f"| {r['engine']} | {r['n']:,} | {label} | {b.get('build_s', float('nan')):.0f} | "
                           f"{b.get('peak_mb', float('nan')):,.0f} ({b.get('base_mb', float('nan')):,.0f}) | "
                           f"{b.get('size_mb', float('nan')):,.0f} | {m['mean_ms']:.3f} | "
                           f"{m['p50_ms']:.3f} | {m['p99_ms']:.3f} | {m['recall10']:.3f} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="/tmp/s15/syn8m")
    ap.add_argument("--work", default="/tmp/s15/work")
    ap.add_argument("--sizes", default="1000000,2000000,4000000,8841823")
    ap.add_argument("--peers", default="seismic:1000000,2000000",
                    help="ENGINE:SIZE,SIZE;ENGINE:... (seismic, bmp) run under .venv-bench")
    ap.add_argument("--nq", type=int, default=200)
    ap.add_argument("--segment-docs", type=int, default=1_000_000)
    ap.add_argument("--no-merge", action="store_true")
    ap.add_argument("--timeout", type=int, default=7200)
    ap.add_argument("--skip", default="", help="steps to skip: gt,build,query,peers")
    ap.add_argument("--table", action="store_true")
    ap.add_argument("--child", default=None)
    ap.add_argument("--n", type=int, default=0)
    ap.add_argument("--engine", default="")
    ap.add_argument("--gt", default="")
    a = ap.parse_args()
    if a.child:
        fn = {"gt": child_gt, "build": child_build, "query": child_query, "peer": child_peer}[a.child]
        res = fn(a)
        if a.child == "gt":
            Path(a.gt).write_text(json.dumps(res))
            res = {"seconds": res["seconds"]}
        print(json.dumps(res))
        return
    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    if a.table:
        print(table(work / "results.jsonl"))
        return
    skip = set(filter(None, a.skip.split(",")))
    sizes = [int(s) for s in a.sizes.split(",")]
    if "gt" not in skip:
        record(a, {"step": "gt", "engine": "scipy", "n": max(sizes), **run_child(a, "gt")})
    for n in sizes:
        if "build" not in skip:
            record(a, {"step": "build", "engine": "ours", "n": n, "segment_docs": a.segment_docs,
                       **run_child(a, "build", "--n", str(n))})
        if "query" not in skip:
            record(a, {"step": "query", "engine": "ours", "n": n, **run_child(a, "query", "--n", str(n))})
    bench_py = ROOT / ".venv-bench" / "bin" / "python"
    if "peers" not in skip and a.peers:
        for spec in a.peers.split(";"):
            engine, _, ns = spec.partition(":")
            for n in [int(x) for x in ns.split(",") if x]:
                res = run_child(a, "peer", "--engine", engine, "--n", str(n), python=str(bench_py))
                record(a, {"step": "build", "engine": engine, "n": n, **{k: v for k, v in res.items()
                                                                          if not isinstance(v, dict)}})
                record(a, {"step": "query", "engine": engine, "n": n, **{k: v for k, v in res.items()
                                                                          if isinstance(v, dict)}})
    print(table(work / "results.jsonl"))


if __name__ == "__main__":
    main()
