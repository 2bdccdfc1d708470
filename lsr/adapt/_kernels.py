"""Numba kernels of the query-weight trainer (:mod:`lsr.adapt.trainer`): flat numpy arrays in and out.

Layout (see :class:`lsr.adapt.trainer.TrainingSet`): query ``i`` has tokens ``q_tokens[q_ptr[i]:q_ptr[i+1]]``
and candidates ``c_rows[c_ptr[i]:c_ptr[i+1]]``; the documents are the SPLADE index's forward (doc-major)
CSR ``(f_indptr, f_terms, f_impacts)`` with terms ascending within a row, weight = impact * ``scale``.
A query's feature block is the row-major ``n_cand x n_tok`` matrix ``D[c, t]``, blocks laid out one query
after the other (offsets ``x_ptr``).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _find(sorted_values, lo, hi, value):
    """Position of ``value`` in ascending ``sorted_values[lo:hi]``, -1 if absent (binary search)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = sorted_values[mid]
        if v < value:
            lo = mid + 1
        elif v > value:
            hi = mid
        else:
            return mid
    return -1


@njit(cache=True, nogil=True, inline="always")
def _doc_weight(f_indptr, f_terms, f_impacts, row, term):
    """Impact of ``term`` in document ``row`` (0 if absent): D[d, t] of Geng et al. 2024, binary search."""
    at = _find(f_terms, f_indptr[row], f_indptr[row + 1], term)
    return np.float64(f_impacts[at]) if at >= 0 else 0.0


# Query i's block: row-major n_cand x n_tok, starting at x_ptr[i]; weight = impact * scale.
@njit(cache=True, nogil=True)
def fill_features(f_indptr, f_terms, f_impacts, scale, q_ptr, q_tokens, c_ptr, c_rows, x_ptr, out):
    """D[c, t] per (query, candidate, query token): inference-free LSR's documents (Geng et al. 2024)."""
    for i in range(q_ptr.size - 1):
        t0 = q_ptr[i]
        n_tok = q_ptr[i + 1] - t0
        pos = x_ptr[i]
        for j in range(c_ptr[i], c_ptr[i + 1]):
            row = c_rows[j]
            for k in range(n_tok):
                out[pos] = _doc_weight(f_indptr, f_terms, f_impacts, row, q_tokens[t0 + k]) * scale
                pos += 1


@njit(cache=True, nogil=True)
def _contains(sorted_rows, lo, hi, row):
    """Whether ``row`` is in ascending ``sorted_rows[lo:hi]`` (in-batch negatives, Karpukhin et al. 2020)."""
    return _find(sorted_rows, lo, hi, row) >= 0


# A dense len(inb_rows) x n_slots matrix, one scan of each row; sets tok_slot[t] to each batch token's
# column (the caller resets it to -1 with clear_slots).
@njit(cache=True, nogil=True)
def inbatch_features(batch, q_ptr, q_tokens, inb_rows, f_indptr, f_terms, f_impacts, scale, tok_slot):
    """D[r, t] of the in-batch negatives over the batch's query tokens (Karpukhin et al. 2020, DPR)."""
    n_slots = 0
    for b in range(batch.size):
        i = batch[b]
        for p in range(q_ptr[i], q_ptr[i + 1]):
            t = q_tokens[p]
            if tok_slot[t] < 0:
                tok_slot[t] = n_slots
                n_slots += 1
    m = np.zeros((inb_rows.size, n_slots), np.float64)
    for r in range(inb_rows.size):
        row = inb_rows[r]
        for p in range(f_indptr[row], f_indptr[row + 1]):
            slot = tok_slot[f_terms[p]]
            if slot >= 0:
                m[r, slot] = f_impacts[p] * scale
    return m


@njit(cache=True, nogil=True)
def clear_slots(batch, q_ptr, q_tokens, tok_slot):
    """Reset the batch tokens' ``tok_slot`` entries to -1 (in-batch negatives, Karpukhin et al. 2020)."""
    for b in range(batch.size):
        i = batch[b]
        for p in range(q_ptr[i], q_ptr[i + 1]):
            tok_slot[q_tokens[p]] = -1


