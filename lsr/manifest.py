"""The collection manifest: a typed, versioned description of an index folder, with one reader and one writer.

Format version 3 (``manifest.json`` at the folder's root)::

    {"format_version": 3, "documents": {"count": N, "ids": "ids.txt", "store": "docs.sqlite"},
     "retrievers": {"sparse": {"kind": "sparse", "dir": "sparse", "settings": {...}, "encoder": {...},
                               "files": [...]}, "dense": {...}, "bm25": {...}, "sparse-idf": {...}},
     "fusion": null | {...}, "hybrid": null | ["sparse-idf", "dense", "bm25"], "generation": 3,
     "provenance": {"corpus": {...}, "build": {...}},
     "created_by": "...", "created_at": "...", "files": {relative path: {bytes, sha256}}}

Every retriever lives in its own subfolder (``dir``) and describes itself in its section; the row space
(``ids.txt``: row i is document ``ids[i]``) and the document store belong to the collection. A folder of
format version 2 (the SPLADE index at the root, ``dense/`` and ``bm25/`` beside it) opens through a
read-only migration (:func:`load_manifest`); writing to one is refused with a line saying how to rebuild.

Example:
    >>> from lsr.manifest import load_manifest
    >>> m = load_manifest("my-index")          # doctest: +SKIP
    >>> list(m.retrievers), m.documents        # doctest: +SKIP
    (['sparse', 'dense', 'bm25', 'sparse-idf'], 5183)
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from lsr import segments
from lsr.errors import IndexFormatError
from lsr.index import storage
from lsr.params import BuildConfig, FusionSpec
from lsr.retrievers import KINDS, retriever_class
from lsr.segments import SegmentRef

FORMAT_VERSION = 3
#: the format versions :func:`load_manifest` opens (2 read-only, migrated in memory)
READABLE = (2, 3)
IDS_FILE = "ids.txt"
DOCSTORE_FILE = "docs.sqlite"


def rebuild_hint(path: Any) -> str:
    return (f"rebuild it with `lsr index --corpus <corpus> --out {path} --overwrite` (this lsr-engine writes "
            f"index format {FORMAT_VERSION})")


@dataclass(frozen=True)
class RetrieverEntry:
    """One retriever's section: its kind, subfolder, settings, query encoder and files.

    Example:
        >>> RetrieverEntry(kind="bm25", dir="bm25", settings={"k1": 0.9}).to_json()["kind"]
        'bm25'
    """

    kind: str
    dir: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    encoder: Mapping[str, Any] | None = None
    files: tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"kind": self.kind, "dir": self.dir, "settings": dict(self.settings),
                "encoder": None if self.encoder is None else dict(self.encoder), "files": list(self.files)}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "RetrieverEntry":
        if not isinstance(obj, dict):
            raise IndexFormatError(f"{where} must be an object")
        kind, folder = obj.get("kind"), obj.get("dir")
        if kind not in KINDS:
            raise IndexFormatError(f"{where}: unknown retriever kind {kind!r} (this lsr-engine knows "
                                   f"{', '.join(KINDS)})")
        if not isinstance(folder, str) or Path(folder).is_absolute() or ".." in Path(folder).parts:
            raise IndexFormatError(f"{where}: bad folder {folder!r}")
        settings, encoder, files = obj.get("settings", {}), obj.get("encoder"), obj.get("files", [])
        if not isinstance(settings, dict) or not (encoder is None or isinstance(encoder, dict)) \
                or not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise IndexFormatError(f"{where}: settings and encoder must be objects, files a list of names")
        return cls(kind=kind, dir=folder, settings=settings, encoder=encoder, files=tuple(files))


@dataclass(frozen=True)
class Manifest:
    """What :func:`load_manifest` reads and :func:`write_manifest` writes (frozen: change with ``replace``).

    Example:
        >>> m = Manifest(documents=2, retrievers={"bm25": RetrieverEntry(kind="bm25", dir="bm25")})
        >>> Manifest.from_json(m.to_json(), "x").retrievers["bm25"].dir
        'bm25'
    """

    documents: int
    retrievers: Mapping[str, RetrieverEntry]
    ids_file: str = IDS_FILE
    docstore: str | None = DOCSTORE_FILE
    fusion: Mapping[str, Any] | None = None
    #: the retrievers an untuned hybrid fuses (None: each kind's ``in_default_fusion``); ``lsr adapt`` puts
    #: ``sparse-idf`` in place of ``sparse`` so that a hybrid query runs no SPLADE model
    hybrid: tuple[str, ...] | None = None
    #: how many times the manifest was written (a build writes 1; each ``lsr adapt`` / ``tune-fusion`` + 1)
    generation: int = 1
    corpus: Mapping[str, Any] = field(default_factory=dict)
    build: BuildConfig | None = None
    format_version: int = FORMAT_VERSION
    created_by: str = ""
    created_at: str = ""
    #: files and their sizes and sha256 (written by the storage layer)
    files: Mapping[str, Any] = field(default_factory=dict)
    #: a living collection's segments (:class:`lsr.segments.SegmentRef`, from its newest commit point); None
    #: for a folder that never took a write (one segment: the folder itself)
    segments: tuple[SegmentRef, ...] | None = None
    #: the metadata fields (:class:`lsr.filters.Schema` JSON) the documents' columns hold
    schema: Mapping[str, Any] | None = None
    #: collection-wide statistics fixed when the collection took its first write (``bm25_avgdl``)
    stats: Mapping[str, Any] = field(default_factory=dict)

    @property
    def migrated(self) -> bool:
        """True for a folder of an older format, opened read-only."""
        return self.format_version != FORMAT_VERSION

    @property
    def fused_by_default(self) -> list[str]:
        """The retrievers an untuned hybrid search fuses: the collection's setting (:attr:`hybrid`), else
        those whose kind joins by default."""
        if self.hybrid:
            return [n for n in self.hybrid if n in self.retrievers]
        return [n for n, e in self.retrievers.items() if retriever_class(e.kind).in_default_fusion]

    def default_fusion(self) -> FusionSpec:
        """The recorded (tuned) fusion where there is one, else equal-weight min-max convex fusion of
        :attr:`fused_by_default`."""
        if self.fusion:
            try:
                return FusionSpec.check(self.fusion, list(self.retrievers))
            except ValueError as e:
                raise IndexFormatError(f"the manifest's fusion is invalid: {e}") from None
        return FusionSpec.check({"weights": {n: 1.0 for n in self.fused_by_default}}, list(self.retrievers))

    def replace(self, **changes: Any) -> "Manifest":
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict:
        return {"format_version": self.format_version,
                "documents": {"count": self.documents, "ids": self.ids_file, "store": self.docstore},
                "retrievers": {n: e.to_json() for n, e in self.retrievers.items()},
                "fusion": None if self.fusion is None else dict(self.fusion),
                "hybrid": None if self.hybrid is None else list(self.hybrid), "generation": self.generation,
                "provenance": {"corpus": dict(self.corpus),
                               "build": None if self.build is None else self.build.settings()},
                **({"schema": dict(self.schema)} if self.schema else {}),
                **({"stats": dict(self.stats)} if self.stats else {})}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Manifest":
        try:
            docs, retrievers, prov = obj["documents"], obj["retrievers"], obj.get("provenance") or {}
            count = docs["count"]
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ValueError(f"document count {count!r}")
            ids_file, store = docs.get("ids", IDS_FILE), docs.get("store")
            for what, rel in (("ids", ids_file), ("store", store if store is not None else IDS_FILE)):
                if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts:
                    raise ValueError(f"bad {what} file {rel!r} (a name inside the folder)")
            if not isinstance(retrievers, dict) or not retrievers:
                raise ValueError("no retrievers")
            unknown = [n for n in retrievers if n not in KINDS]
            if unknown:  # names are kinds: modes and fusion weights name them
                raise ValueError(f"unknown retriever {unknown[0]!r} (known: {', '.join(KINDS)})")
            entries = {str(n): RetrieverEntry.from_json(e, f"{where}: retriever {n!r}")
                       for n, e in retrievers.items()}
            build = prov.get("build")
            build = BuildConfig(**build) if isinstance(build, dict) else None
            fusion = obj.get("fusion")
            if fusion is not None and not isinstance(fusion, dict):
                raise ValueError("fusion must be an object")
            hybrid = obj.get("hybrid")
            if hybrid is not None and (not isinstance(hybrid, list) or not hybrid or len(set(hybrid)) != len(
                    hybrid) or any(n not in entries for n in hybrid)):
                raise ValueError(f"hybrid must list retrievers of the collection, got {hybrid!r}")
            generation = obj.get("generation", 1)
            if isinstance(generation, bool) or not isinstance(generation, int) or generation < 1:
                raise ValueError(f"generation {generation!r}")
            schema, stats = obj.get("schema"), obj.get("stats") or {}
            if schema is not None and not isinstance(schema, dict) or not isinstance(stats, dict):
                raise ValueError("schema and stats must be objects")
        except IndexFormatError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise IndexFormatError(f"{where} is not a valid collection manifest ({e})") from None
        return cls(documents=count, retrievers=entries, ids_file=ids_file,
                   docstore=None if store is None else str(store), fusion=fusion,
                   hybrid=None if hybrid is None else tuple(hybrid), generation=generation,
                   corpus=dict(prov.get("corpus") or {}), build=build,
                   format_version=int(obj.get("format_version", FORMAT_VERSION)),
                   created_by=str(obj.get("created_by", "")), created_at=str(obj.get("created_at", "")),
                   files=dict(obj.get("files") or {}), schema=schema, stats=dict(stats))


def load_manifest(folder: str | Path, *, verify: bool = False, own: bool = False) -> Manifest:
    """The one reader: the manifest of ``folder`` (format 3, or format 2 migrated read-only); checks every
    listed file's size (``verify=True``: its sha256 too). IndexFormatError naming the problem otherwise.
    A living collection's manifest is its newest commit point's (``own=True``: the folder's own
    ``manifest.json``, i.e. its first build or a segment)."""
    folder = Path(folder)
    if not own and folder.is_dir() and not storage.is_scratch(folder):
        found = segments.newest_commit(folder)
        if found is not None:
            return _from_commit(folder, *found)
    raw = storage.read_manifest(folder, verify=verify, versions=READABLE)
    where = str(folder / storage.MANIFEST)
    if raw.get("format_version") == 2:
        return _migrate_v2(folder, raw, where)
    return Manifest.from_json(raw, where)


def _from_commit(folder: Path, generation: int, commit: dict) -> Manifest:
    """The collection's manifest as its commit point records it (segments, settings, generation)."""
    where = str(folder / segments.commit_name(generation))
    refs = commit.get("segments")
    if not isinstance(refs, list) or not refs:
        raise IndexFormatError(f"{where}: no segments")
    refs = tuple(segments.SegmentRef.from_json(r, where) for r in refs)
    if len({r.dir for r in refs}) != len(refs) or len({r.name for r in refs}) != len(refs):
        raise IndexFormatError(f"{where}: a segment is listed twice")
    m = Manifest.from_json(commit.get("collection"), where)
    if m.documents != sum(r.live for r in refs):
        raise IndexFormatError(f"{where}: {m.documents} documents, its segments hold "
                               f"{sum(r.live for r in refs)}")
    return m.replace(segments=refs, generation=generation)


