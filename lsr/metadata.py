"""Document metadata: typed fields (:class:`Schema`) and a segment's columns (:class:`Columns`).

* A document's ``metadata`` maps field names to a string, an integer, a float, a boolean, null (missing) or a
  list of strings (an empty list is missing too).
* :class:`Schema`: each field's type, one of :data:`FIELD_TYPES`, declared or inferred, then fixed.
* :func:`write_columns` / :meth:`Columns.load`: a segment's columns under ``metadata/`` (``.npy`` arrays and
  a JSON dictionary; no pickle). Files are named by the field's position in the schema, never by its name:
  keyword ``<i>.indptr.npy`` (int64, n+1) + ``<i>.codes.npy`` (int32, codes into ``<i>.dictionary.json``, a
  sorted JSON list of strings); integer ``<i>.values.npy`` (int64) + ``<i>.present.npy`` (uint8 0/1); float
  ``<i>.values.npy`` (float64, NaN = missing); boolean ``<i>.values.npy`` (int8: -1 missing, 0, 1).

:mod:`lsr.filters` turns a structured filter into a row mask over these columns.

Example:
    >>> schema = Schema.infer([{"lang": "en", "year": 2012}, {"lang": ["fr", "en"]}, {"year": 1999}])
    >>> schema.fields
    {'lang': 'keyword', 'year': 'integer'}
    >>> Columns.build(schema, [{"lang": "en"}, {"year": 7}]).metadata()
    [{'lang': 'en'}, {'year': 7}]
"""

from __future__ import annotations

import json
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from tokenize import TokenError
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lsr.errors import IndexFormatError

#: the types a metadata field can have
FIELD_TYPES = ("keyword", "integer", "float", "boolean")
MAX_FIELDS = 1024
MAX_FIELD_NAME = 256
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
METADATA_DIR = "metadata"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PARTS = {"keyword": ("indptr", "codes", "dictionary"), "integer": ("values", "present"),
          "float": ("values",), "boolean": ("values",)}


def describe_value(value: Any, limit: int = 60) -> str:
    """A value as a message shows it: JSON for strings, lists and objects, cut to ``limit`` characters.

    Example:
        >>> describe_value("en"), describe_value(2.5)
        ('"en"', '2.5')
    """
    text = json.dumps(value, ensure_ascii=False) if isinstance(value, (str, list, dict)) else repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def json_kind(value: Any) -> str:
    """What kind of JSON value ``value`` is, for messages.

    Example:
        >>> json_kind([1]), json_kind(None)
        ('a list', 'null')
    """
    return {dict: "an object", list: "a list", tuple: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def check_field_name(name: Any) -> str:
    """``name`` if it can name a metadata field (a string of 1..256 characters, no control characters),
    else ValueError.

    Example:
        >>> check_field_name("year")
        'year'
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"metadata field name must be a non-empty string, got {describe_value(name)}")
    if len(name) > MAX_FIELD_NAME or _CONTROL.search(name):
        raise ValueError(f"metadata field name {describe_value(name)} must have at most {MAX_FIELD_NAME} "
                         "characters and no control characters")
    return name


def value_type(value: Any, name: str = "?") -> str | None:
    """The field type a metadata value has (None: missing), else ValueError naming field ``name``.

    Example:
        >>> value_type(3), value_type(["a", "b"]), value_type(None)
        ('integer', 'keyword', None)
    """
    if value is None:
        return None
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        if not INT64_MIN <= value <= INT64_MAX:
            raise ValueError(f"metadata field {name!r}: the integer {describe_value(value)} does not fit in "
                             "64 bits")
        return "integer"
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"metadata field {name!r}: NaN is not a value (use null for a missing one)")
        return "float"
    if isinstance(value, str):
        return "keyword"
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if not isinstance(v, str)]
        if bad:
            raise ValueError(f"metadata field {name!r}: a list may hold only strings, not "
                             f"{json_kind(bad[0])}")
        return "keyword" if value else None
    raise ValueError(f"metadata field {name!r}: {json_kind(value)} is not a metadata value (use a string, a "
                     "number, a boolean, null or a list of strings)")


def check_metadata(metadata: Any) -> dict:
    """A document's metadata as a dict, checked (field names and value types), else ValueError (a message
    that begins with "metadata").

    Example:
        >>> check_metadata({"lang": "en", "tags": ["a", "b"], "year": None})
        {'lang': 'en', 'tags': ['a', 'b'], 'year': None}
    """
    metadata = _mapping(metadata)
    for name, value in metadata.items():
        check_field_name(name)
        value_type(value, name)
    return dict(metadata)


_FAST = {str: "keyword", float: "float", int: "integer", bool: "boolean"}


def _type_of(value: Any, name: str) -> str | None:
    """:func:`value_type`, quicker for the common scalars (one call per value of a whole corpus)."""
    t = _FAST.get(type(value))
    if t == "keyword" or t == "boolean" or (t == "float" and value == value) or \
            (t == "integer" and INT64_MIN <= value <= INT64_MAX):
        return t
    return value_type(value, name)


def _mapping(metadata: Any) -> Mapping:
    """``metadata`` (None: empty) if it is an object with at most :data:`MAX_FIELDS` fields, else
    ValueError; its names and values are the caller's to check."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"metadata must be an object, not {json_kind(metadata)}")
    if len(metadata) > MAX_FIELDS:
        raise ValueError(f"metadata has {len(metadata):,} fields; at most {MAX_FIELDS:,}")
    return metadata


