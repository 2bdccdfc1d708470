"""lsr as the first stage of a reranking pipeline: runs as PyTerrier-style DataFrames, and reranking.

:meth:`lsr.Searcher.retrieve` returns one row per (query, hit) with PyTerrier's columns ``qid, query,
docno, score, rank`` (rank from 0 within each query, as PyTerrier), plus ``text`` (and ``title``) on
request. :meth:`lsr.Searcher.rerank` re-scores such a candidate list with any callable
``scorer(query, texts) -> scores`` (a cross-encoder, the dense encoder, ...) and returns a new ranking.

Example:
    >>> df = searcher.retrieve({"q1": "what causes fever"}, k=100)                 # doctest: +SKIP
    >>> reranked = searcher.rerank(df, dense_scorer(searcher.retriever("dense").encoder))   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

COLUMNS = ["qid", "query", "docno", "score", "rank"]


def queries_of(queries: Any) -> dict[str, str]:
    """``{qid: text}`` from a mapping, a list of texts (qids "1", "2", ...), one text or a DataFrame."""
    import pandas as pd

    if isinstance(queries, pd.DataFrame):
        if not {"qid", "query"} <= set(queries.columns):
            raise ValueError("a queries DataFrame needs the columns qid and query")
        return dict(zip(queries["qid"].astype(str), queries["query"].astype(str)))
    if isinstance(queries, Mapping):
        return {str(q): str(t) for q, t in queries.items()}
    if isinstance(queries, str):
        return {"1": queries}
    if isinstance(queries, Sequence):
        return {str(i): str(t) for i, t in enumerate(queries, start=1)}
    raise TypeError(f"queries must be a mapping {{qid: text}}, a list of texts or a DataFrame, got "
                    f"{type(queries).__name__}")


def frame(queries: Mapping[str, str], results: Sequence[Any], docstore: Any = None) -> Any:
    """A pandas DataFrame of hits in PyTerrier's column conventions from :class:`lsr.searcher.SearchResult`
    arrays (one per query of ``queries``, in order); with a ``docstore``, ``title`` and ``text`` too."""
    import pandas as pd

    qids = list(queries)
    counts = [len(r) for r in results]
    df = pd.DataFrame({
        "qid": np.repeat(np.array(qids, dtype=object), counts) if qids else np.zeros(0, object),
        "query": np.repeat(np.array([queries[q] for q in qids], dtype=object), counts) if qids
        else np.zeros(0, object),
        "docno": np.concatenate([r.ids.astype(object) for r in results]) if results else np.zeros(0, object),
        "score": np.concatenate([np.asarray(r.scores, np.float64) for r in results]) if results
        else np.zeros(0),
        "rank": np.concatenate([np.arange(n, dtype=np.int64) for n in counts]) if results
        else np.zeros(0, np.int64)}, columns=COLUMNS)
    return _with_text(docstore, df) if docstore is not None else df


def retrieve(searcher, queries: Any, k: int = 1000, *, mode: str | None = None, fusion: dict | None = None,
             speed: str = "safe", text: bool = False) -> Any:
    """Deprecated spelling of :meth:`lsr.Searcher.retrieve`."""
    return searcher.retrieve(queries, k, mode=mode, fusion=fusion, speed=speed, text=text)


def _with_text(docstore: Any, df: Any) -> Any:
    if docstore is None:
        raise ValueError("this index has no document store: texts are not available")
    ids = df["docno"].astype(str).tolist()
    docs = {d.id: d for d in docstore.get_many(list(dict.fromkeys(ids))) if d is not None}
    df = df.copy()
    df["title"] = [docs[i].title if i in docs else "" for i in ids]
    df["text"] = [docs[i].text if i in docs else "" for i in ids]
    return df


def rerank(searcher, hits: Any, scorer: Callable[[str, list[str]], Sequence[float]], *,
           top: int | None = None) -> Any:
    """Re-score each query's candidates with ``scorer(query, texts)``; a new DataFrame, ranked by it.

    ``hits`` is a :func:`retrieve` DataFrame (``text`` is fetched from the document store when absent);
    the scorer sees ``title + " " + text`` where there is a title (what the encoders saw at indexing);
    ``top`` keeps only each query's ``top`` best candidates before re-scoring.
    """
    import pandas as pd

    if not isinstance(hits, pd.DataFrame) or not set(COLUMNS) <= set(hits.columns):
        raise ValueError(f"hits must be a DataFrame with the columns {COLUMNS} (from Searcher.retrieve)")
    if not callable(scorer):
        raise TypeError("scorer must be a callable scorer(query, texts) -> scores")
    df = hits.sort_values(["qid", "rank"], kind="stable")
    if top is not None:
        df = df[df["rank"] < top]
    if "text" not in df.columns:
        df = _with_text(searcher.docstore, df)
    parts = []
    for qid, group in df.groupby("qid", sort=False):
        texts = group["text"].astype(str).tolist()
        if "title" in group.columns:  # what the encoders saw at indexing: title and text joined
            texts = [f"{t} {x}".strip() if t else x for t, x in zip(group["title"].astype(str), texts)]
        scores = np.asarray(scorer(str(group["query"].iloc[0]), texts), dtype=np.float64)
        if scores.shape != (len(group),):
            raise ValueError(f"scorer returned {scores.shape} scores for {len(group)} candidates of "
                             f"query {qid}")
        g = group.copy()
        g["score"] = scores
        g = g.sort_values(["score", "docno"], ascending=[False, True], kind="stable")
        g["rank"] = np.arange(len(g), dtype=np.int64)
        parts.append(g)
    return pd.concat(parts, ignore_index=True) if parts else df.iloc[0:0].copy()


def dense_scorer(encoder, *, batch_size: int = 64, cache_size: int = 100_000
                 ) -> Callable[[str, list[str]], np.ndarray]:
    """A scorer for :func:`rerank`: cosine of the dense encoder's query and passage vectors.

    Passage vectors are cached by text (up to ``cache_size``), since candidates recur across queries.
    """
    cache: dict[str, np.ndarray] = {}

    def score(query: str, texts: list[str]) -> np.ndarray:
        q = encoder.encode([query])[0]
        todo = list(dict.fromkeys(t for t in texts if t not in cache))
        if todo:
            if len(cache) + len(todo) > cache_size:
                cache.clear()
            cache.update(zip(todo, encoder.encode(todo, batch_size=batch_size)))
        return np.stack([cache[t] for t in texts]) @ q if texts else np.zeros(0, np.float32)

    return score
