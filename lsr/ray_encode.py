"""Encoding on Ray (``lsr index --ray [ADDRESS]``, the ``lsr-engine[ray]`` extra): a corpus read with Ray
Data, tokenised on CPU workers, encoded by an actor pool (one GPU per actor where the cluster has GPUs), each
actor batch written as one segment of a living collection into the :class:`lsr.bulk.BulkBuilder`'s temporary
folder (a path every node shares); the driver commits the segments when every batch is written.

The pipeline, in two Ray Data passes over the corpus file:

1. *Scan* (CPU tasks): the file is cut into byte ranges (``ray.data.from_items``); a task reads the lines that
   start in its range, each with its byte offset, parses and checks every line as :mod:`lsr.corpus` does, and
   returns per line: the offset, a 64-bit hash of the id, BM25's WordPiece length and the error, if any. The
   driver then knows, before any model runs: the bad lines (``file:line`` from the offset: the newlines
   before it), the repeated ids (the first occurrence wins, hashes confirmed by reading both lines), what
   ``skip_bad`` skips, and BM25's average document length, exact (the lengths BM25 itself computes, over the
   kept documents), which every worker's segment must share (docs/living.md).
2. *Encode*: the same read, tokenised for SPLADE on CPU tasks (``map_batches``), then
   ``map_batches(EncoderActor, compute=ActorPoolStrategy(size=actors), num_gpus=1|0, batch_size=...)``, the
   batch ``segment_docs`` (fewer when the corpus is too small to give every actor two). Each actor batch
   becomes one segment (:func:`lsr.bulk.write_part`) named by a hash of its documents' byte offsets, so a
   batch retried after its worker died (Ray Data's actor pools restart actors and retry their tasks:
   ``max_restarts=-1``, ``max_task_retries=-1`` by default) rewrites the same segment instead of adding a
   second copy. The pipeline returns one row per segment; the driver keeps each name once, checks the
   documents add up to the scan's count, adds the segments in file order and calls
   :meth:`lsr.bulk.BulkBuilder.finish` (commit, rename, bounded merges) only then.

Ray Data fuses a task stage into the actor stage after it when their resource requests are equal; the
tokenising tasks ask for memory (:data:`TASK_MEMORY`) so that they stay a stage of their own.

Why not ``ray.data.read_text``: it drops line numbers, which the errors (``file:line``) and "the first
occurrence of an id wins" need; a byte offset is also a stable key for a document across both passes.

Every node needs lsr-engine and the model (or Hub access) and must see the corpus file and the output folder
at the same paths.

Example:
    >>> from lsr.ray_encode import index_corpus_ray
    >>> index_corpus_ray("corpus.jsonl", "my-index", address="auto", actors=8)   # doctest: +SKIP
    IndexSummary(path=PosixPath('my-index'), documents=8841823, ...)
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import re
import socket
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from lsr import corpus as C
from lsr.bulk import DEFAULT_SEGMENT_DOCS, BulkBuilder, write_part
from lsr.collection import IndexSummary
from lsr.errors import CorpusError, LsrError
from lsr.index.storage import check_target, remove_stale
from lsr.params import BuildConfig
from lsr.segments import SegmentRef
from lsr.util import sha256_file

RAY_HINT = "needs the 'ray' extra: pip install 'lsr-engine[ray]'"
#: byte ranges of the corpus file read by one task: at least this, at most MAX_CHUNK_BYTES
MIN_CHUNK_BYTES = 1 << 18
MAX_CHUNK_BYTES = 1 << 24
#: an environment variable naming a marker file: the first actor batch written while the file is missing
#: creates it and kills its worker (os._exit), to test that a lost worker's batch is retried
FAIL_ONCE_ENV = "LSR_RAY_FAIL_ONCE"
#: logical CPUs of a reading/tokenising task
TASK_CPUS = 1.0
#: the memory a tokenising task asks for (a tokenizer and one byte range of texts); also what keeps Ray Data
#: from fusing the tokenising stage into the actors' (it fuses stages whose resource requests are equal)
TASK_MEMORY = 1 << 29
_WHERE = "\x00"
NOT_UTF8 = "not valid UTF-8"


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or LsrError naming the extra."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise LsrError(f"encoding on Ray {RAY_HINT}") from None
    return ray


def connect(address: str | None = None) -> bool:
    """Connect to the Ray cluster at ``address`` (None: ``RAY_ADDRESS`` or a new local instance; ``"auto"``:
    the running one), unless Ray is initialised already. True when this call connected (the caller then
    calls ``ray.shutdown()``); LsrError, one line naming the address, when it cannot.

    Example:
        >>> connect("auto")   # doctest: +SKIP
        True
    """
    ray = import_ray()
    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False)
    except Exception as e:  # ConnectionError, RuntimeError, ValueError, ...: Ray's own message, one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        where = f"at {address!r}" if address else "(a local instance)"
        raise LsrError(f"cannot start or reach the Ray cluster {where}: {first}") from None
    return True


def check_reachable(address: str | None, *, timeout: float = 5.0) -> None:
    """LsrError at once when ``address`` is ``[ray://]host:port`` and nothing answers there (``ray.init``
    itself keeps retrying for minutes)."""
    m = re.fullmatch(r"(?:ray://)?([^:/\s]+):(\d{1,5})", address or "")
    if not m:
        return
    try:
        socket.create_connection((m.group(1), int(m.group(2))), timeout=timeout).close()
    except OSError as e:
        raise LsrError(f"cannot reach the Ray cluster at {address!r}: {e.strerror or e}") from None


# -- reading (runs on workers) --------------------------------------------------------------------------
def read_range(path: str | Path, start: int, end: int) -> list[tuple[int, bytes]]:
    """The lines (bytes) of ``path`` that start in the byte range ``[start, end)``, with their offsets: the
    ranges of a partition of the file give every line exactly once.

    Example:
        >>> read_range("corpus.jsonl", 0, 1 << 20)[0]   # doctest: +SKIP
        (0, b'{"_id": "d1", ...}\\n')
    """
    out = []
    with open(path, "rb") as fh:
        pos = start
        if start > 0:
            fh.seek(start - 1)
            if fh.read(1) != b"\n":  # inside a line that started before `start`: the previous range's
                pos = start + len(fh.readline())
        while pos < end:
            line = fh.readline()
            if not line:
                break
            out.append((pos, line))
            pos += len(line)
    return out


def parse_line(raw: bytes) -> C.Record:
    """One corpus line checked as :func:`lsr.corpus.read_corpus` does (CorpusError without the location)."""
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorpusError(f"{_WHERE}: {NOT_UTF8}") from None
    return C.parse_record(line, _WHERE, {}, 0)


def id_key(doc_id: str) -> int:
    """A 64-bit hash of a document id (repeated ids are found by hash, then confirmed)."""
    return int.from_bytes(hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest(), "little")


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    from lsr.encoders._hf import quiet_hf

    with quiet_hf():
        return AutoTokenizer.from_pretrained(path)


def _lines(batch: dict) -> list[tuple[int, bytes]]:
    out = []
    for path, start, end in zip(batch["path"], batch["start"], batch["end"], strict=True):
        out += read_range(str(path), int(start), int(end))
    return out


def scan_batch(batch: dict, *, tokenizer: str | None) -> dict:
    """Ray Data stage: byte ranges -> per line (offset, id hash, BM25 WordPiece length or -1, error)."""
    offsets, keys, texts, errors = [], [], [], []
    for offset, raw in _lines(batch):
        if not raw.strip():
            continue
        try:
            rec = parse_line(raw)
        except CorpusError as e:
            offsets.append(offset)
            keys.append(0)
            texts.append(None)
            errors.append(str(e).removeprefix(f"{_WHERE}: "))
            continue
        offsets.append(offset)
        keys.append(id_key(rec.id))
        texts.append(rec.content)
        errors.append("")
    lengths = np.full(len(offsets), -1, np.int64)
    good = [i for i, t in enumerate(texts) if t is not None]
    if tokenizer is not None and good:  # as lsr.bm25.BM25Encoder counts a document's length
        enc = _tokenizer(tokenizer)([texts[i] for i in good], add_special_tokens=False, truncation=False,
                                    verbose=False, return_attention_mask=False, return_token_type_ids=False)
        lengths[good] = [len(x) for x in enc["input_ids"]]
    return {"offset": np.array(offsets, np.int64), "key": np.array(keys, np.uint64), "length": lengths,
            "error": np.array(errors, dtype=object)}


def _skipped(skip: np.ndarray, offset: int) -> bool:
    j = int(np.searchsorted(skip, offset))
    return j < skip.size and int(skip[j]) == offset


def tokenize_batch(batch: dict, *, tokenizer: str, max_length: int, skip: np.ndarray) -> Any:
    """Ray Data stage: byte ranges -> the kept documents (offset, id, title, text, metadata as JSON) with
    their SPLADE input ids (as :class:`lsr.encoders.SpladeEncoder` tokenises), a pyarrow table."""
    import pyarrow as pa

    rows = []
    for offset, raw in _lines(batch):
        if not raw.strip() or _skipped(skip, offset):
            continue
        try:
            rows.append((offset, parse_line(raw)))
        except CorpusError as e:  # the scan found this line good
            raise CorpusError(f"the corpus changed during the build (at byte {offset}: "
                              f"{str(e).removeprefix(_WHERE + ': ')})") from None
    ids = _tokenizer(tokenizer)([r.content for _, r in rows], add_special_tokens=True, truncation=True,
                                max_length=max_length, return_attention_mask=False,
                                return_token_type_ids=False)["input_ids"] if rows else []
    return pa.table({
        "offset": pa.array([o for o, _ in rows], pa.int64()),
        "id": pa.array([r.id for _, r in rows], pa.string()),
        "title": pa.array([r.title for _, r in rows], pa.string()),
        "text": pa.array([r.text for _, r in rows], pa.string()),
        "metadata": pa.array([json.dumps(r.metadata) if r.metadata else "" for _, r in rows], pa.string()),
        "input_ids": pa.array(ids, pa.list_(pa.int32())),
    })


class EncoderActor:
    """Ray Data actor: loads the encoders once, then turns each batch of tokenised documents into one
    segment written with :func:`lsr.bulk.write_part`; returns one row per segment (name, documents, first
    byte offset, and the WordPiece document frequencies sparse-idf's IDF table needs)."""

    def __init__(self, *, config: dict, device: str, batch_size: int, folder: str, template: dict,
                 fail_once: str | None = None) -> None:
        from lsr.encoders import SpladeEncoder

        cfg = BuildConfig(**config)
        self.encoder = SpladeEncoder.from_pretrained(cfg.model, device=device, max_length=cfg.max_length)
        self.dense = None
        if cfg.dense:
            from lsr.encoders import DenseEncoder

            self.dense = DenseEncoder.from_pretrained(cfg.dense, device=device, max_length=cfg.max_length)
        self.batch_size, self.folder, self.template = batch_size, folder, template
        self.fail_once = fail_once

    def __call__(self, batch: Any) -> Any:
        import pyarrow as pa

        order = np.argsort(batch.column("offset").to_numpy(), kind="stable")  # file order: deterministic
        batch = batch.take(pa.array(order))
        offsets = batch.column("offset").to_numpy()
        cols = [batch.column(c).to_pylist() for c in ("id", "title", "text", "metadata")]
        records = [C.Record(i, t, x, json.loads(m) if m else {}) for i, t, x, m in zip(*cols, strict=True)]
        sparse = self.encoder.encode_token_ids(batch.column("input_ids").to_pylist(),
                                               batch_size=self.batch_size)
        dense = None
        if self.dense is not None:
            dense = self.dense.encode_documents([r.content for r in records], batch_size=self.batch_size)
        digest = hashlib.blake2b(np.ascontiguousarray(offsets, np.int64).tobytes(), digest_size=12)
        name = "r" + digest.hexdigest()  # the batch's documents name it: a retried batch, the same segment
        wordpiece: dict = {}
        ref = write_part(self.folder, name, self.template, records, sparse=sparse, dense=dense,
                         tokenizer=self.encoder.tokenizer, wordpiece=wordpiece)
        if self.fail_once and not os.path.exists(self.fail_once):
            Path(self.fail_once).write_text(name)
            os._exit(1)  # the test hook: this worker dies after writing its first segment
        stats = wordpiece.get("stats")
        df = np.asarray(stats.df, np.int64) if stats is not None else np.zeros(0, np.int64)
        nz = np.flatnonzero(df)
        return pa.table({
            "name": [ref.name], "dir": [ref.dir], "documents": pa.array([ref.documents], pa.int64()),
            "first": pa.array([int(offsets[0])], pa.int64()), "df_size": pa.array([df.size], pa.int64()),
            "df_terms": pa.array([nz.astype(np.int32)], pa.list_(pa.int32())),
            "df_counts": pa.array([df[nz]], pa.list_(pa.int64())),
            "idf_docs": pa.array([int(stats.n_docs) if stats is not None else 0], pa.int64()),
        })


# -- the driver -----------------------------------------------------------------------------------------
def line_number(path: str | Path, offset: int) -> int:
    """The 1-based line number of the line starting at byte ``offset`` (newlines before it, plus one)."""
    n, left = 1, offset
    with open(path, "rb") as fh:
        while left > 0:
            block = fh.read(min(left, 1 << 24))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


def _id_at(path: Path, offset: int) -> str:
    with open(path, "rb") as fh:
        fh.seek(offset)
        return parse_line(fh.readline()).id


def _ranges(path: Path, cpus: int) -> list[dict]:
    size = path.stat().st_size
    step = int(min(MAX_CHUNK_BYTES, max(MIN_CHUNK_BYTES, size // max(4 * cpus, 1))))
    return [{"path": str(path), "start": s, "end": min(s + step, size)} for s in range(0, max(size, 1), step)]


@dataclasses.dataclass
class ScanResult:
    """What the scan found: the byte offsets of the documents kept, of the lines skipped, BM25's average
    length (None without BM25), and the skipped lines' first messages."""

    kept: np.ndarray
    skip: np.ndarray
    avgdl: float | None
    examples: list[str]


def check_scan(path: Path, offsets: np.ndarray, keys: np.ndarray, lengths: np.ndarray, errors: dict[int, str],
               *, skip_bad: bool) -> ScanResult:
    """The driver's side of the scan: the first bad line or repeated id in file order raises CorpusError
    (``file:line: ...``, as :func:`lsr.corpus.read_corpus` says it), or with ``skip_bad`` is skipped."""
    order = np.argsort(offsets, kind="stable")
    offsets, keys, lengths = offsets[order], keys[order], lengths[order]
    bad = {int(o): msg for o, msg in errors.items()}
    good = np.ones(offsets.size, bool)
    good[np.isin(offsets, np.fromiter(bad, np.int64, len(bad)))] = False
    g_off, g_key = offsets[good], keys[good]
    by_key = np.lexsort((g_off, g_key))
    same = np.flatnonzero(g_key[by_key][1:] == g_key[by_key][:-1]) + 1
    first_of: dict[str, int] = {}
    for j in sorted(set(same.tolist()) | set((same - 1).tolist())):  # candidates: confirm by the real ids
        o = int(g_off[by_key[j]])
        doc_id = _id_at(path, o)
        if doc_id in first_of and first_of[doc_id] < o:
            bad[o] = f"repeats id {doc_id!r} (first seen on line {line_number(path, first_of[doc_id])})"
        elif doc_id not in first_of:
            first_of[doc_id] = o
    fatal = [o for o, msg in bad.items() if msg == NOT_UTF8]  # read_corpus stops there too, skip_bad or not
    if bad and (fatal or not skip_bad):
        o = min(fatal or bad)
        raise CorpusError(f"{path}:{line_number(path, o)}: {bad[o]}")
    skip = np.array(sorted(bad), np.int64)
    keep = ~np.isin(offsets, skip)
    if not keep.any():
        why = f" ({C.counted(len(bad), 'bad line')} skipped)" if bad else ""
        raise CorpusError(f"{path}: no documents{why}")
    examples = [f"{path}:{line_number(path, o)}: {bad[o]}" for o in skip[:3].tolist()]
    kept_len = lengths[keep]
    avgdl = None
    if kept_len.size and kept_len.min() >= 0:
        mean = float(kept_len.astype(np.float64).mean())
        avgdl = mean if mean > 0 else 1.0  # as BM25Encoder.fit
    return ScanResult(offsets[keep], skip, avgdl, examples)


_REMOTE_ERROR = re.compile(r"^(lsr(?:\.\w+)*)\.(\w+): (.+)$", re.M)


def remote_error(e: BaseException) -> LsrError | None:
    """The lsr-engine error a Ray worker raised, rebuilt from the text of Ray's exception (Ray Data passes
    the worker's traceback as text): its class when the driver has it loaded, else :class:`LsrError`; None
    for any other exception.

    Example:
        >>> remote_error(RuntimeError("...\\nlsr.errors.CorpusError: a.jsonl:3: bad\\n"))  # doctest: +SKIP
        CorpusError('a.jsonl:3: bad')
    """
    if isinstance(e, LsrError) and not type(e).__module__.startswith("ray"):
        return None  # raised here, not on a worker
    m = _REMOTE_ERROR.search(str(e))
    if m is None:
        return None
    cls = getattr(sys.modules.get(m.group(1)), m.group(2), None)
    if not (isinstance(cls, type) and issubclass(cls, LsrError)):
        cls = LsrError
    return cls(m.group(3).strip())


def index_corpus_ray(corpus: str | Path, out: str | Path, *, address: str | None = None,
                     config: BuildConfig | None = None, segment_docs: int = DEFAULT_SEGMENT_DOCS,
                     actors: int | None = None, batch_size: int = 32, overwrite: bool = False,
                     merge: bool = True, skip_bad: bool = False, show_progress: bool = True,
                     device: str = "auto", encoder: Any = None) -> IndexSummary:
    """Index a BEIR folder or JSONL file into ``out`` on Ray (see the module docstring): the same collection
    as :meth:`lsr.collection.Collection.build` (as segments of up to ``segment_docs`` documents, merged up to
    :data:`lsr.bulk.MERGE_MAX_DOCS` unless ``merge=False``), with the encoding spread over ``actors`` Ray
    actors (default: one per GPU of the cluster; without GPUs, one per two CPUs). ``address``: the cluster
    (see :func:`connect`); ``batch_size``: the encoders' batch; ``device``: the actors' (``"cpu"``: no GPUs
    asked for even where the cluster has some); ``out`` must be on a path every node shares;
    ``encoder``: a loaded :class:`lsr.encoders.SpladeEncoder` of ``config.model`` for the manifest's
    query-side description (default: loaded on the driver's CPU; the workers load their own).

    Example:
        >>> index_corpus_ray("corpus.jsonl", "idx", actors=2)  # doctest: +SKIP
    """
    config = config or BuildConfig()
    for what, v in (("segment_docs", segment_docs), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{what} must be an integer >= 1, got {v!r}")
    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise ValueError(f"actors must be an integer >= 1, got {actors!r}")
    if config.bm25 and config.bm25_analyzer != "wordpiece":
        raise ValueError(f"BM25's {config.bm25_analyzer!r} analyzer has a vocabulary per build: a build on "
                         "Ray needs bm25_analyzer='wordpiece' (or no BM25)")
    f = C.corpus_file(corpus).resolve()
    out = Path(out)
    remove_stale(out)  # what killed builds left, then fail now rather than after the scan
    check_target(out, overwrite=overwrite, inputs=[corpus])
    ray = import_ray()
    started = connect(address)
    ctx = ray.data.DataContext.get_current()
    quiet = logging.getLogger("ray.data")
    was = ctx.enable_progress_bars, quiet.level
    ctx.enable_progress_bars = show_progress
    if not show_progress:
        quiet.setLevel(logging.ERROR)
    try:
        return _build(ray, f, corpus, out, config=config, segment_docs=segment_docs, actors=actors,
                      batch_size=batch_size, overwrite=overwrite, merge=merge, skip_bad=skip_bad,
                      show_progress=show_progress, device=device, encoder=encoder)
    except Exception as e:
        cause = remote_error(e)
        if cause is None:
            raise
        raise cause from None
    finally:
        ctx.enable_progress_bars = was[0]
        quiet.setLevel(was[1])
        if started:
            ray.shutdown()


def _build(ray: Any, f: Path, corpus: str | Path, out: Path, *, config: BuildConfig, segment_docs: int,
           actors: int | None, batch_size: int, overwrite: bool, merge: bool, skip_bad: bool,
           show_progress: bool, device: str, encoder: Any) -> IndexSummary:
    from lsr.encoders import SpladeEncoder
    from lsr.encoders.resolve import resolve_model

    res = ray.cluster_resources()
    cpus, gpus = max(int(res.get("CPU", 1)), 1), int(res.get("GPU", 0)) if device != "cpu" else 0
    actors = actors or (gpus if gpus else max(1, cpus // 2))
    if gpus and actors > gpus:
        raise ValueError(f"{actors} actors of one GPU each, but the Ray cluster has {gpus} GPUs")
    # logical CPUs: the actors leave room for the reading/tokenising tasks (else these never start)
    actor_cpus = 1.0 if cpus - actors >= TASK_CPUS else max(0.1, (cpus - TASK_CPUS) / actors)
    tok_path = resolve_model(config.model)
    if encoder is None:  # the query-side descriptions (manifest): a copy of the models on the driver's CPU
        encoder = SpladeEncoder.from_pretrained(config.model, device="cpu", max_length=config.max_length)
    dense_encoder = None
    if config.dense:
        from lsr.encoders import DenseEncoder

        dense_encoder = DenseEncoder.from_pretrained(config.dense, device="cpu", max_length=config.max_length)
    # 1. scan: check every line, find repeated ids, BM25's average length
    ranges = _ranges(f, cpus)
    scan = ray.data.from_items(ranges, override_num_blocks=len(ranges)).map_batches(
        scan_batch, batch_size=1, num_cpus=TASK_CPUS,
        fn_kwargs={"tokenizer": tok_path if config.bm25 else None})
    offsets, keys, lengths, errors = [], [], [], {}
    for b in scan.iter_batches(batch_size=None, batch_format="numpy"):
        offsets.append(b["offset"])
        keys.append(b["key"])
        lengths.append(b["length"])
        errors.update({int(o): str(m) for o, m in zip(b["offset"], b["error"], strict=True) if m})
    cat = (lambda xs, dt: np.concatenate(xs).astype(dt) if xs else np.zeros(0, dt))  # noqa: E731
    found = check_scan(f, cat(offsets, np.int64), cat(keys, np.uint64), cat(lengths, np.int64), errors,
                       skip_bad=skip_bad)
    del offsets, keys, lengths
    # 2. encode, one segment per actor batch: segment_docs, or fewer when the corpus is too small to give
    # every actor two batches of that size (the segments are merged at the end anyway)
    per_batch = min(segment_docs, max(1, -(-int(found.kept.size) // (2 * actors))))
    name = Path(corpus).name if Path(corpus).is_dir() else f.stem
    info = {"name": name, "path": str(f), "sha256": sha256_file(f), "documents": int(found.kept.size),
            "skipped": int(found.skip.size)}
    with BulkBuilder(out, config=config, segment_docs=segment_docs, overwrite=overwrite, inputs=[corpus],
                     corpus=info, encoder=encoder, dense_encoder=dense_encoder, device="cpu",
                     show_progress=False, tokenizer=encoder.tokenizer, bm25_avgdl=found.avgdl) as builder:
        actor_args = {"config": config.settings(), "device": device, "batch_size": batch_size,
                      "folder": str(builder.folder), "template": builder.template(),
                      "fail_once": os.environ.get(FAIL_ONCE_ENV) or None}
        ds = ray.data.from_items(ranges, override_num_blocks=len(ranges)).map_batches(
            tokenize_batch, batch_size=1, batch_format="numpy", num_cpus=TASK_CPUS, memory=TASK_MEMORY,
            fn_kwargs={"tokenizer": tok_path, "max_length": config.max_length, "skip": found.skip})
        # Ray Data restarts a dead actor and retries its batch (max_restarts=-1, max_task_retries=-1 are its
        # defaults for actor pools)
        ds = ds.map_batches(EncoderActor, batch_size=per_batch, batch_format="pyarrow",
                            compute=ray.data.ActorPoolStrategy(size=actors), num_gpus=1 if gpus else 0,
                            num_cpus=actor_cpus, fn_constructor_kwargs=actor_args)
        parts: dict[str, dict] = {}
        for row in ds.iter_rows():
            row = dict(row)
            if row["name"] in parts and parts[row["name"]]["documents"] != row["documents"]:
                raise LsrError(f"segment {row['name']} was written twice with different documents")
            parts[row["name"]] = row
        total = sum(int(p["documents"]) for p in parts.values())
        if total != found.kept.size:
            raise LsrError(f"the workers wrote {total:,} documents, the corpus has {found.kept.size:,}")
        for p in sorted(parts.values(), key=lambda p: int(p["first"])):
            df = np.zeros(int(p["df_size"]), np.int64)
            df[np.asarray(p["df_terms"], np.int64)] = np.asarray(p["df_counts"], np.int64)
            stats = SimpleNamespace(df=df, n_docs=int(p["idf_docs"])) if int(p["idf_docs"]) else None
            builder.add_segment(SegmentRef(name=p["name"], dir=p["dir"], documents=int(p["documents"])),
                                wordpiece=stats)
        return builder.finish(merge=merge)
