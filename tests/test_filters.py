"""Metadata schemas, columns and structured filters (lsr.metadata, lsr.filters): inference and its errors,
column files and their damage, every operator against a plain-Python oracle, every filter error."""

import json
import math
import random
import shutil

import numpy as np
import pytest

from lsr.errors import IndexFormatError
from lsr.filters import MAX_CONDITIONS, MAX_DEPTH, MAX_IN, And, Condition, Filter, Not, Or
from lsr.metadata import INT64_MAX, INT64_MIN, Columns, Schema, column_files, write_columns
from lsr.params import SearchParams

SCHEMA = Schema({"lang": "keyword", "tags": "keyword", "year": "integer", "score": "float",
                 "open": "boolean"})


# --- schema -------------------------------------------------------------------------------------------------

def test_infer_types_and_order():
    s = Schema.infer([{"year": 2001, "lang": "en", "none": None, "empty": []},
                      {"open": True, "tags": ["a", "b"], "score": 1},
                      {"score": 2.5, "year": None}])
    assert s.fields == {"year": "integer", "lang": "keyword", "open": "boolean", "tags": "keyword",
                        "score": "float"}
    assert list(s.fields) == ["year", "lang", "open", "tags", "score"]  # first appearance; all-missing out
    assert len(s) == 5 and len(Schema()) == 0


def test_infer_declared_fields_come_first_and_stay_fixed():
    s = Schema.infer([{"lang": "en", "year": 3}], declared={"year": "float", "x": "boolean"})
    assert s.fields == {"year": "float", "x": "boolean", "lang": "keyword"}
    with pytest.raises(ValueError, match=r"^document #0: metadata field 'year' is integer, got float value "
                                         r"2\.5$"):
        Schema.infer([{"year": 2.5}], declared={"year": "integer"})
    with pytest.raises(ValueError, match="unknown type \"date\"; use one of keyword, integer, float, "
                                         "boolean"):
        Schema.infer([], declared={"when": "date"})


@pytest.mark.parametrize("metas, message", [
    ([{"x": "a"}, {"x": 1}], "metadata field 'x' mixes keyword and integer values (document 'd0' has "
                             "\"a\", document 'd1' has 1)"),
    ([{"x": True}, {"x": 0}], "metadata field 'x' mixes boolean and integer values"),
    ([{"x": 1.5}, {"x": ["a"]}], "metadata field 'x' mixes float and keyword values"),
    ([{"x": 1}, {"x": 2.0}, {"x": False}], "metadata field 'x' mixes float and boolean values (document 'd0' "
                                           "has 1, document 'd2' has False)"),
    ([{"x": {"a": 1}}], "document 'd0': metadata field 'x': an object is not a metadata value"),
    ([{"x": [1, 2]}], "document 'd0': metadata field 'x': a list may hold only strings, not a number"),
    ([{"x": float("nan")}], "metadata field 'x': NaN is not a value (use null for a missing one)"),
    ([{"x": 2**63}], "metadata field 'x': the integer 9223372036854775808 does not fit in 64 bits"),
    ([{}, ["x"]], "document 'd1': metadata must be an object, not a list"),
    ([{"": 1}], "document 'd0': metadata field name must be a non-empty string"),
    ([{"a\nb": 1}], "must have at most 256 characters and no control characters"),
])
def test_infer_errors_name_field_and_types(metas, message):
    with pytest.raises(ValueError) as e:
        Schema.infer(metas, ids=[f"d{i}" for i in range(len(metas))])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_int_and_float_mix_is_float_and_extremes_fit():
    assert Schema.infer([{"x": 1}, {"x": 2.0}, {"x": 3}]).fields == {"x": "float"}
    assert Schema.infer([{"x": INT64_MIN}, {"x": INT64_MAX}]).fields == {"x": "integer"}