def _fits(vtype: str, ftype: str) -> bool:
    return vtype == ftype or (vtype == "integer" and ftype == "float")


def _doc(ids: Sequence[str] | None, i: int) -> str:
    return f"document {ids[i]!r}" if ids is not None else f"document #{i}"


@dataclass(frozen=True)
class Schema:
    """The metadata fields of a collection and their types (one of :data:`FIELD_TYPES`), in a fixed order
    (a field's position names its column files).

    Example:
        >>> s = Schema.infer([{"year": 2001}, {"year": 2.5, "open": True}])
        >>> s.fields, s.extend([{"lang": "en"}]).fields
        ({'year': 'float', 'open': 'boolean'}, {'year': 'float', 'open': 'boolean', 'lang': 'keyword'})
    """

    fields: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.fields, Mapping):
            raise ValueError(f"schema fields must be an object {{name: type}}, not {json_kind(self.fields)}")
        if len(self.fields) > MAX_FIELDS:
            raise ValueError(f"a collection may have at most {MAX_FIELDS:,} metadata fields, got "
                             f"{len(self.fields):,}")
        for name, ftype in self.fields.items():
            check_field_name(name)
            if ftype not in FIELD_TYPES:
                raise ValueError(f"metadata field {name!r}: unknown type {describe_value(ftype)}; use one of "
                                 f"{', '.join(FIELD_TYPES)}")
        object.__setattr__(self, "fields", dict(self.fields))

    def __len__(self) -> int:
        return len(self.fields)

    @classmethod
    def infer(cls, metadatas: Iterable[Mapping], *, declared: Mapping[str, str] | None = None,
              ids: Sequence[str] | None = None) -> "Schema":
        """The schema of these documents' metadata: ``declared`` fields keep their type (in their order),
        the others are inferred (bool: boolean, int: integer, float or a mix of int and float: float, str or
        list of str: keyword; None is missing) in order of first appearance. ValueError names the field and
        the two types of a field that mixes others, or the document whose value does not fit a declared
        type (``ids``: the documents' ids, for messages)."""
        return cls(dict(declared or {}))._grow(metadatas, ids)

    def extend(self, metadatas: Iterable[Mapping], *, ids: Sequence[str] | None = None) -> "Schema":
        """This schema plus the new fields of ``metadatas`` (inferred as by :meth:`infer`, in order of first
        appearance); the types of known fields are fixed (an integer is fine for a float field): ValueError
        names the document, field and types."""
        return self._grow(metadatas, ids)

    def _grow(self, metadatas: Iterable[Mapping], ids: Sequence[str] | None) -> "Schema":
        new: dict[str, str] = {}
        first: dict[str, tuple[int, Any]] = {}  # a new field's first document and value
        named = set(self.fields)  # names already checked
        for i, meta in enumerate(metadatas):
            try:
                meta = _mapping(meta)
                for name in meta:
                    if name not in named:
                        named.add(check_field_name(name))
                types = [_type_of(value, name) for name, value in meta.items()]
            except ValueError as e:
                raise ValueError(f"{_doc(ids, i)}: {e}") from None
            for (name, value), vtype in zip(meta.items(), types):
                if vtype is None:
                    continue
                known = self.fields.get(name)
                if known is not None:
                    if not _fits(vtype, known):
                        raise ValueError(f"{_doc(ids, i)}: metadata field {name!r} is {known}, got {vtype} "
                                         f"value {describe_value(value)}")
                elif name not in new:
                    new[name], first[name] = vtype, (i, value)
                elif not _fits(vtype, new[name]):
                    if new[name] == "integer" and vtype == "float":
                        new[name] = "float"
                        continue
                    raise ValueError(f"metadata field {name!r} mixes {new[name]} and {vtype} values "
                                     f"({_doc(ids, first[name][0])} has {describe_value(first[name][1])}, "
                                     f"{_doc(ids, i)} has {describe_value(value)})")
        return Schema({**self.fields, **new}) if new else self

    def to_json(self) -> dict:
        """The JSON form (for a manifest or commit point): ``{"fields": [{"name", "type"}, ...]}``."""
        return {"fields": [{"name": n, "type": t} for n, t in self.fields.items()]}

    @classmethod
    def from_json(cls, obj: Any, where: str) -> "Schema":
        """The schema of :meth:`to_json`'s form, read from disk: IndexFormatError prefixed with ``where``
        when it is damaged."""
        if not isinstance(obj, Mapping) or set(obj) != {"fields"} or not isinstance(obj["fields"], list):
            raise IndexFormatError(f"{where}: the metadata schema must be an object {{\"fields\": [...]}}")
        fields: dict[str, str] = {}
        for entry in obj["fields"]:
            if not isinstance(entry, Mapping) or set(entry) != {"name", "type"} or \
                    not isinstance(entry["name"], str):
                raise IndexFormatError(f"{where}: a metadata schema field must be an object with a name "
                                       "and a type")
            if entry["name"] in fields:
                raise IndexFormatError(f"{where}: the metadata schema repeats field "
                                       f"{describe_value(entry['name'])}")
            fields[entry["name"]] = entry["type"]
        try:
            return cls(fields)
        except (ValueError, TypeError) as e:
            raise IndexFormatError(f"{where}: bad metadata schema: {e}") from None


