"""``lsr eval``: BEIR evaluation of every search mode, with Pyserini baselines in the same run.

For each data set: build the index if it is not cached (the key is the corpus checksum, the models and
the index settings), run all judged queries of the split in batch through each mode, and write to
``out/<data set>/``: one TREC run per system (``run.<system>.trec``), ``metrics.json`` (metric means and
per-query values, timings, index size, checksums, machine, settings) and ``results.md``. With several data
sets, ``out/summary.md`` adds the average row. Metrics come from ir-measures (trec_eval semantics).

    lsr eval --beir ../shared/data/beir/scifact --baselines pyserini-bm25
    python -m lsr.eval --beir demo --modes sparse,bm25

Example:
    >>> from lsr.eval import evaluate_beir
    >>> result = evaluate_beir("../shared/data/beir/scifact", out="results")   # doctest: +SKIP
    >>> result["runs"]["sparse"]["metrics"]["ndcg@10"]                          # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

from lsr.console import Parser, run_command
from lsr.demo import DEMO_INDEX_DIR
from lsr.encoders._hf import weights_file
from lsr.encoders.resolve import resolve_model
from lsr.errors import LsrError
from lsr.eval.baselines import BASELINES, available, lucene_impact_run, pyserini_bm25
from lsr.eval.beir import CACHE_DIR, load_beir
from lsr.eval.metrics import drop_identical_ids, evaluate, measure, top_overlap, write_trec_run
from lsr.export import QUERY_SCALE, export_pyserini, lucene_queries
from lsr.indexing import index_corpus
from lsr.manifest import load_manifest
from lsr.params import (
    DEFAULT_DENSE_MODEL,
    DEFAULT_MODEL,
    DEFAULT_SPEED,
    MODES,
    RETRIEVERS,
    SPEEDS,
    BuildConfig,
    check_k,
    speed_params,
)
from lsr.provenance import git_commit, machine, versions
from lsr.searcher import Searcher
from lsr.util import sha256_file

__all__ = ["MODES", "DEFAULT_METRICS", "evaluate_beir", "ensure_index", "cross_check", "markdown_table",
           "add_arguments", "run_from_args", "main"]

DEFAULT_METRICS = ("ndcg@10", "recall@100", "recall@1000", "mrr@10")
#: Column titles of the Markdown tables.
TITLES = {"ndcg@10": "nDCG@10", "recall@100": "R@100", "recall@1000": "R@1000", "mrr@10": "MRR@10"}
SYSTEM_TITLES = {"sparse": "lsr sparse (SPLADE)", "dense": "lsr dense", "hybrid": "lsr hybrid",
                 "bm25": "lsr bm25", "sparse-idf": "lsr sparse-idf (inference-free)",
                 "pyserini-bm25": "Pyserini BM25 (flat)"}


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _model_checksum(name: str) -> str | None:
    weights = weights_file(resolve_model(name))
    return sha256_file(weights) if weights is not None else None


def _built_sides(folder: Path, settings: dict) -> dict | None:
    """The retrievers of the index in ``folder`` if its manifest says it was built from the corpus, SPLADE
    model and settings in ``settings`` (else None): ``{"dense": name or None, "dense_sha256", "dense_kind",
    "bm25": bool (built with the same analyzer), "sparse-idf": bool}``."""
    try:
        m = load_manifest(folder)
    except (LsrError, OSError):
        return None
    built, sparse = m.build, m.retrievers.get("sparse")
    if built is None or sparse is None:
        return None
    enc = dict(sparse.encoder or {})
    same_model = (enc.get("weights_sha256") == settings["model_sha256"] if settings["model_sha256"]
                  else enc.get("name") == settings["model"])
    if not (same_model and m.corpus.get("sha256") == settings["corpus_sha256"]
            and built.max_length == settings["max_length"] and built.block_size == settings["block_size"]
            and built.quantization == settings["quantization"]):
        return None
    dense = dict((m.retrievers["dense"].encoder or {}) if "dense" in m.retrievers else {})
    return {"dense": dense.get("name"), "dense_sha256": dense.get("weights_sha256"),
            "dense_kind": built.dense_kind if dense else None,
            "bm25": "bm25" in m.retrievers and built.bm25_analyzer == settings["bm25_analyzer"],
            "sparse-idf": "sparse-idf" in m.retrievers}


def _has(have: dict, want: BuildConfig, dense_sha256: str | None) -> bool:
    """Whether an index with the retrievers ``have`` holds every retriever ``want`` asks for."""
    if want.dense:
        same = have["dense_sha256"] == dense_sha256 if dense_sha256 else have["dense"] == want.dense
        if not (have["dense"] and same and have["dense_kind"] == want.dense_kind):
            return False
    return (not want.bm25 or have["bm25"]) and (not want.sparse_idf or have["sparse-idf"])


def ensure_index(ds, *, index_dir: str | Path, model: str = DEFAULT_MODEL,
                 dense_model: str | None = DEFAULT_DENSE_MODEL, bm25: bool = True, sparse_idf: bool = True,
                 device: str = "auto", batch_size: int = BuildConfig.batch_size, rebuild: bool = False,
                 show_progress: bool = True) -> tuple[Path, dict]:
    """The index of ``ds`` (a :class:`~lsr.eval.beir.BeirDataset`) with at least the retrievers asked for:
    reused when an index in ``index_dir`` (or, for the demo data set, the ``lsr demo`` index) was built, by
    its own manifest, from the same corpus checksum, model and settings; else built in ``index_dir`` with
    a :class:`~lsr.params.BuildConfig` (its defaults, keeping the retrievers the cached one had). Returns
    its folder and build facts.

    Example:
        >>> folder, info = ensure_index(load_beir("demo"), index_dir="indexes")   # doctest: +SKIP
        >>> info["cached"], info["retrievers"]                                   # doctest: +SKIP
        (False, ['sparse', 'dense', 'bm25', 'sparse-idf'])
    """
    want = BuildConfig(model=model, batch_size=batch_size, dense=dense_model, bm25=bm25,
                       sparse_idf=sparse_idf)
    settings = {"corpus_sha256": ds.checksums.get("corpus.jsonl"), "model": model,
                "model_sha256": _model_checksum(model), "quantization": want.quantization,
                "block_size": want.block_size, "max_length": want.max_length}
    key = _key(settings)  # the cache key (the same keys as before BuildConfig: old caches are found)
    settings["bm25_analyzer"] = want.bm25_analyzer
    dense_sha256 = _model_checksum(dense_model) if dense_model else None
    folder = Path(index_dir) / f"{ds.name}-{key[:16]}"
    candidates = [folder, DEMO_INDEX_DIR] if ds.name == "demo" else [folder]
    build = want
    for candidate in candidates if not rebuild else []:
        have = _built_sides(candidate, settings)
        if have is None:
            continue
        if _has(have, want, dense_sha256):
            return candidate, {"path": str(candidate), "cached": True, "key": key, "settings": settings,
                               "sides": have, "retrievers": _retrievers(have)}
        if candidate == folder:  # rebuilt: keep what the cached index had
            if have["dense"] and not dense_model:
                build = dataclasses.replace(build, dense=have["dense"], dense_kind=have["dense_kind"])
                dense_sha256 = have["dense_sha256"]
            build = dataclasses.replace(build, bm25=bm25 or have["bm25"],
                                        sparse_idf=sparse_idf or have["sparse-idf"])
    summary = index_corpus(ds.corpus, folder, config=build, device=device, overwrite=True,
                           show_progress=show_progress, corpus_name=ds.name)
    sides = {"dense": build.dense, "dense_sha256": dense_sha256,
             "dense_kind": build.dense_kind if build.dense else None, "bm25": build.bm25,
             "sparse-idf": build.sparse_idf}
    return folder, {"path": str(folder), "cached": False, "key": key, "settings": settings, "sides": sides,
                    "retrievers": list(build.retrievers), "build_seconds": summary.seconds}


def _retrievers(have: dict) -> list[str]:
    on = {"sparse": True, "dense": bool(have["dense"]), "bm25": have["bm25"],
          "sparse-idf": have["sparse-idf"]}
    return [r for r in RETRIEVERS if on.get(r)]


def _scored(run, qrels, metrics) -> dict:
    return {"metrics": evaluate(run, qrels, metrics),
            "per_query": evaluate(run, qrels, metrics, per_query=True)}


def _timed_mode(searcher, mode: str, queries: dict, *, k: int, speed: str, threads: int, warmup: int):
    if warmup:
        warm = dict(list(queries.items())[:warmup])
        searcher.batch_search(warm, k=k, mode=mode, speed=speed, threads=threads)
    timings: dict = {}
    t0 = time.perf_counter()
    run = searcher.batch_search(queries, k=k, mode=mode, speed=speed, threads=threads, timings=timings)
    total = time.perf_counter() - t0
    timings.update(total_seconds=total, queries_per_second=len(queries) / total if total else None)
    return drop_identical_ids(run), timings


def cross_check(searcher, queries: dict, qrels: dict, *, workdir: Path, k: int, threads: int,
                warmup: int) -> dict:
    """Our exact sparse search against Lucene impact search over the same exported vectors."""
    tokens = searcher.encoder.tokenizer.convert_ids_to_tokens(list(range(searcher.index.vocab_size)))
    export = export_pyserini(searcher.index, workdir / "vectors", tokens=tokens, overwrite=True)
    qids = list(queries)
    vectors = searcher.encoder.encode_queries([queries[q] for q in qids])
    lucene, info = lucene_impact_run(export.path / "docs", dict(zip(qids, lucene_queries(vectors, tokens))),
                                     workdir=workdir, k=k, threads=threads, warmup=warmup)
    ours_res = searcher.index.batch_search(vectors, k=k, algorithm="exact", threads=threads)
    ours = drop_identical_ids({q: dict(zip(map(str, ids), s.tolist()))
                               for q, (ids, s) in zip(qids, ours_res)})
    m_ours = evaluate(ours, qrels, ["ndcg@10"])["ndcg@10"]
    m_lucene = evaluate(lucene, qrels, ["ndcg@10"])["ndcg@10"]
    top10 = top_overlap(ours, lucene, 10)
    return {"ours_exact_ndcg@10": m_ours, "lucene_impact_ndcg@10": m_lucene,
            "ndcg@10_difference": m_ours - m_lucene, "top10_overlap": top10["overlap"],
            "top10_identical_share": top10["identical"], "query_scale": QUERY_SCALE,
            "exported_postings": export.postings, **{f"lucene_{k_}": v for k_, v in info.items()}}


def _check_modes(modes: Sequence[str]) -> list[str]:
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise ValueError(f"unknown mode {bad[0]!r}: use {', '.join(MODES)}")
    return list(modes)


def evaluate_beir(source, *, out: str | Path = "results", index_dir: str | Path | None = None,
                  model: str = DEFAULT_MODEL, modes: Sequence[str] | None = None, split: str = "test",
                  metrics: Sequence[str] = DEFAULT_METRICS, baselines: Sequence[str] = (),
                  cross: bool | None = None, k: int = 1000, speed: str = DEFAULT_SPEED,
                  threads: int | None = None, warmup: int = 1000, device: str = "auto", rebuild: bool = False,
                  adapt: bool = False, show_progress: bool = True, log=print) -> dict:
    """Evaluate one BEIR data set (folder, name or ``"demo"``); writes ``out/<name>/`` and returns the
    contents of its ``metrics.json``. ``modes`` (default: every mode the index has, in
    :data:`lsr.params.MODES` order; the index is built with every retriever). ``cross`` (default: on when a
    Pyserini baseline runs) adds the Lucene impact cross-check of the sparse mode. ``adapt``: evaluate a copy
    of the index adapted by ``lsr adapt`` (on the train split when there is one, else label-free)."""
    check_k(k)
    speed_params(speed)
    if modes is not None:
        modes = _check_modes(modes)
    t_start = time.perf_counter()
    threads = threads or machine()["cores"]
    ds = load_beir(source, split=split)
    log(f"{ds.name}: {len(ds.queries):,} {split} queries, corpus {ds.corpus}")
    asked = MODES if modes is None else modes
    need_dense = any(m in ("dense", "hybrid") for m in asked)
    need_bm25 = any(m in ("bm25", "hybrid") for m in asked)
    folder, index_info = ensure_index(ds, index_dir=index_dir or CACHE_DIR / "indexes", model=model,
                                      dense_model=DEFAULT_DENSE_MODEL if need_dense else None,
                                      bm25=need_bm25, sparse_idf="sparse-idf" in asked, device=device,
                                      rebuild=rebuild, show_progress=show_progress)
    log(f"{ds.name}: index {'reused' if index_info['cached'] else 'built'}: {folder}")
    work = Path(index_dir or CACHE_DIR / "indexes") / f".work-{ds.name}-{os.getpid()}"
    try:
        return _evaluate(ds, folder, index_info, work, modes=modes, model=model, metrics=metrics,
                         baselines=baselines, cross=cross, k=k, speed=speed, threads=threads, warmup=warmup,
                         device=device, adapt=adapt, out=out, split=split, t_start=t_start, log=log)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _evaluate(ds, folder: Path, index_info: dict, work: Path, *, modes, model, metrics, baselines, cross, k,
              speed, threads, warmup, device, adapt, out, split, t_start, log) -> dict:
    adapted = None
    if adapt:
        from lsr.adapt.run import adapt_for_eval

        folder, adapted = adapt_for_eval(ds, folder, work, log=log)
    searcher = Searcher.load(folder, device=device)
    manifest = searcher.collection.manifest  # read once, by the collection
    if modes is None:
        modes = [m for m in MODES if m in searcher.modes]
    dense = manifest.retrievers.get("dense")
    index_info.update(documents=manifest.documents, postings=searcher.info.get("postings"),
                      size_bytes=sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()),
                      encoder=dict(manifest.retrievers["sparse"].encoder or {}),
                      dense_encoder=dict(dense.encoder or {}) if dense is not None else None)
    dest = Path(out) / ds.name
    dest.mkdir(parents=True, exist_ok=True)
    fusion = searcher.default_fusion if "hybrid" in modes else None
    result = {"dataset": {"name": ds.name, "path": str(ds.path), "split": split, "queries": len(ds.queries),
                          "documents": manifest.documents, "checksums": ds.checksums},
              "lsr": {**versions(), **git_commit()}, "machine": machine(),
              "settings": {"modes": list(modes), "metrics": list(metrics), "baselines": list(baselines),
                           "k": k, "speed": speed, "threads": threads, "warmup_queries": warmup,
                           "device": device, "model": model, "ignore_identical_ids": True,
                           "fusion": fusion},
              "index": index_info, "runs": {}}
    if adapted is not None:
        result["adapt"] = adapted
    for mode in modes:
        run, timings = _timed_mode(searcher, mode, ds.queries, k=k, speed=speed, threads=threads,
                                   warmup=warmup)
        write_trec_run(run, dest / f"run.{mode}.trec", tag=f"lsr-{mode}")
        result["runs"][mode] = {**_scored(run, ds.qrels, metrics), "timings": timings,
                                "run_file": f"run.{mode}.trec"}
        log(_line(mode, result["runs"][mode], metrics))
    if "pyserini-bm25" in baselines:
        run, info = pyserini_bm25(ds.corpus, ds.queries, workdir=work / "bm25", k=k, threads=threads,
                                  warmup=warmup)
        info.update(total_seconds=info["search_seconds"],
                    queries_per_second=len(ds.queries) / info["search_seconds"])
        write_trec_run(run, dest / "run.pyserini-bm25.trec", tag="pyserini-bm25-flat")
        result["runs"]["pyserini-bm25"] = {**_scored(run, ds.qrels, metrics), "timings": info,
                                           "run_file": "run.pyserini-bm25.trec"}
        log(_line("pyserini-bm25", result["runs"]["pyserini-bm25"], metrics))
    if cross if cross is not None else bool(baselines):
        result["cross_check"] = cross_check(searcher, ds.queries, ds.qrels, workdir=work, k=k,
                                            threads=threads, warmup=warmup)
        c = result["cross_check"]
        log(f"lucene impact cross-check: nDCG@10 ours {c['ours_exact_ndcg@10']:.4f}, lucene "
            f"{c['lucene_impact_ndcg@10']:.4f} (difference {c['ndcg@10_difference']:+.4f}), "
            f"top-10 overlap {c['top10_overlap']:.4f}")
    result["wall_seconds"] = time.perf_counter() - t_start
    (dest / "metrics.json").write_text(json.dumps(result, indent=1))
    (dest / "results.md").write_text(markdown_table([result], metrics) + "\n")
    return result


def _line(system: str, entry: dict, metrics: Sequence[str]) -> str:
    vals = "  ".join(f"{TITLES.get(m, m)} {entry['metrics'][m]:.4f}" for m in metrics)
    qps = entry["timings"].get("queries_per_second")
    return f"  {system:<14} {vals}  {qps:,.1f} q/s" if qps else f"  {system:<14} {vals}"


def markdown_table(results: Sequence[dict], metrics: Sequence[str] | None = None) -> str:
    """One Markdown table of the results of several data sets (rows: data set × system), plus an
    average row per system when there is more than one data set.

    Example:
        >>> r = {"dataset": {"name": "d"}, "settings": {"metrics": ["ndcg@10"]},
        ...      "runs": {"bm25": {"metrics": {"ndcg@10": 0.5}, "timings": {}}}}
        >>> print(markdown_table([r]).splitlines()[2])
        | d | lsr bm25 | 0.5000 | - |
    """
    metrics = list(metrics or results[0]["settings"]["metrics"])
    head = ["data set", "system", *[TITLES.get(m, m) for m in metrics], "queries/s"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    systems: dict[str, list[dict]] = {}
    for r in results:
        for system, entry in r["runs"].items():
            systems.setdefault(system, []).append(entry)
            qps = entry["timings"].get("queries_per_second")
            rows.append("| " + " | ".join([r["dataset"]["name"], SYSTEM_TITLES.get(system, system),
                                           *[f"{entry['metrics'][m]:.4f}" for m in metrics],
                                           f"{qps:,.0f}" if qps else "-"]) + " |")
    if len(results) > 1:
        for system, entries in systems.items():
            if len(entries) == len(results):
                avg = [sum(e["metrics"][m] for e in entries) / len(entries) for m in metrics]
                rows.append("| " + " | ".join([f"average ({len(entries)})", SYSTEM_TITLES.get(system, system),
                                               *[f"{v:.4f}" for v in avg], "-"]) + " |")
    return "\n".join(rows)


def _csv(text: str, allowed: Sequence[str] | None, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if allowed is not None:
        bad = [t for t in items if t not in allowed]
        if bad:
            raise ValueError(f"unknown {what} {bad[0]!r}: use {', '.join(allowed)}")
    return items


def add_arguments(p) -> None:
    """The options of ``lsr eval`` (shared by ``python -m lsr.eval``).

    Example:
        >>> import argparse
        >>> p = argparse.ArgumentParser()
        >>> add_arguments(p)
        >>> p.parse_args(["--beir", "demo"]).k
        1000
    """
    p.add_argument("--beir", action="append", required=True, metavar="DIR",
                   help="BEIR folder, BEIR name (downloaded once) or 'demo'; repeat for several")
    p.add_argument("--index-dir", default=None,
                   help="where indexes are cached (default ~/.cache/lsr-engine/indexes)")
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"SPLADE model (default {DEFAULT_MODEL})")
    p.add_argument("--modes", default=None,
                   help=f"comma list of {', '.join(MODES)} (default: every mode the index has)")
    p.add_argument("--split", default="test", help="qrels split (default test)")
    p.add_argument("--metrics", default=",".join(DEFAULT_METRICS), help="comma list (default %(default)s)")
    p.add_argument("--baselines", default="", help=f"comma list: {', '.join(BASELINES)} (default: none)")
    p.add_argument("--no-cross-check", action="store_true",
                   help="skip the Lucene impact cross-check that runs with a Pyserini baseline")
    p.add_argument("--out", default="results", help="results folder (default results/)")
    p.add_argument("-k", type=int, default=1000, help="hits per query (default 1000)")
    p.add_argument("--speed", default=DEFAULT_SPEED,
                   help=f"sparse query processing preset: {', '.join(SPEEDS)} (default {DEFAULT_SPEED})")
    p.add_argument("--threads", type=int, default=None, help="search threads (default: all cores)")
    p.add_argument("--warmup", type=int, default=1000, help="queries run once untimed first (default 1000)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--rebuild", action="store_true", help="rebuild the index even if cached")
    p.add_argument("--adapt", action="store_true",
                   help="evaluate a copy of the index adapted by `lsr adapt` (on the train split when the "
                        "data set has one, label-free otherwise)")
    p.add_argument("--no-progress", action="store_true")


def run_from_args(a) -> int:
    """``lsr eval`` with parsed arguments: every data set, then the summary table."""
    modes = None if a.modes is None else _csv(a.modes, MODES, "mode")
    metrics = _csv(a.metrics, None, "metric")
    for m in metrics:
        measure(m)
    baselines = _csv(a.baselines, BASELINES, "baseline")
    speed_params(a.speed)
    if modes == [] and not baselines:
        raise ValueError("nothing to evaluate: give --modes and/or --baselines")
    check_k(a.k, name="-k")
    if baselines and (reason := available()):
        raise LsrError(reason)
    t0 = time.perf_counter()
    results = [evaluate_beir(src, out=a.out, index_dir=a.index_dir, model=a.model, modes=modes, split=a.split,
                             metrics=metrics, baselines=baselines, cross=False if a.no_cross_check else None,
                             k=a.k, speed=a.speed, threads=a.threads, warmup=max(0, a.warmup),
                             device=a.device, rebuild=a.rebuild, adapt=a.adapt,
                             show_progress=not a.no_progress,
                             log=lambda s: print(s, file=sys.stderr, flush=True)) for src in a.beir]
    table = markdown_table(results, metrics)
    if len(results) > 1:
        (Path(a.out) / "summary.md").write_text(table + "\n")
    print(table)
    print(f"\nwall time {time.perf_counter() - t0:.1f} s; results in {Path(a.out).resolve()}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m lsr.eval ...``: the same as ``lsr eval ...`` (the same options, errors and exit codes).

    Example:
        >>> main(["--beir", "demo", "--modes", "bm25"])   # doctest: +SKIP
        0
    """
    p = Parser(prog="python -m lsr.eval",
               description="BEIR evaluation of every mode, with Pyserini baselines.")
    add_arguments(p)
    return run_command("eval", run_from_args, p.parse_args(sys.argv[1:] if argv is None else argv))
