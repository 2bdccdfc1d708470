"""The ``lsr`` command: ``index``, ``search``, ``add``, ``delete``, ``merge``, ``stats``, ``serve``, ``demo``,
``eval``, ``export``, ``tune-fusion``: each a thin call into the library. Choices, bounds and defaults come
from :mod:`lsr.params`; errors are one line on stderr with exit code 2 (:mod:`lsr.console`).

Example:
    >>> from lsr.cli import main
    >>> main(["search", "--index", "my-index", "sparse retrieval", "-k", "3"])   # doctest: +SKIP
    0
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from lsr.adapt.run import adapt_arguments, adapt_from_args
from lsr.collection import Collection
from lsr.console import Parser, run_command
from lsr.corpus import counted, read_corpus
from lsr.demo import DEMO_INDEX_DIR, demo_queries, write_demo_corpus
from lsr.errors import LsrError
from lsr.eval import add_arguments as eval_arguments
from lsr.eval import read_qrels, read_queries, run_from_args
from lsr.export import FORMATS, export_pyserini, lucene_queries, open_sparse, vocabulary
from lsr.index.storage import check_target
from lsr.indexing import index_corpus
from lsr.manifest import load_manifest
from lsr.params import (
    BM25_ANALYZERS,
    DEFAULT_DENSE_MODEL,
    DEFAULT_DEPTH,
    DEFAULT_K,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MODEL,
    DEFAULT_SPEED,
    DENSE_KINDS,
    K_MAX,
    MAX_BLOCK_SIZE,
    MAX_DEPTH,
    MIN_BLOCK_SIZE,
    MODES,
    NORMALIZATIONS,
    QUANTIZATIONS,
    SPEEDS,
    BuildConfig,
    FusionSpec,
    check_k,
)
from lsr.searcher import Searcher
from lsr.shards import ON_FAILURE
from lsr.tuning import tune_fusion, write_fusion


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _bounded(lo: int, hi: int):
    """An argparse type: an integer in ``lo..hi``."""
    def parse(text: str) -> int:
        v = _positive(text)
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"must be between {lo} and {hi}, got {v}")
        return v
    return parse


def _k(text: str) -> int:
    """``-k``: hits per query, 1..K_MAX (:func:`lsr.params.check_k`)."""
    try:
        return check_k(int(text))
    except ValueError as e:
        msg = str(e) if text.strip().lstrip("-").isdigit() else f"expected an integer, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _json_object(text: str) -> dict:
    try:
        v = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"not valid JSON ({e.msg})") from None
    if not isinstance(v, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return v


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="lsr", description="Learned sparse retrieval: index, search, serve.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    ix = sub.add_parser("index", help="encode a corpus and write an index folder")
    src = ix.add_mutually_exclusive_group(required=True)
    src.add_argument("--corpus", help="BEIR folder (corpus.jsonl) or JSONL file")
    src.add_argument("--vectors", metavar="PATH",
                     help="SPLADE vectors encoded elsewhere: Anserini JsonVectorCollection files "
                          '({"id", "contents", "vector": {token: weight}}; a file or a folder of .jsonl / '
                          ".jsonl.gz), e.g. Pyserini's prebuilt encodings or `lsr export`")
    ix.add_argument("--vocab", default=None, metavar="MODEL|files|ids|DIR",
                    help="with --vectors: the tokenizer whose vocabulary the tokens belong to (default: "
                         "--model); 'files': the tokens the files hold (queries then come as vectors); "
                         "'ids': the keys are --model's term ids; a collection folder (or its "
                         "vocabulary.json) built with 'files': reuse its term ids")
    ix.add_argument("--vector-scale", type=float, default=None, metavar="X",
                    help="with --vectors: multiply every weight by X (0.01 for Anserini's round(100 w) "
                         "integers; default: the scale an `lsr export` folder records, else 1)")
    ix.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="encode on a Ray cluster (ADDRESS, e.g. ray://head:10001 or auto; none: a local "
                         "Ray): Ray Data reads and tokenizes, an actor pool encodes (a GPU each where the "
                         "cluster has GPUs); needs the 'ray' extra and --out on a path every node shares")
    ix.add_argument("--actors", type=_positive, default=None,
                    help="with --ray: encoding actors (default: one per GPU, else one per two CPUs)")
    ix.add_argument("--segment-docs", type=_positive, default=None,
                    help="documents per segment while building (memory grows with it, not with the corpus; "
                         "default 250,000)")
    ix.add_argument("--no-merge", action="store_true",
                    help="leave the segments as written (default: merge them, up to 1,000,000 documents "
                         "each)")
    ix.add_argument("--out", required=True, help="index folder to write")
    ix.add_argument("--model", default=DEFAULT_MODEL,
                    help=f"{DEFAULT_MODEL}, a local HF folder or a hub name (default {DEFAULT_MODEL})")
    ix.add_argument("--batch-size", type=_positive, default=BuildConfig.batch_size)
    ix.add_argument("--max-length", type=_positive, default=DEFAULT_MAX_LENGTH)
    ix.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ix.add_argument("--quantization", choices=QUANTIZATIONS, default=BuildConfig.quantization)
    ix.add_argument("--block-size", type=_bounded(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE),
                    default=BuildConfig.block_size,
                    help=f"documents per block of the block-max index ({MIN_BLOCK_SIZE}..{MAX_BLOCK_SIZE}, "
                         f"default {BuildConfig.block_size})")
    ix.add_argument("--no-reorder", action="store_true",
                    help="keep the corpus order (default: cluster similar documents into the same blocks)")
    ix.add_argument("--no-dense", action="store_true", help="do not build the dense retriever")
    ix.add_argument("--dense-model", default=DEFAULT_DENSE_MODEL,
                    help=f"dense model: {DEFAULT_DENSE_MODEL}, a local folder or hub name")
    ix.add_argument("--dense-kind", choices=DENSE_KINDS, default=BuildConfig.dense_kind,
                    help="faiss index of the dense retriever (flat: exact, default)")
    ix.add_argument("--no-bm25", action="store_true", help="do not build the BM25 retriever")
    ix.add_argument("--bm25-analyzer", choices=BM25_ANALYZERS, default=BuildConfig.bm25_analyzer,
                    help="BM25 terms: the SPLADE WordPiece vocabulary (default) or Porter-stemmed words")
    ix.add_argument("--no-sparse-idf", action="store_true",
                    help="do not build sparse-idf (inference-free queries: IDF-weighted query tokens over "
                         "the SPLADE document vectors, no model run)")
    ix.add_argument("--skip-bad", action="store_true", help="skip bad corpus lines instead of stopping")
    ix.add_argument("--overwrite", action="store_true", help="replace an existing index folder")
    ix.add_argument("--limit", type=_positive, default=None, help="index only the first N documents")
    ix.add_argument("--no-progress", action="store_true")

    se = sub.add_parser("search", help="query an index")
    se.add_argument("--index", required=True, help="index folder")
    se.add_argument("query")
    se.add_argument("-k", type=_k, default=DEFAULT_K, help=f"hits (1..{K_MAX}, default {DEFAULT_K})")
    se.add_argument("--json", action="store_true", help="print JSON instead of a table")
    se.add_argument("--speed", choices=list(SPEEDS), default=DEFAULT_SPEED,
                    help="exact | safe (same results as exact, faster; default) | fast | fastest")
    se.add_argument("--model", default=None, help="encoder override (default: the index's)")
    se.add_argument("--mode", choices=MODES, default=None,
                    help="hybrid or one retriever (default: hybrid when the index has several)")
    se.add_argument("--fusion", type=_json_object, default=None,
                    help='hybrid fusion as JSON, e.g. \'{"method": "rrf"}\' (default: the index\'s)')
    se.add_argument("--filter", default=None, metavar="JSON",
                    help='metadata filter as JSON, e.g. \'{"field": "lang", "eq": "en"}\', '
                         '\'{"field": "year", "gte": 2010}\', {"and": [...]}, {"or": [...]}, {"not": {...}} '
                         '(lsr stats lists the fields)')

    ad = sub.add_parser("add", help="add (or replace) documents in an index: one commit at the end")
    ad.add_argument("--index", required=True, help="index folder")
    ad.add_argument("--corpus", required=True,
                    help="BEIR folder (corpus.jsonl) or JSONL file of documents ({_id|id, title?, text, "
                         "metadata?}); an id the index has is replaced")
    ad.add_argument("--batch-size", type=_positive, default=BuildConfig.batch_size,
                    help="encoding batch size")
    ad.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    ad.add_argument("--skip-bad", action="store_true", help="skip bad corpus lines instead of stopping")
    ad.add_argument("--no-progress", action="store_true")

    dl = sub.add_parser("delete", help="delete documents from an index by id: one commit")
    dl.add_argument("--index", required=True, help="index folder")
    dl.add_argument("--ids", required=True, help="file of document ids, one per line ('-': standard input)")

    mg = sub.add_parser("merge", help="merge an index's segments (the tiered policy, or down to N)")
    mg.add_argument("--index", required=True, help="index folder")
    mg.add_argument("--max-segments", type=_positive, default=None,
                    help="merge the smallest segments until at most N remain (default: the tiered policy: "
                         "segments of similar size, and segments with many deletions)")

    st = sub.add_parser("stats", help="an index's documents, deletions, segments, commit and metadata fields")
    st.add_argument("--index", required=True, help="index folder")
    st.add_argument("--json", action="store_true", help="print JSON")

    tu = sub.add_parser("tune-fusion", help="choose hybrid fusion weights on training queries")
    tu.add_argument("--index", required=True, help="index folder (with several retrievers)")
    tu.add_argument("--queries", required=True, help="queries JSONL ({_id, text}), e.g. BEIR queries.jsonl")
    tu.add_argument("--qrels", required=True, help="relevance judgements: BEIR qrels TSV or TREC qrels")
    tu.add_argument("--metric", default="ndcg@10")
    tu.add_argument("--step", type=float, default=0.1, help="weight grid step (default 0.1)")
    tu.add_argument("--normalization", choices=NORMALIZATIONS, default=FusionSpec.normalization)
    tu.add_argument("--depth", type=_bounded(1, MAX_DEPTH), default=DEFAULT_DEPTH,
                    help=f"hits per retriever (1..{MAX_DEPTH}, default {DEFAULT_DEPTH})")
    tu.add_argument("--dry-run", action="store_true", help="print the result, leave the manifest alone")

    sv = sub.add_parser("serve", help="serve an index over HTTP (settings: LSR_* variables, --config)")
    sv.add_argument("--index", default=None, help="index folder (or index_path in --config / LSR_INDEX_PATH)")
    sv.add_argument("--config", default=None, help="settings file, .toml or .json (see lsr.service.Settings)")
    sv.add_argument("--host", default=None, help="default 127.0.0.1")
    sv.add_argument("--port", type=_positive, default=None, help="default 8000")
    sv.add_argument("--model", default=None)
    sv.add_argument("--threads", type=_positive, default=None, help="search worker threads")
    sv.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="serve the collection's segments as shards on Ray actors (ADDRESS: auto, "
                         "ray://head:10001; none: a local Ray); read-only; needs the 'ray' extra")
    sv.add_argument("--shards", type=_positive, default=2,
                    help="with --ray: shards (default 2; the collection needs at least as many segments)")
    sv.add_argument("--on-shard-failure", choices=ON_FAILURE, default="partial",
                    help='with --ray, while a shard is down: answer from the others with "partial": true '
                         "and the missing shards named (default), or fail with 503")
    sv.add_argument("--shard-timeout", type=float, default=None, metavar="SECONDS",
                    help="with --ray: a shard that takes longer is counted as down (default 5)")

    adapt_arguments(sub.add_parser("adapt", help="fit the collection's inference-free queries (sparse-idf) "
                                                 "and hybrid fusion to the collection"))

    eval_arguments(sub.add_parser("eval", help="BEIR evaluation of every mode, with Pyserini baselines"))

    ex = sub.add_parser("export", help="write an index's SPLADE vectors for another engine")
    ex.add_argument("--index", required=True, help="index folder")
    ex.add_argument("--format", choices=FORMATS, default=FORMATS[0],
                    help="pyserini: Anserini JsonVectorCollection (integer impacts, -impact -pretokenized)")
    ex.add_argument("--out", required=True, help="folder to write (docs/part-*.jsonl and export.json)")
    ex.add_argument("--queries", default=None,
                    help="also encode queries (JSONL {_id, text}) into OUT/queries.tsv (Anserini TsvString)")
    ex.add_argument("--overwrite", action="store_true")

    de = sub.add_parser("demo", help="index the built-in demo corpus (stdlib docs) and serve it")
    de.add_argument("--out", default=str(DEMO_INDEX_DIR), help="where the demo index lives")
    de.add_argument("--host", default="127.0.0.1")
    de.add_argument("--port", type=_positive, default=8000)
    de.add_argument("--rebuild", action="store_true", help="rebuild the demo index even if present")
    de.add_argument("--no-serve", action="store_true", help="build the index, print examples, exit")
    return p


def _cmd_index(a) -> int:
    config = BuildConfig(model=a.model, max_length=a.max_length, batch_size=a.batch_size,
                         quantization=a.quantization, block_size=a.block_size, reorder=not a.no_reorder,
                         dense=None if a.no_dense else a.dense_model, dense_kind=a.dense_kind,
                         bm25=not a.no_bm25, bm25_analyzer=a.bm25_analyzer, sparse_idf=not a.no_sparse_idf)
    common = {"config": config, "overwrite": a.overwrite, "skip_bad": a.skip_bad,
              "show_progress": not a.no_progress, "merge": not a.no_merge}
    if a.segment_docs is not None:
        common["segment_docs"] = a.segment_docs
    if (a.vocab is not None or a.vector_scale is not None) and a.vectors is None:
        raise ValueError("--vocab and --vector-scale go with --vectors")
    if a.vectors is not None:
        if a.ray is not None or a.limit is not None:
            raise ValueError("--vectors takes neither --ray nor --limit")
        from lsr.vectorfiles import index_vectors

        summary = index_vectors(a.vectors, a.out, vocab=a.vocab, scale=a.vector_scale, **common)
    elif a.ray is not None:
        if a.limit is not None:
            raise ValueError("--ray does not take --limit")
        from lsr.ray_encode import index_corpus_ray

        summary = index_corpus_ray(a.corpus, a.out, address=None if a.ray == "local" else a.ray,
                                   actors=a.actors, batch_size=a.batch_size, device=a.device, **common)
    else:
        if a.actors is not None:
            raise ValueError("--actors goes with --ray")
        summary = index_corpus(a.corpus, a.out, device=a.device, limit=a.limit, **common)
    print(summary.line())
    return 0


def _cmd_search(a) -> int:
    if not a.query.strip():
        raise ValueError("query is empty")
    searcher = Searcher.load(a.index, model=a.model)
    # the one check of the parameters, before the warm-up
    params = searcher.params(k=a.k, mode=a.mode, speed=a.speed, fusion=a.fusion, filter=a.filter)
    _warm_up(searcher, sys.stderr, modes=[params.mode], speeds=[params.speed])
    t0 = time.perf_counter()
    hits = searcher.hits(searcher.query([a.query], params, threads=1)[0])
    took = (time.perf_counter() - t0) * 1000
    if a.json:
        out = {"query": a.query, "mode": params.mode, "took_ms": round(took, 3),
               "hits": [h.to_dict() for h in hits]}
        if params.fusion is not None:
            out["fusion"] = params.fusion.to_dict()
        if params.filter is not None:
            out["filter"] = params.filter.to_json()
        print(json.dumps(out, ensure_ascii=False))
        return 0
    for h in hits:
        snippet = " ".join(f"{h.title} | {h.text}".split()) if h.title else " ".join(h.text.split())
        weak = "  [weak match]" if h.weak else ""  # bm25: shares little of the query
        print(f"{h.rank:>4}  {h.score:9.4f}  {h.id:<24} {snippet[:90]}{weak}")
    print(f"{len(hits)} hits in {took:.1f} ms")
    return 0


#: documents encoded and staged at a time by ``lsr add`` (a progress step; the commit is one, at the end)
ADD_CHUNK = 1024
#: ``lsr merge`` stops after this many merges (each policy merge shrinks the segment count)
MAX_MERGES = 1000


def _open_writable(index: str, **options) -> Collection:
    """The collection at ``index`` with its write lock taken (a second writer fails now, with one line,
    before anything is read or encoded)."""
    c = Collection.open(index, load_encoders=False, **options)
    try:
        c.writer().acquire()
    except BaseException:
        c.close()
        raise
    return c


def _cmd_add(a) -> int:
    c = _open_writable(a.index, device=a.device)
    try:
        data = read_corpus(a.corpus, skip_bad=a.skip_bad)
        records = data.records
        if not records:
            raise LsrError(f"{a.corpus}: no documents to add")
        with tqdm(total=len(records), unit="doc", desc="encoding", disable=a.no_progress,
                  dynamic_ncols=True, file=sys.stderr) as bar:
            for start in range(0, len(records), ADD_CHUNK):
                chunk = records[start:start + ADD_CHUNK]
                c.add(chunk, batch_size=a.batch_size)
                bar.update(len(chunk))
        info = c.commit()
    finally:
        c.close()  # without a commit: the staged documents are dropped, the lock released
    if data.skipped:
        print(f"skipped {counted(data.skipped, 'bad line')}", file=sys.stderr)
    print(info.line())
    return 0


def _read_ids(source: str) -> list[str]:
    """Document ids, one per line (blank lines skipped), from a file or standard input (``-``)."""
    if source == "-":
        lines = sys.stdin.read().splitlines()
    else:
        path = Path(source)
        if not path.is_file():
            raise LsrError(f"{source}: no such ids file")
        lines = path.read_text(encoding="utf-8").splitlines()
    ids = [line.strip() for line in lines if line.strip()]
    if not ids:
        raise LsrError(f"{'standard input' if source == '-' else source}: no ids (one per line)")
    return ids


def _cmd_delete(a) -> int:
    c = _open_writable(a.index)
    try:
        ids = _read_ids(a.ids)
        found = c.delete(ids)
        if not found:
            print(f"none of the {counted(len(ids), 'id')} is in the index: nothing to commit")
            return 0
        info = c.commit()
    finally:
        c.close()
    print(f"{found} of {counted(len(ids), 'id')} found")
    print(info.line())
    return 0


def _cmd_merge(a) -> int:
    c = _open_writable(a.index)
    try:
        done = 0
        while done < MAX_MERGES:
            info = c.merge(max_segments=a.max_segments)
            if info is None:
                break
            done += 1
            print(info.line(), flush=True)
    finally:
        c.close()
    if not done:
        print("nothing to merge")
    return 0


def _cmd_stats(a) -> int:
    c = Collection.open(a.index, load_encoders=False)
    try:
        s = c.stats()
    finally:
        c.close()
    if a.json:
        print(json.dumps(s, ensure_ascii=False))
        return 0
    print(f"{a.index}: {counted(s['documents'], 'document')} ({counted(s['deleted'], 'deleted row')}), "
          f"{counted(s['segments'], 'segment')}, commit {s['generation']}")
    for seg in s.get("segment_sizes", []):
        print(f"  segment {seg['name']:<24} {seg['documents']:>10,} rows {seg['deleted']:>10,} deleted")
    fields = s.get("fields") or {}
    print("metadata fields: " + (", ".join(f"{n} ({t})" for n, t in fields.items()) if fields else "none"))
    return 0


def _warm_up(searcher, file, **kw) -> None:
    """Searcher.warm_up with a line on ``file``: the first query must not wait for Numba to compile."""
    print("warming up the search kernels...", end=" ", file=file, flush=True)
    print(f"done in {searcher.warm_up(**kw):.1f} s", file=file, flush=True)


def _check_port(host: str, port: int) -> None:
    """Fail with one line, before anything is loaded, when ``host:port`` cannot be listened on (binding as
    uvicorn will: the address family by the host, SO_REUSEADDR)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            hint = "another server is listening there: stop it, or choose another port (--port, LSR_PORT)"
        elif isinstance(e, socket.gaierror):
            hint = "unknown host (--host, LSR_HOST)"
        else:
            hint = "choose another host or port"
        raise LsrError(f"cannot listen on {host}:{port}: {e.strerror or e}; {hint}") from None