def test_extend_fixes_known_types_and_adds_new_fields():
    s = Schema.infer([{"year": 2001, "score": 1.5}])
    assert s.extend([{"score": 2}, {"year": None}]) == s  # an int for a float field is fine
    grown = s.extend([{"lang": "en", "n": 1}, {"n": 2.5}])
    assert list(grown.fields.items()) == [("year", "integer"), ("score", "float"), ("lang", "keyword"),
                                          ("n", "float")]
    with pytest.raises(ValueError, match=r"^document 'd9': metadata field 'year' is integer, got float value "
                                         r"2\.5$"):
        s.extend([{"year": 2.5}], ids=["d9"])
    with pytest.raises(ValueError, match="document #1: metadata field 'score' is float, got keyword "
                                         "value \"x\""):
        s.extend([{}, {"score": "x"}])
    with pytest.raises(ValueError, match="metadata field 'year' is integer, got boolean value True"):
        s.extend([{"year": True}])


def test_schema_json_round_trip_keeps_order():
    s = Schema({"z": "boolean", "a": "keyword", "m": "float"})
    obj = json.loads(json.dumps(s.to_json()))
    assert obj == {"fields": [{"name": "z", "type": "boolean"}, {"name": "a", "type": "keyword"},
                              {"name": "m", "type": "float"}]}
    back = Schema.from_json(obj, "x/commit-3.json")
    assert back == s and list(back.fields) == ["z", "a", "m"]


@pytest.mark.parametrize("obj", [
    None, [], {}, {"fields": {}}, {"fields": [], "more": 1}, {"fields": ["lang"]},
    {"fields": [{"name": "lang"}]}, {"fields": [{"name": "lang", "type": "keyword", "x": 1}]},
    {"fields": [{"name": "lang", "type": "text"}]}, {"fields": [{"name": "", "type": "keyword"}]},
    {"fields": [{"name": 3, "type": "keyword"}]}, {"fields": [{"name": ["a"], "type": "keyword"}]},
    {"fields": [{"name": "a", "type": "keyword"}, {"name": "a", "type": "integer"}]},
])
def test_damaged_schema_json_is_an_index_format_error(obj):
    with pytest.raises(IndexFormatError, match=r"^seg/manifest\.json: ") as e:
        Schema.from_json(obj, "seg/manifest.json")
    assert "\n" not in str(e.value)


# --- columns ------------------------------------------------------------------------------------------------

METAS = [{"lang": "en", "tags": ["b", "a"], "year": 2010, "score": 1.5, "open": True},
         {"lang": "fr", "tags": "c", "year": None, "score": 3},
         {"tags": [], "year": -4, "open": False},
         {},
         {"lang": "en", "tags": ["a", "a"], "year": INT64_MAX, "score": -math.inf, "open": None}]
DECODED = [{"lang": "en", "tags": ["a", "b"], "year": 2010, "score": 1.5, "open": True},
           {"lang": "fr", "tags": "c", "score": 3.0}, {"year": -4, "open": False}, {},
           {"lang": "en", "tags": "a", "year": INT64_MAX, "score": -math.inf}]


def test_columns_round_trip_through_files(tmp_path):
    files = write_columns(tmp_path, SCHEMA, METAS)
    assert files == column_files(SCHEMA) and all(f.startswith("metadata/") for f in files)
    assert not any(name in f for f in files for name in SCHEMA.fields)  # no user names in file names
    loaded = Columns.load(tmp_path, SCHEMA, len(METAS), files=files + ["ids.txt"])
    assert loaded.metadata() == DECODED == Columns.build(SCHEMA, METAS).metadata()
    assert loaded.metadata([4, 0]) == [DECODED[4], DECODED[0]]
    assert json.loads((tmp_path / "metadata/0.dictionary.json").read_text()) == ["en", "fr"]
    assert np.load(tmp_path / "metadata/1.indptr.npy").tolist() == [0, 2, 3, 3, 3, 4]


