#!/usr/bin/env python3
"""Part 2 of ``bench_living.py`` (run it from there): single-thread latency of a living collection's
retrievers across segments, recall of the faster speeds, and a profile of where a multi-segment search's time
goes (Numba kernels vs the Python around them)."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path
from typing import Any

import numpy as np

from lsr.collection import Collection
from lsr.index import _bmp as B
from lsr.index import _kernels as K
from lsr.index import _mask as M
from lsr.index.sparse import SparseIndex
from lsr.params import SearchParams
from lsr.searcher import Searcher
from lsr.types import SparseBatch

SPEED_NAMES = ("safe", "fast", "fastest")
K_LAT = 10


# -- part 2: latency across segments ----------------------------------------------------------------------
def segmented(data: Any, rows: np.ndarray, out: Path, n_segments: int, *, base_share: float) -> dict:
    """``rows`` as ``n_segments`` segments: a build of the first ``base_share`` (or 1/n), then equal adds."""
    first = int(round(len(rows) * base_share)) if base_share else -(-len(rows) // n_segments)
    t0 = time.perf_counter()
    data.build(out, rows[:first])
    c = Collection.open(out, load_encoders=False)
    rest = rows[first:]
    for part in np.array_split(rest, n_segments - 1) if n_segments > 1 else []:
        c.add(data.docs(part), vectors=data.vectors(part))
        c.commit()
    stats = c.stats()
    c.close()
    return {
        "segments": stats["segments"],
        "documents": stats["documents"],
        "seconds": time.perf_counter() - t0,
        "sizes": [s["documents"] for s in stats.get("segment_sizes", [])],
    }


def one(Q, i: int):
    """Query ``i`` of an encoded batch, as a batch of one."""
    if isinstance(Q, SparseBatch):
        return Q.row(i)
    if isinstance(Q, np.ndarray):
        return Q[i : i + 1]
    from lsr.retrievers.bm25 import BM25Queries

    return BM25Queries(Q.batch.row(i), Q.texts[i : i + 1], Q.terms[i : i + 1])


def latency(c: Collection, texts: list[str], modes: tuple, repeat: int) -> dict:
    """Per mode and speed: single-thread latency of the retriever's search (one query at a time, k=10, the
    fastest of ``repeat`` passes after a warm-up pass) and each query's top-10 (ids, scores)."""
    s = Searcher(c)
    mask = c.search_mask(None)
    out = {}
    for mode in modes:
        r = c.retrievers[mode]
        Q = r.encode_queries(texts)
        singles = [one(Q, i) for i in range(len(texts))]
        res = {}
        for speed in ("exact",) + SPEED_NAMES:
            params = s.params(k=K_LAT, mode=mode, speed=speed)
            best = np.full(len(texts), np.inf)
            lists = []
            for rep in range(repeat + 1):
                for i, q in enumerate(singles):
                    t0 = time.perf_counter()
                    ranked = r.search(q, K_LAT, params=params, threads=1, mask=mask)
                    dt = time.perf_counter() - t0
                    if rep:
                        best[i] = min(best[i], dt)
                    else:
                        rows, scores = ranked[0]
                        lists.append(
                            sorted(zip(c.ids[rows].tolist(), scores.tolist()), key=lambda x: (-x[1], x[0]))
                        )
            res[speed] = {
                "median_ms": float(np.median(best) * 1e3),
                "p95_ms": float(np.percentile(best, 95) * 1e3),
                "mean_ms": float(best.mean() * 1e3),
                "lists": lists,
            }
        out[mode] = res
    return out


def recall(lists: list, truth: list) -> float:
    vals = [len({d for d, _ in a} & {d for d, _ in t}) / len(t) for a, t in zip(lists, truth) if t]
    return float(np.mean(vals)) if vals else 1.0


def agreement(lists: list, truth: list) -> tuple[int, int]:
    """(queries with identical (id, score) lists, queries with identical id lists)."""
    same = sum(a == t for a, t in zip(lists, truth))
    ids = sum([d for d, _ in a] == [d for d, _ in t] for a, t in zip(lists, truth))
    return same, ids


class KernelTimer:
    """Times every call of the sparse search kernels (the Numba functions ``SparseIndex.search_rows``
    calls) while active."""

    TARGETS = ((B, "bmp_search_query"), (M, "masked_search_query"), (K, "search_query"))

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._saved = []

    def __enter__(self) -> "KernelTimer":
        for mod, name in self.TARGETS:
            fn = getattr(mod, name)
            self._saved.append((mod, name, fn))

            def wrapped(*args, _fn=fn):
                t0 = time.perf_counter()
                try:
                    return _fn(*args)
                finally:
                    self.seconds += time.perf_counter() - t0
                    self.calls += 1

            setattr(mod, name, wrapped)
        return self

    def __exit__(self, *exc) -> None:
        for mod, name, fn in self._saved:
            setattr(mod, name, fn)


