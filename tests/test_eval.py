"""BEIR evaluation: metric wiring on hand-computed values, the TREC run writer, `lsr eval` end to end."""

import json
import math
from pathlib import Path

import pytest

import lsr.eval.run as ev
from lsr.cli import main
from lsr.eval import markdown_table
from lsr.eval.beir import load_beir
from lsr.eval.metrics import drop_identical_ids, evaluate, read_trec_run, top_overlap, write_trec_run
from lsr.params import DEFAULT_DENSE_MODEL, DEFAULT_MODEL, MODES, BuildConfig
from lsr.util import sha256_file

QRELS = {"q1": {"d1": 1, "d3": 2, "d9": 0}, "q2": {"d5": 1}, "q3": {"d7": 1}}
RUN = {"q1": {"d1": 3.0, "d2": 2.0, "d3": 1.0},   # relevant at ranks 1 (gain 1) and 3 (gain 2)
       "q2": {"d4": 2.0, "d5": 1.0},               # relevant at rank 2
       "q3": {},                                   # no hits: counts as 0
       "q-unjudged": {"d1": 1.0}}                  # not judged: ignored


def test_metrics_against_hand_computed_values():
    m = evaluate(RUN, QRELS, ["ndcg@10", "mrr@10", "recall@100", "recall@1000", "map"])
    # trec_eval's nDCG uses the relevance as gain: DCG = 1/log2(2) + 2/log2(4), ideal = 2/1 + 1/log2(3)
    ndcg_q1 = (1 + 2 / 2) / (2 + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(3)) / 1
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2 + 0) / 3, abs=1e-9)
    assert m["mrr@10"] == pytest.approx((1 + 0.5 + 0) / 3)
    assert m["recall@100"] == pytest.approx((1 + 1 + 0) / 3)       # d9 has relevance 0: not relevant
    assert m["recall@1000"] == m["recall@100"]
    assert m["map"] == pytest.approx(((1 + 2 / 3) / 2 + 0.5 + 0) / 3)


def test_per_query_values_and_names():
    pq = evaluate(RUN, QRELS, ["mrr@10", "RR@10"], per_query=True)
    assert pq["mrr@10"] == {"q1": 1.0, "q2": 0.5, "q3": 0.0}
    assert pq["RR@10"] == pq["mrr@10"]  # ir-measures names work too
    with pytest.raises(ValueError, match="unknown metric 'ndcg@ten'"):
        evaluate(RUN, QRELS, ["ndcg@ten"])


def test_trec_run_writer_round_trip(tmp_path):
    run = {"q1": {"b": 1.0, "a": 1.0, "c": 2.5}, "q2": {"x": -0.25}}
    path = tmp_path / "run.trec"
    assert write_trec_run(run, path, tag="mine") == 4
    lines = path.read_text().splitlines()
    # best first, ties by document id, ranks from 1, six columns
    assert lines[:3] == ["q1 Q0 c 1 2.500000 mine", "q1 Q0 a 2 1.000000 mine", "q1 Q0 b 3 1.000000 mine"]
    assert lines[3] == "q2 Q0 x 1 -0.250000 mine"
    assert read_trec_run(path) == run
    assert evaluate(read_trec_run(path), {"q1": {"a": 1}}, ["mrr@10"])["mrr@10"] == pytest.approx(0.5)
    assert not list(tmp_path.glob("*.tmp"))


def test_trec_run_writer_refuses_what_trec_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="one word"):
        write_trec_run({"q": {"d": 1.0}}, tmp_path / "r", tag="two words")
    with pytest.raises(ValueError, match="ids with spaces"):
        write_trec_run({"q": {"d 1": 1.0}}, tmp_path / "r")
    bad = tmp_path / "bad.trec"
    bad.write_text("q1 Q0 d1 1 0.5 tag\nq1 Q0 d2 2 tag\n")
    with pytest.raises(ValueError, match=r"bad.trec:2: expected 6 columns"):
        read_trec_run(bad)


def test_identical_ids_and_top_overlap():
    assert drop_identical_ids({"q1": {"q1": 9.0, "d": 1.0}}) == {"q1": {"d": 1.0}}
    a = {"q1": {"a": 3, "b": 2, "c": 1}, "q2": {"x": 1}}
    b = {"q1": {"a": 3, "c": 2, "z": 1}, "q2": {"x": 5}}
    o = top_overlap(a, b, k=2)   # q1: {a, b} vs {a, c} -> 1/2; q2: equal
    assert o == {"overlap": pytest.approx(0.75), "identical": 0.5, "queries": 2}


