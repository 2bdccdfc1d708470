"""``lsr add``, ``lsr delete``, ``lsr merge``, ``lsr stats`` and ``lsr search --filter``: what they print,
their exit codes and their one-line errors (a second writer, a bad filter, a bad corpus line, no index).

A small collection (the 30-passage fixture corpus) is built once per module and copied per test; the
session's SPLADE model stands in for every model load of the commands."""

import io
import json
import shutil

import pytest

from lsr.cli import main
from lsr.collection import Collection
from lsr.encoders import SpladeEncoder
from lsr.indexing import index_corpus

from .conftest import MINI_CORPUS

MORE = [{"_id": "n1", "title": "Zorblax", "text": "The zorblax pastry is baked on the moon.",
         "metadata": {"lang": "en", "year": 2021}},
        {"_id": "n2", "text": "Le zorblax est une pâtisserie lunaire.",
         "metadata": {"lang": "fr", "year": 2012}},
        {"_id": "geo-1", "title": "Volcanoes", "text": "Replaced: a zorblax volcano of custard.",
         "metadata": {"lang": "en", "year": 1999}}]


@pytest.fixture(scope="module")
def built(tmp_path_factory, splade):
    out = tmp_path_factory.mktemp("living-cli") / "base"
    index_corpus(MINI_CORPUS, out, encoder=splade, dense=None, show_progress=False)
    return out


@pytest.fixture
def index(built, tmp_path, splade, monkeypatch):
    """A copy of the collection; every SPLADE model load of a command gets the session's model."""
    monkeypatch.setattr(SpladeEncoder, "from_pretrained", staticmethod(lambda *a, **k: splade))
    out = tmp_path / "idx"
    shutil.copytree(built, out)
    return out


def jsonl(path, docs) -> str:
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return str(path)


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, errs = capsys.readouterr()
    return code, out, errs


def one_line_error(errs: str, command: str) -> str:
    lines = [line for line in errs.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"lsr {command}: error: "), errs
    return lines[0]


def hits(capsys, index, query, *extra) -> list[str]:
    code, out, errs = run(capsys, "search", "--index", index, query, "--mode", "sparse", "-k", "40", "--json",
                          *extra)
    assert code == 0, errs
    return [h["id"] for h in json.loads(out)["hits"]]


def test_add_delete_merge_stats(index, tmp_path, capsys):
    code, out, errs = run(capsys, "add", "--index", index, "--corpus", jsonl(tmp_path / "more.jsonl", MORE),
                          "--no-progress", "--batch-size", "2")
    assert code == 0, errs
    assert out.strip() == out.strip().splitlines()[0]  # one line: the commit
    assert out.startswith("commit 2: added 3, deleted 1; 32 documents in 2 segments (1 deleted rows)"), out
    assert hits(capsys, index, "zorblax pastry moon")[:1] == ["n1"]
    assert "geo-1" in hits(capsys, index, "zorblax custard")  # replaced: its new text

    ids = tmp_path / "ids.txt"
    ids.write_text("n2\n\nbio-1\nnot-there\n")
    code, out, errs = run(capsys, "delete", "--index", index, "--ids", ids)
    assert code == 0, errs
    lines = out.strip().splitlines()
    assert lines[0] == "2 of 3 ids found"
    assert lines[1].startswith("commit 3: added 0, deleted 2; 30 documents")
    assert not {"n2", "bio-1"} & set(hits(capsys, index, "zorblax photosynthesis sunlight pastry"))

    code, out, errs = run(capsys, "stats", "--index", index, "--json")
    s = json.loads(out)
    assert (s["documents"], s["deleted"], s["generation"], s["segments"]) == (30, 3, 3, 2)
    assert s["fields"] == {"lang": "keyword", "year": "integer"}
    code, out, errs = run(capsys, "stats", "--index", index)
    assert code == 0 and "30 documents (3 deleted rows), 2 segments, commit 3" in out
    assert "metadata fields: lang (keyword), year (integer)" in out

    code, out, errs = run(capsys, "merge", "--index", index, "--max-segments", "1")
    assert code == 0, errs
    assert out.startswith("commit 4: merged 2 segments; 30 documents in 1 segment (0 deleted rows)"), out
    code, out, errs = run(capsys, "merge", "--index", index)
    assert (code, out.strip()) == (0, "nothing to merge")
    code, out, errs = run(capsys, "stats", "--index", index, "--json")
    assert json.loads(out)["segments"] == 1
    assert hits(capsys, index, "zorblax pastry moon")[:1] == ["n1"]


def test_delete_from_stdin_and_nothing_found(index, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("sport-5\n"))
    code, out, errs = run(capsys, "delete", "--index", index, "--ids", "-")
    assert code == 0 and out.startswith("1 of 1 id found\ncommit 2: added 0, deleted 1; 29 documents"), out
    monkeypatch.setattr("sys.stdin", io.StringIO("sport-5\nnope\n"))
    code, out, errs = run(capsys, "delete", "--index", index, "--ids", "-")
    assert (code, out.strip()) == (0, "none of the 2 ids is in the index: nothing to commit")
    assert Collection.open(index, load_encoders=False).stats()["generation"] == 2  # no commit


