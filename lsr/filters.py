"""Structured metadata filters: a JSON tree checked once against a collection's :class:`Schema`, then a
bool mask over a segment's rows (vectorised numpy over :class:`~lsr.metadata.Columns`).

Grammar (JSON)::

    filter    := condition | {"and": [filter, ...]} | {"or": [filter, ...]} | {"not": filter}
    condition := {"field": NAME, "eq": VALUE}          keyword: a string; boolean: true/false; numbers
               | {"field": NAME, "in": [VALUE, ...]}    1..10,000 values
               | {"field": NAME, "gt"|"gte"|"lt"|"lte": NUMBER, ...}   integer and float fields; one
                                                        lower and/or one upper bound
               | {"field": NAME, "exists": true|false}

Missing values never match ``eq``, ``in`` or a range; ``not`` is the complement (missing values match it). A
keyword field holding a list matches ``eq``/``in`` when any of its strings does. Numbers compare exactly
(``{"eq": 2.5}`` on an integer field matches nothing; an integer bound on a float field compares with the
stored float64 exactly). Limits: 16 levels, 1,024 conditions, 100,000 ``in`` values in all.

Example:
    >>> schema = Schema.infer([{"lang": "en", "year": 2012}, {"lang": ["fr", "en"]}, {"year": 1999}])
    >>> f = Filter.check({"and": [{"field": "lang", "eq": "en"}, {"field": "year", "gte": 2000}]}, schema)
    >>> str(f)
    '(lang = "en" and year >= 2000)'
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from lsr.metadata import (
    FIELD_TYPES,
    INT64_MAX,
    INT64_MIN,
    Column,
    Columns,
    Schema,
    check_metadata,
    column_files,
    describe_value,
    json_kind,
    write_columns,
)

__all__ = ["FIELD_TYPES", "Schema", "Columns", "write_columns", "column_files", "check_metadata", "Filter",
           "Condition", "And", "Or", "Not"]

#: filter limits: nesting depth, conditions, values of one ``in``, values of all ``in`` lists together
MAX_DEPTH = 16
MAX_CONDITIONS = 1024
MAX_IN = 10_000
MAX_VALUES = 100_000
RANGE_OPS = ("gt", "gte", "lt", "lte")
_PLAIN_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def _int_bounds(bounds: Sequence[tuple[str, Any]]) -> tuple[int, int]:
    """Inclusive int64 bounds equal to ``bounds`` (exact for float bounds); lo > hi when none fits."""
    lo, hi = INT64_MIN, INT64_MAX
    for op, x in bounds:
        if isinstance(x, float) and math.isinf(x):
            if (x > 0) == op.startswith("g"):
                return 1, 0
            continue
        if op == "gte":
            lo = max(lo, math.ceil(x))
        elif op == "gt":
            lo = max(lo, math.floor(x) + 1)
        elif op == "lte":
            hi = min(hi, math.floor(x))
        else:
            hi = min(hi, math.ceil(x) - 1)
    return lo, hi


def _float_bound(op: str, x: int | float) -> tuple[str, float]:
    """``(op, float)`` that selects exactly the float64 values v with ``v op x`` (x may be a large int)."""
    f = _as_float(x)
    if isinstance(x, float) or f == x:
        return op, f
    if f < x:
        return {"gte": "gt", "gt": "gt", "lte": "lte", "lt": "lte"}[op], f
    return {"gte": "gte", "gt": "gte", "lte": "lt", "lt": "lt"}[op], f


_COMPARE = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}


class Filter:
    """A structured metadata filter, checked once against a :class:`Schema` by :meth:`check` (the JSON
    grammar is in this module's docstring); :meth:`mask` selects a segment's rows.

    Example:
        >>> schema = Schema({"lang": "keyword", "year": "integer"})
        >>> f = Filter.check('{"or": [{"field": "lang", "in": ["en", "fr"]}, {"field": "year", "lt": 2000}]}',
        ...                  schema)
        >>> f.mask(Columns.build(schema, [{"lang": "en"}, {"year": 2005}, {"year": 1990}])).tolist()
        [True, False, True]
    """

    @staticmethod
    def check(obj: Any, schema: Schema | None) -> "Filter":
        """The filter of a JSON object (or JSON text, or a Filter to re-check) against ``schema``; ValueError
        with one line naming the problem and where it is (``filter.and[1]``)."""
        if schema is None or not schema.fields:
            raise ValueError("filter: this collection has no metadata fields")
        if isinstance(obj, Filter):
            obj = obj.to_json()
        elif isinstance(obj, (str, bytes)):
            try:
                obj = json.loads(obj)
            except json.JSONDecodeError as e:
                raise ValueError(f"filter is not valid JSON ({e.msg} at column {e.colno})") from None
            except RecursionError:
                raise ValueError(f"filter: nested more than {MAX_DEPTH} levels deep") from None
        return _parse(obj, schema, "filter", 1, [0, 0])

    def to_json(self) -> dict:
        """The JSON form (what :meth:`check` takes)."""
        raise NotImplementedError

    def mask(self, columns: Columns) -> np.ndarray:
        """A new bool array, True for each row of ``columns``'s segment that matches."""
        raise NotImplementedError

    @property
    def fields(self) -> frozenset[str]:
        """The field names the filter reads."""
        raise NotImplementedError


@dataclass(frozen=True)
class Condition(Filter):
    """One field's condition: ``op`` is eq, in (``value`` a tuple), exists (a bool) or range (``value``
    a tuple of (gt|gte|lt|lte, number)). Built by :meth:`Filter.check`.

    Example:
        >>> str(Filter.check({"field": "year", "gte": 2010, "lt": 2020}, Schema({"year": "integer"})))
        '2010 <= year < 2020'
    """

    field: str
    type: str
    op: str
    value: Any

    def to_json(self) -> dict:
        if self.op == "range":
            return {"field": self.field, **dict(self.value)}
        return {"field": self.field, self.op: list(self.value) if self.op == "in" else self.value}

    @property
    def fields(self) -> frozenset[str]:
        return frozenset([self.field])

    def __str__(self) -> str:
        name = self.field if _PLAIN_NAME.match(self.field) else json.dumps(self.field, ensure_ascii=False)
        if self.op == "exists":
            return f"{name} exists" if self.value else f"{name} is missing"
        if self.op == "eq":
            return f"{name} = {json.dumps(self.value, ensure_ascii=False)}"
        if self.op == "in":
            return f"{name} in {json.dumps(list(self.value), ensure_ascii=False)}"
        sym = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
        if len(self.value) == 2:
            (lop, lo), (hop, hi) = self.value
            return f"{lo!r} {sym[lop].replace('>', '<')} {name} {sym[hop]} {hi!r}"
        (op, x), = self.value
        return f"{name} {sym[op]} {x!r}"

    def mask(self, columns: Columns) -> np.ndarray:
        col = columns.column(self.field)
        if col is None:  # the segment predates the field: every row is missing
            return np.full(columns.n_rows, self.op == "exists" and not self.value, dtype=bool)
        if col.type != self.type:
            raise ValueError(f"field {self.field!r} is {self.type} in the filter but {col.type} in the "
                             "segment")
        if self.op == "exists":
            has = col.has_value()
            return has if self.value else ~has
        if self.op == "range":
            if col.type == "integer":
                lo, hi = _int_bounds(self.value)
                if lo > hi:
                    return np.zeros(col.n, dtype=bool)
                return (col.values >= lo) & (col.values <= hi) & col.present.view(bool)
            out = np.ones(col.n, dtype=bool)  # NaN (missing) compares False
            for op, x in self.value:
                op, f = _float_bound(op, x)
                out &= _COMPARE[op](col.values, f)
            return out
        wanted = (self.value,) if self.op == "eq" else self.value
        if col.type == "keyword":
            return self._keyword_mask(col, wanted)
        if col.type == "integer":
            keys = sorted({int(x) for x in wanted if (isinstance(x, int) or x.is_integer())
                           and INT64_MIN <= x <= INT64_MAX})
            return _isin(col.values, np.array(keys, dtype=np.int64)) & col.present.view(bool)
        if col.type == "float":
            keys = sorted({_as_float(x) for x in wanted if _as_float(x) == x})
            return _isin(col.values, np.array(keys, dtype=np.float64))
        return _isin(col.values, np.array(sorted({int(x) for x in wanted}), dtype=np.int8))

    @staticmethod
    def _keyword_mask(col: Column, wanted: Sequence[str]) -> np.ndarray:
        codes = []
        for s in set(wanted):
            j = bisect.bisect_left(col.dictionary, s)
            if j < len(col.dictionary) and col.dictionary[j] == s:
                codes.append(j)
        if not codes:
            return np.zeros(col.n, dtype=bool)
        if len(codes) == 1:
            hits = col.codes == codes[0]
        else:  # a lookup table over the dictionary: one gather, whatever the number of values
            table = np.zeros(len(col.dictionary), dtype=bool)
            table[codes] = True
            hits = table[col.codes]
        if col.single:
            return hits
        out = np.zeros(col.n, dtype=bool)
        out[col.code_rows()[hits]] = True
        return out


def _isin(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    if len(keys) == 0:
        return np.zeros(len(values), dtype=bool)
    if len(keys) == 1:
        return values == keys[0]
    return np.isin(values, keys)


@dataclass(frozen=True)
class And(Filter):
    """Every child matches.

    Example:
        >>> schema = Schema({"x": "float"})
        >>> f = Filter.check({"and": [{"field": "x", "gt": 1}, {"field": "x", "lt": 3}]}, schema)
        >>> type(f).__name__, f.mask(Columns.build(schema, [{"x": 2}, {"x": 3}])).tolist()
        ('And', [True, False])
    """

    children: tuple[Filter, ...]

    def to_json(self) -> dict:
        return {"and": [c.to_json() for c in self.children]}

    @property
    def fields(self) -> frozenset[str]:
        return frozenset().union(*(c.fields for c in self.children))

    def __str__(self) -> str:
        return "(" + " and ".join(str(c) for c in self.children) + ")"

    def mask(self, columns: Columns) -> np.ndarray:
        out = self.children[0].mask(columns)
        for c in self.children[1:]:
            if not out.any():
                break
            out &= c.mask(columns)
        return out


@dataclass(frozen=True)
class Or(Filter):
    """At least one child matches.

    Example:
        >>> str(Filter.check({"or": [{"field": "x", "eq": 1}, {"field": "x", "exists": False}]},
        ...                  Schema({"x": "integer"})))
        '(x = 1 or x is missing)'
    """

    children: tuple[Filter, ...]

    def to_json(self) -> dict:
        return {"or": [c.to_json() for c in self.children]}

    @property
    def fields(self) -> frozenset[str]:
        return frozenset().union(*(c.fields for c in self.children))

    def __str__(self) -> str:
        return "(" + " or ".join(str(c) for c in self.children) + ")"

    def mask(self, columns: Columns) -> np.ndarray:
        out = self.children[0].mask(columns)
        for c in self.children[1:]:
            if out.all():
                break
            out |= c.mask(columns)
        return out


@dataclass(frozen=True)
class Not(Filter):
    """The complement of the child (rows missing the child's field match).

    Example:
        >>> schema = Schema({"open": "boolean"})
        >>> Filter.check({"not": {"field": "open", "eq": True}}, schema).mask(
        ...     Columns.build(schema, [{"open": True}, {"open": False}, {}])).tolist()
        [False, True, True]
    """

    child: Filter

    def to_json(self) -> dict:
        return {"not": self.child.to_json()}

    @property
    def fields(self) -> frozenset[str]:
        return self.child.fields

    def __str__(self) -> str:
        inner = str(self.child)
        return f"not {inner}" if inner.startswith("(") else f"not ({inner})"

    def mask(self, columns: Columns) -> np.ndarray:
        return ~self.child.mask(columns)


_NEEDS = {"keyword": "a string", "boolean": "true or false", "integer": "a number", "float": "a number"}


def _value(ftype: str, value: Any, where: str, name: str, op: str) -> Any:
    ok = (isinstance(value, str) if ftype == "keyword" else isinstance(value, bool) if ftype == "boolean"
          else isinstance(value, (int, float)) and not isinstance(value, bool))
    if not ok:
        raise ValueError(f"{where}: field {name!r} is {ftype}: {op!r} needs {_NEEDS[ftype]}, got "
                         f"{describe_value(value)}")
    if isinstance(value, float) and math.isnan(value):
        raise ValueError(f"{where}: field {name!r}: {op!r} needs a number, got NaN")
    return value


def _keys(keys: Iterable[Any]) -> str:
    return ", ".join(describe_value(k) for k in sorted(map(str, keys)))


def _parse(obj: Any, schema: Schema, where: str, depth: int, budget: list[int]) -> Filter:
    if depth > MAX_DEPTH:
        raise ValueError(f"filter: nested more than {MAX_DEPTH} levels deep")
    if not isinstance(obj, Mapping):
        raise ValueError(f"{where}: expected an object like {{\"field\": \"lang\", \"eq\": \"en\"}}, got "
                         f"{json_kind(obj)}")
    keys = set(obj)
    for group in ("and", "or", "not"):
        if group in keys:
            if keys != {group}:
                raise ValueError(f"{where}: {group!r} must be alone in its object, found "
                                 f"{_keys(keys - {group})} beside it")
            if group == "not":
                return Not(_parse(obj["not"], schema, f"{where}.not", depth + 1, budget))
            items = obj[group]
            if not isinstance(items, list) or not items:
                raise ValueError(f"{where}.{group}: needs a non-empty list of filters")
            children = tuple(_parse(x, schema, f"{where}.{group}[{i}]", depth + 1, budget)
                             for i, x in enumerate(items))
            return And(children) if group == "and" else Or(children)
    if "field" not in keys:
        raise ValueError(f"{where}: unknown key(s) {_keys(keys)}: a filter is a condition "
                         "{\"field\": ..., \"eq\"|\"in\"|\"exists\"|\"gt\"|\"gte\"|\"lt\"|\"lte\": ...} "
                         "or {\"and\": [...]}, {\"or\": [...]}, {\"not\": {...}}")
    budget[0] += 1
    if budget[0] > MAX_CONDITIONS:
        raise ValueError(f"filter: more than {MAX_CONDITIONS:,} conditions")
    name = obj["field"]
    if not isinstance(name, str):
        raise ValueError(f"{where}: 'field' must be a string, got {describe_value(name)}")
    if name not in schema.fields:
        known = list(schema.fields)
        listed = ", ".join(known[:20]) + (f" and {len(known) - 20:,} more" if len(known) > 20 else "")
        raise ValueError(f"{where}: unknown field {describe_value(name)}; this collection's fields: {listed}")
    ftype = schema.fields[name]
    ops = keys - {"field"}
    unknown = ops - {"eq", "in", "exists", *RANGE_OPS}
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {_keys(unknown)} in "
                         f"the condition on {name!r}: use eq, in, exists, gt, gte, lt or lte")
    if not ops:
        raise ValueError(f"{where}: the condition on {name!r} needs one of eq, in, exists, gt, gte, lt, lte")
    ranges = [op for op in RANGE_OPS if op in ops]
    single = sorted(ops - set(RANGE_OPS))
    if len(single) > 1 or (single and ranges):
        a, b = (single + ranges)[:2]
        raise ValueError(f"{where}: the condition on {name!r} combines {a!r} and {b!r}: give one of eq, in, "
                         "exists or a range (combine conditions with 'and')")
    for a, b in (("gt", "gte"), ("lt", "lte")):
        if a in ops and b in ops:
            raise ValueError(f"{where}: the condition on {name!r} gives both {a!r} and {b!r}")
    if ranges:
        if ftype not in ("integer", "float"):
            raise ValueError(f"{where}: field {name!r} is {ftype}: ranges (gt, gte, lt, lte) apply to "
                             "integer and float fields only")
        return Condition(name, ftype, "range", tuple((op, _value(ftype, obj[op], where, name, op))
                                                     for op in ranges))
    op = single[0]
    value = obj[op]
    if op == "exists":
        if not isinstance(value, bool):
            raise ValueError(f"{where}: 'exists' needs true or false, got {describe_value(value)}")
        return Condition(name, ftype, op, value)
    if op == "eq":
        return Condition(name, ftype, op, _value(ftype, value, where, name, op))
    if not isinstance(value, list) or not value:
        raise ValueError(f"{where}: 'in' for field {name!r} needs a non-empty list, got "
                         f"{describe_value(value)}")
    if len(value) > MAX_IN:
        raise ValueError(f"{where}: 'in' for field {name!r} has {len(value):,} values; at most {MAX_IN:,}")
    budget[1] += len(value)
    if budget[1] > MAX_VALUES:
        raise ValueError(f"filter: more than {MAX_VALUES:,} 'in' values in all")
    return Condition(name, ftype, op, tuple(_value(ftype, v, where, name, op) for v in value))