def _serve(index: str | Path | None, host: str | None = None, port: int | None = None,
           model: str | None = None, config: str | None = None, threads: int | None = None,
           banner: str = "", ray: str | None = None, shards: int = 2, on_shard_failure: str = "partial",
           shard_timeout: float | None = None) -> int:
    try:  # the optional 'serve' extra (fastapi, uvicorn): imported only to serve
        import uvicorn

        from lsr.service import Settings, create_app
    except ImportError as e:
        raise LsrError(f"serving needs the 'serve' extra: pip install 'lsr-engine[serve]' ({e.name} missing)"
                       ) from None

    given = {"index_path": index, "host": host, "port": port, "model": model, "threads": threads}
    settings = Settings.load(config, **{k: v for k, v in given.items() if v is not None})
    if index is None and config is None and "LSR_INDEX_PATH" not in os.environ:
        raise LsrError("which index? give --index DIR (or index_path in --config, or LSR_INDEX_PATH)")
    _check_port(settings.host, settings.port)  # a busy port fails now, not after loading the index
    # open it here, so that a bad index fails with one line before the server starts
    if ray is not None:
        from lsr.shards import DEFAULT_TIMEOUT_S, sharded_service  # ray itself: inside

        if shard_timeout is not None and not 0 < shard_timeout <= 3600:
            raise ValueError(f"--shard-timeout must be in (0, 3600] seconds, got {shard_timeout}")
        settings, searcher = sharded_service(settings, address=None if ray == "local" else ray, shards=shards,
                                             on_failure=on_shard_failure,
                                             timeout_s=shard_timeout or DEFAULT_TIMEOUT_S)
    else:
        searcher = Searcher.load(settings.index_path, model=settings.model, device=settings.device)
    _warm_up(searcher, sys.stdout)  # before the server listens, so its first query answers at once
    app = create_app(settings, searcher=searcher)
    url = f"http://{settings.host}:{settings.port}"
    print(f"serving {searcher.info['documents']:,} documents from {settings.index_path} on {url} "
          f"(search page: {url}/, API docs: {url}/docs, {settings.threads} search threads)", flush=True)
    print(banner, end="", flush=True)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", access_log=settings.access_log,
                timeout_keep_alive=settings.keep_alive_s)
    return 0


