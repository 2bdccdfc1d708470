"""BEIR data sets: a folder in the BEIR layout, a BEIR name downloaded once into a cache, or ``demo``.

The layout (Thakur et al., NeurIPS 2021 Datasets and Benchmarks)::

    corpus.jsonl        {"_id", "title", "text"} per line
    queries.jsonl       {"_id", "text"} per line
    qrels/<split>.tsv   query-id <TAB> corpus-id <TAB> score, after a header line

A malformed folder is refused with a :class:`~lsr.errors.CorpusError` naming the file and the line.

Example:
    >>> from lsr.eval.beir import load_beir
    >>> ds = load_beir("../shared/data/beir/scifact", split="test")   # doctest: +SKIP
    >>> len(ds.queries), ds.name                                       # doctest: +SKIP
    (300, 'scifact')
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from urllib.error import HTTPError, URLError
from urllib.request import urlopen

from tqdm.auto import tqdm

from lsr.corpus import json_record, jsonl_lines
from lsr.demo import demo_queries, write_demo_corpus
from lsr.errors import CorpusError, LsrError
from lsr.eval.metrics import read_qrels
from lsr.util import sha256_file

__all__ = ["BEIR_URL", "CACHE_DIR", "BeirDataset", "read_queries", "load_beir", "resolve_beir",
           "download_beir", "write_demo_beir"]

#: Where BEIR publishes its data sets (the URL the ``beir`` package downloads from).
BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
#: Downloaded data sets and built indexes live under this folder unless told otherwise.
CACHE_DIR = Path(os.environ.get("LSR_CACHE_DIR", Path.home() / ".cache" / "lsr-engine"))
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR data set: the corpus file, the judged queries and their qrels.

    ``queries`` holds only the queries that have judgements in ``split`` (as BEIR's own loader does);
    ``checksums`` maps each file read to its sha256.
    """

    name: str
    path: Path
    split: str
    corpus: Path
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    checksums: dict[str, str] = field(default_factory=dict)


def read_queries(path: str | Path) -> dict[str, str]:
    """Queries JSONL (BEIR: one ``{"_id", "text"}`` per line) -> ``{query_id: text}``.

    Raises CorpusError naming the file and line of a bad record (not JSON, no id or text, a repeated id).
    """
    path = Path(path)
    out: dict[str, str] = {}
    for n, line in jsonl_lines(path):
        where = f"{path}:{n}"
        obj, qid = json_record(line, where)
        text = obj.get("text")
        if not isinstance(qid, str) or not qid.strip():
            raise CorpusError(f"{where}: no '_id' (a non-empty string)")
        if not isinstance(text, str):
            raise CorpusError(f"{where}: query {qid!r} has no 'text' string")
        if qid in out:
            raise CorpusError(f"{where}: repeats query id {qid!r}")
        out[qid] = text
    if not out:
        raise CorpusError(f"{path}: no queries")
    return out


def _splits(folder: Path) -> list[str]:
    return sorted(p.stem for p in (folder / "qrels").glob("*.tsv"))


def load_beir(source: str | Path, *, split: str = "test", cache_dir: str | Path | None = None,
              checksums: bool = True) -> BeirDataset:
    """Open a BEIR data set: a folder, ``"demo"`` (the built-in corpus) or a BEIR name (downloaded once).

    Queries and qrels are read and checked here; the corpus is checked line by line when it is indexed
    (:func:`lsr.corpus.read_corpus`). With ``checksums`` the sha256 of each file is recorded.
    """
    folder = resolve_beir(source, cache_dir=cache_dir)
    corpus = folder / "corpus.jsonl"
    for f in (corpus, folder / "queries.jsonl"):
        if not f.is_file():
            raise CorpusError(f"{folder}: not a BEIR folder: {f.name} is missing")
    qrels_file = folder / "qrels" / f"{split}.tsv"
    if not qrels_file.is_file():
        have = ", ".join(_splits(folder)) or "none"
        raise CorpusError(f"{folder}: no qrels for split {split!r} ({qrels_file} is missing; splits: {have})")
    queries = read_queries(folder / "queries.jsonl")
    try:
        qrels = read_qrels(qrels_file)
    except ValueError as e:
        raise CorpusError(str(e)) from None
    if not qrels:
        raise CorpusError(f"{qrels_file}: no judgements")
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise CorpusError(f"{qrels_file}: {len(missing)} judged queries are not in queries.jsonl "
                          f"(first: {missing[0]!r})")
    sums = {}
    if checksums:
        sums = {str(f.relative_to(folder)): sha256_file(f)
                for f in (corpus, folder / "queries.jsonl", qrels_file)}
    name = folder.name if source != "demo" else "demo"
    return BeirDataset(name, folder, split, corpus, {q: queries[q] for q in qrels}, qrels, sums)


