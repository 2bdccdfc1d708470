"""Numba kernels that build the block-max pruning structures (Mallia, Suel & Tonellotto, SIGIR 2024).

Everything is derived from the term-major postings of :mod:`lsr.index._kernels` (internal doc numbers,
ascending within a term, duplicates already summed, impacts already quantised), so the forward index and
the block maxima hold exactly the impacts that exact search scores with.

* document reordering (:func:`doc_sketches`, :func:`kmeans_order`): spherical k-means over a sketch of
  each document (its heaviest terms by weight x idf), clusters laid out one after the other, documents
  inside a cluster sorted by their heaviest term, so that similar documents share blocks;
* forward index (:func:`build_forward`): doc-major, terms ascending within a document;
* block maxima (:func:`count_term_blocks`, :func:`fill_block_max`): per term, the maximum impact in each
  block of ``block_size`` consecutive documents where the term occurs, as sparse (block, max) lists, or as a
  dense row over all blocks for terms present in most blocks;
* per-term seeds for the first threshold (:func:`term_kth`): the k-th largest impact at a few depths.
"""

from __future__ import annotations

import numpy as np
from numba import njit

# --------------------------------------------------------------------------- reordering


@njit(cache=True, nogil=True)
def doc_sketches(indptr, indices, values, vocab_size, m):
    """Each row's m heaviest terms by value x idf, L2-normalised (BMP paper: reordering); -1 pads."""
    n = indptr.size - 1
    df = np.zeros(vocab_size, np.int64)
    for j in range(indices.size):
        df[indices[j]] += 1
    idf = np.empty(vocab_size, np.float32)
    for t in range(vocab_size):
        idf[t] = np.float32(np.log((n + 1.0) / (df[t] + 1.0)))
    sk_t = np.full((n, m), -1, np.int32)
    sk_w = np.zeros((n, m), np.float32)
    for d in range(n):
        size = 0
        for j in range(indptr[d], indptr[d + 1]):
            v = values[j] * idf[indices[j]]
            if not v > 0.0:
                continue
            if size < m:
                i = size
                size += 1
            elif v > sk_w[d, m - 1]:
                i = m - 1
            else:
                continue
            while i > 0 and sk_w[d, i - 1] < v:  # insertion sort, heaviest first
                sk_w[d, i] = sk_w[d, i - 1]
                sk_t[d, i] = sk_t[d, i - 1]
                i -= 1
            sk_w[d, i] = v
            sk_t[d, i] = indices[j]
        norm = 0.0
        for i in range(size):
            norm += np.float64(sk_w[d, i]) ** 2
        if norm > 0.0:
            inv = 1.0 / np.sqrt(norm)
            for i in range(size):
                sk_w[d, i] = np.float32(sk_w[d, i] * inv)
    return sk_t, sk_w


@njit(cache=True, nogil=True)
def _centroid_lists(cent_t, cent_w, vocab_size):
    """Centroids (K x C, -1 pads) -> inverted lists term -> (centroid, weight)."""
    k, c = cent_t.shape
    indptr = np.zeros(vocab_size + 1, np.int64)
    for i in range(k):
        for j in range(c):
            if cent_t[i, j] >= 0:
                indptr[cent_t[i, j] + 1] += 1
    for t in range(vocab_size):
        indptr[t + 1] += indptr[t]
    fill = indptr[:-1].copy()
    cl = np.empty(indptr[-1], np.int32)
    cw = np.empty(indptr[-1], np.float32)
    for i in range(k):
        for j in range(c):
            t = cent_t[i, j]
            if t >= 0:
                cl[fill[t]] = i
                cw[fill[t]] = cent_w[i, j]
                fill[t] += 1
    return indptr, cl, cw