def _cmd_export(a) -> int:
    index, name = open_sparse(a.index)
    if not name:
        raise LsrError(f"{a.index}: the manifest names no encoder")
    tokens = vocabulary(name, index.vocab_size)
    check_target(a.out, overwrite=a.overwrite)  # refuse before encoding anything
    queries = read_queries(a.queries) if a.queries else None  # bad queries fail before anything is written
    vectors = None
    if queries:
        from lsr.encoders import SpladeEncoder  # torch: only when queries are encoded

        encoder = SpladeEncoder.from_pretrained(name)
        qids = list(queries)
        vectors = dict(zip(qids, lucene_queries(encoder.encode_queries([queries[q] for q in qids]), tokens)))
    summary = export_pyserini(index, a.out, tokens=tokens, overwrite=a.overwrite, queries=vectors,
                              source=a.index)
    print(f"exported {counted(summary.documents, 'document')}, {counted(summary.postings, 'posting')} "
          f"-> {summary.path / 'docs'}")
    if vectors:
        print(f"encoded {counted(len(vectors), 'query', 'queries')} -> {summary.path / 'queries.tsv'} "
              f"(SearchCollection -topicReader TsvString -impact -pretokenized)")
    return 0


def _cmd_tune(a) -> int:
    searcher = Searcher.load(a.index)
    res = tune_fusion(searcher, read_queries(a.queries), read_qrels(a.qrels), metric=a.metric, step=a.step,
                      normalization=a.normalization, depth=a.depth)
    for name, v in res.singles.items():
        print(f"{name:<8} {a.metric} {v:.4f}")
    print(f"{'rrf':<8} {a.metric} {res.rrf:.4f}")
    weights = ", ".join(f"{n} {w:g}" for n, w in res.fusion["weights"].items())
    print(f"best convex ({a.normalization}): {weights}: {a.metric} {res.value:.4f} "
          f"({len(res.tried)} weightings, {res.fusion['tuned']['queries']} queries)")
    if not a.dry_run:
        write_fusion(a.index, res.fusion)
        print(f"written to {Path(a.index) / 'manifest.json'} as the default fusion")
    return 0