def base_segment(folder: str | Path, manifest: Manifest) -> Manifest:
    """The manifest of a collection's first build (segment "."), as a living collection's commit point
    starts from: its settings, one segment."""
    return manifest.replace(segments=(segments.SegmentRef(name="base", dir=segments.BASE,
                                                          documents=manifest.documents),))


def commit_manifest(folder: str | Path, manifest: Manifest) -> Manifest:
    """Write a living collection's next commit point (generation + 1) with ``manifest``'s segments and
    settings; the caller holds the write lock. ConflictError when another commit came first."""
    if manifest.segments is None:
        raise ValueError("commit_manifest needs the segments (base_segment() for a first write)")
    body = manifest.to_json()
    body.update(format_version=FORMAT_VERSION, files={})
    generation = manifest.generation + 1
    newest = segments.commit_generations(folder)
    if newest and newest[0] >= generation:
        raise segments.ConflictError(f"{folder} changed since it was opened (commit {newest[0]} is newer): "
                                     "reopen it and retry")
    segments.write_commit(folder, generation, manifest.segments, body)
    return manifest.replace(generation=generation)


def write_manifest(folder: str | Path, manifest: Manifest, *, next_generation: bool = False,
                   add: tuple[str, ...] = (), drop: tuple[str, ...] = (),
                   only: tuple[str, ...] | None = None) -> Manifest:
    """The one writer: ``manifest.json`` of ``folder`` (atomically, last; lists every file with its sha256).
    ``next_generation``: a new version of an existing collection's manifest (its generation + 1); the
    rename is the commit, readers see the previous version until then; ``add`` / ``drop``: the files (paths
    in the folder) such an update wrote / stopped using. Refuses a migrated (older)
    manifest: such folders are read-only."""
    if manifest.migrated:
        raise IndexFormatError(f"{folder} has index format version {manifest.format_version}, which this "
                               f"lsr-engine opens read-only: {rebuild_hint(folder)}")
    if manifest.segments is not None:  # a living collection: its settings live in its commit points
        with segments.WriteLock.acquire(folder):
            return commit_manifest(folder, manifest)
    if next_generation:
        manifest = manifest.replace(generation=manifest.generation + 1)
    written = storage.write_manifest(folder, manifest.to_json(), version=FORMAT_VERSION, add=add, drop=drop,
                                     only=only)
    return Manifest.from_json(written, str(Path(folder) / storage.MANIFEST))