def column_files(schema: Schema) -> list[str]:
    """The files (relative to a segment folder) that hold ``schema``'s columns, in schema order.

    Example:
        >>> column_files(Schema({"year": "integer"}))
        ['metadata/0.values.npy', 'metadata/0.present.npy']
    """
    return [p for i, t in enumerate(schema.fields.values()) for p in _paths(i, t).values()]


def _paths(i: int, ftype: str) -> dict[str, str]:
    return {part: f"{METADATA_DIR}/{i}.{part}.{'json' if part == 'dictionary' else 'npy'}"
            for part in _PARTS[ftype]}


class Column:
    """One field's validated arrays in a segment (keyword: CSR codes into a sorted dictionary); from
    :meth:`Columns.column`.

    Example:
        >>> Columns.build(Schema({"n": "integer"}), [{"n": 4}, {}]).column("n").has_value().tolist()
        [True, False]
    """

    def __init__(self, ftype: str, n: int, parts: dict[str, Any], where: dict[str, str]) -> None:
        self.type, self.n = ftype, n
        self._rows: np.ndarray | None = None
        expect = {"indptr": (np.int64, n + 1), "codes": (np.int32, None), "values": (None, n),
                  "present": (np.uint8, n)}
        value_dtype = {"integer": np.int64, "float": np.float64, "boolean": np.int8}.get(ftype)
        for part in _PARTS[ftype]:
            arr = parts[part]
            if part == "dictionary":
                if not isinstance(arr, list) or not all(isinstance(s, str) for s in arr):
                    raise IndexFormatError(f"{where[part]}: expected a JSON list of strings")
                if any(a >= b for a, b in zip(arr, arr[1:])):
                    raise IndexFormatError(f"{where[part]}: the dictionary is not sorted and unique")
                continue
            dtype, length = expect[part]
            dtype = dtype or value_dtype
            if not isinstance(arr, np.ndarray) or arr.ndim != 1 or arr.dtype != np.dtype(dtype):
                got = f"{arr.dtype}, {arr.ndim}-D" if isinstance(arr, np.ndarray) else type(arr).__name__
                raise IndexFormatError(f"{where[part]}: expected a 1-D {np.dtype(dtype)} array, found {got}")
            if length is not None and len(arr) != length:
                raise IndexFormatError(f"{where[part]}: {len(arr):,} entries, expected {length:,} "
                                       f"(for {n:,} rows)")
        self.indptr, self.codes = parts.get("indptr"), parts.get("codes")
        self.values, self.present = parts.get("values"), parts.get("present")
        self.dictionary: list[str] = parts.get("dictionary", [])
        if ftype == "keyword":
            ip = self.indptr
            if ip[0] != 0 or ip[-1] != len(self.codes) or np.any(ip[1:] < ip[:-1]):
                raise IndexFormatError(f"{where['indptr']}: not a monotone offset array from 0 to "
                                       f"{len(self.codes):,} (the number of codes)")
            if len(self.codes) and (self.codes.min() < 0 or self.codes.max() >= len(self.dictionary)):
                raise IndexFormatError(f"{where['codes']}: a code outside the dictionary "
                                       f"(0..{len(self.dictionary) - 1})")
            self.single = len(self.codes) == n and bool(np.all(np.diff(ip) == 1))
        elif ftype == "integer" and n and self.present.max() > 1:
            raise IndexFormatError(f"{where['present']}: values other than 0 and 1")
        elif ftype == "boolean" and n and (self.values.min() < -1 or self.values.max() > 1):
            raise IndexFormatError(f"{where['values']}: values other than -1 (missing), 0 and 1")

    def has_value(self) -> np.ndarray:
        """A new bool array: the rows with a value."""
        if self.type == "keyword":
            return np.diff(self.indptr) > 0
        if self.type == "integer":
            return self.present.astype(bool)
        if self.type == "float":
            return ~np.isnan(self.values)
        return self.values >= 0

    def code_rows(self) -> np.ndarray:
        """The row of each keyword code (cached)."""
        if self._rows is None:
            self._rows = np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.indptr))
        return self._rows

    def value(self, row: int) -> Any:
        """Row ``row``'s value as metadata (None: missing; one keyword: a string, more: a sorted list)."""
        if self.type == "keyword":
            strings = [self.dictionary[c] for c in self.codes[self.indptr[row]:self.indptr[row + 1]]]
            return None if not strings else strings[0] if len(strings) == 1 else strings
        if self.type == "integer":
            return int(self.values[row]) if self.present[row] else None
        if self.type == "float":
            return None if np.isnan(self.values[row]) else float(self.values[row])
        return None if self.values[row] < 0 else bool(self.values[row])