def profile(c: Collection, texts: list[str], repeat: int, mode: str = "sparse") -> dict:
    """Where a safe search's time goes (mean per query): the retriever's whole search, the time inside
    ``SparseIndex.search_rows`` (every segment's), inside the Numba kernels; and cProfile's heaviest
    functions (one more pass)."""
    r = c.retrievers[mode]
    params = SearchParams.check(k=K_LAT, mode=mode, speed="safe")
    mask = c.search_mask(None)
    Q = r.encode_queries(texts)
    singles = [one(Q, i) for i in range(len(texts))]
    for q in singles:  # warm
        r.search(q, K_LAT, params=params, threads=1, mask=mask)
    inside = [0.0, 0]
    original = SparseIndex.search_rows

    def search_rows(self, *args, **kw):
        t0 = time.perf_counter()
        try:
            return original(self, *args, **kw)
        finally:
            inside[0] += time.perf_counter() - t0
            inside[1] += 1

    total = 0.0
    SparseIndex.search_rows = search_rows
    try:
        with KernelTimer() as kt:
            for _ in range(repeat):
                for q in singles:
                    t0 = time.perf_counter()
                    r.search(q, K_LAT, params=params, threads=1, mask=mask)
                    total += time.perf_counter() - t0
    finally:
        SparseIndex.search_rows = original
    nq = len(singles) * repeat
    prof = cProfile.Profile()
    prof.enable()
    for q in singles:
        r.search(q, K_LAT, params=params, threads=1, mask=mask)
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).strip_dirs().sort_stats("tottime").print_stats(14)
    return {
        "mode": mode,
        "segments": len(getattr(r, "parts", None) or [None]),
        "total_ms": total / nq * 1e3,
        "search_rows_ms": inside[0] / nq * 1e3,
        "search_rows_calls": inside[1] / nq,
        "kernel_ms": kt.seconds / nq * 1e3,
        "kernel_calls": kt.calls / nq,
        "retriever_python_ms": (total - inside[0]) / nq * 1e3,
        "search_rows_python_ms": (inside[0] - kt.seconds) / nq * 1e3,
        "cprofile": buf.getvalue(),
    }


def part_latency(
    data: Any,
    sp: dict,
    work: Path,
    out: dict,
    *,
    segments: list[int],
    equal: list[int],
    repeat: int,
    modes: tuple,
) -> None:
    live = sp["live"]
    colls = {"fresh build (no commit point)": work / "fresh"}
    if (work / "run-100").exists():  # part 1's collection after its merges: the live documents in one segment
        colls["1 segment (part 1 merged)"] = work / "run-100"
    built = {}
    for n in segments:
        if n == 1:
            continue
        path = work / f"seg-{n}"
        built[f"{n} segments (80% + {n - 1} adds)"] = segmented(data, live, path, n, base_share=0.8)
        colls[f"{n} segments (80% + {n - 1} adds)"] = path
    for n in equal:
        path = work / f"eq-{n}"
        built[f"{n} equal segments"] = segmented(data, live, path, n, base_share=0.0)
        colls[f"{n} equal segments"] = path
    if (work / "run-100-unmerged").exists():
        colls["part 1 before merge (with deletions)"] = work / "run-100-unmerged"
    out["built"] = built
    texts = list(data.ds.queries.values())
    lat, shapes = {}, {}
    for name, path in colls.items():
        c = Collection.open(path)
        shapes[name] = {
            k: v for k, v in c.stats().items() if k in ("documents", "rows", "deleted", "segments")
        }
        lat[name] = latency(c, texts, modes, repeat)
        print(
            f"latency: {name}: "
            + ", ".join(f"{m} safe {lat[name][m]['safe']['median_ms']:.3f} ms" for m in modes),
            flush=True,
        )
        c.close()
    out["collections"] = shapes
    out["latency"] = lat
    prof = {}
    for name in colls:
        if name.startswith(("fresh", "1 segment", "20 ", "50 ", "part 1")):
            c = Collection.open(colls[name])
            for mode in ("sparse", "bm25"):
                if mode in modes:
                    prof[f"{name}, {mode}"] = profile(c, texts, repeat, mode)
            c.close()
    out["profile"] = prof


def latency_tables(res: dict, modes: tuple) -> list[str]:
    lat, shapes = res["latency"], res["collections"]
    base_name = next(iter(lat))
    lines = []
    for mode in modes:
        ref = lat[base_name][mode]
        lines += [
            f"\n**{mode}** (k=10, one thread, one query at a time; ratio: safe median / fresh build's)\n",
            "| collection | segments | live docs | deleted rows | safe median ms | safe p95 ms | ratio | "
            "exact median ms | safe = exact (ids+scores / ids) | "
            "safe = fresh safe (ids+scores / ids) | "
            "fast R@10 vs safe | fastest R@10 vs safe | fast ms | fastest ms |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, m in lat.items():
            r = m[mode]
            sh = shapes[name]
            nq = len(r["safe"]["lists"])
            ex = agreement(r["safe"]["lists"], r["exact"]["lists"])
            fr = agreement(r["safe"]["lists"], ref["safe"]["lists"])
            lines.append(
                f"| {name} | {sh['segments']} | {sh['documents']} | {sh['deleted']} | "
                f"{r['safe']['median_ms']:.3f} | "
                f"{r['safe']['p95_ms']:.3f} | {r['safe']['median_ms'] / ref['safe']['median_ms']:.2f}x | "
                f"{r['exact']['median_ms']:.3f} | {ex[0]} / {ex[1]} of {nq} | {fr[0]} / {fr[1]} of {nq} | "
                f"{recall(r['fast']['lists'], r['safe']['lists']):.4f} | "
                f"{recall(r['fastest']['lists'], r['safe']['lists']):.4f} | {r['fast']['median_ms']:.3f} | "
                f"{r['fastest']['median_ms']:.3f} |"
            )
    prof = res.get("profile", {})
    if prof:
        lines += [
            "\n**Where a safe search's time goes** (mean per query, ms; one thread)\n",
            "| collection, mode | segments | total (retriever.search) | Numba kernels | kernel calls/query | "
            "Python inside SparseIndex.search_rows (checks, masks, buffers) | Python outside it (composite: "
            "query per segment, masks, floors, merge; Ranked) |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, p in prof.items():
            lines.append(
                f"| {name} | {p['segments']} | {p['total_ms']:.3f} | {p['kernel_ms']:.3f} | "
                f"{p['kernel_calls']:.1f} | {p['search_rows_python_ms']:.3f} | "
                f"{p['retriever_python_ms']:.3f} |"
            )
    return lines