def _migrate_v2(folder: Path, raw: dict, where: str) -> Manifest:
    """A format-2 folder as a Manifest: the SPLADE index at the root (its docids.txt is the row space), the
    dense side in its rows, the BM25 side with its own id list (``settings["ids"]``, mapped at open)."""
    try:
        meta = raw.get("metadata") or {}
        encoder = meta.get("encoder") or {}
        sides = raw.get("sides") or {}
        retrievers = {"sparse": RetrieverEntry(
            kind="sparse", dir=".", encoder=encoder,
            settings={"quantization": raw["quantization"], "block_size": int(raw["block_size"]),
                      "reorder": bool(raw.get("reorder", False))})}
        build: dict[str, Any] = {"model": encoder.get("name") or BuildConfig.model,
                                 "max_length": int(encoder.get("max_length", BuildConfig.max_length)),
                                 "quantization": raw["quantization"], "block_size": int(raw["block_size"]),
                                 "reorder": bool(raw.get("reorder", False)), "dense": None, "bm25": False,
                                 "sparse_idf": False}
        if "dense" in sides:
            d = sides["dense"]
            retrievers["dense"] = RetrieverEntry(kind="dense", dir=".", encoder=d.get("encoder"),
                                                 settings={"index": d.get("index", {})})
            build.update(dense=(d.get("encoder") or {}).get("name"),
                         dense_kind=(d.get("index") or {}).get("kind", "flat"))
        if "bm25" in sides:
            b = sides["bm25"]
            retrievers["bm25"] = RetrieverEntry(
                kind="bm25", dir="bm25", settings={"analyzer": b.get("analyzer"), "k1": b.get("k1"),
                                                   "b": b.get("b"), "stats": "bm25.json",
                                                   "ids": "docids.txt"})
            build.update(bm25=True, bm25_analyzer=b.get("analyzer", "wordpiece"))
        try:
            config = BuildConfig(**build)
        except (TypeError, ValueError):
            config = None
        return Manifest(documents=int(raw["n_docs"]), retrievers=retrievers,
                        ids_file=str(raw.get("docids", "docids.txt")),
                        docstore=DOCSTORE_FILE if (folder / DOCSTORE_FILE).is_file() else None,
                        fusion=raw.get("fusion") if isinstance(raw.get("fusion"), dict) else None,
                        corpus=dict(meta.get("corpus") or {}), build=config, format_version=2,
                        created_by=str(raw.get("created_by", "")), created_at=str(raw.get("created_at", "")),
                        files=dict(raw.get("files") or {}))
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as e:
        raise IndexFormatError(f"{where} (format version 2) cannot be read ({e!r}): {rebuild_hint(folder)}") \
            from None
