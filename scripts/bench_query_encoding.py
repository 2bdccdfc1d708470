"""Dense query encoding on a CPU: where the time goes, the options, and what the kept path costs and changes.

The measurement of record for issue 13's fast dense query path (``DenseEncoder.encode_queries``). Sections:

1. **Breakdown** of the plain path (transformers ``BertModel``) for one ten-token query, at each thread
   count: tokenizer, the transformers forward, the same forward without transformers (a lean module on the
   same weights: the difference is transformers' per-call overhead), pooling and the rest of ``encode``.
2. **Options**, one query per call, queries of 1, 10 and 30 WordPiece tokens (plus [CLS] and [SEP]),
   median and p90 ms over ``--rounds`` calls, the options interleaved call by call (a noisy machine slows all
   alike): the plain path; the lean torch forward eager and ``torch.jit.trace``-d; torch dynamic int8
   (``quantize_dynamic``, per-channel, traced); our ONNX Runtime graph in fp32, int8, and int8 without the
   SmoothQuant step. Cosine to the plain path's vectors over the SciFact test queries (min and mean).
3. **Load**: ``DenseEncoder.from_pretrained`` in a fresh process per runtime (imports excluded), with an
   empty graph cache and with the graph cached.
4. **Faithfulness and search cost** on a collection (``--index``, with a dense retriever): nDCG@10 and
   R@100 of ``dense`` mode over the test queries with each runtime, and ``Searcher.search`` ms per query
   (one at a time, one thread) in ``dense`` mode and in hybrid over sparse-idf + bm25 + dense.

Run it alone (it measures wall time; others share the two cores: ``flock /tmp/torch.lock``):

    flock /tmp/torch.lock .venv/bin/python scripts/bench_query_encoding.py --index /tmp/scifact-v3 \\
        --beir ../shared/data/beir/scifact

``--out FILE`` also writes every figure as JSON.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from functools import partial
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore")  # torch.ao deprecation notices

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lsr.encoders import DenseEncoder, _fast  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BEIR = ROOT.parent / "shared" / "data" / "beir" / "scifact"
LENGTHS = (1, 10, 30)


class LeanBert(torch.nn.Module):
    """BertModel's forward, mean pooling and normalisation on the model's own modules, no transformers."""

    def __init__(self, model):
        super().__init__()
        self.emb, self.layers = model.embeddings, model.encoder.layer
        self.h = model.config.num_attention_heads
        self.d = model.config.hidden_size // self.h

    def forward(self, input_ids, mask):
        b, n = input_ids.shape
        e = self.emb
        x = (e.word_embeddings(input_ids) + e.position_embeddings(torch.arange(n))[None]
             + e.token_type_embeddings.weight[0])
        x = e.LayerNorm(x)
        bias = ((1.0 - mask.to(x.dtype)) * -1e9)[:, None, None, :]
        for L in self.layers:
            a = L.attention.self
            q, k, v = (f(x).view(b, n, self.h, self.d).transpose(1, 2) for f in (a.query, a.key, a.value))
            s = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.d)) + bias
            c = torch.matmul(torch.softmax(s, -1), v).transpose(1, 2).reshape(b, n, self.h * self.d)
            x = L.attention.output.LayerNorm(L.attention.output.dense(c) + x)
            x = L.output.LayerNorm(L.output.dense(F.gelu(L.intermediate.dense(x))) + x)
        m = mask.to(x.dtype)[..., None]
        return F.normalize((x * m).sum(1) / m.sum(1).clamp(min=1.0), p=2, dim=1)


def read_jsonl(path: Path, n: int | None = None) -> list[dict]:
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
                if n is not None and len(out) >= n:
                    break
    return out


def test_queries(beir: Path) -> dict[str, str]:
    judged = []
    with open(beir / "qrels" / "test.tsv", encoding="utf-8") as f:
        for line in f:
            q = line.split("\t")[0]
            if q != "query-id" and q not in judged:
                judged.append(q)
    texts = {r["_id"]: r["text"] for r in read_jsonl(beir / "queries.jsonl")}
    return {q: texts[q] for q in judged if q in texts}


def text_of_length(tokenizer, candidates: list[str], n: int) -> str:
    """A prefix (in words) of one of ``candidates`` with exactly ``n`` WordPiece tokens."""
    for text in candidates:
        words = text.split()
        for j in range(1, len(words) + 1):
            t = " ".join(words[:j])
            got = len(tokenizer(t, add_special_tokens=False)["input_ids"])
            if got == n:
                return t
            if got > n:
                break
    raise SystemExit(f"error: no text of {n} tokens among the candidates")


def timed(fns: dict, rounds: int) -> dict:
    """Median and p90 ms of each callable, called round-robin ``rounds`` times (after 10 warm-up calls)."""
    for f in fns.values():
        for _ in range(10):
            f()
    ts = {k: [] for k in fns}
    for _ in range(rounds):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            ts[k].append((time.perf_counter() - t0) * 1e3)
    return {k: {"median_ms": statistics.median(v), "p90_ms": sorted(v)[int(0.9 * len(v))]}
            for k, v in ts.items()}


def ids_of(tokenizer, text: str) -> torch.Tensor:
    return torch.tensor(tokenizer([text], truncation=True, max_length=256)["input_ids"])


def breakdown(enc: DenseEncoder, text: str, rounds: int) -> dict:
    tok, model = enc._tokenizer, enc._model
    ids = ids_of(tok, text)
    mask = torch.ones_like(ids)
    lean = LeanBert(model).eval()

    def hf():
        with torch.inference_mode():
            return model(input_ids=ids, attention_mask=mask).last_hidden_state

    def lean_fwd():
        with torch.inference_mode():
            return lean(ids, mask)

    out = timed({"tokenizer": lambda: tok([text], truncation=True, max_length=256,
                                          return_attention_mask=False, return_token_type_ids=False),
                 "transformers forward": hf, "lean forward (same math, no transformers)": lean_fwd,
                 "encode() total": lambda: enc.encode([text])}, rounds)
    rest = out["encode() total"]["median_ms"] - out["transformers forward"]["median_ms"] \
        - out["tokenizer"]["median_ms"]
    out["pooling + rest of encode() (median difference)"] = {"median_ms": rest, "p90_ms": float("nan")}
    return out


def option_fns(enc: DenseEncoder, threads: int) -> dict:
    """name -> (ids tensor -> unit vector numpy) for every option but the plain path, at ``threads``."""
    model, tok = enc._model, enc._tokenizer
    lean = LeanBert(model).eval()
    probe = ids_of(tok, "what is the role of vitamin d in bone health")
    pm = torch.ones_like(probe)
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(lean, (probe, pm)))
        spec = {torch.nn.Linear: torch.ao.quantization.per_channel_dynamic_qconfig}
        q8 = torch.ao.quantization.quantize_dynamic(copy.deepcopy(lean), spec, dtype=torch.qint8)
        q8 = torch.jit.freeze(torch.jit.trace(q8, (probe, pm)))
    weights = _fast._weights(model)
    amax = _fast.calibrate(model, tok)
    graphs = {"onnx-fp32 (kept: onnx-fp32)": ("fp32", None), "onnx-int8 (kept: default)": ("int8", amax),
              "onnx-int8 without SmoothQuant": ("int8", None)}
    sessions = {k: _fast.FastQueryPath.create(
        _fast.build_model(weights, model.config, precision=p, amax=a).SerializeToString(),
        precision=p, threads=threads) for k, (p, a) in graphs.items()}

    def torch_fn(f):
        def run(ids):
            with torch.inference_mode():
                return f(ids, torch.ones_like(ids))[0].numpy()
        return run

    fns = {"torch lean eager": torch_fn(lean), "torch lean jit.trace": torch_fn(traced),
           "torch int8 dynamic (per-channel, traced)": torch_fn(q8)}
    for k, s in sessions.items():
        fns[k] = partial(run_session, s)
    return fns


def run_session(fast: _fast.FastQueryPath, ids: torch.Tensor) -> np.ndarray:
    return fast(ids.numpy(), np.ones(tuple(ids.shape), np.int64))[0]


def options(enc: DenseEncoder, texts_by_len: dict[int, str], queries: list[str], reference: np.ndarray,
            threads: int, rounds: int, cosines: bool) -> dict:
    torch.set_num_threads(threads)
    fns = option_fns(enc, threads)
    tok = enc._tokenizer
    plain = "torch plain (transformers)"
    out: dict = {plain: {}, **{name: {} for name in fns}}
    for n, text in texts_by_len.items():
        ids = ids_of(tok, text)
        # the plain path gets the text (its tokenizer call included); the others its ids
        calls = {plain: partial(enc.encode, [text]), **{k: partial(f, ids) for k, f in fns.items()}}
        for k, v in timed(calls, rounds).items():
            out[k][f"{n} tokens"] = v
    if cosines:
        for k, f in fns.items():
            vecs = np.stack([f(ids_of(tok, q)) for q in queries])
            c = (vecs * reference).sum(1)
            out[k]["cosine"] = {"min": float(c.min()), "mean": float(c.mean())}
        out[plain]["cosine"] = {"min": 1.0, "mean": 1.0}
    return out


LOAD_CHILD = r"""
import json, os, sys, time, warnings
warnings.filterwarnings("ignore")
import torch, transformers, onnxruntime
torch.set_num_threads(1)
from lsr.encoders import DenseEncoder
t0 = time.perf_counter()
enc = DenseEncoder.from_pretrained("minilm", device="cpu", query_runtime=sys.argv[1])
print(json.dumps({"seconds": time.perf_counter() - t0, "runtime": enc.query_runtime,
                  "source": enc._fast.source if enc._fast is not None else None}))
