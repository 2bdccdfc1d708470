#!/usr/bin/env python
"""Throughput: lsr's SpladeEncoder vs sentence-transformers' SparseEncoder, same model, same docs.

Both engines encode the same N documents of a BEIR corpus (text = title + " " + text) on the same
device, with the same batch size and max length, after one untimed warm-up batch each. The engines
run alternately ``--repeats`` times; the table reports the best (fastest) run of each, and the
median next to it. The vectors of the two engines must agree (max abs difference < 1e-4).

Example:
    HF_HUB_OFFLINE=1 .venv/bin/python scripts/bench_encoder.py --n-docs 1000 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO.parent / "shared" / "data" / "beir" / "scifact"
TOLERANCE = 1e-4


def load_docs(corpus: Path, n: int) -> list[str]:
    path = corpus / "corpus.jsonl" if corpus.is_dir() else corpus
    if not path.is_file():
        sys.exit(f"error: no BEIR corpus at {corpus} (expected {path}); pass --corpus DIR_OR_JSONL")
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if len(docs) >= n:
                break
            if line.strip():
                rec = json.loads(line)
                docs.append(f"{rec.get('title') or ''} {rec.get('text') or ''}")
    if not docs:
        sys.exit(f"error: {path} holds no documents")
    return docs


def build_theirs(path: str, device: str, max_length: int):
    """sentence-transformers' SparseEncoder: MLMTransformer + SpladePooling(max, relu), ours' max length."""
    import sentence_transformers
    from sentence_transformers import SparseEncoder
    from sentence_transformers.sparse_encoder.modules import MLMTransformer, SpladePooling

    # v5.4+ deprecates MLMTransformer as a thin alias of Transformer(transformer_task="fill-mask")
    mlm = MLMTransformer(path, max_seq_length=max_length)
    pooling = SpladePooling(pooling_strategy="max", activation_function="relu")
    model = SparseEncoder(modules=[mlm, pooling], device=device)
    model.max_seq_length = max_length
    assert model.max_seq_length == max_length, (model.max_seq_length, max_length)
    model.eval()
    return model, sentence_transformers.__version__


def encode_theirs(model, docs: list[str], batch_size: int):
    encode = getattr(model, "encode_document", model.encode)
    return encode(docs, batch_size=batch_size, convert_to_tensor=True, convert_to_sparse_tensor=True,
                  show_progress_bar=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                    help="BEIR folder (with corpus.jsonl) or a corpus.jsonl (default: %(default)s)")
    ap.add_argument("--model", default="splade-tiny")
    ap.add_argument("--n-docs", type=int, default=1000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3,
                    help="alternate runs per engine; best and median reported")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's own)")
    args = ap.parse_args()
    if args.n_docs < 1 or args.batch_size < 1 or args.repeats < 1:
        sys.exit("error: --n-docs, --batch-size and --repeats must be >= 1")

    import numpy as np
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from lsr.encoders import SpladeEncoder

    docs = load_docs(args.corpus, args.n_docs)
    ours = SpladeEncoder.from_pretrained(args.model, device=args.device, max_length=args.max_length)
    theirs, st_version = build_theirs(ours.path, str(ours.device), args.max_length)
    warm = docs[: args.batch_size]

    def run_ours():
        return ours.encode_documents(docs, batch_size=args.batch_size)

    def run_theirs():
        return encode_theirs(theirs, docs, args.batch_size)

    def sync():
        if ours.device.type == "cuda":
            torch.cuda.synchronize()

    ours.encode_documents(warm, batch_size=args.batch_size)  # untimed warm-up
    encode_theirs(theirs, warm, args.batch_size)
    times = {"ours": [], "theirs": []}
    out_ours = out_theirs = None
    for _ in range(args.repeats):
        for name, fn in (("ours", run_ours), ("theirs", run_theirs)):
            sync()
            t0 = time.perf_counter()
            res = fn()
            sync()
            times[name].append(time.perf_counter() - t0)
            if name == "ours":
                out_ours = res
            else:
                out_theirs = res

    # compare as dense rows (n x vocab float32)
    dense_ours = np.zeros((len(docs), out_ours.vocab_size), dtype=np.float32)
    rows = np.repeat(np.arange(len(docs)), np.diff(out_ours.indptr))
    dense_ours[rows, out_ours.indices] = out_ours.values
    dense_theirs = out_theirs.to_dense().float().cpu().numpy() if out_theirs.is_sparse else \
        out_theirs.float().cpu().numpy()
    max_diff = float(np.abs(dense_ours - dense_theirs).max())
    support_diff = int(((dense_ours > 0) != (dense_theirs > 0)).sum())

    n = len(docs)
    best = {k: n / min(v) for k, v in times.items()}
    median = {k: n / statistics.median(v) for k, v in times.items()}
    ratio = best["ours"] / best["theirs"]
    tokens = sum(min(len(x), args.max_length) for x in ours.tokenizer(docs, truncation=True,
                                                                       max_length=args.max_length)["input_ids"])
    print(f"\n{n} docs ({tokens} tokens, {tokens / n:.0f}/doc) of {args.corpus}, batch {args.batch_size}, "
          f"max_length {args.max_length}, device {ours.device}, torch threads {torch.get_num_threads()}, "
          f"{args.repeats} alternating repeats (best = fastest run)\n")
    print("| engine | docs/s (best) | docs/s (median) | seconds (best) |")
    print("|---|---:|---:|---:|")
    print(f"| lsr SpladeEncoder | {best['ours']:.1f} | {median['ours']:.1f} | {min(times['ours']):.2f} |")
    print(f"| sentence-transformers {st_version} SparseEncoder | {best['theirs']:.1f} "
          f"| {median['theirs']:.1f} | {min(times['theirs']):.2f} |")
    print(f"| **ratio ours/theirs** | **{ratio:.2f}x** | {median['ours'] / median['theirs']:.2f}x | |")
    print(f"\nmax abs difference of the vectors: {max_diff:.2e} (tolerance {TOLERANCE:g}); "
          f"entries nonzero in one only: {support_diff}; nnz/doc: {out_ours.nnz / n:.1f}")
    summary = {"n_docs": n, "tokens": tokens, "batch_size": args.batch_size, "max_length": args.max_length,
               "device": str(ours.device), "threads": torch.get_num_threads(), "repeats": args.repeats,
               "stat": "best", "ours_docs_per_s": round(best["ours"], 2),
               "theirs_docs_per_s": round(best["theirs"], 2), "ratio": round(ratio, 3),
               "ratio_median": round(median["ours"] / median["theirs"], 3), "max_abs_diff": max_diff,
               "support_diff": support_diff,
               "runs_s": {k: [round(t, 2) for t in v] for k, v in times.items()},
               "sentence_transformers": st_version, "torch": torch.__version__,
               "cpu": platform.processor() or platform.machine(), "model": args.model}
    print(json.dumps(summary))
    if max_diff >= TOLERANCE:
        sys.exit(f"error: the vectors differ by {max_diff:.2e} >= {TOLERANCE:g}")


if __name__ == "__main__":
    main()
