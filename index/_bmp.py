"""Block-max pruning query kernels (Mallia, Suel & Tonellotto, "Faster Learned Sparse Retrieval with
Block-Max Pruning", SIGIR 2024), safe (alpha = 1, beta = 1: the exact top-k, bit for bit) or approximate.

The index parts travel as one tuple ``ix`` (built in :class:`lsr.index.sparse.SparseIndex`):

    0-2   f_indptr, f_terms, f_impacts  forward index: doc-major, term ids ascending within a document
    3-5   bm_indptr, bm_blocks, bm_max  sparse block maxima: term t's (block, max impact) pairs
    6-8   dense_row, bm_dense, sb_dense dense maxima of the terms present in many blocks (their sparse
                                        list is empty): r = dense_row[t] >= 0, block b's maximum at
                                        bm_dense[b // sb_size, r, b % sb_size], superblock s's at
                                        sb_dense[r, s]
    9-10  kth, levels                   kth[t, i]: the levels[i]-th largest impact of t (threshold seeds)
    11-13 block_size, sb_size, n_docs   documents per block, blocks per superblock, documents

Query processing (:func:`bmp_query`): block bounds of the sparse terms by scatter-add; superblock bounds =
the largest of those inside plus the dense terms' superblock maxima; then best-first over a max-queue that
starts with the superblocks: a superblock at the head is expanded into its blocks' exact bounds, a block at
the head is scored through the forward index with a dense query table, and the loop stops as soon as the
head's bound cannot beat the k-th best score (a top-k heap). The next block's data is prefetched while the
current one is scored. Approximation: the stop test uses bound x alpha; beta keeps only the heaviest share
of the query terms in the bounds (scores always use every term, so returned scores are exact).

Exactness: a document's score is the float32 sum, in ascending term order, of float32 products
``w_t * impact`` with the weights of :func:`lsr.index._kernels.prepare_query` (positive terms, then the
negative ones only while the sum is > 0): the same operations, in the same order, as the exact TAAT kernel
(non-query terms contribute +0.0, which leaves a sum >= +0 unchanged). Bounds sum the same products, with
block maxima, in float32 in any order; the relative rounding error of such sums of m >= 0 terms is below
(m - 1) 2^-24 (1 + o(1)), so a margin factor 1 + (3 m + 6) 2^-24 makes every bound a true upper bound of
every score in its block (negative terms only lower scores and are left out of the bounds). A block or
superblock is skipped only when bound x margin < k-th score (strictly: equal scores still compete, the
lower internal number winning). The first threshold is seeded with max_t w_t x (L-th impact of t) for the
smallest stored depth L >= k (a valid lower bound of the k-th score when no weight is negative).

Masks and floors (:mod:`lsr.index._mask` prepares them): a row mask restricts the search to eligible rows
(blocks and superblocks without one are never queued, masked rows never scored, and the seed above comes
from a depth L >= k + the masked rows, so that k of those L documents are eligible); a floor f raises the
first threshold to f, which only drops blocks whose every document scores < f, so every document scoring
>= f is still found exactly.
"""

from __future__ import annotations

import llvmlite.ir as ir
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from lsr.index._kernels import exact_topk, heap_push, heap_sort, prepare_query