def _fake_result(name, ndcg, qps):
    return {"dataset": {"name": name}, "settings": {"metrics": ["ndcg@10"]},
            "runs": {"sparse": {"metrics": {"ndcg@10": ndcg}, "timings": {"queries_per_second": qps}}}}


def test_markdown_table_average_row():
    table = markdown_table([_fake_result("a", 0.5, 10.0), _fake_result("b", 0.7, 1000.0)])
    lines = table.splitlines()
    assert lines[0] == "| data set | system | nDCG@10 | queries/s |"
    assert lines[2] == "| a | lsr sparse (SPLADE) | 0.5000 | 10 |"
    assert lines[-1] == "| average (2) | lsr sparse (SPLADE) | 0.6000 | - |"


def test_lsr_eval_end_to_end(mini_beir, tmp_path, capsys, mini_searcher):
    out, idx = tmp_path / "results", tmp_path / "indexes"
    args = ["eval", "--beir", str(mini_beir), "--index-dir", str(idx), "--out", str(out), "--no-progress",
            "--warmup", "2"]  # no --modes: every mode the index has, in lsr.params.MODES order
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "| mini | lsr sparse (SPLADE) |" in table and "| mini | lsr hybrid |" in table
    res = json.loads((out / "mini" / "metrics.json").read_text())
    assert res["settings"]["modes"] == list(MODES) == ["hybrid", "sparse", "dense", "bm25", "sparse-idf"]
    assert res["index"]["retrievers"] == ["sparse", "dense", "bm25", "sparse-idf"]
    assert res["dataset"]["queries"] == 5 and res["dataset"]["documents"] == 30
    assert set(res["dataset"]["checksums"]) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    assert res["lsr"]["lsr-engine"] and "commit" in res["lsr"] and res["machine"]["cores"] >= 1
    assert len(res["index"]["encoder"]["weights_sha256"]) == 64 and res["index"]["cached"] is False
    assert res["index"]["dense_encoder"]["name"] == DEFAULT_DENSE_MODEL
    assert res["settings"]["k"] == 1000 and res["settings"]["fusion"]["method"]
    ds = load_beir(mini_beir)
    for mode in MODES:
        entry = res["runs"][mode]
        run = read_trec_run(out / "mini" / entry["run_file"])
        assert set(run) == set(ds.queries) == set(entry["per_query"]["ndcg@10"])
        # the run file scores what metrics.json says
        assert evaluate(run, ds.qrels, ["ndcg@10"])["ndcg@10"] == pytest.approx(entry["metrics"]["ndcg@10"],
                                                                              abs=1e-6)
        t = entry["timings"]
        assert t["encode_seconds"] > 0 and t["search_seconds"] > 0 and t["queries_per_second"] > 0
    # the sparse run is what the Searcher returns for those queries
    expect = mini_searcher.batch_search(ds.queries, k=1000, mode="sparse")
    got = read_trec_run(out / "mini" / "run.sparse.trec")
    assert {q: list(v)[:10] for q, v in got.items()} == \
        {q: sorted(v, key=lambda d: (-v[d], d))[:10] for q, v in expect.items()}
    assert (out / "mini" / "results.md").read_text().startswith("| data set | system |")
    # scripts/beir_report.py turns the folder into the README table
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "scripts" / "beir_report.py"
    rep = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True)
    assert rep.returncode == 0, rep.stderr
    assert "| mini | lsr hybrid |" in rep.stdout and "- mini: lsr " in rep.stdout
    # a second run reuses the index built by the first
    assert main(args[:-2] + ["--modes", "sparse", "--warmup", "0"]) == 0
    assert json.loads((out / "mini" / "metrics.json").read_text())["index"]["cached"] is True


def test_lsr_eval_several_data_sets_writes_summary(mini_beir, tmp_path, capsys):
    import shutil

    other = tmp_path / "mini2"
    shutil.copytree(mini_beir, other)
    out = tmp_path / "results"
    assert main(["eval", "--beir", str(mini_beir), "--beir", str(other), "--index-dir", str(tmp_path / "i"),
                 "--out", str(out), "--modes", "bm25", "--no-progress", "--warmup", "0"]) == 0
    summary = (out / "summary.md").read_text()
    assert "| mini | lsr bm25 |" in summary and "| mini2 | lsr bm25 |" in summary
    assert "| average (2) | lsr bm25 |" in summary


