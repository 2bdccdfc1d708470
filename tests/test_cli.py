import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from lsr.cli import main
from lsr.manifest import load_manifest
from lsr.params import K_MAX, MAX_BLOCK_SIZE, MIN_BLOCK_SIZE, MODES, RETRIEVERS

MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "idx"
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(out), "--no-progress",
                 "--device", "cpu"]) == 0
    return out


def test_index_then_search(built, capsys):
    assert (built / "manifest.json").is_file() and (built / "docs.sqlite").is_file()
    assert main(["search", "--index", str(built), "why does a volcano erupt lava", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["hits"][0]["id"] == "geo-1" and len(out["hits"]) == 3
    assert main(["search", "--index", str(built), "checkmate the king"]) == 0
    text = capsys.readouterr().out
    assert "sport-5" in text and "hits in" in text


def test_index_without_sparse_idf(tmp_path, capsys):
    out = tmp_path / "i"
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(out), "--no-progress", "--limit", "6",
                 "--no-sparse-idf", "--no-dense"]) == 0
    m = load_manifest(out)
    assert list(m.retrievers) == ["sparse", "bm25"] and m.build.sparse_idf is False and m.build.dense is None
    capsys.readouterr()
    assert main(["search", "--index", str(out), "volcano", "--mode", "sparse-idf"]) == 2
    assert "not available" in _one_line_error(capsys)


def test_index_summary_line(tmp_path, capsys):
    stale = tmp_path / "i.tmp-0123456789ab"  # what a killed build of the same target left
    stale.mkdir()
    (stale / "postings.npy").write_bytes(b"half")
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(tmp_path / "i"), "--no-progress",
                 "--limit", "5", "--quantization", "float32"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("indexed 5 documents,") and "postings" in line and "MiB on disk" in line
    assert os.listdir(tmp_path) == ["i"]


def test_existing_output_needs_overwrite(built, capsys):
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(built), "--no-progress"]) == 2
    assert "already exists" in capsys.readouterr().err


def _run(*args):
    # run outside the checkout: from the repo root `-m lsr` would find the source folder, not the install
    return subprocess.run([sys.executable, "-m", "lsr", *args], capture_output=True, text=True, timeout=300,
                          cwd=tempfile.gettempdir())


def test_bad_corpus_exit_2_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"_id": "a", "text": "fine"}) + "\n{broken\n", encoding="utf-8")
    r = _run("index", "--corpus", str(bad), "--out", str(tmp_path / "o"), "--no-progress")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{bad}:2" in lines[0] and "not valid JSON" in lines[0]
    assert not (tmp_path / "o").exists()