def _encode(schema: Schema, metadatas: Sequence[Mapping], ids: Sequence[str] | None) -> dict[str, Any]:
    """``{relative path: array or dictionary list}`` of the columns of ``metadatas`` (checked against
    ``schema``: ValueError names the document)."""
    n = len(metadatas)
    index = {name: i for i, name in enumerate(schema.fields)}
    rows: list[list[tuple[int, Any]]] = [[] for _ in schema.fields]
    for r, meta in enumerate(metadatas):
        try:
            meta = _mapping(meta)
            types = [_type_of(value, name) for name, value in meta.items()]
        except ValueError as e:
            raise ValueError(f"{_doc(ids, r)}: {e}") from None
        for (name, value), vtype in zip(meta.items(), types):
            if vtype is None:
                continue
            if name not in index:
                raise ValueError(f"{_doc(ids, r)}: metadata field {name!r} is not in the schema "
                                 "(extend the schema first)")
            if not _fits(vtype, schema.fields[name]):
                raise ValueError(f"{_doc(ids, r)}: metadata field {name!r} is {schema.fields[name]}, got "
                                 f"{vtype} value {describe_value(value)}")
            rows[index[name]].append((r, value))
    out: dict[str, Any] = {}
    for i, (ftype, entries) in enumerate(zip(schema.fields.values(), rows)):
        paths = _paths(i, ftype)
        at = np.fromiter((r for r, _ in entries), dtype=np.int64, count=len(entries))
        if ftype == "keyword":
            sets = [[v] if type(v) is str else sorted(set(v)) for _, v in entries]
            dictionary = sorted({s for strings in sets for s in strings})
            code = {s: c for c, s in enumerate(dictionary)}
            counts = np.zeros(n, dtype=np.int64)
            counts[at] = [len(strings) for strings in sets]
            out[paths["indptr"]] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            out[paths["codes"]] = np.array([code[s] for strings in sets for s in strings], dtype=np.int32)
            out[paths["dictionary"]] = dictionary
        elif ftype == "integer":
            values, present = np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.uint8)
            values[at], present[at] = [v for _, v in entries], 1
            out[paths["values"]], out[paths["present"]] = values, present
        elif ftype == "float":
            values = np.full(n, np.nan, dtype=np.float64)
            values[at] = [float(v) for _, v in entries]
            out[paths["values"]] = values
        else:
            values = np.full(n, -1, dtype=np.int8)
            values[at] = [int(v) for _, v in entries]
            out[paths["values"]] = values
    return out


