"""Numba kernels of masked and floored top-k search: only the rows a mask keeps, only scores >= a floor.

A row mask is a uint8 array over internal rows (0: the row is never returned: a deleted document, or one a
filter excludes); :func:`mask_counts` summarises it per block and per superblock of the block-max index,
so that block-max pruning (Mallia, Suel & Tonellotto, SIGIR 2024) never visits a block without an eligible
row. A query then takes one of three exact routes (:func:`_dispatch`), all returning the same rows and the
same float32 scores as :func:`lsr.index._kernels.exact_topk` over the eligible rows:

* few eligible rows (their forward-index entries cost less than ``plan_ratio`` x the query's postings):
  score exactly those rows through the forward index (:func:`score_eligible`);
* ``exact`` (or where BMP would hand the query to TAAT): exact TAAT (Turtle & Flood 1995) whose top-k
  extraction skips masked rows (:func:`exact_topk_masked`);
* otherwise block-max pruning with the mask and the floor (:func:`lsr.index._bmp.bmp_query`).

Scores agree bit for bit across routes: every route sums, in float32 and in ascending term order, the
products of the positive query terms, then the negative ones while the sum is > 0 (see :mod:`_bmp`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from lsr.index._bmp import bmp_query, score_list
from lsr.index._kernels import (
    _sift_down,
    exact_topk,
    heap_push,
    heap_sort,
    prepare_query,
    taat_accumulate,
    taat_accumulate_dense,
)

_ONES = np.uint64(0x0101010101010101)


@njit(cache=True, nogil=True, inline="always")
def _nonzero_bytes(w):
    """Number of nonzero bytes of a 64-bit word (SWAR: fold each byte's bits into its lowest, then add)."""
    x = w | (w >> np.uint64(4))
    x |= x >> np.uint64(2)
    x |= x >> np.uint64(1)
    x &= _ONES
    x += x >> np.uint64(32)
    x += x >> np.uint64(16)
    x += x >> np.uint64(8)
    return x & np.uint64(0xFF)


@njit(cache=True, nogil=True)
def mask_counts(mask, words, block_size, sb_size, bcount, sbcount):
    """Eligible rows per block and per superblock of a row mask (block filter of BMP, Mallia et al. SIGIR
    2024); returns the total. ``words``: the mask's first 8 x (size // 8) bytes as uint64 (read 8 at a time
    when blocks are whole words)."""
    n = mask.size
    b = 0
    if block_size == 8:
        b = words.size
        for i in range(b):
            bcount[i] = _nonzero_bytes(words[i])
    elif block_size % 8 == 0:
        wpb = block_size // 8
        b = words.size // wpb
        for i in range(b):
            c = np.uint64(0)
            for j in range(i * wpb, (i + 1) * wpb):
                c += _nonzero_bytes(words[j])
            bcount[i] = c
    for i in range(b, bcount.size):
        c = 0
        for d in range(i * block_size, min((i + 1) * block_size, n)):
            c += mask[d] != 0
        bcount[i] = c
    total = 0
    for sb in range(sbcount.size):
        c = 0
        for b in range(sb * sb_size, min((sb + 1) * sb_size, bcount.size)):
            c += bcount[b]
        sbcount[sb] = c
        total += c
    return total


@njit(cache=True, nogil=True)
def score_eligible(f_indptr, f_terms, f_impacts, qtable, has_neg, k, mask, bcount, sbcount, block_size,
                   sb_size, out_rows, out_scores):
    """Exact top-k of the eligible rows only, scored through the forward index (BMP's block evaluation,
    Mallia et al. SIGIR 2024, without bounds: for selective masks); returns the count."""
    n_docs = mask.size
    n_blocks = bcount.size
    buf = np.empty(256, np.int32)
    n = 0
    size = 0
    for sb in range(sbcount.size):
        if sbcount[sb] == 0:
            continue
        for b in range(sb * sb_size, min((sb + 1) * sb_size, n_blocks)):
            if bcount[b] == 0:
                continue
            if n + block_size > buf.size:
                size = score_list(f_indptr, f_terms, f_impacts, qtable, buf, n, has_neg, k, size, out_scores,
                                  out_rows)
                n = 0
            for d in range(b * block_size, min((b + 1) * block_size, n_docs)):
                if mask[d]:
                    buf[n] = d
                    n += 1
    size = score_list(f_indptr, f_terms, f_impacts, qtable, buf, n, has_neg, k, size, out_scores, out_rows)
    heap_sort(out_scores, out_rows, size)
    return size


@njit(cache=True, nogil=True)
def _topk_touched_masked(acc, touched, n_touched, mask, k, out_rows, out_scores):
    """Top-k of the touched eligible docs (exact TAAT, Turtle & Flood 1995), best first; resets acc."""
    size = 0
    for i in range(n_touched):
        d = touched[i]
        s = acc[d]
        acc[d] = 0.0
        if s > 0.0 and mask[d]:
            size = heap_push(out_scores, out_rows, size, k, s, d)
    heap_sort(out_scores, out_rows, size)
    return size


@njit(cache=True, nogil=True)
def _topk_dense_masked(acc, mask, k, out_rows, out_scores):
    """Top-k of the eligible docs of a whole score buffer (exact TAAT, Turtle & Flood 1995); zeroes acc."""
    size = 0
    n = acc.size
    d = 0
    while d < n and size < k:
        s = acc[d]
        if s > 0.0 and mask[d]:
            size = heap_push(out_scores, out_rows, size, k, s, np.int32(d))
        d += 1
    if size == k:
        theta = out_scores[0]
        while d < n:
            s = acc[d]
            if s > theta and mask[d]:
                out_scores[0] = s
                out_rows[0] = d
                _sift_down(out_scores, out_rows, 0, size)
                theta = out_scores[0]
            d += 1
    heap_sort(out_scores, out_rows, size)
    acc[:] = 0.0
    return size


@njit(cache=True, nogil=True)
def exact_topk_masked(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, mask, acc, touched,
                      out_rows, out_scores):
    """Exact TAAT top-k (Turtle & Flood 1995) over the rows a mask keeps; returns the count, acc zeroed."""
    postings = 0
    for t in terms:
        postings += p_indptr[t + 1] - p_indptr[t]
    if postings >= dense_ratio * acc.size:
        taat_accumulate_dense(p_indptr, p_docs, p_impacts, terms, weights, acc)
        return _topk_dense_masked(acc, mask, k, out_rows, out_scores)
    n_touched = taat_accumulate(p_indptr, p_docs, p_impacts, terms, weights, acc, touched)
    return _topk_touched_masked(acc, touched, n_touched, mask, k, out_rows, out_scores)


@njit(cache=True, nogil=True)
def _dispatch(ix, px, terms, weights, k, exact, alpha, beta, floor, mask, bcount, sbcount, n_elig, plan_ratio,
              taat_density, taat_max, dense_ratio, qtable, fine, sb_ub, pq_u, pq_i, acc, touched, out_rows,
              out_scores):
    """Top-k of one prepared query over the eligible rows (BMP, Mallia et al. SIGIR 2024; or exact)."""
    has_mask = mask.size > 0
    n_docs = ix[13]
    if k <= 0 or (has_mask and n_elig == 0) or terms.size == 0 or weights[0] <= 0.0:
        return 0  # no eligible row, or no positive term (positive terms come first): nothing scores > 0
    p_indptr, p_docs, p_impacts = px
    postings = 0
    for t in terms:
        postings += p_indptr[t + 1] - p_indptr[t]
    if has_mask:
        f_indptr = ix[0]
        if n_elig * (f_indptr[n_docs] / n_docs) <= plan_ratio * postings:
            for i in range(terms.size):
                qtable[terms[i]] = weights[i]
            m = score_eligible(f_indptr, ix[1], ix[2], qtable, weights[-1] < 0.0, k, mask, bcount, sbcount,
                               ix[11], ix[12], out_rows, out_scores)
            for i in range(terms.size):
                qtable[terms[i]] = 0.0
            return m
    if exact or (postings <= taat_max and postings >= taat_density * n_docs):
        if has_mask:
            return exact_topk_masked(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, mask, acc,
                                     touched, out_rows, out_scores)
        return exact_topk(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, acc, touched, out_rows,
                          out_scores)
    n_masked = n_docs - n_elig if has_mask else 0
    return bmp_query(ix, terms, weights, k, alpha, beta, floor, mask, bcount, sbcount, n_masked, qtable, fine,
                     sb_ub, pq_u, pq_i, out_rows, out_scores)


@njit(cache=True, nogil=True)
def masked_search_query(ix, px, scale, q_terms, q_weights, k, exact, alpha, beta, floor, mask, bcount,
                        sbcount, n_elig, plan_ratio, taat_density, taat_max, dense_ratio, qtable, fine, sb_ub,
                        pq_u, pq_i, acc, touched):
    """Masked, floored top-k for one raw query (BMP, Mallia et al. SIGIR 2024): (rows, scores), best first."""
    terms, weights = prepare_query(q_terms, q_weights, qtable.size, scale)
    kk = min(k, ix[13])
    rows = np.empty(kk, np.int32)
    scores = np.empty(kk, np.float32)
    m = _dispatch(ix, px, terms, weights, kk, exact, alpha, beta, floor, mask, bcount, sbcount, n_elig,
                  plan_ratio, taat_density, taat_max, dense_ratio, qtable, fine, sb_ub, pq_u, pq_i, acc,
                  touched, rows, scores)
    return rows[:m].copy(), scores[:m].copy()


@njit(cache=True, nogil=True)
def masked_search_range(ix, px, scale, q_indptr, q_terms, q_weights, lo, hi, exact, alpha, beta, floors,
                        mask, bcount, sbcount, n_elig, plan_ratio, taat_density, taat_max, dense_ratio,
                        qtable, fine, sb_ub, pq_u, pq_i, acc, touched, out_rows, out_scores, counts):
    """Masked, floored top-k (BMP, Mallia et al. SIGIR 2024) for queries lo..hi of a CSR batch."""
    k = out_rows.shape[1]
    for q in range(lo, hi):
        a = q_indptr[q]
        b = q_indptr[q + 1]
        terms, weights = prepare_query(q_terms[a:b], q_weights[a:b], qtable.size, scale)
        counts[q] = _dispatch(ix, px, terms, weights, k, exact, alpha, beta, floors[q], mask, bcount, sbcount,
                              n_elig, plan_ratio, taat_density, taat_max, dense_ratio, qtable, fine, sb_ub,
                              pq_u, pq_i, acc, touched, out_rows[q], out_scores[q])
