"""BM25 as a sparse encoder: document impacts precomputed at build time, binary queries.

With these impacts the same inverted index and kernels that serve SPLADE compute BM25 exactly
(Robertson & Zaragoza 2009; Lucene's variant, as in Pyserini):

    score(q, d) = sum over distinct query terms t in d of  idf(t) * tf / (tf + k1 * (1 - b + b * dl / avgdl))
    idf(t)      = log(1 + (N - df + 0.5) / (df + 0.5))

(Lucene 8+ dropped the constant ``(k1 + 1)`` factor, which does not change rankings.) Defaults
``k1=0.9, b=0.4`` are Pyserini's BEIR settings. One known difference from Lucene: Lucene stores each
document length in one byte (SmallFloat, exact up to 40 tokens, then a few percent off), we keep it exact.

Analysers:

* ``"wordpiece"`` (default): the SPLADE encoder's WordPiece tokenizer, so BM25 shares its vocabulary
  (no extra dictionary); ``##`` pieces are terms of their own.
* ``"porter"``: lowercased word tokens (letters and digits), Lucene's English stop words removed, Porter
  stemming (``snowballstemmer``), as Pyserini's default analyser; the word vocabulary is built from the
  corpus and stored with the index.

Nonsense and weak matches (WordPiece): a word the tokenizer shatters into single characters ("zzqxj" ->
z ##z ##q ##x ##j) would match documents on those letters; given the BM25 index, queries drop such a word
when no document holds all its pieces (:func:`shattered`). A hit whose shared terms carry less than
:data:`WEAK_SHARE` of the query's idf mass is flagged as a weak match (:meth:`BM25Encoder.match_shares`).
Neither changes SciFact's nDCG@10 (``scripts/eval_bm25_queries.py``).

Example:
    >>> from lsr.bm25 import BM25Encoder
    >>> bm25 = BM25Encoder.fit(["the cat sat", "a cat and a dog"], analyzer="porter")
    >>> docs = bm25.encode_documents(["the cat sat", "a cat and a dog"])
    >>> q = bm25.encode_queries(["cats"])
    >>> q.to_dicts()
    [{0: 1.0}]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from numba import njit

from lsr.params import BM25_ANALYZERS
from lsr.types import SparseBatch

ANALYZERS = BM25_ANALYZERS  # defined once, in lsr.params
#: Lucene's EnglishAnalyzer stop words (Pyserini's default analyser removes these).
LUCENE_STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split())
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
#: A BM25 hit is a weak match when the query terms it shares carry less than this share of the query's
#: information (the idf mass of all its terms, see :meth:`BM25Encoder.match_shares`). On SciFact's 300 test
#: queries 0.7% of the top-1 hits and 6% of the top-10 hits fall below it; "zzqxj cell" scores 0.05
#: (scripts/eval_bm25_queries.py).
WEAK_SHARE = 0.25
#: A shattered query word is looked up in the documents of its rarest piece when that piece has at most
#: this many (else it is kept unchecked).
OCCURS_MAX_DF = 100_000


def shattered(pieces: Sequence[str]) -> list[bool]:
    """For each WordPiece piece of a text: whether its word is shattered, i.e. split into two or more
    pieces that are all single characters ("zzqxj" -> z ##z ##q ##x ##j). Such pieces match nearly every
    document; when no document holds them all, the word cannot occur and BM25 queries drop them.

    Example:
        >>> shattered(["copy", "z", "##z", "##q", "##x", "##j", "x", "##86", "d"])
        [False, True, True, True, True, True, False, False, False]
    """
    out: list[bool] = []
    start = 0
    for i in range(len(pieces) + 1):
        if i == len(pieces) or (i > start and not pieces[i].startswith("##")):
            word = pieces[start:i]
            flag = len(word) > 1 and all(len(p.removeprefix("##")) == 1 for p in word)
            out.extend([flag] * len(word))
            start = i
    return out


@njit(cache=True, nogil=True)
def bm25_weights(indptr, tf, dl, idf_of_term, indices, avgdl, k1, b):
    """BM25 document impacts (Robertson & Zaragoza 2009, Lucene variant) of a CSR of term frequencies."""
    out = np.empty(tf.size, np.float32)
    for d in range(indptr.size - 1):
        norm = k1 * (1.0 - b + b * dl[d] / avgdl)
        for j in range(indptr[d], indptr[d + 1]):
            f = tf[j]
            out[j] = np.float32(idf_of_term[indices[j]] * f / (f + norm))
    return out


@njit(cache=True, nogil=True)
def matched_weight(f_indptr, f_terms, table, rows, out):
    """Sum of ``table[t]`` over the terms t of each document row: the query idf mass a document shares."""
    for i in range(rows.size):
        d = rows[i]
        s = 0.0
        for j in range(f_indptr[d], f_indptr[d + 1]):
            s += table[f_terms[j]]
        out[i] = s


class _Porter:
    """Words -> stemmed word ids (Pyserini's default analysis, approximately)."""

    def __init__(self, vocab: dict[str, int] | None = None) -> None:
        import snowballstemmer

        self._stem = snowballstemmer.stemmer("porter").stemWord
        self.vocab: dict[str, int] = dict(vocab or {})
        self._cache: dict[str, str] = {}

    def terms(self, text: str) -> list[str]:
        out = []
        for w in _WORD.findall(text.lower()):
            if w in LUCENE_STOPWORDS:
                continue
            s = self._cache.get(w)
            if s is None:
                s = self._cache[w] = self._stem(w)
            out.append(s)
        return out

    def ids(self, text: str, *, grow: bool) -> list[int]:
        if grow:
            return [self.vocab.setdefault(t, len(self.vocab)) for t in self.terms(text)]
        return [i for i in (self.vocab.get(t) for t in self.terms(text)) if i is not None]


class BM25Encoder:
    """Texts -> BM25 sparse vectors (documents: BM25 impacts; queries: 1 per distinct known term).

    Fit on the corpus first (document frequencies, average length, and for ``"porter"`` the vocabulary).

    Example:
        >>> enc = BM25Encoder.fit(corpus_texts, tokenizer=splade.tokenizer)      # doctest: +SKIP
        >>> docs = enc.encode_documents(corpus_texts)                            # doctest: +SKIP
    """

    def __init__(self, *, analyzer: str, df: np.ndarray, n_docs: int, avgdl: float, k1: float, b: float,
                 tokenizer: Any = None, vocab: dict[str, int] | None = None) -> None:
        if analyzer not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {ANALYZERS}, got {analyzer!r}")
        if analyzer == "wordpiece" and tokenizer is None:
            raise ValueError("the wordpiece analyzer needs the encoder's tokenizer (tokenizer=...)")
        for name, v, lo, hi in (("k1", k1, 0.0, math.inf), ("b", b, 0.0, 1.0)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
                raise ValueError(f"{name} must be a number in [{lo}, {hi}], got {v!r}")
        self.analyzer = analyzer
        self.k1, self.b = float(k1), float(b)
        self.n_docs, self.avgdl = int(n_docs), float(avgdl)
        self.df = np.asarray(df, np.int64)
        self._tokenizer = tokenizer
        self._porter = _Porter(vocab) if analyzer == "porter" else None
        n = self.n_docs
        self.idf = np.log1p((n - self.df + 0.5) / (self.df + 0.5)).astype(np.float64)

    @property
    def vocab_size(self) -> int:
        return int(self.df.size)

    # -- analysis ------------------------------------------------------------------------------
    def _token_ids(self, texts: Sequence[str], *, grow: bool = False) -> list[list[int]]:
        if self._porter is not None:
            return [self._porter.ids(t, grow=grow) for t in texts]
        enc = self._tokenizer(list(texts), add_special_tokens=False, truncation=False, verbose=False,
                              return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    @staticmethod
    def _counts(token_ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """CSR of term frequencies (terms ascending per row) and document lengths."""
        indptr = np.zeros(len(token_ids) + 1, np.int64)
        idx, tfs, dl = [], [], np.zeros(len(token_ids), np.float64)
        for i, ids in enumerate(token_ids):
            t, c = np.unique(np.asarray(ids, np.int64), return_counts=True)
            idx.append(t)
            tfs.append(c)
            indptr[i + 1] = indptr[i] + t.size
            dl[i] = len(ids)
        def cat(xs: list, dt: Any) -> np.ndarray:
            return np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt)

        return indptr, cat(idx, np.int32), cat(tfs, np.float64), dl

    @classmethod
    def fit(cls, texts: Sequence[str], *, analyzer: str = "wordpiece", tokenizer: Any = None, k1: float = 0.9,
            b: float = 0.4) -> "BM25Encoder":
        """Collection statistics from the corpus ``texts`` (the documents that will be indexed)."""
        if analyzer not in ANALYZERS:
            raise ValueError(f"analyzer must be one of {ANALYZERS}, got {analyzer!r}")
        if isinstance(texts, str) or len(texts) == 0:
            raise ValueError("BM25 needs a non-empty list of document texts")
        proto = cls(analyzer=analyzer, df=np.zeros(1, np.int64), n_docs=1, avgdl=1.0, k1=k1, b=b,
                    tokenizer=tokenizer)
        ids = proto._token_ids(texts, grow=True)
        vocab = proto._porter.vocab if proto._porter else None
        size = len(vocab) if vocab is not None else len(tokenizer)
        indptr, indices, _, dl = cls._counts(ids)
        df = np.bincount(indices, minlength=max(size, 1)).astype(np.int64)
        avgdl = float(dl.mean()) if dl.size and dl.mean() > 0 else 1.0
        return cls(analyzer=analyzer, df=df, n_docs=len(texts), avgdl=avgdl, k1=k1, b=b, tokenizer=tokenizer,
                   vocab=vocab)

    # -- encoding ------------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str]) -> SparseBatch:
        """BM25 impacts of each text (with the fitted statistics)."""
        indptr, indices, tf, dl = self._counts(self._token_ids(texts))
        keep = indices < self.vocab_size
        if not keep.all():  # terms unseen at fit time (only when encoding texts outside the corpus)
            rows = np.repeat(np.arange(len(dl)), np.diff(indptr))[keep]
            indices, tf = indices[keep], tf[keep]
            indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=len(dl)))]).astype(np.int64)
        vals = bm25_weights(indptr, tf, dl, self.idf, indices, self.avgdl, self.k1, self.b)
        return SparseBatch(indptr, indices, vals, max(self.vocab_size, 1))

    def _occurs(self, index: Any, terms: list[int]) -> bool:
        """Whether some document of the BM25 ``index`` holds every one of ``terms`` (a word's pieces): the
        documents of the rarest piece, checked through the forward index."""
        if any(not 0 <= t < min(self.vocab_size, index.vocab_size) or self.df[t] == 0 for t in terms):
            return False
        rarest = min(terms, key=lambda t: self.df[t])
        if self.df[rarest] > OCCURS_MAX_DF:
            return True  # too common to check cheaply: assume it does
        query = SparseBatch.from_dicts([{rarest: 1.0}], vocab_size=index.vocab_size)
        rows, _ = index.search_rows(query, k=int(self.df[rarest]), algorithm="exact")
        table = np.zeros(index.vocab_size, np.float64)
        table[np.asarray(terms, np.int64)] = 1.0
        found = np.zeros(rows.size, np.float64)
        f_indptr, f_terms, _ = index.forward()
        matched_weight(f_indptr, f_terms, table, rows.astype(np.int64), found)
        return bool(rows.size) and float(found.max()) >= len(set(terms))

    def _query_terms(self, ids: list[int], index: Any) -> tuple[list[int], list[int]]:
        """(kept, all) distinct term ids of one query: kept = known to the collection and, when the BM25
        ``index`` is given (WordPiece), not a piece of a shattered word that no document holds whole."""
        every = list(dict.fromkeys(int(t) for t in ids))
        drop: set[int] = set()
        if index is not None and self._porter is None and ids:
            pieces = self._tokenizer.convert_ids_to_tokens([int(t) for t in ids])
            flags = shattered(pieces)
            word: list[int] = []
            for i, t in enumerate(ids):
                if flags[i]:
                    word.append(int(t))
                if word and (i + 1 == len(ids) or not pieces[i + 1].startswith("##")):
                    if not self._occurs(index, word):
                        drop.update(word)
                    word = []
            drop -= {int(t) for t, f in zip(ids, flags) if not f}  # also a piece of a sound word: kept
        kept = [t for t in every if 0 <= t < self.vocab_size and self.df[t] > 0 and t not in drop]
        return kept, every

    def encode_queries(self, texts: Sequence[str], *, index: Any = None) -> SparseBatch:
        """1.0 for every distinct query term the collection knows (BM25's query side). Given the BM25
        ``index``, the WordPiece pieces of a shattered word (nonsense like "zzqxj", see :func:`shattered`)
        that no document holds all of are left out: they would match documents on single letters."""
        return self.encode_terms(self.query_terms(texts, index=index))

    def query_terms(self, texts: Sequence[str], *, index: Any = None) -> list[tuple[list[int], list[int]]]:
        """Per text, (kept, all) distinct term ids (see :meth:`encode_queries`), for :meth:`encode_terms`
        and :meth:`match_shares`, so a query is analysed once."""
        return [self._query_terms(ids, index) for ids in self._token_ids(texts)]

    def encode_terms(self, terms: Sequence[tuple[list[int], list[int]]]) -> SparseBatch:
        """The binary query vectors of :meth:`query_terms`' output."""
        rows = [dict.fromkeys(kept, 1.0) for kept, _ in terms]
        return SparseBatch.from_dicts(rows, vocab_size=max(self.vocab_size, 1))

    def match_shares(self, index: Any, text: str, rows: np.ndarray, *,
                     terms: tuple[list[int], list[int]] | None = None) -> np.ndarray:
        """For documents ``rows`` of the BM25 ``index``: the share (0..1) of the query's information that
        the query terms they contain carry. A query's information is the idf sum of its distinct terms,
        where dropped pieces count with their idf and terms no document has with the largest idf; hits
        below :data:`WEAK_SHARE` are weak matches.

        Example:
            >>> shares = bm25.match_shares(index, "zzqxj volcano", rows)   # doctest: +SKIP
        """
        kept, every = terms if terms is not None else self._query_terms(self._token_ids([text])[0], index)
        top = float(np.log1p((self.n_docs + 0.5) / 0.5))  # idf of a term no document has
        total = sum(float(self.idf[t]) if 0 <= t < self.vocab_size and self.df[t] > 0 else top
                    for t in every)
        if self._porter is not None:  # words the collection lacks have no id: count them here
            total += top * len({w for w in self._porter.terms(text) if w not in self._porter.vocab})
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        out = np.zeros(rows.size, np.float64)
        if total <= 0 or not kept or not rows.size:
            return out
        table = np.zeros(index.vocab_size, np.float64)
        kept_arr = np.asarray([t for t in kept if t < index.vocab_size], np.int64)
        table[kept_arr] = self.idf[kept_arr]
        f_indptr, f_terms, _ = index.forward()
        matched_weight(f_indptr, f_terms, table, rows, out)
        return np.minimum(out / total, 1.0)

    def decode_terms(self, ids: Sequence[int]) -> list[str]:
        """Term strings of term ids (WordPiece tokens or stemmed words)."""
        if self._porter is not None:
            inv = {i: w for w, i in self._porter.vocab.items()}
            return [inv.get(int(i), "?") for i in ids]
        return self._tokenizer.convert_ids_to_tokens([int(i) for i in ids])

    # -- persistence ---------------------------------------------------------------------------
    def to_json(self) -> str:
        """Statistics and settings (and the Porter vocabulary) as JSON, stored beside the BM25 index."""
        return json.dumps({"analyzer": self.analyzer, "k1": self.k1, "b": self.b, "n_docs": self.n_docs,
                           "avgdl": self.avgdl, "df": self.df.tolist(),
                           "vocab": list(self._porter.vocab) if self._porter else None})

    @classmethod
    def from_json(cls, text: str, *, tokenizer: Any = None) -> "BM25Encoder":
        """Re-create what :meth:`to_json` wrote (the WordPiece analyser needs the tokenizer again)."""
        d = json.loads(text)
        vocab = {w: i for i, w in enumerate(d["vocab"])} if d.get("vocab") is not None else None
        return cls(analyzer=d["analyzer"], df=np.asarray(d["df"], np.int64), n_docs=d["n_docs"],
                   avgdl=d["avgdl"], k1=d["k1"], b=d["b"], tokenizer=tokenizer, vocab=vocab)