def resolve_beir(source: str | Path, *, cache_dir: str | Path | None = None) -> Path:
    """The folder behind ``source``: an existing folder, the demo data set, or a downloaded BEIR name."""
    p = Path(source)
    if p.is_dir():
        return p
    cache = Path(cache_dir) if cache_dir is not None else CACHE_DIR
    text = str(source)
    if text == "demo":
        return write_demo_beir(cache / "beir" / "demo")
    if p.exists():
        raise CorpusError(f"{p}: a BEIR data set is a folder, not a file")
    if os.sep in text or "/" in text or not _NAME.match(text):
        raise CorpusError(f"{p}: no such folder (a BEIR name such as 'scifact' is downloaded)")
    return download_beir(text, cache_dir=cache)


def download_beir(name: str, *, cache_dir: str | Path | None = None, url: str | None = None) -> Path:
    """Download and unzip the BEIR data set ``name`` into ``cache_dir/beir/name`` (once); its folder.

    Offline, or for an unknown name, raises LsrError with one line saying what to do instead. The URL
    template can be overridden with ``url`` or the ``LSR_BEIR_URL`` environment variable (a mirror).
    """
    if not _NAME.match(name):
        raise CorpusError(f"{name!r} is not a BEIR data set name")
    root = (Path(cache_dir) if cache_dir is not None else CACHE_DIR) / "beir"
    target = root / name
    if (target / "corpus.jsonl").is_file():
        return target
    url = (url or os.environ.get("LSR_BEIR_URL") or BEIR_URL).format(name=name)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{name}-") as tmp:
        archive = Path(tmp) / f"{name}.zip"
        try:
            with urlopen(url, timeout=60) as r, open(archive, "wb") as out:
                _copy_with_progress(r, out, int(r.headers.get("Content-Length") or 0), name)
        except HTTPError as e:
            raise LsrError(f"cannot download BEIR data set {name!r}: {url} answered HTTP {e.code} "
                           f"(is the name right?)") from None
        except (URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise LsrError(f"cannot download BEIR data set {name!r} from {url} ({reason}): no network? "
                           f"download and unzip it by hand, then pass the folder (--beir DIR)") from None
        try:
            with zipfile.ZipFile(archive) as z:
                z.extractall(Path(tmp) / "x")
        except zipfile.BadZipFile:
            raise LsrError(f"{url}: the download is not a zip archive") from None
        found = [p.parent for p in (Path(tmp) / "x").rglob("corpus.jsonl")]
        if not found:
            raise LsrError(f"{url}: the archive holds no corpus.jsonl")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(min(found, key=lambda p: len(p.parts))), target)
    return target


def _copy_with_progress(src, dst, total: int, name: str) -> None:
    with tqdm(total=total or None, unit="B", unit_scale=True, desc=f"downloading {name}",
              dynamic_ncols=True) as bar:
        for chunk in iter(lambda: src.read(1 << 20), b""):
            dst.write(chunk)
            bar.update(len(chunk))


def write_demo_beir(folder: str | Path) -> Path:
    """The demo corpus and its hand-written judged queries as a BEIR folder (rewritten each time)."""
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    write_demo_corpus(folder / "corpus.jsonl")
    queries = demo_queries()
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, q in queries.items():
            f.write(json.dumps({"_id": qid, "text": q["text"]}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, q in queries.items():
            for doc in q["relevant"]:
                f.write(f"{qid}\t{doc}\t1\n")
    return folder
