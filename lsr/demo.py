"""The built-in demo corpus: documentation of the Python standard library, split into passages.

Built at run time from the docstrings of the interpreter that runs it, so it is offline, needs no
download and ships no third-party text. A handful of hand-written queries with judgments
(``lsr/demo_queries.json``) make it an end-to-end check as well.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import warnings
from importlib import resources
from pathlib import Path

from lsr.corpus import Record

#: Where ``lsr demo`` (and ``make demo``) keep the demo index; ``lsr eval --beir demo`` reuses it.
DEMO_INDEX_DIR = Path.home() / ".cache" / "lsr-engine" / "demo-index"

DEMO_MODULES = (
    "abc argparse array asyncio base64 bisect calendar codecs collections configparser contextlib copy "
    "csv dataclasses datetime decimal difflib doctest email.message enum fnmatch fractions functools "
    "gettext glob gzip hashlib heapq hmac html http.client inspect io itertools json locale logging math "
    "mmap operator os os.path pathlib pickle platform pprint queue random re secrets select shlex shutil "
    "signal socket sqlite3 statistics string struct subprocess tarfile tempfile textwrap threading time "
    "timeit traceback typing unicodedata unittest urllib.parse uuid warnings weakref xml.etree.ElementTree "
    "zipfile zlib"
).split()

_MIN_CHARS, _MAX_CHARS = 80, 2000


def _clean(doc: str) -> str:
    text = re.sub(r"\s+", " ", doc).strip()
    return text[:_MAX_CHARS]


def _members(module_name: str):
    mod = importlib.import_module(module_name)
    yield module_name, mod
    for name, obj in inspect.getmembers(mod):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        qual = f"{module_name}.{name}"
        yield qual, obj
        if inspect.isclass(obj):
            for mname, meth in sorted(vars(obj).items()):
                if not mname.startswith("_") and callable(meth):
                    yield f"{qual}.{mname}", meth


def demo_records() -> list[Record]:
    """Passages (id = dotted name, title = dotted name, text = docstring), deterministic order.

    Example:
        >>> recs = demo_records()
        >>> any(r.id == "json.dumps" for r in recs)
        True
    """
    records, seen_ids, seen_texts = [], set(), set()
    for module_name in DEMO_MODULES:
        with warnings.catch_warnings():  # e.g. typing.re's DeprecationWarning when its members are read
            warnings.simplefilter("ignore")
            try:
                members = [(qual, inspect.getdoc(obj)) for qual, obj in _members(module_name)]
            except ImportError:  # a module missing from a trimmed interpreter: skip it
                continue
        for qual, doc in members:
            if not doc or len(doc) < _MIN_CHARS or qual in seen_ids:
                continue
            text = _clean(doc)
            if text in seen_texts:
                continue
            seen_ids.add(qual)
            seen_texts.add(text)
            records.append(Record(qual, qual, text))
    return records


def write_demo_corpus(path: str | Path) -> int:
    """Write the demo corpus as JSONL (``{"_id", "title", "text"}``) and return the number of passages."""
    records = demo_records()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps({"_id": r.id, "title": r.title, "text": r.text}) + "\n")
    tmp.replace(path)
    return len(records)


def demo_queries() -> dict[str, dict]:
    """Hand-written demo queries: ``{qid: {"text": str, "relevant": [doc ids]}}``."""
    return json.loads(resources.files("lsr").joinpath("demo_queries.json").read_text(encoding="utf-8"))