# Multi-positive softmax cross-entropy -log sum_pos softmax over the candidates plus the in-batch negatives
# (inb_rows, features inb_x by tok_slot), and distill * KL(teacher || student) over the candidates
# (Hinton et al. 2015), as SPLADE trains (Formal et al. 2021). Candidate features come from feats if cached,
# else are looked up. The gradient w.r.t. u is added into grad; stats gets [sum CE, queries with CE,
# sum KL, queries with KL].
@njit(cache=True, nogil=True)
def batch_gradient(batch, q_ptr, q_tokens, c_ptr, c_rows, c_sorted, c_pos, has_pos, t_z, has_teacher,
                   inb_rows, inb_x, tok_slot, u, inv_tau, distill, f_indptr, f_terms, f_impacts, scale,
                   x_ptr, feats, cached, grad, stats):
    """Listwise loss gradient of one mini-batch w.r.t. query-token weights (SPLADE, Formal et al. 2021)."""
    for b in range(batch.size):
        i = batch[b]
        t0 = q_ptr[i]
        n_tok = q_ptr[i + 1] - t0
        c0 = c_ptr[i]
        n_c = c_ptr[i + 1] - c0
        use_ce = has_pos[i]
        use_kl = has_teacher[i] and distill > 0.0
        if n_tok == 0 or n_c == 0 or not (use_ce or use_kl):
            continue
        n_x = inb_rows.size if use_ce else 0
        fx = np.empty((n_c + n_x, n_tok), np.float64)
        wq = np.empty(n_tok, np.float64)
        slots = np.empty(n_tok, np.int64)
        for k in range(n_tok):
            wq[k] = max(u[q_tokens[t0 + k]], 0.0)
            slots[k] = tok_slot[q_tokens[t0 + k]]
        z = np.empty(n_c + n_x, np.float64)
        pos = x_ptr[i]
        for j in range(n_c):
            row = c_rows[c0 + j]
            s = 0.0
            for k in range(n_tok):
                if cached:
                    x = np.float64(feats[pos])
                    pos += 1
                else:
                    x = _doc_weight(f_indptr, f_terms, f_impacts, row, q_tokens[t0 + k]) * scale
                fx[j, k] = x
                s += wq[k] * x
            z[j] = s * inv_tau
        n = n_c
        for r in range(n_x):
            if _contains(c_sorted, c0, c0 + n_c, inb_rows[r]):
                continue
            s = 0.0
            for k in range(n_tok):
                x = inb_x[r, slots[k]]
                fx[n, k] = x
                s += wq[k] * x
            z[n] = s * inv_tau
            n += 1
        dz = np.zeros(n, np.float64)
        if use_ce:
            zmax = z[:n].max()
            tot = 0.0
            pos_mass = 0.0
            for j in range(n):
                e = np.exp(z[j] - zmax)
                tot += e
                if j < n_c and c_pos[c0 + j]:
                    pos_mass += e
            stats[0] += np.log(tot) - np.log(pos_mass)
            stats[1] += 1.0
            for j in range(n):
                p = np.exp(z[j] - zmax) / tot
                dz[j] = p
                if j < n_c and c_pos[c0 + j]:
                    dz[j] -= p * tot / pos_mass
        if use_kl:
            zmax = z[:n_c].max()
            tot = 0.0
            for j in range(n_c):
                tot += np.exp(z[j] - zmax)
            tmax = t_z[c0:c0 + n_c].max()
            ttot = 0.0
            for j in range(n_c):
                ttot += np.exp(t_z[c0 + j] - tmax)
            kl = 0.0
            for j in range(n_c):
                lt = t_z[c0 + j] - tmax - np.log(ttot)
                ls = z[j] - zmax - np.log(tot)
                pt = np.exp(lt)
                kl += pt * (lt - ls)
                dz[j] += distill * (np.exp(ls) - pt)
            stats[2] += kl
            stats[3] += 1.0
        for k in range(n_tok):
            g = 0.0
            for j in range(n):
                g += dz[j] * fx[j, k]
            grad[q_tokens[t0 + k]] += g * inv_tau


