"""``lsr adapt``: fit a collection's inference-free query side to the collection, and store it.

1. Training queries: labelled (``--queries`` + ``--qrels``, BEIR layout) or pseudo-queries drawn from the
   documents (:mod:`lsr.adapt.data`); a share is held out (``holdout``).
2. Candidates mined with the collection's own retrievers: the teacher (hybrid fusion of the model-based
   retrievers) and the student (``sparse-idf`` with its IDF start).
3. One weight per vocabulary token fitted from the IDF start (:mod:`lsr.adapt.trainer`).
4. The guard: the held-out queries are searched (the whole collection, not re-ranked candidates) with the IDF
   start and with the learned weights; the learned weights are kept only if they beat the start there.
5. The hybrid side: with the learned (or IDF) ``sparse-idf`` in place of ``sparse`` a hybrid query runs no
   SPLADE model; ``hybrid="auto"`` does so unless the held-out hybrid loses more than ``tolerance`` by it.
6. Fusion weights: tuned on the labels with labels (:func:`lsr.tuning.tune_fusion`), else fitted without
   them (:mod:`lsr.adapt.fusion`).
7. Commit: the weights go to a new file (``sparse-idf/weights-<generation>.npy``), then a new version of the
   manifest is renamed into place (the commit: readers see the previous version until then); the previous
   version's file is kept, older ones are removed.

Example:
    >>> from lsr.adapt.run import adapt
    >>> res = adapt("my-index", queries="queries.jsonl", qrels="qrels/train.tsv")   # doctest: +SKIP
    >>> print("\\n".join(res.lines()))                                                # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lsr.adapt.data import Queries, labelled_queries, mine, pseudo_queries
from lsr.adapt.trainer import TrainingSet, fit_weights, query_cost
from lsr.errors import LsrError
from lsr.eval.metrics import evaluate
from lsr.index.storage import save_array
from lsr.manifest import load_manifest, write_manifest
from lsr.retrievers.sparse_idf import weights_file

HYBRID_CHOICES = ("auto", "sparse-idf", "sparse")
FUSION_CHOICES = ("auto", "keep")
METRICS = ("ndcg@10", "recall@100")


class AdaptError(LsrError, ValueError):
    """The collection cannot be adapted (one line, CLI exit code 2)."""


@dataclass
class AdaptResult:
    """What an adaptation did: the training queries, the held-out figures of the IDF start and of the
    learned weights (``held_out``: ``{"idf": {...}, "learned": {...}}``), whether the learned weights were
    kept, the hybrid side and fusion chosen, query cost (postings touched), wall time and peak memory."""

    source: str
    train_queries: int
    held_queries: int
    held_out: dict
    kept: bool
    hybrid: list[str]
    fusion: dict | None
    flops: dict
    seconds: dict
    peak_rss_mib: float
    written: bool
    facts: dict = field(default_factory=dict)
    #: the weights searches use now (learned if kept, else the IDF start) and the learned ones either way
    weights: np.ndarray | None = None
    learned: np.ndarray | None = None

    def lines(self) -> list[str]:
        h = self.held_out
        out = [f"training queries: {self.train_queries:,} {self.source} ({self.held_queries:,} held out)"]
        for name in ("idf", "learned"):
            out.append(f"held-out {name:<8} " + "  ".join(f"{m} {v:.4f}" for m, v in h[name].items()))
        out.append(f"postings per query: idf {self.flops['idf']:,.0f}, learned {self.flops['learned']:,.0f}")
        out.append("learned weights kept" if self.kept else
                   "learned weights NOT kept (they do not beat the IDF start on the held-out queries)")
        if "hybrid" in h:
            out.append("held-out hybrid with " + ", ".join(f"{n} {v['ndcg@10']:.4f}"
                                                           for n, v in h["hybrid"].items()))
        out.append(f"hybrid fuses: {', '.join(self.hybrid)}")
        if self.fusion:
            w = ", ".join(f"{n} {x:g}" for n, x in self.fusion.get("weights", {}).items())
            out.append(f"fusion: {w} ({(self.fusion.get('tuned') or {}).get('signal', 'labels')})")
        out.append("time: " + ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
                   + f"; peak memory {self.peak_rss_mib:,.0f} MiB")
        out.append("written to the collection's manifest" if self.written else "dry run: nothing written")
        return out


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def held_out_figures(searcher, held: Queries, weights: np.ndarray) -> dict[str, float]:
    """nDCG@10 and R@100 of ``sparse-idf`` with ``weights`` over the whole collection, on ``held``."""
    r = searcher.retriever("sparse-idf")
    ranked = r.search(r.encode_queries(held.texts, weights=weights), 100,
                      params=searcher.params(k=100, mode="sparse-idf"))
    ids = searcher.collection.ids
    run = {q: dict(zip(ids[ranked[i][0]].tolist(), ranked[i][1].tolist())) for i, q in enumerate(held.qids)}
    return evaluate(run, held.qrels(ids), list(METRICS))


def _hybrid_figures(searcher, held: Queries, names: list[str]) -> dict[str, float]:
    fusion = {"weights": {n: 1.0 for n in names}}
    results = searcher.query(held.texts, searcher.params(k=100, mode="hybrid", fusion=fusion), annotate=False)
    run = {q: dict(zip(r.ids.tolist(), r.scores.tolist())) for q, r in zip(held.qids, results)}
    return evaluate(run, held.qrels(searcher.collection.ids), list(METRICS))


def _check_collection(searcher) -> None:
    names = searcher.retrievers
    if "sparse" not in names:
        raise AdaptError(f"{searcher.collection.path} has no SPLADE (sparse) retriever: adaptation fits "
                         "query weights against its document vectors")
    if "sparse-idf" not in names:
        raise AdaptError(f"{searcher.collection.path} has no sparse-idf retriever: rebuild it with "
                         "`lsr index` (sparse-idf is built by default)")
    if searcher.collection.manifest.migrated:
        raise AdaptError(f"{searcher.collection.path} has an older index format, opened read-only: rebuild "
                         "it with `lsr index --overwrite` to adapt it")
    if searcher.retriever("sparse-idf").encoder is None:
        raise AdaptError("adaptation needs the query encoders (open the collection with them)")
    c = searcher.collection
    if c.manifest.segments is not None and (len(c.manifest.segments) > 1 or c.live is not None):
        raise AdaptError(f"{c.path} has {len(c.manifest.segments)} segments or deleted documents: adaptation "
                         f"reads one SPLADE index; merge them first (`lsr merge --index {c.path} "
                         "--max-segments 1`)")


def adapt(index: Any, *, queries: str | Path | None = None, qrels: str | Path | None = None,
          pseudo: int = 4000, holdout: float = 0.2, seed: int = 0, hybrid: str = "auto",
          fusion: str = "auto", tolerance: float = 0.005, dry_run: bool = False, epochs: int | None = None,
          distill: float | None = None, l1: float | None = None, depth: int = 100,
          train_options: dict | None = None, log=print) -> AdaptResult:
    """Adapt the collection at ``index`` (a path or an opened :class:`lsr.Searcher`); see the module
    docstring. ``queries`` + ``qrels``: labelled training queries, else ``pseudo`` pseudo-queries.
    ``log``: progress lines (None: quiet)."""
    from lsr.searcher import Searcher

    say = log or (lambda *_: None)
    if hybrid not in HYBRID_CHOICES:
        raise ValueError(f"hybrid must be one of {HYBRID_CHOICES}, got {hybrid!r}")
    if fusion not in FUSION_CHOICES:
        raise ValueError(f"fusion must be one of {FUSION_CHOICES}, got {fusion!r}")
    if qrels is not None and queries is None:
        raise ValueError("--qrels needs --queries (the judged queries' texts)")
    unlabelled = None
    if queries is not None and qrels is None:  # the user's queries, without judgements: used by the fusion
        from lsr.eval.beir import read_queries

        unlabelled = list(read_queries(queries).values())
    t_start = time.perf_counter()
    seconds: dict[str, float] = {}
    searcher = index if isinstance(index, Searcher) else Searcher.load(index)
    _check_collection(searcher)
    collection = searcher.collection
    student = searcher.retriever("sparse-idf")
    start = np.asarray(student.idf, np.float32)

    t0 = time.perf_counter()
    data = labelled_queries(collection, queries, qrels) if qrels is not None else \
        pseudo_queries(collection, n=pseudo, seed=seed)
    train, held = data.split(holdout, seed=seed)
    say(f"{len(train):,} training and {len(held):,} held-out {data.source} queries; mining candidates")
    mined = mine(searcher, train, depth=depth, weights=start)
    seconds["mine"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ts = TrainingSet(**mined.arrays())
    f_indptr, f_terms, f_impacts = student.index.forward()
    df = np.bincount(np.asarray(f_terms, np.int64), minlength=start.size).astype(np.float32)
    if distill is None:
        distill = 0.5 if data.source == "labelled" else 1.0
    kw: dict[str, Any] = {"df": df, "seed": seed, "distill": distill}
    if epochs is not None:
        kw["epochs"] = epochs
    if l1 is not None:
        kw["l1"] = l1
    kw.update(train_options or {})
    fit = fit_weights(ts, (f_indptr, f_terms, f_impacts), student.index.scale, start, **kw)
    learned = np.ascontiguousarray(fit.weights, np.float32)
    seconds["train"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    figures = {"idf": held_out_figures(searcher, held, start),
               "learned": held_out_figures(searcher, held, learned)}
    kept = figures["learned"]["ndcg@10"] > figures["idf"]["ndcg@10"]
    weights = learned if kept else start
    held_ts = TrainingSet(**mine(searcher, held, teacher=False, student_depth=1, weights=start).arrays())
    flops = {"idf": query_cost(start, held_ts, df), "learned": query_cost(learned, held_ts, df)}
    say(f"held-out nDCG@10: IDF start {figures['idf']['ndcg@10']:.4f}, learned "
        f"{figures['learned']['ndcg@10']:.4f} -> {'kept' if kept else 'not kept'}")

    # which sparse side hybrid fuses: with the adapted weights in place for the comparison
    previous, student.weights = student.weights, weights
    try:
        # the hybrid's members with the SPLADE query encoder as its sparse side (whichever it fuses now)
        with_splade = list(dict.fromkeys("sparse" if n == "sparse-idf" else n
                                         for n in collection.manifest.fused_by_default))
        if "sparse" not in with_splade:
            with_splade.insert(0, "sparse")
        with_idf = ["sparse-idf" if n == "sparse" else n for n in with_splade]
        if hybrid == "auto" and len(with_splade) > 1:
            figures["hybrid"] = {"sparse": _hybrid_figures(searcher, held, with_splade),
                                 "sparse-idf": _hybrid_figures(searcher, held, with_idf)}
            # only learned weights that beat their start replace the SPLADE encoder: on pseudo-queries (words
            # copied from a document) an IDF query looks as good as the encoder, on real queries it is not
            # (SciFact test, equal weights: 0.7153 with IDF sparse-idf against 0.7248 with SPLADE)
            use_idf = kept and figures["hybrid"]["sparse-idf"]["ndcg@10"] >= \
                figures["hybrid"]["sparse"]["ndcg@10"] - tolerance
        else:
            use_idf = hybrid == "sparse-idf"
        names = with_idf if use_idf else with_splade
        seconds["guard"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        spec = None
        if fusion == "auto" and len(names) > 1:
            spec = _fit_fusion(searcher, held, names, unlabelled=unlabelled, seed=seed, say=say)
        seconds["fusion"] = time.perf_counter() - t0
    finally:
        student.weights = previous

    written = False
    if not dry_run:
        _commit(collection, weights if kept else None, names, spec, fusion == "keep", {
            "source": data.source, **data.facts, "train_queries": len(train), "held_queries": len(held),
            "held_out": {k: v for k, v in figures.items() if k != "hybrid"}, "kept": kept,
            "postings_per_query": flops, "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        written = True
    seconds["total"] = time.perf_counter() - t_start
    return AdaptResult(source=data.source, train_queries=len(train), held_queries=len(held), held_out=figures,
                       kept=kept, hybrid=names, fusion=spec, flops=flops, seconds=seconds,
                       peak_rss_mib=_peak_rss_mib(), written=written,
                       facts={**data.facts, "fit": getattr(fit, "facts", {})}, weights=weights,
                       learned=learned)


def _fit_fusion(searcher, held: Queries, names: list[str], *, unlabelled, seed: int, say) -> dict:
    """Fusion weights over ``names``: tuned on the labels of the held-out queries when there are labels
    (the query weights were fitted on the others: tuned on those, a fusion over-trusts sparse-idf), else
    label-free (on the user's unlabelled queries when given, else on pseudo-queries:
    :mod:`lsr.adapt.fusion`)."""
    if held.source == "labelled":
        from lsr.tuning import tune_fusion

        res = tune_fusion(searcher, dict(zip(held.qids, held.texts)), held.qrels(searcher.collection.ids),
                          names=names)
        say(f"fusion tuned on the {len(held)} held-out labelled queries: nDCG@10 {res.value:.4f}")
        return {**res.fusion, "tuned": {**res.fusion["tuned"], "labels": True}}
    from lsr.adapt.fusion import fit_fusion_unlabelled

    res = fit_fusion_unlabelled(searcher, unlabelled, names=names, seed=seed)
    say("fusion fitted without labels: " + ", ".join(f"{n} {w:.3f}" for n, w in res.weights.items()))
    return res.fusion


def _commit(collection, weights: np.ndarray | None, hybrid: list[str], fusion: dict | None, keep_fusion: bool,
            facts: dict) -> None:
    """Write the new weights under a new name, then the manifest (the commit), then drop old weight files."""
    path = collection.path
    manifest = load_manifest(path)  # the current version (another writer may have committed since open)
    entry = manifest.retrievers["sparse-idf"]
    settings = dict(entry.settings)
    old = settings.get("weights")
    add: tuple[str, ...] = ()
    if weights is not None:
        name = weights_file(manifest.generation + 1)
        save_array(path, f"{entry.dir}/{name}", weights)
        settings["weights"] = name
        add = (f"{entry.dir}/{name}",)
    else:
        settings.pop("weights", None)
    settings["adapted"] = facts
    files = tuple(f for f in entry.files if f != (f"{entry.dir}/{old}" if old else None)) + add
    new_entry = dataclasses.replace(entry, settings=settings, files=files)
    retrievers = {**manifest.retrievers, "sparse-idf": new_entry}
    changes: dict[str, Any] = {"retrievers": retrievers, "hybrid": tuple(hybrid)}
    if not keep_fusion:
        changes["fusion"] = fusion
    elif manifest.fusion and manifest.fusion.get("weights"):
        # a kept fusion follows the sparse side hybrid now fuses (its weight moves between the two kinds)
        swap = {"sparse": "sparse-idf", "sparse-idf": "sparse"}
        w = dict(manifest.fusion["weights"])
        if set(w) != set(hybrid) and {swap.get(n, n) for n in w} == set(hybrid):
            changes["fusion"] = {**manifest.fusion, "weights": {swap.get(n, n): x for n, x in w.items()}}
    drop = (f"{entry.dir}/{old}",) if old and old != settings.get("weights") else ()
    write_manifest(path, manifest.replace(**changes), next_generation=True, add=add, drop=drop)
    # the previous version's file stays readable; older ones (and those of crashed runs) go
    keep = {settings.get("weights"), old}
    for f in (path / entry.dir).glob("weights-*.npy"):
        if f.name not in keep:
            f.unlink(missing_ok=True)


def adapt_arguments(p) -> None:
    """The ``lsr adapt`` options (also used by ``lsr eval --adapt`` for the shared ones)."""
    p.add_argument("--index", required=True, help="index folder (with sparse and sparse-idf retrievers)")
    p.add_argument("--queries", default=None,
                   help="training queries (BEIR queries.jsonl): labelled with --qrels; without, unlabelled "
                        "queries the label-free fusion fits on")
    p.add_argument("--qrels", default=None, help="their judgements (BEIR qrels TSV, e.g. qrels/train.tsv)")
    p.add_argument("--pseudo", type=int, default=4000,
                   help="without labels: how many pseudo-queries to draw from the documents (default 4000)")
    p.add_argument("--holdout", type=float, default=0.2, help="share of training queries held out (0.2)")
    p.add_argument("--hybrid", choices=HYBRID_CHOICES, default="auto",
                   help="which sparse side hybrid fuses: auto (sparse-idf unless it loses on the held-out "
                        "queries), sparse-idf (no SPLADE model per query) or sparse")
    p.add_argument("--fusion", choices=FUSION_CHOICES, default="auto",
                   help="auto: fit the default fusion's weights (with the labels, else without); keep")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dry-run", action="store_true", help="fit and report, write nothing")


def adapt_from_args(a) -> int:
    """``lsr adapt``: run :func:`adapt` with the parsed options and print its report."""
    if a.pseudo < 2:
        raise ValueError(f"--pseudo must be at least 2, got {a.pseudo}")
    res = adapt(a.index, queries=a.queries, qrels=a.qrels, pseudo=a.pseudo, holdout=a.holdout, seed=a.seed,
                hybrid=a.hybrid, fusion=a.fusion, dry_run=a.dry_run)
    print("\n".join(res.lines()))
    return 0


def adapt_for_eval(ds, folder: Path, workdir: Path, *, log=print) -> tuple[Path, dict]:
    """``lsr eval --adapt``: a copy of the cached index ``folder`` in ``workdir``, adapted on the data set's
    train split when it has one (and it is not the split evaluated), label-free otherwise. Returns the
    copy and what adaptation used (for ``metrics.json``)."""
    train = ds.path / "qrels" / "train.tsv"
    labelled = train.is_file() and ds.split != "train"
    target = workdir / "adapted"
    if target.exists():
        shutil.rmtree(target)
    workdir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(folder, target)
    res = adapt(target, queries=ds.path / "queries.jsonl" if labelled else None,
                qrels=train if labelled else None, log=log)
    for line in res.lines():
        log(f"  adapt: {line}")
    info = {"source": res.source, "split": "train" if labelled else None,
            "train_queries": res.train_queries, "held_queries": res.held_queries, "held_out": res.held_out,
            "kept": res.kept, "hybrid": res.hybrid, "fusion": res.fusion, "postings_per_query": res.flops,
            "seconds": res.seconds, "peak_rss_mib": res.peak_rss_mib}
    return target, info