_U = 2.0**-24  # float32 unit roundoff
_LINE = 64  # bytes per cache line
_NO_MASK = np.empty(0, np.uint8)  # bmp_query's "every row is eligible"
_NO_COUNT = np.empty(0, np.int32)


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to start loading arr[idx] into the caches (llvm.prefetch; no effect on results)."""
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]])
        ptr = builder.bitcast(ptr, ir.IntType(8).as_pointer())
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _prefetch_range(arr, a, b):
    """Prefetch every cache line of arr[a:b]."""
    step = max(1, _LINE // arr.itemsize)
    for j in range(a, b, step):
        _prefetch(arr, j)
    if b > a:
        _prefetch(arr, b - 1)


@njit(cache=True, nogil=True, inline="always")
def _score_doc(f_indptr, f_terms, f_impacts, qtable, d, has_neg):
    """Exact score of doc d with a dense query table, ascending term order (BMP's forward-index scoring)."""
    ts = f_terms[f_indptr[d]:f_indptr[d + 1]]
    im = f_impacts[f_indptr[d]:f_indptr[d + 1]]
    s = np.float32(0.0)
    if not has_neg:
        # Non-query terms add +0.0 products, which leave a sum >= +0 unchanged: no branch needed.
        for i in range(ts.size):
            s += qtable[ts[i]] * np.float32(im[i])
    else:
        # As the exact kernel: positive terms first, then the negative ones while the sum is > 0.
        for i in range(ts.size):
            w = qtable[ts[i]]
            if w > 0.0:
                s += w * np.float32(im[i])
        for i in range(ts.size):
            w = qtable[ts[i]]
            if w < 0.0 and s > 0.0:
                s += w * np.float32(im[i])
    return s


@njit(cache=True, nogil=True)
def _score_block(f_indptr, f_terms, f_impacts, qtable, lo, hi, has_neg, k, size, hs, hd):
    """Score docs lo..hi exactly into the top-k heap (BMP: block evaluation); returns the heap size.

    Two documents at a time: each sum still runs in its own (ascending term) order, but the two chains
    of dependent float additions overlap. Non-query terms add +0.0, which leaves a sum >= +0 unchanged.
    """
    d = lo
    if not has_neg:
        while d + 1 < hi:
            t0 = f_terms[f_indptr[d]:f_indptr[d + 1]]
            i0 = f_impacts[f_indptr[d]:f_indptr[d + 1]]
            t1 = f_terms[f_indptr[d + 1]:f_indptr[d + 2]]
            i1 = f_impacts[f_indptr[d + 1]:f_indptr[d + 2]]
            m = min(t0.size, t1.size)
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for i in range(m):
                s0 += qtable[t0[i]] * np.float32(i0[i])
                s1 += qtable[t1[i]] * np.float32(i1[i])
            for i in range(m, t0.size):
                s0 += qtable[t0[i]] * np.float32(i0[i])
            for i in range(m, t1.size):
                s1 += qtable[t1[i]] * np.float32(i1[i])
            if s0 > 0.0:
                size = heap_push(hs, hd, size, k, s0, np.int32(d))
            if s1 > 0.0:
                size = heap_push(hs, hd, size, k, s1, np.int32(d + 1))
            d += 2
    while d < hi:
        s = _score_doc(f_indptr, f_terms, f_impacts, qtable, d, has_neg)
        if s > 0.0:
            size = heap_push(hs, hd, size, k, s, np.int32(d))
        d += 1
    return size


@njit(cache=True, nogil=True)
def score_list(f_indptr, f_terms, f_impacts, qtable, docs, n, has_neg, k, size, hs, hd):
    """Score docs[:n] exactly into the top-k heap (BMP block evaluation, Mallia et al. SIGIR 2024, on a list
    of rows); returns the heap size. Two documents at a time, as :func:`_score_block`."""
    i = 0
    if not has_neg:
        while i + 1 < n:
            d0 = docs[i]
            d1 = docs[i + 1]
            t0 = f_terms[f_indptr[d0]:f_indptr[d0 + 1]]
            i0 = f_impacts[f_indptr[d0]:f_indptr[d0 + 1]]
            t1 = f_terms[f_indptr[d1]:f_indptr[d1 + 1]]
            i1 = f_impacts[f_indptr[d1]:f_indptr[d1 + 1]]
            m = min(t0.size, t1.size)
            s0 = np.float32(0.0)
            s1 = np.float32(0.0)
            for j in range(m):
                s0 += qtable[t0[j]] * np.float32(i0[j])
                s1 += qtable[t1[j]] * np.float32(i1[j])
            for j in range(m, t0.size):
                s0 += qtable[t0[j]] * np.float32(i0[j])
            for j in range(m, t1.size):
                s1 += qtable[t1[j]] * np.float32(i1[j])
            if s0 > 0.0:
                size = heap_push(hs, hd, size, k, s0, np.int32(d0))
            if s1 > 0.0:
                size = heap_push(hs, hd, size, k, s1, np.int32(d1))
            i += 2
    while i < n:
        d = docs[i]
        s = _score_doc(f_indptr, f_terms, f_impacts, qtable, d, has_neg)
        if s > 0.0:
            size = heap_push(hs, hd, size, k, s, np.int32(d))
        i += 1
    return size


@njit(cache=True, nogil=True)
def _score_block_masked(f_indptr, f_terms, f_impacts, qtable, lo, hi, has_neg, k, size, hs, hd, mask, buf):
    """Score the docs of lo..hi that the row mask keeps into the top-k heap (BMP block evaluation, Mallia et
    al. SIGIR 2024, restricted to eligible rows); returns the heap size."""
    n = 0
    for d in range(lo, hi):
        if mask[d]:
            buf[n] = d
            n += 1
    return score_list(f_indptr, f_terms, f_impacts, qtable, buf, n, has_neg, k, size, hs, hd)


@njit(cache=True, nogil=True, inline="always")
def _before(u_a, i_a, u_b, i_b):
    """Visiting order: higher upper bound first, then lower id."""
    return u_a > u_b or (u_a == u_b and i_a < i_b)


@njit(cache=True, nogil=True)
def _pq_down(hu, hi, i, size):
    """Max-heap (see _before) sift-down from slot i."""
    u = hu[i]
    x = hi[i]
    while True:
        c = 2 * i + 1
        if c >= size:
            break
        if c + 1 < size and _before(hu[c + 1], hi[c + 1], hu[c], hi[c]):
            c += 1
        if not _before(hu[c], hi[c], u, x):
            break
        hu[i] = hu[c]
        hi[i] = hi[c]
        i = c
    hu[i] = u
    hi[i] = x


@njit(cache=True, nogil=True)
def _pq_push(hu, hi, size, u, x):
    """Max-heap (see _before) push; returns the new size."""
    j = size
    while j > 0:
        p = (j - 1) >> 1
        if not _before(u, x, hu[p], hi[p]):
            break
        hu[j] = hu[p]
        hi[j] = hi[p]
        j = p
    hu[j] = u
    hi[j] = x
    return size + 1


@njit(cache=True, nogil=True)
def bmp_query(ix, terms, weights, k, alpha, beta, floor, mask, bcount, sbcount, n_masked, qtable, fine, sb_ub,
              pq_u, pq_i, out_rows, out_scores):
    """Block-max pruning top-k for one prepared query (Mallia et al., SIGIR 2024); returns the count.

    Two levels of bounds: a superblock (sb_size consecutive blocks) is expanded into its blocks' bounds
    only when it reaches the head of the visiting queue, so the dense rows of frequent terms are read at
    the coarse level for most of the collection. ``mask`` (uint8 per row; empty: every row) restricts the
    search to the rows it keeps, with ``bcount`` / ``sbcount`` its eligible rows per block / superblock
    (blocks and superblocks without one are never visited) and ``n_masked`` the rows it drops; ``floor``:
    only documents scoring >= floor need to be found (the threshold starts there).
    """
    f_indptr, f_terms, f_impacts = ix[0], ix[1], ix[2]
    bm_indptr, bm_blocks, bm_max, dense_row, bm_dense, sb_dense = ix[3], ix[4], ix[5], ix[6], ix[7], ix[8]
    kth, levels, block_size, sb_size, n_docs = ix[9], ix[10], ix[11], ix[12], ix[13]
    n_blocks = (n_docs + block_size - 1) // block_size
    n_sb = sb_ub.size
    n = terms.size
    n_pos = 0
    while n_pos < n and weights[n_pos] > 0.0:
        n_pos += 1
    if n_pos == 0:
        return 0
    has_neg = n_pos < n
    has_mask = mask.size > 0
    for i in range(n):
        qtable[terms[i]] = weights[i]
    # Query term pruning: the bounds use only the heaviest ceil(beta * n_pos) positive terms.
    n_ub = n_pos
    if beta < 1.0:
        n_ub = max(1, min(n_pos, int(np.ceil(beta * n_pos - 1e-9))))
    ub_terms = np.argsort(-weights[:n_pos], kind="mergesort")[:n_ub]
    d_rows = np.empty(n_ub, np.int64)
    d_w = np.empty(n_ub, np.float32)
    n_d = 0
    # Sparse terms: exact block bounds by scatter-add.
    for i in range(n_ub):
        t = terms[ub_terms[i]]
        w = weights[ub_terms[i]]
        r = dense_row[t]
        if r >= 0:
            d_rows[n_d] = r
            d_w[n_d] = w
            n_d += 1
            continue
        for j in range(bm_indptr[t], bm_indptr[t + 1]):
            fine[bm_blocks[j]] += w * np.float32(bm_max[j])
    # Sparse masks leave many blocks empty (43% of blocks of 8 at 10% eligible): a bound of 0 for those
    # tightens their superblocks' bounds (not worth its pass over the blocks for dense masks).
    if has_mask and 4 * n_masked > 3 * n_docs:
        for b in range(n_blocks):
            if bcount[b] == 0:
                fine[b] = 0.0
    # Superblock bounds: the largest sparse block bound inside, plus the dense terms' superblock maxima.
    # (Bounds are >= +0, so their float32 bit patterns order like int32: an integer max vectorises.)
    fine_bits = fine.view(np.int32)
    sb_bits = sb_ub.view(np.int32)
    for sb in range(n_sb):
        row = fine_bits[sb * sb_size:(sb + 1) * sb_size]
        m = np.int32(0)
        for j in range(sb_size):
            m = max(m, row[j])
        sb_bits[sb] = m
    for i in range(n_d):
        row = sb_dense[d_rows[i]]
        w = d_w[i]
        for sb in range(n_sb):
            sb_ub[sb] += w * np.float32(row[sb])
    # Float rounding margin (see the module docstring); alpha < 1 shrinks the bounds (approximate).
    factor = (1.0 + (3.0 * n_pos + 6.0) * _U) * alpha
    # Threshold seed: each of a term's top-L documents scores at least w * (L-th impact) (no negatives); at
    # most n_masked of them are masked out, so L >= k + n_masked leaves k eligible ones. The caller's floor
    # when higher.
    theta0 = 0.0
    if not has_neg:
        li = 0
        while li < levels.size and levels[li] < k + n_masked:
            li += 1
        if li < levels.size:
            for i in range(n_pos):
                v = np.float64(weights[i] * np.float32(kth[terms[i], li]))
                if v > theta0:
                    theta0 = v
    theta0 = max(theta0, floor)
    c = 0
    for sb in range(n_sb):
        u = sb_ub[sb]
        if u > 0.0 and np.float64(u) * factor >= theta0 and (not has_mask or sbcount[sb] > 0):
            pq_u[c] = u
            pq_i[c] = -1 - sb
            c += 1
    for i in range(c // 2 - 1, -1, -1):
        _pq_down(pq_u, pq_i, i, c)
    # Best first over superblocks and blocks; stop when the head's bound cannot beat the k-th score.
    exp = np.empty(sb_size, np.float32)
    buf = np.empty(block_size if has_mask else 0, np.int32)
    size = 0
    while c > 0:
        u = pq_u[0]
        x = pq_i[0]
        theta = max(np.float64(out_scores[0]), theta0) if size == k else theta0
        if np.float64(u) * factor < theta:
            break
        c -= 1
        pq_u[0] = pq_u[c]
        pq_i[0] = pq_i[c]
        _pq_down(pq_u, pq_i, 0, c)
        # Start loading what the next visit needs while this one is processed (memory latency dominates).
        if c > 0:
            y = pq_i[0]
            if y >= 0:
                lo = y * block_size
                _prefetch_range(f_terms, f_indptr[lo], f_indptr[min(lo + block_size, n_docs)])
                _prefetch_range(f_impacts, f_indptr[lo], f_indptr[min(lo + block_size, n_docs)])
            else:
                for i in range(n_d):
                    _prefetch(bm_dense[-1 - y, d_rows[i]], 0)
        if x < 0:
            sb = -1 - x
            exp[:] = fine[sb * sb_size:(sb + 1) * sb_size]
            dense_sb = bm_dense[sb]
            for i in range(n_d):
                row = dense_sb[d_rows[i]]
                w = d_w[i]
                for j in range(sb_size):
                    exp[j] += w * np.float32(row[j])
            for j in range(min(sb_size, n_blocks - sb * sb_size)):
                v = exp[j]
                b = sb * sb_size + j
                if v > 0.0 and np.float64(v) * factor >= theta and (not has_mask or bcount[b] > 0):
                    c = _pq_push(pq_u, pq_i, c, v, np.int32(b))
                    _prefetch(f_indptr, b * block_size)
        else:
            lo = x * block_size
            hi = min(lo + block_size, n_docs)
            if has_mask:
                size = _score_block_masked(f_indptr, f_terms, f_impacts, qtable, lo, hi, has_neg, k, size,
                                           out_scores, out_rows, mask, buf)
            else:
                size = _score_block(f_indptr, f_terms, f_impacts, qtable, lo, hi, has_neg, k, size,
                                    out_scores, out_rows)
    heap_sort(out_scores, out_rows, size)
    fine[:] = 0.0  # leave the buffers clean for the next query
    for i in range(n):
        qtable[terms[i]] = 0.0
    return size


@njit(cache=True, nogil=True)
def _dispatch(ix, px, terms, weights, k, alpha, beta, taat_density, taat_max, dense_ratio, qtable, fine,
              sb_ub, pq_u, pq_i, acc, touched, out_rows, out_scores):
    """Top-k of one prepared query: block-max pruning, or exact TAAT where block bounds cannot prune."""
    p_indptr, p_docs, p_impacts = px
    postings = 0
    for t in terms:
        postings += p_indptr[t + 1] - p_indptr[t]
    # When documents match many query terms on average, every block's bound is loose and BMP would
    # scan much of the forward index: a small enough exact TAAT is cheaper (and returns the same).
    if postings <= taat_max and postings >= taat_density * ix[13]:
        return exact_topk(p_indptr, p_docs, p_impacts, terms, weights, k, dense_ratio, acc, touched, out_rows,
                          out_scores)
    return bmp_query(ix, terms, weights, k, alpha, beta, 0.0, _NO_MASK, _NO_COUNT, _NO_COUNT, 0, qtable, fine,
                     sb_ub, pq_u, pq_i, out_rows, out_scores)


@njit(cache=True, nogil=True)
def bmp_search_query(ix, px, scale, q_terms, q_weights, k, alpha, beta, taat_density, taat_max, dense_ratio,
                     qtable, fine, sb_ub, pq_u, pq_i, acc, touched):
    """Block-max pruning top-k for one raw query (Mallia et al., SIGIR 2024): (rows, scores), best first."""
    terms, weights = prepare_query(q_terms, q_weights, qtable.size, scale)
    kk = min(k, ix[13])
    rows = np.empty(kk, np.int32)
    scores = np.empty(kk, np.float32)
    m = _dispatch(ix, px, terms, weights, kk, alpha, beta, taat_density, taat_max, dense_ratio, qtable, fine,
                  sb_ub, pq_u, pq_i, acc, touched, rows, scores)
    return rows[:m].copy(), scores[:m].copy()


@njit(cache=True, nogil=True)
def bmp_search_range(ix, px, scale, q_indptr, q_terms, q_weights, lo, hi, alpha, beta, taat_density, taat_max,
                     dense_ratio, qtable, fine, sb_ub, pq_u, pq_i, acc, touched, out_rows, out_scores,
                     counts):
    """Block-max pruning top-k (Mallia et al., SIGIR 2024) for queries lo..hi of a CSR batch."""
    k = out_rows.shape[1]
    for q in range(lo, hi):
        a = q_indptr[q]
        b = q_indptr[q + 1]
        terms, weights = prepare_query(q_terms[a:b], q_weights[a:b], qtable.size, scale)
        counts[q] = _dispatch(ix, px, terms, weights, k, alpha, beta, taat_density, taat_max, dense_ratio,
                              qtable, fine, sb_ub, pq_u, pq_i, acc, touched, out_rows[q], out_scores[q])