@njit(cache=True, nogil=True)
def kmeans_labels(sk_t, sk_w, vocab_size, n_clusters, iters, c_terms, seed):
    """Spherical k-means on sketches (sparse top-c_terms centroids): a cluster per row, -1 if none."""
    n, m = sk_t.shape
    k = max(1, min(n_clusters, n))
    np.random.seed(seed)
    init = np.random.permutation(n)[:k]
    cent_t = np.full((k, c_terms), -1, np.int32)
    cent_w = np.zeros((k, c_terms), np.float32)
    for i in range(k):
        for j in range(min(m, c_terms)):
            cent_t[i, j] = sk_t[init[i], j]
            cent_w[i, j] = sk_w[init[i], j]
    labels = np.full(n, -1, np.int32)
    scores = np.zeros(k, np.float32)
    touched = np.empty(k, np.int32)
    acc = np.zeros(vocab_size, np.float32)
    acc_touched = np.empty(vocab_size, np.int32)
    for it in range(iters):
        # Assign every document to its most similar centroid (ties: lower centroid).
        ip, cl, cw = _centroid_lists(cent_t, cent_w, vocab_size)
        for d in range(n):
            nt = 0
            for i in range(m):
                t = sk_t[d, i]
                if t < 0:
                    break
                w = sk_w[d, i]
                for j in range(ip[t], ip[t + 1]):
                    c = cl[j]
                    if scores[c] == 0.0:
                        touched[nt] = c
                        nt += 1
                    scores[c] += w * cw[j]
            best = -1
            best_s = np.float32(0.0)
            for i in range(nt):
                c = touched[i]
                s = scores[c]
                scores[c] = 0.0
                if s > best_s or (s == best_s and best >= 0 and c < best):
                    best_s = s
                    best = c
            if best >= 0:
                labels[d] = best
        if it == iters - 1:
            break
        # Recompute centroids: sum of member sketches, keep the heaviest c_terms terms, normalise.
        order = np.argsort(labels, kind="mergesort")
        a = 0
        while a < n:
            lab = labels[order[a]]
            b = a
            while b < n and labels[order[b]] == lab:
                b += 1
            if lab >= 0:
                na = 0
                for p in range(a, b):
                    d = order[p]
                    for i in range(m):
                        t = sk_t[d, i]
                        if t < 0:
                            break
                        if acc[t] == 0.0:
                            acc_touched[na] = t
                            na += 1
                        acc[t] += sk_w[d, i]
                vals = np.empty(na, np.float32)
                for i in range(na):
                    vals[i] = -acc[acc_touched[i]]
                top = np.argsort(vals, kind="mergesort")[:c_terms]
                norm = 0.0
                for i in range(top.size):
                    norm += np.float64(vals[top[i]]) ** 2
                inv = 1.0 / np.sqrt(norm) if norm > 0.0 else 0.0
                for i in range(c_terms):
                    if i < top.size:
                        cent_t[lab, i] = acc_touched[top[i]]
                        cent_w[lab, i] = np.float32(-vals[top[i]] * inv)
                    else:
                        cent_t[lab, i] = -1
                        cent_w[lab, i] = 0.0
                for i in range(na):
                    acc[acc_touched[i]] = 0.0
            a = b
    return labels


# --------------------------------------------------------------------------- forward index and block maxima


@njit(cache=True, nogil=True)
def build_forward(p_indptr, p_docs, p_impacts, n_docs, f_terms, f_impacts):
    """Term-major postings -> doc-major forward index (terms ascending) into f_terms/f_impacts; its indptr."""
    f_indptr = np.zeros(n_docs + 1, np.int64)
    for j in range(p_docs.size):
        f_indptr[p_docs[j] + 1] += 1
    for d in range(n_docs):
        f_indptr[d + 1] += f_indptr[d]
    fill = f_indptr[:-1].copy()
    for t in range(p_indptr.size - 1):
        for j in range(p_indptr[t], p_indptr[t + 1]):
            d = p_docs[j]
            p = fill[d]
            f_terms[p] = t
            f_impacts[p] = p_impacts[j]
            fill[d] = p + 1
    return f_indptr


@njit(cache=True, nogil=True)
def count_term_blocks(p_indptr, p_docs, block_size):
    """Number of distinct blocks in which each term occurs."""
    vocab = p_indptr.size - 1
    counts = np.zeros(vocab, np.int64)
    for t in range(vocab):
        last = -1
        c = 0
        for j in range(p_indptr[t], p_indptr[t + 1]):
            b = p_docs[j] // block_size
            if b != last:
                c += 1
                last = b
        counts[t] = c
    return counts


@njit(cache=True, nogil=True)
def fill_block_max(p_indptr, p_docs, p_impacts, block_size, dense_row, bm_indptr, bm_blocks, bm_max,
                   bm_dense):
    """Per-term block maxima: into row dense_row[t] of bm_dense (n_dense x n_blocks, padded), or the sparse
    (block, max) list bm_indptr[t]:bm_indptr[t + 1], blocks ascending."""
    for t in range(p_indptr.size - 1):
        r = dense_row[t]
        if r >= 0:
            for j in range(p_indptr[t], p_indptr[t + 1]):
                b = p_docs[j] // block_size
                if p_impacts[j] > bm_dense[r, b]:
                    bm_dense[r, b] = p_impacts[j]
        else:
            w = bm_indptr[t]
            last = -1
            for j in range(p_indptr[t], p_indptr[t + 1]):
                b = p_docs[j] // block_size
                if b != last:
                    bm_blocks[w] = b
                    bm_max[w] = p_impacts[j]
                    w += 1
                    last = b
                elif p_impacts[j] > bm_max[w - 1]:
                    bm_max[w - 1] = p_impacts[j]


@njit(cache=True, nogil=True)
def term_kth(p_indptr, p_impacts, levels):
    """Per term, the levels[i]-th largest impact (0 where df is smaller): threshold seeds (BMP paper)."""
    vocab = p_indptr.size - 1
    depth = levels.max()
    kth = np.zeros((vocab, levels.size), p_impacts.dtype)
    for t in range(vocab):
        a = p_indptr[t]
        b = p_indptr[t + 1]
        df = b - a
        if df < levels[0]:
            continue
        vals = p_impacts[a:b].copy()
        top = min(df, depth)
        if top < df:
            vals = np.partition(vals, df - top)[df - top:]
        vals = np.sort(vals)  # ascending: the i-th largest is vals[top - i]
        for i in range(levels.size):
            if levels[i] <= df:
                kth[t, i] = vals[top - levels[i]]
    return kth