def test_skip_bad_reports(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    rows = [json.dumps({"_id": "a", "text": "bread and butter"}), "{broken",
            json.dumps({"_id": "a", "text": "repeated id"}), json.dumps({"_id": "b", "title": "no text"}),
            json.dumps({"_id": "c", "text": "coffee beans"})]
    bad.write_text("\n".join(rows) + "\n", encoding="utf-8")
    assert main(["index", "--corpus", str(bad), "--out", str(tmp_path / "o"), "--no-progress",
                 "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "indexed 2 documents" in out and "3 bad lines skipped" in out


def test_search_bad_index_exit_2(tmp_path, built, capsys):
    assert main(["search", "--index", str(tmp_path / "absent"), "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "absent" in err[0]
    # another format version
    other = tmp_path / "other"
    other.mkdir()
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["format_version"] = 999
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert main(["search", "--index", str(other), "x"]) == 2
    assert "999" in capsys.readouterr().err


def test_bad_arguments_exit_2(tmp_path):
    r = _run("search", "--index", str(tmp_path), "q", "-k", "0")
    assert r.returncode == 2 and f"k must be an integer between 1 and {K_MAX}, got 0" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # no usage block


@pytest.mark.parametrize("argv, message", [
    (["search", "--index", "x", "q", "-k", str(K_MAX + 1)], f"between 1 and {K_MAX}"),
    (["search", "--index", "x", "q", "-k", "ten"], "expected an integer, got 'ten'"),
    (["search", "--index", "x", "q", "--mode", "magic"], "invalid choice: 'magic'"),
    (["search", "--index", "x", "q", "--speed", "warp"], "invalid choice: 'warp'"),
    (["index", "--corpus", "c", "--out", "o", "--quantization", "int4"], "invalid choice: 'int4'"),
    (["index", "--corpus", "c", "--out", "o", "--dense-kind", "lsh"], "invalid choice: 'lsh'"),
    (["index", "--corpus", "c", "--out", "o", "--bm25-analyzer", "snowball"], "invalid choice: 'snowball'"),
    (["tune-fusion", "--index", "i", "--queries", "q", "--qrels", "r", "--normalization", "l2"],
     "invalid choice: 'l2'"),
])
def test_choices_come_from_lsr_params(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and message in err[0]


def test_bad_build_config_is_one_line(tmp_path, capsys):
    """What only BuildConfig checks (an empty model name) is one line and exit 2, before any model loads."""
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(tmp_path / "i"), "--model", ""]) == 2
    assert "model must be a model name or folder" in _one_line_error(capsys)
    assert not (tmp_path / "i").exists()


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_overwrite_refuses_what_is_not_an_index(tmp_path, capsys):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.txt").write_text("four years")
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(precious), "--overwrite"]) == 2
    assert "refusing to replace" in _one_line_error(capsys)
    assert os.listdir(precious) == ["thesis.txt"] and os.listdir(tmp_path) == ["precious"]
    beir = tmp_path / "beircopy"
    beir.mkdir()
    (beir / "corpus.jsonl").write_bytes(MINI_CORPUS.read_bytes())
    assert main(["index", "--corpus", str(beir), "--out", str(beir), "--overwrite", "--no-progress"]) == 2
    assert "the same as the input" in _one_line_error(capsys)
    assert os.listdir(beir) == ["corpus.jsonl"]


def test_out_dot_says_why(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for extra in ([], ["--overwrite"]):
        assert main(["index", "--corpus", str(MINI_CORPUS), "--out", ".", *extra]) == 2
        assert "it is the current folder" in _one_line_error(capsys)
    assert os.listdir(tmp_path) == []


def test_serve_bad_port_settings_one_line(tmp_path, monkeypatch, capsys):
    assert main(["serve", "--index", str(tmp_path), "--port", "70000"]) == 2
    line = _one_line_error(capsys)
    assert "port" in line and "65535" in line
    monkeypatch.setenv("LSR_PORT", "abc")
    assert main(["serve", "--index", str(tmp_path)]) == 2
    line = _one_line_error(capsys)
    assert "LSR_PORT" in line and "'abc'" in line


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_serve_busy_port_fails_before_loading(tmp_path, busy_port, capsys):
    # the index does not even exist: the port is checked first, so that is not what is reported
    assert main(["serve", "--index", str(tmp_path / "absent"), "--port", str(busy_port)]) == 2
    line = _one_line_error(capsys)
    assert f"cannot listen on 127.0.0.1:{busy_port}" in line and "absent" not in line


def test_demo_busy_port_fails_before_building(tmp_path, busy_port, capsys):
    out = tmp_path / "demo" / "index"
    assert main(["demo", "--out", str(out), "--port", str(busy_port)]) == 2
    assert "cannot listen" in _one_line_error(capsys)
    assert not (tmp_path / "demo").exists()


def test_index_block_size_and_reorder_options(tmp_path, capsys):
    out = tmp_path / "i"
    assert main(["index", "--corpus", str(MINI_CORPUS), "--out", str(out), "--no-progress", "--limit", "12",
                 "--block-size", "16", "--no-reorder"]) == 0
    capsys.readouterr()
    m = load_manifest(out)
    assert m.build.block_size == 16 and m.build.reorder is False
    assert m.retrievers["sparse"].settings["block_size"] == 16
    ids = (out / m.ids_file).read_text().split()
    first = [json.loads(line)["_id"] for line in MINI_CORPUS.read_text().splitlines()[:12]]
    assert ids == first  # no reordering: corpus order kept
    for speed in ("exact", "safe", "fast", "fastest"):
        assert main(["search", "--index", str(out), "volcano lava", "--speed", speed, "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["hits"]


def test_bad_block_size_exit_2(tmp_path):
    r = _run("index", "--corpus", str(MINI_CORPUS), "--out", str(tmp_path / "i"), "--block-size", "4")
    assert r.returncode == 2 and f"between {MIN_BLOCK_SIZE} and {MAX_BLOCK_SIZE}" in r.stderr
    assert not (tmp_path / "i").exists()


def test_search_modes_and_fusion(built, capsys):
    assert list(load_manifest(built).retrievers) == list(RETRIEVERS)  # built by default: sparse-idf too
    for mode in MODES:
        assert main(["search", "--index", str(built), "why does a volcano erupt lava", "--mode", mode,
                     "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["mode"] == mode and out["hits"][0]["id"] == "geo-1"
        assert ("fusion" in out) == (mode == "hybrid")
    assert main(["search", "--index", str(built), "volcano", "--fusion", '{"method": "rrf"}', "--json"]) == 0
    fusion = json.loads(capsys.readouterr().out)["fusion"]
    # without weights: the retrievers an untuned hybrid fuses (sparse-idf only when weighted)
    assert fusion["method"] == "rrf" and fusion["weights"] == {"sparse": 1.0, "dense": 1.0, "bm25": 1.0}
    assert main(["search", "--index", str(built), "volcano", "--fusion", '{"method": "max"}']) == 2
    assert "fusion method must be one of" in capsys.readouterr().err


def test_bad_fusion_json_exit_2(tmp_path):
    r = _run("search", "--index", str(tmp_path), "q", "--fusion", "{not json")
    assert r.returncode == 2 and "not valid JSON" in r.stderr