def test_merge_by_policy(index, tmp_path, capsys):
    for i in range(10):  # 11 segments: the tiered policy merges the 10 smallest
        code, out, errs = run(capsys, "add", "--index", index, "--no-progress", "--corpus",
                              jsonl(tmp_path / f"{i}.jsonl", [{"_id": f"b{i}", "text": f"zorblax {i}"}]))
        assert code == 0, errs
    code, out, errs = run(capsys, "merge", "--index", index)
    assert code == 0, errs
    assert out.strip().splitlines() == [f"commit 12: merged 10 segments; 40 documents in 2 segments "
                                        f"(0 deleted rows), {out.split(', ')[-1].strip()}"]
    assert run(capsys, "merge", "--index", index)[1].strip() == "nothing to merge"


def test_search_filter(index, tmp_path, capsys):
    assert run(capsys, "add", "--index", index, "--corpus", jsonl(tmp_path / "m.jsonl", MORE),
               "--no-progress")[0] == 0
    assert hits(capsys, index, "zorblax", "--filter", '{"field": "lang", "eq": "fr"}') == ["n2"]
    both = hits(capsys, index, "zorblax", "--filter", '{"field": "year", "gte": 2000, "lt": 2030}')
    assert sorted(both) == ["n1", "n2"]
    old = hits(capsys, index, "zorblax", "--filter", '{"not": {"field": "year", "gte": 2000}}')
    assert "geo-1" in old and not {"n1", "n2"} & set(old)  # missing years match "not"
    code, out, errs = run(capsys, "search", "--index", index, "zorblax", "--json", "--filter",
                          '{"field": "lang", "in": ["en"]}')
    assert code == 0 and json.loads(out)["filter"] == {"field": "lang", "in": ["en"]}
    for flt, fragment in (('{"field": "colour", "eq": "red"}', 'unknown field "colour"'),
                          ('{"field": "year", "eq": "x"}', "year"),
                          ("{oops", "not valid JSON"),
                          ('[{"field": "lang", "eq": "en"}]', "expected an object")):
        code, out, errs = run(capsys, "search", "--index", index, "zorblax", "--filter", flt)
        assert code == 2 and fragment in one_line_error(errs, "search"), errs


def test_filter_without_fields(index, capsys):
    code, out, errs = run(capsys, "search", "--index", index, "volcano", "--filter",
                          '{"field": "lang", "eq": "en"}')
    assert code == 2 and "no metadata fields" in one_line_error(errs, "search")


def test_errors_are_one_line(index, tmp_path, capsys):
    holder = Collection.open(index, load_encoders=False)
    holder.delete(["bio-1"])  # a second writer: it holds the lock until it commits or closes
    try:
        corpus = jsonl(tmp_path / "more.jsonl", MORE)
        for argv in (("add", "--index", index, "--corpus", corpus, "--no-progress"),
                     ("delete", "--index", index, "--ids", jsonl(tmp_path / "ids.txt", ["x"])),
                     ("merge", "--index", index, "--max-segments", "1")):
            code, out, errs = run(capsys, *argv)
            assert code == 2 and "another writer" in one_line_error(errs, argv[0]), errs
    finally:
        holder.close()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "ok", "text": "fine"}\n{"_id": "b", "text": 7}\n')
    code, out, errs = run(capsys, "add", "--index", index, "--corpus", bad, "--no-progress")
    assert code == 2 and "bad.jsonl:2: document 'b'" in one_line_error(errs, "add"), errs
    assert Collection.open(index, load_encoders=False).stats()["generation"] == 1  # nothing committed
    code, out, errs = run(capsys, "add", "--index", index, "--corpus", bad, "--no-progress", "--skip-bad")
    assert code == 0 and out.startswith("commit 2: added 1, deleted 0") and "skipped 1 bad line" in errs
    for argv in (("add", "--index", tmp_path / "nope", "--corpus", bad, "--no-progress"),
                 ("delete", "--index", tmp_path / "nope", "--ids", "-"),
                 ("merge", "--index", tmp_path / "nope"),
                 ("stats", "--index", tmp_path / "nope"),
                 ("delete", "--index", index, "--ids", tmp_path / "no-ids.txt"),
                 ("add", "--index", index, "--corpus", tmp_path / "no-corpus.jsonl")):
        code, out, errs = run(capsys, *argv)
        assert code == 2, (argv, errs)
        one_line_error(errs, argv[0])
    with pytest.raises(SystemExit) as exit_:
        main(["merge", "--index", str(index), "--max-segments", "0"])
    assert exit_.value.code == 2 and "at least 1" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n \n")
    code, out, errs = run(capsys, "delete", "--index", index, "--ids", tmp_path / "empty.txt")
    assert code == 2 and "no ids" in one_line_error(errs, "delete")