def test_empty_schema_and_empty_segment(tmp_path):
    assert write_columns(tmp_path / "a", Schema(), [{}, {}]) == [] and not (tmp_path / "a").exists()
    assert Columns.load(tmp_path / "a", Schema(), 2).metadata() == [{}, {}]
    write_columns(tmp_path / "b", SCHEMA, [])
    cols = Columns.load(tmp_path / "b", SCHEMA, 0)
    assert cols.metadata() == []
    assert Filter.check({"field": "tags", "eq": "a"}, SCHEMA).mask(cols).shape == (0,)


def test_writing_checks_metadata_against_the_schema(tmp_path):
    with pytest.raises(ValueError, match=r"^document 'b': metadata field 'year' is integer, got keyword"):
        write_columns(tmp_path, SCHEMA, [{}, {"year": "1999"}], ids=["a", "b"])
    with pytest.raises(ValueError, match="document #0: metadata field 'new' is not in the schema"):
        Columns.build(SCHEMA, [{"new": 1}])


def _save(path, arr):
    with open(path, "wb") as f:
        np.save(f, arr, allow_pickle=True)


DAMAGE = {  # name: (change to metadata/ files, message); fields 0 lang, 1 tags, 2 year, 3 score, 4 open
    "missing file": (lambda d: (d / "1.codes.npy").unlink(),
                     "is incomplete: metadata/1.codes.npy is missing"),
    "garbage npy": (lambda d: (d / "2.values.npy").write_bytes(b"\x93NUMPY garbage"), "is not readable"),
    "truncated npy": (lambda d: (d / "3.values.npy").write_bytes((d / "3.values.npy").read_bytes()[:-3]),
                      "is not readable"),
    "codes int64": (lambda d: _save(d / "1.codes.npy", np.load(d / "1.codes.npy").astype(np.int64)),
                    "expected a 1-D int32 array, found int64"),
    "2-D values": (lambda d: _save(d / "3.values.npy", np.zeros((5, 1))), "found float64, 2-D"),
    "float32 values": (lambda d: _save(d / "3.values.npy", np.zeros(5, np.float32)),
                       "expected a 1-D float64"),
    "big-endian": (lambda d: _save(d / "2.values.npy", np.zeros(5, ">i8")), "expected a 1-D int64 array"),
    "short values": (lambda d: _save(d / "2.values.npy", np.zeros(4, np.int64)),
                     "2.values.npy (field 'year'): 4 entries, expected 5 (for 5 rows)"),
    "object array": (lambda d: _save(d / "3.values.npy", np.array([1.0, None] * 2 + [1], dtype=object)),
                     "is not readable"),
    "indptr not monotone": (lambda d: _save(d / "1.indptr.npy", np.array([0, 2, 1, 3, 3, 4], np.int64)),
                            "not a monotone offset array"),
    "indptr end": (lambda d: _save(d / "1.indptr.npy", np.array([0, 2, 3, 3, 3, 3], np.int64)),
                   "not a monotone offset array from 0 to 4"),
    "indptr start": (lambda d: _save(d / "0.indptr.npy", np.array([1, 1, 2, 2, 2, 3], np.int64)),
                     "not a monotone offset array"),
    "code too large": (lambda d: _save(d / "0.codes.npy", np.array([0, 2, 0], np.int32)),
                       "a code outside the dictionary (0..1)"),
    "negative code": (lambda d: _save(d / "0.codes.npy", np.array([0, -1, 0], np.int32)), "outside the dict"),
    "unsorted dictionary": (lambda d: (d / "0.dictionary.json").write_text('["fr", "en"]'), "not sorted"),
    "repeated word": (lambda d: (d / "1.dictionary.json").write_text('["a", "a", "c"]'),
                      "not sorted and unique"),
    "dictionary not JSON": (lambda d: (d / "0.dictionary.json").write_text('["en", '), "is not readable"),
    "dictionary not UTF-8": (lambda d: (d / "0.dictionary.json").write_bytes(b'["\xff"]'), "is not readable"),
    "dictionary of numbers": (lambda d: (d / "0.dictionary.json").write_text("[1, 2]"), "a JSON list of str"),
    "dictionary object": (lambda d: (d / "0.dictionary.json").write_text('{"en": 0}'), "a JSON list of str"),
    "present 2": (lambda d: _save(d / "2.present.npy", np.array([1, 0, 2, 0, 1], np.uint8)),
                  "values other than 0 and 1"),
    "boolean 3": (lambda d: _save(d / "4.values.npy", np.array([1, -1, 3, -1, -1], np.int8)),
                  "values other than -1 (missing), 0 and 1"),
    "boolean -2": (lambda d: _save(d / "4.values.npy", np.array([1, -2, 0, -1, -1], np.int8)),
                   "other than -1"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_each_damaged_column_file_is_an_index_format_error(tmp_path, case):
    write_columns(tmp_path, SCHEMA, METAS)
    damage, message = DAMAGE[case]
    damage(tmp_path / "metadata")
    with pytest.raises(IndexFormatError) as e:
        Columns.load(tmp_path, SCHEMA, len(METAS))
    assert message in str(e.value) and str(tmp_path) in str(e.value) and "\n" not in str(e.value)


def test_load_checks_row_count_and_the_file_list(tmp_path):
    files = write_columns(tmp_path, SCHEMA, METAS)
    with pytest.raises(IndexFormatError, match=r"0\.indptr\.npy \(field 'lang'\): 6 entries, expected 5 "
                                               r"\(for 4 rows\)"):
        Columns.load(tmp_path, SCHEMA, 4)
    with pytest.raises(IndexFormatError, match="lacks metadata/2.present.npy"):
        Columns.load(tmp_path, SCHEMA, 5, files=[f for f in files if f != "metadata/2.present.npy"])
    with pytest.raises(IndexFormatError, match="lists metadata/9.values.npy, which its metadata schema"):
        Columns.load(tmp_path, SCHEMA, 5, files=files + ["metadata/9.values.npy"])
    shutil.rmtree(tmp_path / "metadata")
    with pytest.raises(IndexFormatError, match="metadata/0.indptr.npy is missing"):
        Columns.load(tmp_path, SCHEMA, 5)


# --- filters: hand-computed cases ---------------------------------------------------------------------------

@pytest.mark.parametrize("obj, rows", [
    ({"field": "lang", "eq": "en"}, [0, 4]),
    ({"field": "lang", "eq": "de"}, []),  # not in the segment's dictionary
    ({"field": "lang", "in": ["fr", "de"]}, [1]),
    ({"field": "tags", "eq": "a"}, [0, 4]),
    ({"field": "tags", "in": ["b", "c"]}, [0, 1]),
    ({"field": "tags", "exists": False}, [2, 3]),
    ({"field": "year", "gte": 2010}, [0, 4]),
    ({"field": "year", "gt": -4.5, "lt": 2010.5}, [0, 2]),
    ({"field": "year", "eq": 2010.0}, [0]),
    ({"field": "year", "eq": 2010.5}, []),
    ({"field": "year", "lte": 1e300}, [0, 2, 4]),
    ({"field": "year", "gt": 10**30}, []),
    ({"field": "year", "gte": -math.inf}, [0, 2, 4]),
    ({"field": "year", "lt": -math.inf}, []),
    ({"field": "year", "in": [-4, 2010.5, 10**30, INT64_MAX]}, [2, 4]),
    ({"field": "score", "lt": 2}, [0, 4]),
    ({"field": "score", "eq": 3}, [1]),
    ({"field": "score", "gte": -math.inf, "lte": 1.5}, [0, 4]),
    ({"field": "open", "eq": False}, [2]),
    ({"field": "open", "in": [True, False]}, [0, 2]),
    ({"field": "open", "exists": True}, [0, 2]),
    ({"not": {"field": "lang", "eq": "en"}}, [1, 2, 3]),  # missing values match not
    ({"and": [{"field": "lang", "eq": "en"}, {"field": "open", "eq": True}]}, [0]),
    ({"or": [{"field": "lang", "eq": "fr"}, {"field": "year", "lt": 0}]}, [1, 2]),
    ({"not": {"or": [{"field": "lang", "exists": True}, {"field": "open", "exists": True}]}}, [3]),
])
def test_hand_computed_masks(obj, rows):
    f = Filter.check(obj, SCHEMA)
    mask = f.mask(Columns.build(SCHEMA, METAS))
    assert mask.dtype == bool and mask.shape == (len(METAS),)
    assert np.flatnonzero(mask).tolist() == rows


def test_integer_and_float_comparisons_are_exact():
    schema = Schema({"i": "integer", "f": "float"})
    big = 2**53
    cols = Columns.build(schema, [{"i": INT64_MIN, "f": float(big)}, {"i": -1, "f": float(big + 2)},
                                  {"i": INT64_MAX, "f": 0.5}])

    def rows(obj):
        return np.flatnonzero(Filter.check(obj, schema).mask(cols)).tolist()

    assert rows({"field": "f", "gte": big + 1}) == [1]  # float(big + 1) rounds to big: must not match row 0
    assert rows({"field": "f", "lte": big + 1}) == [0, 2]
    assert rows({"field": "f", "gt": big + 1}) == [1] and rows({"field": "f", "lt": big + 1}) == [0, 2]
    assert rows({"field": "f", "eq": big + 1}) == [] and rows({"field": "f", "in": [big + 1, big]}) == [0]
    assert rows({"field": "f", "lt": -(10**400)}) == []
    assert rows({"field": "f", "gt": -(10**400)}) == [0, 1, 2]
    assert rows({"field": "i", "gte": INT64_MIN, "lte": INT64_MAX}) == [0, 1, 2]
    assert rows({"field": "i", "gt": INT64_MAX}) == [] and rows({"field": "i", "lt": INT64_MIN}) == []
    assert rows({"field": "i", "gt": -1.5, "lt": -0.5}) == [1] and rows({"field": "i", "gte": 9.2e18}) == [2]


def test_a_segment_without_the_field_has_it_missing_everywhere():
    old = Columns.build(Schema({"lang": "keyword"}), [{"lang": "en"}, {}])
    assert Filter.check({"field": "year", "eq": 1}, SCHEMA).mask(old).tolist() == [False, False]
    assert Filter.check({"field": "year", "exists": False}, SCHEMA).mask(old).tolist() == [True, True]
    assert Filter.check({"not": {"field": "year", "gt": 1}}, SCHEMA).mask(old).tolist() == [True, True]


def test_to_json_str_and_structure():
    obj = {"and": [{"field": "lang", "in": ["en", "fr"]}, {"field": "year", "gte": 2010, "lt": 2020},
                   {"not": {"field": "open", "eq": True}}, {"or": [{"field": "tags", "exists": False},
                                                                  {"field": "score", "lte": 1.5}]}]}
    f = Filter.check(json.dumps(obj), SCHEMA)
    assert isinstance(f, And) and isinstance(f.children[2], Not) and isinstance(f.children[3], Or)
    assert f.children[1] == Condition("year", "integer", "range", (("gte", 2010), ("lt", 2020)))
    assert f.to_json() == obj and Filter.check(f, SCHEMA) == f and Filter.check(f.to_json(), SCHEMA) == f
    assert str(f) == ('(lang in ["en", "fr"] and 2010 <= year < 2020 and not (open = true) and '
                      '(tags is missing or score <= 1.5))')
    assert f.fields == {"lang", "year", "open", "tags", "score"}
    odd = Schema({"a b": "keyword"})
    assert str(Filter.check({"field": "a b", "eq": "x"}, odd)) == '"a b" = "x"'
    assert hash(f) == hash(Filter.check(obj, SCHEMA))


# --- filters against a plain-Python oracle ------------------------------------------------------------------

WORDS = ["en", "fr", "de", "es", "it"]


def _random_meta(rng, dense):
    meta = {}
    if dense:  # every row has exactly one keyword: the single-valued fast path
        meta["lang"] = rng.choice(WORDS[:4])
    elif rng.random() < 0.8:
        meta["lang"] = rng.choice(WORDS[:4])
    if rng.random() < 0.8:
        meta["tags"] = rng.choice([rng.sample(WORDS, rng.randint(0, 3)), rng.choice(WORDS)])
    if rng.random() < 0.8:
        meta["year"] = rng.choice([rng.randint(-3, 3), rng.randint(1990, 2030), INT64_MAX, INT64_MIN])
    if rng.random() < 0.8:
        meta["score"] = rng.choice([rng.randint(-3, 3), round(rng.uniform(-3, 3), 1), math.inf, -math.inf])
    if rng.random() < 0.8:
        meta["open"] = rng.random() < 0.5
    for name in [n for n in meta if not dense or n != "lang"]:
        if rng.random() < 0.05:
            meta[name] = None
    return meta


def _number(rng, ftype):
    picks = [rng.randint(-3, 3), rng.randint(1990, 2030), rng.randint(-3, 3) + 0.5, float(rng.randint(-3, 3))]
    if ftype == "float":
        picks += [round(rng.uniform(-3, 3), 1)]
    if rng.random() < 0.1:
        picks = [rng.choice([10**30, -(10**30), 1e300, -1e300, math.inf, -math.inf, INT64_MAX, INT64_MIN])]
    return rng.choice(picks)


def _random_condition(rng):
    name = rng.choice(list(SCHEMA.fields))
    ftype = SCHEMA.fields[name]
    ops = ["eq", "in", "exists"] + (["range"] if ftype in ("integer", "float") else [])
    op = rng.choice(ops)
    value = {"keyword": lambda: rng.choice(WORDS + ["zz"]), "boolean": lambda: rng.random() < 0.5}.get(
        ftype, lambda: _number(rng, ftype))
    if op == "exists":
        return {"field": name, "exists": rng.random() < 0.5}
    if op == "eq":
        return {"field": name, "eq": value()}
    if op == "in":
        return {"field": name, "in": [value() for _ in range(rng.randint(1, 4))]}
    cond = {"field": name}
    if rng.random() < 0.7:
        cond[rng.choice(["gt", "gte"])] = _number(rng, ftype)
    if rng.random() < 0.7 or len(cond) == 1:
        cond[rng.choice(["lt", "lte"])] = _number(rng, ftype)
    return cond


def _random_filter(rng, depth=0):
    if depth >= 3 or rng.random() < 0.45:
        return _random_condition(rng)
    kind = rng.choice(["and", "or", "not"])
    if kind == "not":
        return {"not": _random_filter(rng, depth + 1)}
    return {kind: [_random_filter(rng, depth + 1) for _ in range(rng.randint(1, 3))]}


def _holds(f, meta):
    """The oracle: plain Python over one document's metadata (float fields compare as stored, float64)."""
    if "and" in f:
        return all(_holds(c, meta) for c in f["and"])
    if "or" in f:
        return any(_holds(c, meta) for c in f["or"])
    if "not" in f:
        return not _holds(f["not"], meta)
    v = meta.get(f["field"])
    values = [] if v is None else list(v) if isinstance(v, list) else [v]
    if SCHEMA.fields[f["field"]] == "float":
        values = [float(x) for x in values]
    if "exists" in f:
        return bool(values) == f["exists"]
    if "eq" in f:
        return any(x == f["eq"] for x in values)
    if "in" in f:
        return any(x == y for x in values for y in f["in"])
    cmp = {"gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b,
           "lte": lambda a, b: a <= b}
    return bool(values) and all(cmp[op](values[0], b) for op, b in f.items() if op != "field")


@pytest.mark.parametrize("seed", range(40))
def test_every_operator_matches_the_oracle(seed, tmp_path):
    rng = random.Random(seed)
    dense = seed % 3 == 0
    metas = [_random_meta(rng, dense) for _ in range(rng.randint(1, 80))]
    kept = rng.sample(list(SCHEMA.fields), rng.randint(0, 5))  # a segment may predate some fields
    seg_schema = Schema({n: t for n, t in SCHEMA.fields.items() if n in kept})
    seg_metas = [{n: v for n, v in m.items() if n in kept} for m in metas]
    write_columns(tmp_path, seg_schema, seg_metas)
    built = Columns.build(seg_schema, seg_metas)
    loaded = Columns.load(tmp_path, seg_schema, len(metas))
    assert not dense or "lang" not in kept or loaded.column("lang").single
    for _ in range(25):
        obj = _random_filter(rng)
        f = Filter.check(obj, SCHEMA)
        expected = [_holds(obj, m) for m in seg_metas]
        assert f.mask(built).tolist() == expected, obj
        assert f.mask(loaded).tolist() == expected, obj
        assert Filter.check(f.to_json(), SCHEMA) == f and "\n" not in str(f)


def test_masks_are_fresh_arrays():
    cols = Columns.build(SCHEMA, METAS)
    f = Filter.check({"field": "lang", "exists": True}, SCHEMA)
    f.mask(cols)[:] = False
    assert f.mask(cols).tolist() == [True, True, False, False, True]


# --- filter errors ------------------------------------------------------------------------------------------

def _nest(depth):
    f = {"field": "lang", "eq": "en"}
    for _ in range(depth - 1):
        f = {"not": f}
    return f


@pytest.mark.parametrize("obj, message", [
    ({"field": "nope", "eq": 1}, "filter: unknown field \"nope\"; this collection's fields: lang, tags, "
                                 "year, score, open"),
    ({"field": 3, "eq": 1}, "filter: 'field' must be a string, got 3"),
    ({"field": "lang", "gt": "a"}, "filter: field 'lang' is keyword: ranges (gt, gte, lt, lte) apply to "
                                   "integer and float fields only"),
    ({"field": "open", "lte": 1}, "field 'open' is boolean: ranges"),
    ({"field": "lang", "eq": 5}, "filter: field 'lang' is keyword: 'eq' needs a string, got 5"),
    ({"field": "lang", "eq": ["en"]}, "'eq' needs a string, got [\"en\"]"),
    ({"field": "year", "eq": "2010"}, "field 'year' is integer: 'eq' needs a number, got \"2010\""),
    ({"field": "year", "eq": True}, "field 'year' is integer: 'eq' needs a number, got True"),
    ({"field": "score", "gte": None}, "field 'score' is float: 'gte' needs a number, got None"),
    ({"field": "score", "lt": float("nan")}, "field 'score': 'lt' needs a number, got NaN"),
    ({"field": "open", "eq": 1}, "field 'open' is boolean: 'eq' needs true or false, got 1"),
    ({"field": "tags", "in": ["a", 1]}, "field 'tags' is keyword: 'in' needs a string, got 1"),
    ({"field": "tags", "in": "a"}, "'in' for field 'tags' needs a non-empty list, got \"a\""),
    ({"field": "tags", "in": []}, "'in' for field 'tags' needs a non-empty list, got []"),
    ({"field": "tags", "in": ["a"] * (MAX_IN + 1)},
     "'in' for field 'tags' has 10,001 values; at most 10,000"),
    ({"or": [{"field": "tags", "in": ["a"] * MAX_IN}] * 11}, "filter: more than 100,000 'in' values in all"),
    ({"field": "lang", "exists": "yes"}, "'exists' needs true or false, got \"yes\""),
    ({"field": "lang"}, "the condition on 'lang' needs one of eq, in, exists, gt, gte, lt, lte"),
    ({"field": "lang", "eq": "en", "in": ["fr"]},
     "the condition on 'lang' combines 'eq' and 'in': give one of"),
    ({"field": "year", "eq": 1, "gt": 0}, "combines 'eq' and 'gt'"),
    ({"field": "year", "gt": 1, "gte": 0}, "the condition on 'year' gives both 'gt' and 'gte'"),
    ({"field": "year", "lt": 1, "lte": 0}, "gives both 'lt' and 'lte'"),
    ({"field": "lang", "eq": "en", "boost": 2},
     "unknown key(s) \"boost\" in the condition on 'lang': use eq, in"),
    ({"term": "x"}, "filter: unknown key(s) \"term\": a filter is a condition"),
    ({}, "filter: unknown key(s) : a filter is a condition"),
    ({"and": [{"field": "lang", "eq": "en"}], "or": []}, "filter: 'and' must be alone in its object, found "
                                                         "\"or\" beside it"),
    ({"and": []}, "filter.and: needs a non-empty list of filters"),
    ({"or": {"field": "lang", "eq": "en"}}, "filter.or: needs a non-empty list of filters"),
    ({"not": [{"field": "lang", "eq": "en"}]}, "filter.not: expected an object like"),
    (["lang"], "filter: expected an object like {\"field\": \"lang\", \"eq\": \"en\"}, got a list"),
    ({"and": [{"field": "lang", "eq": "en"}, {"or": [{"field": "x", "eq": 1}]}]},
     "filter.and[1].or[0]: unknown field \"x\""),
    (_nest(MAX_DEPTH + 1), "filter: nested more than 16 levels deep"),
    ({"and": [{"field": "lang", "eq": "en"}] * (MAX_CONDITIONS + 1)}, "filter: more than 1,024 conditions"),
    ("{\"field\": ", "filter is not valid JSON (Expecting value at column 11)"),
    ("[" * 100_000 + "]" * 100_000, "filter: nested more than 16 levels deep"),
    ('{"not": ' * 5000 + '{"field": "lang", "eq": "en"}' + "}" * 5000, "filter: nested more than 16 levels"),
])
def test_filter_errors_are_one_clear_line(obj, message):
    with pytest.raises(ValueError) as e:
        Filter.check(obj, SCHEMA)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_limits_are_inclusive():
    assert Filter.check(_nest(MAX_DEPTH), SCHEMA)
    assert Filter.check({"and": [{"field": "lang", "eq": "en"}] * MAX_CONDITIONS}, SCHEMA)
    assert Filter.check({"field": "tags", "in": ["a"] * MAX_IN}, SCHEMA)


def test_a_collection_without_fields_refuses_filters():
    for schema in (None, Schema()):
        with pytest.raises(ValueError, match="^filter: this collection has no metadata fields$"):
            Filter.check({"field": "lang", "eq": "en"}, schema)


def test_search_params_carry_a_checked_filter():
    p = SearchParams.check(k=5, filter={"field": "lang", "eq": "en"}, schema=SCHEMA)
    assert p.filter == Condition("lang", "keyword", "eq", "en") and p.k == 5
    assert SearchParams.check(filter='{"field": "lang", "eq": "en"}', schema=SCHEMA).filter == p.filter
    assert SearchParams.check(filter=p.filter, schema=SCHEMA).filter == p.filter
    assert SearchParams.check().filter is None and SearchParams().filter is None
    with pytest.raises(ValueError, match="this collection has no metadata fields"):
        SearchParams.check(filter={"field": "lang", "eq": "en"})
    with pytest.raises(ValueError, match="this collection has no metadata fields"):
        SearchParams.check(filter={"field": "lang", "eq": "en"}, schema=Schema())
    with pytest.raises(ValueError, match="unknown field \"lng\""):
        SearchParams.check(filter={"field": "lng", "eq": "en"}, schema=SCHEMA)
