"""The peer harness's synthetic SPLADE-like collection (``../shared/peerbench/gen_synth.py``) at any size
without holding it in memory: the same generator (same model, same random stream for a given seed, so the
output equals ``gen_synth.py``'s for the same arguments), but document chunks go straight to disk instead of
being concatenated in memory (``gen_synth.py`` ends with every vector twice in memory: by the arrays' sizes,
about 17 GB at 8.8M documents). The peak resident memory it reports is mostly its own output files mapped back
(8.8M documents: 20 minutes, 9.6 GB peak resident on this machine).

Writes ``--out``: ``docs.npz`` / ``queries.npz`` (CSR: indptr, indices, data, shape, ids; stored uncompressed,
so readers can memory-map the members), ``qrels.tsv``, ``meta.json``, as ``gen_synth.py --no-jsonl`` does.
``--jsonl`` then writes ``docs.jsonl`` (``--jsonl-docs N``: the first N documents) as Anserini's
``JsonVectorCollection`` with term ids for tokens (``{"id", "contents": "", "vector": {"2054": 1.23}}``), the
input of ``lsr index --vectors docs.jsonl --vocab ids``; on an existing folder it only converts.

    python scripts/gen_synth_stream.py --n-docs 8841823 --out /tmp/syn8m      # MS MARCO's passage count
    python scripts/gen_synth_stream.py --n-docs 8841823 --out /tmp/syn8m --jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

PEERBENCH = Path(__file__).resolve().parents[1].parent / "shared" / "peerbench"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n-docs", type=int, required=True)
    ap.add_argument("--n-queries", type=int, default=1000)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--peerbench", default=str(PEERBENCH), help="folder holding gen_synth.py")
    ap.add_argument("--jsonl", action="store_true", help="also write docs.jsonl (JsonVectorCollection)")
    ap.add_argument("--jsonl-docs", type=int, default=None, help="only the first N documents in docs.jsonl")
    a = ap.parse_args()
    out = Path(a.out)
    if (out / "docs.npz").is_file() and (out / "meta.json").is_file():
        if not a.jsonl:
            sys.exit(f"{out} holds a collection already (--jsonl converts it)")
        write_jsonl(out, a.jsonl_docs)
        return
    sys.path.insert(0, a.peerbench)
    import gen_synth as G

    out.mkdir(parents=True, exist_ok=True)
    n_topics = int(np.clip(a.n_docs // 500, 50, 5000))
    t0 = time.time()
    g = G.Generator(a.seed, n_topics, 1.0, 10.0, 300, 0.35, 400, 0.6)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        f_ind, f_dat = open(f"{tmp}/indices", "wb"), open(f"{tmp}/data", "wb")
        indptr = np.zeros(a.n_docs + 1, np.int64)
        topics = np.zeros(a.n_docs, np.int64)
        row = off = 0
        for ip, ind, dat, tp in g.docs(a.n_docs):
            m = len(ip) - 1
            indptr[row + 1:row + m + 1] = ip[1:] + off
            topics[row:row + m] = tp
            row += m
            off += int(ip[-1])
            f_ind.write(ind.tobytes())
            f_dat.write(dat.tobytes())
            print(f"\r{row:,} documents, {time.time() - t0:.0f} s", end="", file=sys.stderr, flush=True)
        f_ind.close()
        f_dat.close()
        indices = np.memmap(f"{tmp}/indices", np.int32, "r", shape=(off,))
        data = np.memmap(f"{tmp}/data", np.float32, "r", shape=(off,))
        print(f"\ndocs generated in {time.time() - t0:.1f}s, nnz={off}", flush=True)
        q_indptr, q_indices, q_data, src = g.queries(a.n_queries, indptr, indices, data, topics)
        doc_ids = np.array([str(i) for i in range(a.n_docs)])
        q_ids = [f"q{i}" for i in range(a.n_queries)]
        G.save_csr(str(out / "docs.npz"), doc_ids, indptr, indices, data)
        G.save_csr(str(out / "queries.npz"), q_ids, q_indptr, q_indices, q_data)
        with open(out / "qrels.tsv", "w") as f:
            for qi, d in enumerate(src):
                f.write(f"{q_ids[qi]}\t{doc_ids[d]}\t1\n")
        df = np.zeros(G.V, np.int64)
        wsum, wmax = 0.0, 0.0
        for s in range(0, off, 1 << 26):
            df += np.bincount(indices[s:s + (1 << 26)], minlength=G.V)
            wsum += float(data[s:s + (1 << 26)].sum(dtype=np.float64))
            wmax = max(wmax, float(data[s:s + (1 << 26)].max()))
        dnnz = np.diff(indptr)
        meta = dict(kind="synthetic", generator="gen_synth.py (streamed by scripts/gen_synth_stream.py)",
                    args=vars(a), n_topics=n_topics, n_docs=a.n_docs, n_queries=a.n_queries, vocab=G.V,
                    doc_nnz_mean=float(dnnz.mean()), doc_nnz_min=int(dnnz.min()), doc_nnz_max=int(dnnz.max()),
                    q_nnz_mean=float(np.diff(q_indptr).mean()),
                    terms_df_gt_10pct=int((df > 0.1 * a.n_docs).sum()), terms_used=int((df > 0).sum()),
                    doc_w_mean=wsum / max(off, 1), doc_w_max=wmax, gen_seconds=time.time() - t0)
        del indices, data
    with open(out / "meta.json", "w") as f:
        json.dump(meta, f, indent=1)
    print(json.dumps(meta, indent=1))
    if a.jsonl:
        write_jsonl(out, a.jsonl_docs)
    os.sync()


def write_jsonl(out: Path, limit: int | None) -> None:
    """docs.npz as JsonVectorCollection lines, chunk by chunk (memory-mapped input), written then renamed."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_scale import Data

    data = Data(out)
    n = data.n_docs if limit is None else min(limit, data.n_docs)
    tmp = out / "docs.jsonl.tmp"
    t0 = time.time()
    with open(tmp, "w", encoding="utf-8") as f:
        for s in range(0, n, 50_000):
            e = min(n, s + 50_000)
            ip, ind, val = data.rows(s, e)
            ids = data.ids[s:e].tolist()
            tok, w = ind.tolist(), np.round(val.astype(np.float64), 4).tolist()
            lines = []
            for i in range(e - s):
                a, b = ip[i], ip[i + 1]
                vec = ", ".join(f'"{t}": {x!r}' for t, x in zip(tok[a:b], w[a:b]))
                lines.append(f'{{"id": "{ids[i]}", "contents": "", "vector": {{{vec}}}}}\n')
            f.write("".join(lines))
            print(f"\rdocs.jsonl: {e:,} documents, {time.time() - t0:.0f} s", end="", file=sys.stderr,
                  flush=True)
    os.replace(tmp, out / "docs.jsonl")
    print(file=sys.stderr)


if __name__ == "__main__":
    main()