def _cmd_demo(a) -> int:
    out = Path(a.out)
    ready = False
    if out.exists() and not a.rebuild:
        try:
            ready = load_manifest(out).corpus.get("name") == "demo"
        except LsrError:
            ready = False
    if not a.no_serve:
        _check_port(a.host, a.port)  # before a build of minutes, not after
    if ready:
        print(f"using the demo index in {out} (--rebuild to build it again)")
    else:
        corpus = out.parent / "demo-corpus.jsonl"
        n = write_demo_corpus(corpus)
        print(f"demo corpus: {n:,} passages of Python standard library documentation -> {corpus}")
        summary = index_corpus(corpus, out, overwrite=True, corpus_name="demo")
        print(summary.line())
    url = f"http://{a.host}:{a.port}"
    q = next(iter(demo_queries().values()))["text"]
    banner = (f"\nSearch page: {url}/   API docs: {url}/docs\nTry:\n"
              f"  curl -s '{url}/search?q=copy+a+directory+tree&k=3'\n"
              f"  curl -s -X POST {url}/search -H 'Content-Type: application/json' "
              f"-d '{json.dumps({'query': q, 'k': 5})}'\n\n")
    if a.no_serve:
        print(banner, end="")
        return 0
    return _serve(out, a.host, a.port, banner=banner)  # the examples once the kernels are warm


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lsr`` console script; returns the exit code (2 for bad input)."""
    args = _parser().parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    handlers = {"index": _cmd_index, "search": _cmd_search, "demo": _cmd_demo, "tune-fusion": _cmd_tune,
                "eval": run_from_args, "export": _cmd_export, "adapt": adapt_from_args, "add": _cmd_add,
                "delete": _cmd_delete, "merge": _cmd_merge, "stats": _cmd_stats,
                "serve": lambda a: _serve(a.index, a.host, a.port, a.model, a.config, a.threads, ray=a.ray,
                                          shards=a.shards, on_shard_failure=a.on_shard_failure,
                                          shard_timeout=a.shard_timeout)}
    return run_command(args.command, handlers[args.command], args)