# The unit in which the trainer's softmax temperature is expressed; 0.0 when no query has a spread.
@njit(cache=True, nogil=True)
def score_spread(q_ptr, q_tokens, c_ptr, c_rows, u, f_indptr, f_terms, f_impacts, scale, queries):
    """Mean per-query std of candidate scores under ``u`` (scale-free temperature, cf. Hinton et al. 2015)."""
    total = 0.0
    m = 0
    for b in range(queries.size):
        i = queries[b]
        t0 = q_ptr[i]
        n_tok = q_ptr[i + 1] - t0
        c0 = c_ptr[i]
        n_c = c_ptr[i + 1] - c0
        if n_tok == 0 or n_c < 2:
            continue
        s1 = 0.0
        s2 = 0.0
        for j in range(n_c):
            s = 0.0
            for k in range(n_tok):
                t = q_tokens[t0 + k]
                if u[t] > 0.0:
                    s += u[t] * _doc_weight(f_indptr, f_terms, f_impacts, c_rows[c0 + j], t) * scale
            s1 += s
            s2 += s * s
        var = s2 / n_c - (s1 / n_c) ** 2
        if var > 1e-24:
            total += np.sqrt(var)
            m += 1
    return total / m if m > 0 else 0.0


# Adam on the active tokens' free weights with a proximal step for the posting-weighted l1 and the
# projection on w >= 0 (weights reach exactly 0); tokens without a free weight take g = a * init^p, whose
# parameters glob = [log a, p] get the chain-rule gradient; u / g hold the current weights / map values;
# the data gradient is grad * gscale.
@njit(cache=True, nogil=True)
def adam_prox_step(active, seen, u, g, log_init, grad, gscale, m1, m2, flops_c, prior_c, lr, b1, b2, eps,
                   step, glob, gm1, gm2):
    """Proximal Adam step (Kingma & Ba 2015) for the FLOPS-like l1 (Paria et al. 2020) on w >= 0."""
    c1 = 1.0 - b1 ** step
    c2 = 1.0 - b2 ** step
    d_loga = 0.0
    d_p = 0.0
    for a in range(active.size):
        t = active[a]
        if seen[a]:
            diff = u[t] - g[a]
            gr = grad[t] * gscale + prior_c * diff
            d_loga -= prior_c * diff * g[a]
            d_p -= prior_c * diff * g[a] * log_init[a]
            m1[a] = b1 * m1[a] + (1.0 - b1) * gr
            m2[a] = b2 * m2[a] + (1.0 - b2) * gr * gr
            eta = lr / (np.sqrt(m2[a] / c2) + eps)
            w = u[t] - eta * m1[a] / c1 - eta * flops_c[a]
            u[t] = w if w > 0.0 else 0.0
        elif g[a] > 0.0:
            dg = grad[t] * gscale + flops_c[a]
            d_loga += dg * g[a]
            d_p += dg * g[a] * log_init[a]
    for j in range(2):
        gr = d_loga if j == 0 else d_p
        gm1[j] = b1 * gm1[j] + (1.0 - b1) * gr
        gm2[j] = b2 * gm2[j] + (1.0 - b2) * gr * gr
        glob[j] -= lr * (gm1[j] / c1) / (np.sqrt(gm2[j] / c2) + eps)


@njit(cache=True, nogil=True)
def candidate_gains(q_ptr, q_tokens, c_ptr, c_rows, c_label, x_ptr, feats, w, k, out):
    """Per-query nDCG@k (Jarvelin & Kekalainen 2002) of candidates by w . D, ties by row; NaN: no positive."""
    for i in range(q_ptr.size - 1):
        t0 = q_ptr[i]
        n_tok = q_ptr[i + 1] - t0
        c0 = c_ptr[i]
        n_c = c_ptr[i + 1] - c0
        labels = c_label[c0:c0 + n_c]
        if n_c == 0 or labels.max() <= 0.0:
            out[i] = np.nan
            continue
        s = np.zeros(n_c, np.float64)
        pos = x_ptr[i]
        for j in range(n_c):
            acc = 0.0
            for kk in range(n_tok):
                wt = w[q_tokens[t0 + kk]]
                if wt > 0.0:
                    acc += wt * feats[pos + j * n_tok + kk]
            s[j] = acc
        by_row = np.argsort(c_rows[c0:c0 + n_c], kind="mergesort")
        order = by_row[np.argsort(-s[by_row], kind="mergesort")]
        ideal = np.sort(labels)[::-1]
        dcg = 0.0
        idcg = 0.0
        for r in range(min(k, n_c)):
            disc = 1.0 / np.log2(r + 2.0)
            dcg += labels[order[r]] * disc
            idcg += ideal[r] * disc
        out[i] = dcg / idcg