def write_columns(folder: str | Path, schema: Schema, metadatas: Sequence[Mapping], *,
                  ids: Sequence[str] | None = None) -> list[str]:
    """Write the metadata columns of a segment's rows (``metadatas[i]`` is row ``i``) under
    ``folder/metadata/``; the relative paths written, in schema order (none for an empty schema). ValueError
    names a document whose metadata does not fit ``schema`` (``ids`` for messages). The caller fsyncs.

    Example:
        >>> write_columns(segment, Schema({"lang": "keyword"}), [{"lang": "en"}, {}])  # doctest: +SKIP
        ['metadata/0.indptr.npy', 'metadata/0.codes.npy', 'metadata/0.dictionary.json']
    """
    folder = Path(folder)
    parts = _encode(schema, metadatas, ids)
    if parts:
        (folder / METADATA_DIR).mkdir(parents=True, exist_ok=True)
    for rel, data in parts.items():
        if isinstance(data, list):
            (folder / rel).write_text(json.dumps(data, ensure_ascii=True), encoding="ascii")
        else:
            with open(folder / rel, "wb") as f:
                np.save(f, data, allow_pickle=False)
    return list(parts)


def _read(folder: Path, rel: str) -> Any:
    path = folder / rel
    try:
        if rel.endswith(".json"):
            return json.loads(path.read_text(encoding="utf-8"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise IndexFormatError(f"{folder} is incomplete: {rel} is missing") from None
    except (OSError, ValueError, EOFError, TokenError, SyntaxError, TypeError, OverflowError, MemoryError,
            RecursionError, UnicodeDecodeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise IndexFormatError(f"{path} is not readable: {first}") from None


class Columns:
    """A segment's metadata columns (validated), what :meth:`Filter.mask` reads; a field of the collection
    that the segment's schema lacks reads as missing on every row.

    Example:
        >>> cols = Columns.build(Schema({"lang": "keyword"}), [{"lang": "en"}, {"lang": ["de", "en"]}, {}])
        >>> cols.metadata()
        [{'lang': 'en'}, {'lang': ['de', 'en']}, {}]
    """

    def __init__(self, schema: Schema, n_rows: int, parts: dict[str, Any], where: str) -> None:
        self.schema, self.n_rows = schema, n_rows
        self._columns = {}
        for i, (name, ftype) in enumerate(schema.fields.items()):
            paths = _paths(i, ftype)
            self._columns[name] = Column(ftype, n_rows, {p: parts[rel] for p, rel in paths.items()},
                                         {p: f"{where}/{rel} (field {name!r})" for p, rel in paths.items()})

    @classmethod
    def build(cls, schema: Schema, metadatas: Sequence[Mapping], *,
              ids: Sequence[str] | None = None) -> "Columns":
        """The columns of ``metadatas`` in memory (what :func:`write_columns` writes)."""
        return cls(schema, len(metadatas), _encode(schema, metadatas, ids), "(in memory)")

    @classmethod
    def load(cls, folder: str | Path, schema: Schema, n_rows: int, *,
             files: Iterable[str] | None = None) -> "Columns":
        """Read and validate the columns :func:`write_columns` wrote for ``schema`` and ``n_rows`` rows
        (dtypes, lengths, offsets, codes, dictionary): IndexFormatError names the damaged file. ``files``:
        the segment's listed files (its manifest's), which must list exactly these columns."""
        folder = Path(folder)
        expected = column_files(schema)
        if files is not None:
            listed = set(files)
            for rel in expected:
                if rel not in listed:
                    raise IndexFormatError(f"{folder}: the segment's file list lacks {rel}")
            extra = sorted(r for r in listed if r.startswith(METADATA_DIR + "/") and r not in expected)
            if extra:
                raise IndexFormatError(f"{folder}: the segment lists {extra[0]}, which its metadata schema "
                                       "does not name")
        return cls(schema, n_rows, {rel: _read(folder, rel) for rel in expected}, str(folder))

    def column(self, name: str) -> Column | None:
        """Field ``name``'s column, None where this segment has no such field."""
        return self._columns.get(name)

    def metadata(self, rows: Iterable[int] | None = None) -> list[dict]:
        """The metadata of ``rows`` (default all) as dicts without missing fields: a keyword with one
        value reads as a string, with several as a sorted list; integers in a float field as floats."""
        out = []
        for r in range(self.n_rows) if rows is None else rows:
            meta = {name: col.value(int(r)) for name, col in self._columns.items()}
            out.append({k: v for k, v in meta.items() if v is not None})
        return out