@pytest.mark.parametrize("extra, message", [
    (["--modes", "sparse,magic"], "unknown mode 'magic'"),
    (["--metrics", "ndcg@ten"], "unknown metric 'ndcg@ten'"),
    (["--baselines", "elastic"], "unknown baseline 'elastic'"),
    (["--speed", "warp"], "unknown speed 'warp'"),
    (["-k", "0"], "-k must be an integer between 1 and 100000"),
    (["--modes", ""], "nothing to evaluate"),
])
def test_lsr_eval_bad_options_exit_2(mini_beir, tmp_path, capsys, extra, message):
    assert main(["eval", "--beir", str(mini_beir), "--out", str(tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_lsr_eval_malformed_corpus_names_the_line(mini_beir, tmp_path, capsys):
    import shutil

    folder = tmp_path / "broken"
    shutil.copytree(mini_beir, folder)
    with open(folder / "corpus.jsonl", "a") as f:
        f.write('{"_id": "x", "title": "no text"}\n')
    assert main(["eval", "--beir", str(folder), "--index-dir", str(tmp_path / "i"),
                 "--out", str(tmp_path / "r"), "--modes", "bm25", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()  # progress lines, then the error as one line
    assert err[-1].startswith("lsr eval: error: ") and "Traceback" not in "".join(err)
    assert err[-1].endswith("corpus.jsonl:31: document 'x' has no 'text' field")


def test_python_dash_m_lsr_eval_is_the_same_command(capsys):
    from lsr.eval import main as eval_main

    with pytest.raises(SystemExit) as e:
        eval_main(["--help"])
    assert e.value.code == 0
    assert "--baselines" in capsys.readouterr().out
    # errors as `lsr eval` gives them: one line, exit 2
    assert eval_main(["--beir", "demo", "--modes", "magic"]) == 2
    assert capsys.readouterr().err.strip() == ("lsr eval: error: unknown mode 'magic': use "
                                               + ", ".join(MODES))
    with pytest.raises(SystemExit) as e:
        eval_main(["--no-such-option"])
    assert e.value.code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_of_demo_reuses_the_lsr_demo_index(tmp_path, monkeypatch, mini_index):
    """`lsr eval --beir demo` reuses the index `lsr demo` built when its manifest shows the same corpus,
    model and settings, instead of indexing the demo corpus again."""
    import types

    corpus = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"
    monkeypatch.setattr(ev, "DEMO_INDEX_DIR", mini_index)
    ds = types.SimpleNamespace(name="demo", corpus=corpus, checksums={"corpus.jsonl": sha256_file(corpus)})
    folder, info = ev.ensure_index(ds, index_dir=tmp_path / "cache")
    assert folder == mini_index and info["cached"] is True and not (tmp_path / "cache").exists()
    settings = {**info["settings"], "corpus_sha256": "0" * 64}
    assert ev._built_sides(mini_index, settings) is None  # another corpus: not reused


def test_eval_reuses_an_index_only_when_its_build_matches(tmp_path, mini_index):
    """The manifest's BuildConfig decides: another block size or max length is another index; an index
    without a retriever that is asked for is rebuilt (keeping what it had)."""
    corpus = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"
    b = BuildConfig()
    settings = {"corpus_sha256": sha256_file(corpus), "model": DEFAULT_MODEL,
                "model_sha256": ev._model_checksum(DEFAULT_MODEL), "quantization": b.quantization,
                "block_size": b.block_size, "max_length": b.max_length, "bm25_analyzer": b.bm25_analyzer}
    have = ev._built_sides(mini_index, settings)
    assert have is not None and have["dense"] == DEFAULT_DENSE_MODEL and have["bm25"] and have["sparse-idf"]
    for change in ({"block_size": 2 * b.block_size}, {"max_length": b.max_length // 2},
                   {"quantization": "float32"},
                   {"model_sha256": "0" * 64}):
        assert ev._built_sides(mini_index, {**settings, **change}) is None, change
    assert ev._built_sides(tmp_path / "absent", settings) is None
    assert ev._has(have, BuildConfig(), have["dense_sha256"])
    assert not ev._has({**have, "sparse-idf": False}, BuildConfig(), have["dense_sha256"])
    assert ev._has({**have, "sparse-idf": False}, BuildConfig(sparse_idf=False), have["dense_sha256"])
    assert not ev._has(have, BuildConfig(dense_kind="hnsw"), have["dense_sha256"])
    assert not ev._has({**have, "bm25": False}, BuildConfig(), have["dense_sha256"])
