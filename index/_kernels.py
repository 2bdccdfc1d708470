"""Numba kernels of the sparse index: flat numpy arrays in, flat numpy arrays out.

Orchestration (validation, files, ids) lives in :mod:`lsr.index.sparse`; this module only holds the
loops over postings, so that later query processors (e.g. block-max pruning) can sit beside them.

Layout of an inverted index ("postings"), term-major CSR:
    ``p_indptr``  int64, length ``vocab + 1``: postings of term ``t`` are ``p_indptr[t]:p_indptr[t+1]``
    ``p_docs``    int32, internal doc numbers (rows), ascending within a term
    ``p_impacts`` uint8 (dequantised by ``scale``) or float32 (``scale`` is 1.0)

Top-k order everywhere: score descending, then internal doc number ascending.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# --------------------------------------------------------------------------- building


@njit(cache=True, nogil=True)
def build_postings(indptr, indices, values, vocab_size):
    """Doc-major CSR -> term-major postings (counting sort); sums duplicate terms, drops values <= 0."""
    return build_postings_ordered(indptr, indices, values, vocab_size,
                                  np.arange(indptr.size - 1).astype(np.int32))


@njit(cache=True, nogil=True)
def build_postings_ordered(indptr, indices, values, vocab_size, order):
    """Like build_postings, but internal doc number i is input row ``order[i]`` (a permutation)."""
    n_docs = order.size
    nnz = indices.size
    p_indptr = np.zeros(vocab_size + 1, np.int64)
    for j in range(nnz):
        p_indptr[indices[j] + 1] += 1
    for t in range(vocab_size):
        p_indptr[t + 1] += p_indptr[t]
    fill = p_indptr[:-1].copy()
    docs = np.empty(nnz, np.int32)
    vals = np.empty(nnz, np.float32)
    for d in range(n_docs):
        r = order[d]
        for j in range(indptr[r], indptr[r + 1]):
            t = indices[j]
            p = fill[t]
            docs[p] = d
            vals[p] = values[j]
            fill[t] = p + 1
    # Compact in place: merge runs of the same doc within a term (docs are ascending), drop sums <= 0.
    out_indptr = np.zeros(vocab_size + 1, np.int64)
    w = 0
    for t in range(vocab_size):
        j = p_indptr[t]
        end = p_indptr[t + 1]
        while j < end:
            d = docs[j]
            s = np.float64(vals[j])
            j += 1
            while j < end and docs[j] == d:
                s += np.float64(vals[j])
                j += 1
            if s > 0.0 and np.float32(s) > 0.0:
                docs[w] = d
                vals[w] = np.float32(s)
                w += 1
        out_indptr[t + 1] = w
    return out_indptr, docs[:w], vals[:w]


@njit(cache=True, nogil=True)
def quantize_uint8(values):
    """Linear uint8 impact quantisation: scale = max/255, impact = clip(rint(v/scale), 1, 255)."""
    n = values.size
    out = np.empty(n, np.uint8)
    vmax = 0.0
    for i in range(n):
        if values[i] > vmax:
            vmax = np.float64(values[i])
    scale = vmax / 255.0 if vmax > 0.0 else 1.0
    for i in range(n):
        q = np.rint(np.float64(values[i]) / scale)
        if q < 1.0:
            q = 1.0
        elif q > 255.0:
            q = 255.0
        out[i] = np.uint8(q)
    return out, scale


# --------------------------------------------------------------------------- query processing


@njit(cache=True, nogil=True)
def prepare_query(q_terms, q_weights, vocab_size, scale):
    """Sum duplicate term ids, drop ids >= vocab and zero weights, fold in scale; positive terms first."""
    n = q_terms.size
    order = np.argsort(q_terms, kind="mergesort")
    terms = np.empty(n, np.int32)
    weights = np.empty(n, np.float32)
    m = 0
    i = 0
    while i < n:
        t = q_terms[order[i]]
        s = np.float64(q_weights[order[i]])
        i += 1
        while i < n and q_terms[order[i]] == t:
            s += np.float64(q_weights[order[i]])
            i += 1
        if t < 0 or t >= vocab_size:
            continue
        w = np.float32(s * scale)
        if w != 0.0:
            terms[m] = t
            weights[m] = w
            m += 1
    # Stable partition: positive weights first (see taat_accumulate for why).
    out_t = np.empty(m, np.int32)
    out_w = np.empty(m, np.float32)
    o = 0
    for i in range(m):
        if weights[i] > 0.0:
            out_t[o] = terms[i]
            out_w[o] = weights[i]
            o += 1
    for i in range(m):
        if weights[i] < 0.0:
            out_t[o] = terms[i]
            out_w[o] = weights[i]
            o += 1
    return out_t, out_w


@njit(cache=True, nogil=True)
def taat_accumulate(p_indptr, p_docs, p_impacts, terms, weights, acc, touched):
    """Term-at-a-time exhaustive scoring (Turtle & Flood 1995) into acc; returns the touched-doc count."""
    n_touched = 0
    for i in range(terms.size):
        t = terms[i]
        w = weights[i]
        a = p_indptr[t]
        b = p_indptr[t + 1]
        if w > 0.0:
            # Contributions are all > 0 so far: acc[d] == 0 exactly means "not touched yet".
            for j in range(a, b):
                d = p_docs[j]
                if acc[d] == 0.0:
                    touched[n_touched] = d
                    n_touched += 1
                acc[d] += w * np.float32(p_impacts[j])
        else:
            # Negative terms come last and only lower scores: a doc at <= 0 can never be returned,
            # so only docs still above 0 are updated (every doc updated here is already touched).
            for j in range(a, b):
                d = p_docs[j]
                if acc[d] > 0.0:
                    acc[d] += w * np.float32(p_impacts[j])
    return n_touched


@njit(cache=True, nogil=True, inline="always")
def _worse(s_a, d_a, s_b, d_b):
    """True when (s_a, d_a) ranks below (s_b, d_b): lower score, or equal score and higher doc number."""
    return s_a < s_b or (s_a == s_b and d_a > d_b)


@njit(cache=True, nogil=True)
def _sift_down(hs, hd, i, size):
    """Restore the heap property below slot i of a min-heap whose root is the worst entry."""
    s = hs[i]
    d = hd[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _worse(hs[c + 1], hd[c + 1], hs[c], hd[c]):
            c += 1
        if not _worse(hs[c], hd[c], s, d):
            break
        hs[i] = hs[c]
        hd[i] = hd[c]
        i = c
    hs[i] = s
    hd[i] = d


@njit(cache=True, nogil=True)
def heap_push(hs, hd, size, k, s, d):
    """Offer (s, d) to a size-bounded top-k min-heap (root = worst entry); returns the new size."""
    if size < k:
        # Sift up.
        j = size
        while j > 0:
            p = (j - 1) >> 1
            if not _worse(s, d, hs[p], hd[p]):
                break
            hs[j] = hs[p]
            hd[j] = hd[p]
            j = p
        hs[j] = s
        hd[j] = d
        return size + 1
    if _worse(hs[0], hd[0], s, d):
        hs[0] = s
        hd[0] = d
        _sift_down(hs, hd, 0, size)
    return size


@njit(cache=True, nogil=True)
def heap_sort(hs, hd, size):
    """Sort a top-k min-heap in place, best first (moves the worst to the back repeatedly)."""
    end = size - 1
    while end > 0:
        s = hs[0]
        d = hd[0]
        hs[0] = hs[end]
        hd[0] = hd[end]
        hs[end] = s
        hd[end] = d
        _sift_down(hs, hd, 0, end)
        end -= 1


@njit(cache=True, nogil=True)
def topk_and_reset(acc, touched, n_touched, k, out_rows, out_scores):
    """Top-k of the touched docs with a fixed-size binary heap, best first; resets acc; returns the count."""
    size = 0
    if k <= 0:
        for i in range(n_touched):
            acc[touched[i]] = 0.0
        return 0
    for i in range(n_touched):
        d = touched[i]
        s = acc[d]
        acc[d] = 0.0
        if s > 0.0:
            size = heap_push(out_scores, out_rows, size, k, s, d)
    heap_sort(out_scores, out_rows, size)
    return size


@njit(cache=True, nogil=True)
def taat_accumulate_dense(p_indptr, p_docs, p_impacts, terms, weights, acc):
    """Term-at-a-time exhaustive scoring (Turtle & Flood 1995) into acc, without tracking touched docs."""
    for i in range(terms.size):
        t = terms[i]
        w = weights[i]
        a = p_indptr[t]
        b = p_indptr[t + 1]
        if w > 0.0:
            for j in range(a, b):
                acc[p_docs[j]] += w * np.float32(p_impacts[j])
        else:
            # As taat_accumulate: negative terms (last) only update docs still above 0.
            for j in range(a, b):
                d = p_docs[j]
                if acc[d] > 0.0:
                    acc[d] += w * np.float32(p_impacts[j])


@njit(cache=True, nogil=True)
def topk_dense_and_reset(acc, k, out_rows, out_scores):
    """Top-k of a whole score buffer (ascending docs: a tie never displaces), best first; zeroes acc."""
    size = 0
    n = acc.size
    d = 0
    while d < n and size < k:
        s = acc[d]
        if s > 0.0:
            size = heap_push(out_scores, out_rows, size, k, s, np.int32(d))
        d += 1
    if size == k:
        theta = out_scores[0]
        while d < n:
            s = acc[d]
            if s > theta:
                out_scores[0] = s
                out_rows[0] = d
                _sift_down(out_scores, out_rows, 0, size)
                theta = out_scores[0]
            d += 1
    heap_sort(out_scores, out_rows, size)
    acc[:] = 0.0
    return size


@njit(cache=True, nogil=True)
def exact_topk(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, acc, touched, out_rows,
               out_scores):
    """Exact TAAT top-k (Turtle & Flood 1995) of one prepared query; returns the count, acc left zeroed.

    When the query's postings number at least dense_ratio x the documents, the score buffer is filled
    without tracking touched documents and scanned whole (branch-free accumulation); otherwise only the
    touched documents are visited. Both give the same float32 sums in the same order, hence the same top-k.
    """
    postings = 0
    for t in terms:
        postings += p_indptr[t + 1] - p_indptr[t]
    if postings >= dense_ratio * acc.size:
        taat_accumulate_dense(p_indptr, p_docs, p_impacts, terms, weights, acc)
        return topk_dense_and_reset(acc, k, out_rows, out_scores)
    n_touched = taat_accumulate(p_indptr, p_docs, p_impacts, terms, weights, acc, touched)
    return topk_and_reset(acc, touched, n_touched, k, out_rows, out_scores)


@njit(cache=True, nogil=True)
def search_query(p_indptr, p_docs, p_impacts, scale, q_terms, q_weights, k, dense_ratio, acc, touched):
    """Exact TAAT top-k for one query into a zeroed score buffer (left zeroed): (rows, scores), best first."""
    terms, weights = prepare_query(q_terms, q_weights, p_indptr.size - 1, scale)
    kk = min(k, acc.size)
    rows = np.empty(kk, np.int32)
    scores = np.empty(kk, np.float32)
    m = exact_topk(p_indptr, p_docs, p_impacts, terms, weights, kk, dense_ratio, acc, touched, rows, scores)
    return rows[:m].copy(), scores[:m].copy()


@njit(cache=True, nogil=True)
def search_range(p_indptr, p_docs, p_impacts, scale, q_indptr, q_terms, q_weights, lo, hi, dense_ratio,
                 acc, touched, out_rows, out_scores, counts):
    """Exact TAAT top-k for queries lo..hi of a CSR batch, reusing one score buffer (reset per query)."""
    vocab = p_indptr.size - 1
    k = out_rows.shape[1]
    for q in range(lo, hi):
        a = q_indptr[q]
        b = q_indptr[q + 1]
        terms, weights = prepare_query(q_terms[a:b], q_weights[a:b], vocab, scale)
        counts[q] = exact_topk(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, acc, touched,
                               out_rows[q], out_scores[q])


@njit(cache=True, nogil=True)
def score_rows(f_indptr, f_terms, f_impacts, q_table, rows, out):
    """Exact scores of chosen documents from the doc-major forward index (dot products, as in TAAT)."""
    for i in range(rows.size):
        r = rows[i]
        s = np.float32(0.0)
        for j in range(f_indptr[r], f_indptr[r + 1]):
            w = q_table[f_terms[j]]
            if w != 0.0:
                s += w * np.float32(f_impacts[j])
        out[i] = s