"""


def load_times() -> dict:
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, LSR_CACHE_DIR=cache)
        for runtime, label in (("torch", "torch"), ("onnx-int8", "onnx-int8 (empty cache)"),
                               ("onnx-int8", "onnx-int8 (cached)"),
                               ("onnx-fp32", "onnx-fp32 (empty cache)"), ("onnx-fp32", "onnx-fp32 (cached)")):
            res = subprocess.run([sys.executable, "-c", LOAD_CHILD, runtime], env=env, capture_output=True,
                                 text=True, check=True)
            out[label] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def search_figures(index: Path, beir: Path, queries: dict[str, str], ten: str, rounds: int) -> dict:
    from lsr.eval.metrics import evaluate
    from lsr.searcher import Searcher

    qrels: dict[str, dict[str, int]] = {}
    with open(beir / "qrels" / "test.tsv", encoding="utf-8") as f:
        for line in f:
            row = line.rstrip("\n").split("\t")
            if len(row) >= 3 and row[2].lstrip("-").isdigit():
                qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    torch.set_num_threads(1)
    out = {}
    texts = list(queries.values())[:rounds]
    for runtime in ("torch", "onnx-fp32", "onnx-int8"):
        os.environ[_fast.ENV_VAR] = runtime
        s = Searcher.load(index, device="cpu")
        got = s.retriever("dense").encoder.query_runtime
        timings: dict = {}
        run = s.batch_search(queries, k=100, mode="dense", threads=1, timings=timings)
        fig = {"query_runtime": got, **evaluate(run, qrels, ("ndcg@10", "recall@100")),
               f"batch encoding s ({len(queries)} queries)": timings.get("encode_seconds")}
        hybrid = {"weights": {"sparse-idf": 1, "bm25": 1, "dense": 1}} if "sparse-idf" in s.retrievers \
            else None
        for mode, fusion in (("dense", None), ("hybrid", hybrid)):
            if mode == "hybrid" and hybrid is None:
                continue
            for t in texts[:10]:  # warm-up (Numba, caches)
                s.search(t, k=10, mode=mode, fusion=fusion, with_text=False)
            name = "dense" if mode == "dense" else "hybrid sparse-idf+bm25+dense"
            for label, batch in (("test queries", texts), ("10-token query", [ten] * len(texts))):
                ts = []
                for t in batch:
                    t0 = time.perf_counter()
                    s.search(t, k=10, mode=mode, fusion=fusion, with_text=False)
                    ts.append((time.perf_counter() - t0) * 1e3)
                ts.sort()
                fig[f"{name}, {label}"] = {"median_ms": statistics.median(ts),
                                           "p90_ms": ts[int(0.9 * len(ts))]}
        out[runtime] = fig
        del s
    os.environ.pop(_fast.ENV_VAR, None)
    return out


def print_table(title: str, rows: dict, cols: list[str]) -> None:
    print(f"\n## {title}\n")
    print("| | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, r in rows.items():
        cells = []
        for c in cols:
            v = r.get(c)
            if isinstance(v, dict) and "median_ms" in v:
                p90 = "" if math.isnan(v["p90_ms"]) else f" / {v['p90_ms']:.2f}"
                cells.append(f"{v['median_ms']:.2f}{p90}")
            elif isinstance(v, dict) and "min" in v:
                cells.append(f"{v['min']:.4f} / {v['mean']:.4f}")
            elif isinstance(v, float):
                cells.append(f"{v:.4f}")
            else:
                cells.append("" if v is None else str(v))
        print(f"| {name} | " + " | ".join(cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--beir", type=Path, default=DEFAULT_BEIR, help="BEIR folder (SciFact)")
    ap.add_argument("--index", type=Path, default=None, help="collection with a dense retriever (section 4)")
    ap.add_argument("--threads", default="1,2", help="thread counts of sections 1-2 (default 1,2)")
    ap.add_argument("--rounds", type=int, default=100, help="timed calls per figure (default 100)")
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    a = ap.parse_args()
    if not (a.beir / "queries.jsonl").is_file():
        sys.exit(f"error: no BEIR data set at {a.beir} (pass --beir DIR)")
    threads = [int(t) for t in a.threads.split(",")]
    torch.set_num_threads(1)
    enc = DenseEncoder.from_pretrained("minilm", device="cpu", query_runtime="torch")
    queries = test_queries(a.beir)
    qtexts = list(queries.values())
    docs = [f"{d.get('title', '')}. {d.get('text', '')}" for d in read_jsonl(a.beir / "corpus.jsonl", 50)]
    texts_by_len = {n: text_of_length(enc._tokenizer, qtexts + docs, n) for n in LENGTHS}
    reference = enc.encode(qtexts)
    figures: dict = {"machine": {"cores": os.cpu_count(), "torch": torch.__version__},
                     "texts": texts_by_len, "queries": len(qtexts)}
    print(f"# Dense query encoding (MiniLM-L6), {len(qtexts)} SciFact test queries; texts: {texts_by_len}")
    for t in threads:
        torch.set_num_threads(t)
        b = breakdown(enc, texts_by_len[10], a.rounds)
        figures[f"breakdown {t} threads"] = b
        print_table(f"Plain path, one 10-token query, {t} thread(s): ms median / p90",
                    {k: {"ms": v} for k, v in b.items()}, ["ms"])
    for t in threads:
        o = options(enc, texts_by_len, qtexts, reference, t, a.rounds, cosines=t == threads[0])
        figures[f"options {t} threads"] = o
        cols = [f"{n} tokens" for n in LENGTHS] + (["cosine"] if t == threads[0] else [])
        print_table(f"Options, one query per call, {t} thread(s): ms median / p90; cosine to the plain path "
                    f"over {len(qtexts)} queries: min / mean", o, cols)
    figures["load"] = load_times()
    print_table("DenseEncoder.from_pretrained, fresh process (imports excluded), 1 thread: seconds",
                {k: {"seconds": v["seconds"], "serves": v["runtime"], "graph": v["source"]}
                 for k, v in figures["load"].items()}, ["seconds", "serves", "graph"])
    if a.index is not None:
        figures["search"] = search_figures(a.index, a.beir, queries, texts_by_len[10], a.rounds)
        cols = ["query_runtime", "ndcg@10", "recall@100", f"batch encoding s ({len(queries)} queries)"]
        print_table(f"{a.index}: dense mode over the test queries (batch_search, 1 thread)",
                    figures["search"], cols)
        cols = [f"{m}, {q}" for m in ("dense", "hybrid sparse-idf+bm25+dense")
                for q in ("test queries", "10-token query")]
        print_table(f"{a.index}: Searcher.search, one query at a time, 1 thread: ms median / p90 (test "
                    f"queries: the first {min(a.rounds, len(queries))})", figures["search"], cols)
    if a.out is not None:
        a.out.write_text(json.dumps(figures, indent=1, default=float))


if __name__ == "__main__":
    main()
