"""Training queries for ``lsr adapt``: labelled (BEIR queries + qrels) or drawn from the collection itself,
and the candidates each one is trained on (mined with the collection's own retrievers).

**Pseudo-queries** (no labels): for a document drawn at random, its title (when it has one of 3 to 20
words) or a span of 6 to 16 words from one of its sentences; the document is the positive. This is the
inverse cloze task of Lee et al. (2019) and the weak supervision of Dehghani et al. (2017) ("Neural
Ranking Models with Weak Supervision"), as in "Selective Weak Supervision for Neural Information
Retrieval" (Zhang et al. 2020): titles and sentences state what a document is about, in the words and at
the length of a user's query (SciFact's claims are one sentence; web and entity queries a few words).
Such a span is answered by exact word overlap alone, so the source document is a poor sole label: other
documents may answer it as well (false negatives), and it rewards matching every word. Each pseudo-query
is therefore also ranked by the collection's strongest ranking, the hybrid fusion of the SPLADE query
encoder, the dense encoder and BM25 (the *teacher*), and the student learns that ranking's distribution over
the candidates (distillation) as well as the source document: the dense member carries the evidence that is
not word overlap.

**Candidates** of a query: the teacher's top ``depth`` documents (hard negatives: close but not the answer),
the student's own top ``student_depth`` (IDF start: the documents its current weights wrongly prefer) and
the positives. In-batch negatives are added by the trainer.

Example:
    >>> from lsr.adapt.data import pseudo_queries
    >>> q = pseudo_queries(collection, n=1000, seed=0)              # doctest: +SKIP
    >>> q.texts[0], q.positives[0]                                  # doctest: +SKIP
    ('aspirin lowers the risk of colorectal cancer', {4711: 1})
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lsr.eval.beir import read_queries
from lsr.eval.metrics import read_qrels
from lsr.params import FusionSpec
from lsr.retrievers import retriever_class

#: sentence boundaries: end punctuation followed by white space
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_WORD = re.compile(r"\S+")


@dataclass
class Queries:
    """Training queries: ``texts``, their ids and each one's positives (``{row: grade}``, grade > 0);
    ``source``: "labelled" or "pseudo"."""

    qids: list[str]
    texts: list[str]
    positives: list[dict[int, int]]
    source: str
    facts: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.texts)

    def subset(self, idx) -> "Queries":
        idx = [int(i) for i in idx]
        return Queries([self.qids[i] for i in idx], [self.texts[i] for i in idx],
                       [self.positives[i] for i in idx], self.source, dict(self.facts))

    def split(self, holdout: float, *, seed: int = 0) -> tuple["Queries", "Queries"]:
        """(train, held-out): ``holdout`` of the queries (at least one) kept apart, drawn with ``seed``."""
        if not 0 < holdout < 1:
            raise ValueError(f"holdout must be a fraction in (0, 1), got {holdout}")
        if len(self) < 2:
            raise ValueError(f"{len(self)} training query: adaptation needs at least 2 (one held out)")
        order = np.random.default_rng(seed).permutation(len(self))
        n_held = min(len(self) - 1, max(1, int(round(holdout * len(self)))))
        return self.subset(np.sort(order[n_held:])), self.subset(np.sort(order[:n_held]))

    def qrels(self, ids: np.ndarray) -> dict[str, dict[str, int]]:
        """The positives as qrels over document ids (for :func:`lsr.eval.metrics.evaluate`)."""
        return {q: {str(ids[r]): g for r, g in p.items()} for q, p in zip(self.qids, self.positives)}


def labelled_queries(collection, queries: str | Path, qrels: str | Path) -> Queries:
    """Queries judged in ``qrels`` (BEIR layout: ``queries.jsonl`` and a ``query-id corpus-id score`` TSV),
    positives in the collection's rows. ValueError (one line) for an empty query file, qrels naming
    documents the collection lacks, or no judged query."""
    texts = read_queries(queries)
    if not texts:
        raise ValueError(f"{queries} has no queries")
    judged = read_qrels(qrels)
    lookup = {d: r for r, d in enumerate(collection.ids.tolist())}
    unknown = sorted({d for rel in judged.values() for d in rel if d not in lookup})
    if unknown:
        raise ValueError(f"{qrels} names {len(unknown):,} document(s) the collection does not have "
                         f"(e.g. {unknown[0]!r}): qrels and index must come from the same corpus")
    qids, out_texts, positives = [], [], []
    for q, rel in judged.items():
        pos = {lookup[d]: int(g) for d, g in rel.items() if g > 0}
        if q in texts and pos and texts[q].strip():
            qids.append(q)
            out_texts.append(texts[q])
            positives.append(pos)
    if not qids:
        raise ValueError(f"none of the queries in {queries} has a positive judgement in {qrels}")
    return Queries(qids, out_texts, positives, "labelled",
                   {"queries": str(queries), "qrels": str(qrels), "judged": len(qids)})


def _span(text: str, rng: np.random.Generator, *, lo: int = 6, hi: int = 16) -> str:
    sentences = [s for s in _SENTENCE.split(text) if len(_WORD.findall(s)) >= 3]
    if not sentences:
        return ""
    words = _WORD.findall(sentences[int(rng.integers(len(sentences)))])
    n = int(rng.integers(lo, hi + 1))
    if len(words) <= n:
        return " ".join(words)
    start = int(rng.integers(len(words) - n + 1))
    return " ".join(words[start:start + n])


def pseudo_queries(collection, *, n: int = 4000, seed: int = 0, title_share: float = 0.3) -> Queries:
    """``n`` pseudo-queries drawn from the collection's documents (see the module docstring): a title
    (``title_share`` of the time, when the document has one of 3 to 20 words) or a 6 to 16-word span of one of
    its sentences; the source document is the positive. Needs the document store."""
    if collection.docstore is None:
        raise ValueError(f"{collection.path} has no document store: label-free adaptation draws its queries "
                         "from the documents' texts (give --queries and --qrels instead)")
    if n < 2:
        raise ValueError(f"the number of pseudo-queries must be at least 2, got {n}")
    rng = np.random.default_rng(seed)
    rows = rng.permutation(len(collection))[: min(n * 2, len(collection))]
    docs = collection.docstore.get_many(collection.ids[rows].tolist())
    qids, texts, positives, titles = [], [], [], 0
    for row, doc in zip(rows.tolist(), docs):
        if doc is None:
            continue
        title_words = len(_WORD.findall(doc.title or ""))
        if 3 <= title_words <= 20 and rng.random() < title_share:
            text = " ".join(_WORD.findall(doc.title))
            titles += 1
        else:
            text = _span(doc.text or "", rng)
        if not text:
            continue
        qids.append(f"pseudo-{row}")
        texts.append(text)
        positives.append({row: 1})
        if len(texts) == n:
            break
    if len(texts) < 2:
        raise ValueError(f"{collection.path}: too few documents with text to draw pseudo-queries from")
    facts = {"pseudo_queries": len(texts), "titles": titles, "spans": len(texts) - titles, "seed": seed}
    return Queries(qids, texts, positives, "pseudo", facts)


def teacher_fusion(searcher) -> FusionSpec:
    """The teacher's fusion: the collection's recorded fusion when it was tuned on labels and uses no
    ``sparse-idf`` (the student), else equal-weight min-max fusion of the model-based retrievers."""
    m = searcher.collection.manifest
    names = searcher.retrievers
    recorded = m.fusion or {}
    tuned = recorded.get("tuned") or {}
    if recorded and tuned.get("labels", True) and "sparse-idf" not in (recorded.get("weights") or {}):
        return FusionSpec.check(recorded, names)
    members = [n for n, e in m.retrievers.items() if retriever_class(e.kind).in_default_fusion]
    return FusionSpec.check({"weights": {n: 1.0 for n in members}}, names)


@dataclass
class Mined:
    """Flat arrays of the training queries and their candidates (the trainer's ``TrainingSet`` fields):
    query i has tokens ``q_tokens[q_ptr[i]:q_ptr[i+1]]`` and candidates ``c_rows[c_ptr[i]:c_ptr[i+1]]``
    with labels ``c_label`` and teacher scores ``c_teacher`` (NaN: no teacher); ``kept``: the queries
    (indices into the input) that have at least one token in the vocabulary."""

    q_ptr: np.ndarray
    q_tokens: np.ndarray
    c_ptr: np.ndarray
    c_rows: np.ndarray
    c_label: np.ndarray
    c_teacher: np.ndarray
    kept: np.ndarray

    def arrays(self) -> dict:
        return {k: getattr(self, k) for k in ("q_ptr", "q_tokens", "c_ptr", "c_rows", "c_label", "c_teacher")}


def mine(searcher, queries: Queries, *, depth: int = 100, student_depth: int = 50, teacher: bool = True,
         weights: np.ndarray | None = None, chunk: int = 512) -> Mined:
    """Each query's tokens and candidates: the positives, the teacher's top ``depth`` (hybrid fusion of the
    model-based retrievers, with its scores), the student's own top ``student_depth`` (``sparse-idf`` with
    ``weights``, default the retriever's)."""
    student = searcher.retriever("sparse-idf")
    tokens = student.query_tokens(queries.texts)
    t_params = searcher.params(k=depth, mode="hybrid", fusion=teacher_fusion(searcher).to_dict()) \
        if teacher else None
    s_params = searcher.params(k=student_depth, mode="sparse-idf")
    q_ptr, c_ptr, q_tok, c_rows, c_label, c_teacher, kept = [0], [0], [], [], [], [], []
    for start in range(0, len(queries), chunk):
        texts = queries.texts[start:start + chunk]
        taught = searcher.query(texts, t_params, annotate=False) if teacher else None
        own = student.search(student.encode_queries(texts, weights=weights), student_depth, params=s_params)
        for j in range(len(texts)):
            i = start + j
            if tokens[i].size == 0:
                continue
            pos = queries.positives[i]
            t_rows = taught[j].rows if teacher else np.zeros(0, np.int64)
            cand = np.unique(np.concatenate([np.fromiter(pos, np.int64, len(pos)), t_rows, own[j][0]]))
            label = np.array([pos.get(int(r), 0) for r in cand], np.float32)
            if teacher:
                score = dict(zip(t_rows.tolist(), taught[j].scores.tolist()))
                t = np.array([score.get(int(r), 0.0) for r in cand], np.float32)
            else:
                t = np.full(cand.size, np.nan, np.float32)
            q_tok.append(tokens[i])
            c_rows.append(cand)
            c_label.append(label)
            c_teacher.append(t)
            q_ptr.append(q_ptr[-1] + tokens[i].size)
            c_ptr.append(c_ptr[-1] + cand.size)
            kept.append(i)
    if not kept:
        raise ValueError("none of the training queries has a token in the collection's vocabulary")
    return Mined(np.asarray(q_ptr, np.int64), np.concatenate(q_tok).astype(np.int32),
                 np.asarray(c_ptr, np.int64), np.concatenate(c_rows).astype(np.int64),
                 np.concatenate(c_label), np.concatenate(c_teacher), np.asarray(kept, np.int64))
