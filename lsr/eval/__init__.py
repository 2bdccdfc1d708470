"""Evaluation: IR metrics, BEIR data sets, Pyserini baselines and the ``lsr eval`` command, in one package.

* :mod:`lsr.eval.metrics`: metrics over runs (ir-measures), TREC run files, run comparisons.
* :mod:`lsr.eval.beir`: BEIR folders, names (downloaded once) and the demo data set.
* :mod:`lsr.eval.baselines`: Pyserini (Lucene) BM25 and the Lucene impact cross-check.
* :mod:`lsr.eval.run`: ``lsr eval`` / ``python -m lsr.eval``: every mode of an index on BEIR data sets.

Example:
    >>> from lsr.eval import evaluate
    >>> round(evaluate({"q": {"a": 2.0, "b": 1.0}}, {"q": {"b": 1}}, ["mrr@10"])["mrr@10"], 2)
    0.5
    >>> from lsr.eval import evaluate_beir
    >>> evaluate_beir("demo", modes=["bm25"], out="results")["runs"]["bm25"]["metrics"]   # doctest: +SKIP
"""

from lsr.eval.baselines import (
    BASELINES,
    JavaUnavailable,
    anserini_jar,
    available,
    java_home,
    lucene_impact_run,
    lucene_index,
    pyserini_bm25,
)
from lsr.eval.beir import (
    BEIR_URL,
    CACHE_DIR,
    BeirDataset,
    download_beir,
    load_beir,
    read_queries,
    resolve_beir,
    write_demo_beir,
)
from lsr.eval.metrics import (
    NAMES,
    drop_identical_ids,
    evaluate,
    measure,
    read_qrels,
    read_trec_run,
    top_overlap,
    write_trec_run,
)
from lsr.eval.run import (
    DEFAULT_METRICS,
    MODES,
    add_arguments,
    cross_check,
    ensure_index,
    evaluate_beir,
    main,
    markdown_table,
    run_from_args,
)

__all__ = [
    # metrics
    "NAMES", "measure", "evaluate", "read_qrels", "write_trec_run", "read_trec_run", "drop_identical_ids",
    "top_overlap",
    # BEIR
    "BEIR_URL", "CACHE_DIR", "BeirDataset", "read_queries", "load_beir", "resolve_beir", "download_beir",
    "write_demo_beir",
    # baselines
    "BASELINES", "JavaUnavailable", "java_home", "anserini_jar", "available", "lucene_index",
    "pyserini_bm25", "lucene_impact_run",
    # the lsr eval command
    "MODES", "DEFAULT_METRICS", "evaluate_beir", "ensure_index", "cross_check", "markdown_table",
    "add_arguments", "run_from_args", "main",
]
