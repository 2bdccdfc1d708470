"""``lsr adapt``: pseudo-queries, labelled data and its errors, the held-out guard, the commit (a new
manifest version, the previous weights file kept), the hybrid side, and sparse-idf through every interface."""

import json
import shutil

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lsr.adapt import run as adapt_run
from lsr.adapt.data import labelled_queries, pseudo_queries
from lsr.adapt.run import adapt
from lsr.adapt.trainer import FitResult
from lsr.cli import main
from lsr.errors import LsrError
from lsr.manifest import load_manifest, write_manifest
from lsr.searcher import Searcher
from lsr.service import Settings, create_app


@pytest.fixture(scope="module")
def adapted_copy(mini_index, tmp_path_factory):
    """A writable copy of the fixture index, opened once (adapt writes into it)."""
    folder = tmp_path_factory.mktemp("adapt") / "index"
    shutil.copytree(mini_index, folder)
    return folder, Searcher.load(folder, device="cpu")


def test_pseudo_queries_come_from_their_documents(mini_searcher):
    c = mini_searcher.collection
    q = pseudo_queries(c, n=20, seed=3)
    again = pseudo_queries(c, n=20, seed=3)
    assert q.texts == again.texts and len(q) == 20 and q.source == "pseudo"
    assert pseudo_queries(c, n=20, seed=4).texts != q.texts
    for text, pos in zip(q.texts, q.positives):
        (row, grade), = pos.items()
        doc = c.docstore.get(str(c.ids[row]))
        words = text.split()
        assert grade == 1 and 1 <= len(words) <= 20
        source = " ".join(f"{doc.title} {doc.text}".split())
        assert text in source  # a title or a span of one of its sentences, verbatim
    assert q.facts["titles"] + q.facts["spans"] == 20


def test_split_holds_out_a_share(mini_searcher):
    q = pseudo_queries(mini_searcher.collection, n=20, seed=0)
    train, held = q.split(0.25, seed=1)
    assert len(held) == 5 and len(train) == 15 and not set(train.qids) & set(held.qids)
    with pytest.raises(ValueError, match="holdout"):
        q.split(1.5)


def test_labelled_queries_and_their_errors(mini_searcher, mini_beir, tmp_path):
    c = mini_searcher.collection
    q = labelled_queries(c, mini_beir / "queries.jsonl", mini_beir / "qrels" / "test.tsv")
    assert q.source == "labelled" and len(q) == 5 and all(q.positives)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises((ValueError, LsrError), match="no queries"):
        labelled_queries(c, empty, mini_beir / "qrels" / "test.tsv")
    bad = tmp_path / "qrels.tsv"
    bad.write_text("query-id\tcorpus-id\tscore\nq1\tnot-a-doc\t1\n")
    with pytest.raises(ValueError, match="not-a-doc"):
        labelled_queries(c, mini_beir / "queries.jsonl", bad)


def _run(monkeypatch, weights_of):
    """Make the trainer return ``weights_of(init)`` (the rest of adapt runs for real)."""
    def fake_fit(ts, forward, scale, init, **kw):
        return FitResult(weights=weights_of(np.asarray(init)).astype(np.float32), history=[], facts={})

    monkeypatch.setattr(adapt_run, "fit_weights", fake_fit)


def test_guard_refuses_weights_that_do_not_help(adapted_copy, monkeypatch):
    folder, searcher = adapted_copy
    before = load_manifest(folder)
    # every token the same weight but the rarest ones zero: worse than the IDF start
    _run(monkeypatch, lambda init: np.where(init > np.quantile(init[init > 0], 0.2), 0.0, 1.0))
    res = adapt(searcher, pseudo=24, holdout=0.5, fusion="keep", hybrid="sparse", log=None)
    assert not res.kept
    assert res.held_out["learned"]["ndcg@10"] <= res.held_out["idf"]["ndcg@10"]
    m = load_manifest(folder)
    assert m.generation == before.generation + 1
    entry = m.retrievers["sparse-idf"]
    assert "weights" not in entry.settings and entry.settings["adapted"]["kept"] is False
    assert entry.settings["adapted"]["held_out"]["idf"]["ndcg@10"] == res.held_out["idf"]["ndcg@10"]
    assert not list((folder / "sparse-idf").glob("weights-*.npy"))


def test_kept_weights_are_committed_as_a_new_version(adapted_copy, monkeypatch):
    folder, searcher = adapted_copy
    _run(monkeypatch, lambda init: init * 1.0)  # the start itself: not better, so not kept
    assert not adapt(searcher, pseudo=24, holdout=0.5, fusion="keep", log=None).kept
    # a trainer that makes the held-out source documents easy to find: beats the start
    def boost(init):
        w = init.copy()
        w[w > 0] *= 0.5
        return w

    _run(monkeypatch, boost)
    monkeypatch.setattr(adapt_run, "held_out_figures", lambda s, held, w: {
        "ndcg@10": 0.9 if w is not None and not np.array_equal(w, s.retriever("sparse-idf").idf) else 0.5,
        "recall@100": 1.0})
    gens = []
    for _ in range(3):
        res = adapt(searcher, pseudo=24, holdout=0.5, fusion="keep", hybrid="sparse-idf", log=None)
        assert res.kept and res.written
        m = load_manifest(folder)
        gens.append(m.generation)
        name = m.retrievers["sparse-idf"].settings["weights"]
        assert name == f"weights-{m.generation}.npy" and f"sparse-idf/{name}" in m.files
    files = sorted(p.name for p in (folder / "sparse-idf").glob("weights-*.npy"))
    # the current and the previous version's files; older ones removed
    assert files == sorted([f"weights-{gens[-1]}.npy", f"weights-{gens[-2]}.npy"])
    assert m.fused_by_default == ["sparse-idf", "dense", "bm25"]
    # a fresh open searches with the learned weights, and hybrid fuses sparse-idf instead of sparse
    s2 = Searcher.load(folder, device="cpu")
    r = s2.retriever("sparse-idf")
    assert r.learned and np.allclose(r.weights, boost(r.idf))
    assert list(dict(s2.params(mode="hybrid").fusion.weights)) == ["sparse-idf", "dense", "bm25"]
    hits = s2.search("volcano eruption", k=3, mode="sparse-idf")
    assert hits and all(h.score > 0 for h in hits)
    assert s2.search("volcano eruption", k=3, mode="hybrid")
    load_manifest(folder, verify=True)  # every listed file's sha256 matches


def test_adapt_cli_errors_are_one_line(mini_index, mini_beir, tmp_path, capsys):
    folder = tmp_path / "idx"
    shutil.copytree(mini_index, folder)
    empty = tmp_path / "q.jsonl"
    empty.write_text("")
    assert main(["adapt", "--index", str(folder), "--queries", str(empty),
                 "--qrels", str(mini_beir / "qrels" / "test.tsv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no queries" in err and len(err.splitlines()) == 1
    assert main(["adapt", "--index", str(folder), "--qrels", str(mini_beir / "qrels" / "test.tsv")]) == 2
    assert "--qrels needs --queries" in capsys.readouterr().err
    assert main(["adapt", "--index", str(tmp_path / "nope")]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


@pytest.mark.parametrize("drop, fragment", [(("sparse", "sparse-idf", "bm25"), "no SPLADE"),
                                             (("sparse-idf",), "no sparse-idf")])
def test_adapt_refuses_an_index_without_its_sides(mini_index, tmp_path, capsys, drop, fragment):
    folder = tmp_path / "idx"
    shutil.copytree(mini_index, folder)
    m = load_manifest(folder)
    write_manifest(folder, m.replace(retrievers={n: e for n, e in m.retrievers.items() if n not in drop}))
    assert main(["adapt", "--index", str(folder)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_sparse_idf_mode_through_http_and_the_page_config(mini_searcher):
    with TestClient(create_app(Settings(index_path="unused"), searcher=mini_searcher)) as c:
        r = c.get("/search", params={"q": "volcano", "k": 3, "mode": "sparse-idf"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["mode"] == "sparse-idf" and body["hits"]
        assert "sparse-idf" in c.get("/ui/config").json()["modes"]
        r = c.post("/search", content=json.dumps({"query": "volcano", "mode": "sparse-idf", "k": 2}),
                   headers={"Content-Type": "application/json"})
        assert r.status_code == 200 and len(r.json()["hits"]) <= 2


def test_sparse_idf_mode_through_the_cli(mini_index, capsys):
    assert main(["search", "--index", str(mini_index), "volcano", "--mode", "sparse-idf", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out


def test_label_free_adapt_end_to_end(adapted_copy, capsys):
    """Pseudo-queries, the real trainer, the guard and the label-free fusion, from the CLI."""
    folder, _ = adapted_copy
    before = load_manifest(folder).generation
    assert main(["adapt", "--index", str(folder), "--pseudo", "24", "--hybrid", "sparse-idf"]) == 0
    out = capsys.readouterr().out
    assert "held-out idf" in out and "held-out learned" in out and "hybrid fuses: sparse-idf" in out
    m = load_manifest(folder, verify=True)
    assert m.generation == before + 1 and m.fusion["tuned"]["labels"] is False
    assert set(m.fusion["weights"]) == {"sparse-idf", "dense", "bm25"}
    assert abs(sum(m.fusion["weights"].values()) - 1) < 1e-6
    adapted = m.retrievers["sparse-idf"].settings["adapted"]
    assert adapted["source"] == "pseudo" and adapted["held_queries"] >= 1
    assert ("weights" in m.retrievers["sparse-idf"].settings) == adapted["kept"]


def test_weights_not_kept_after_kept_ones_leave_a_whole_folder(mini_index, tmp_path, monkeypatch):
    folder = tmp_path / "idx"
    shutil.copytree(mini_index, folder)
    s = Searcher.load(folder, device="cpu")
    _run(monkeypatch, lambda init: init * 0.5)
    monkeypatch.setattr(adapt_run, "held_out_figures", lambda s_, held, w: {
        "ndcg@10": 0.9 if float(w.sum()) < float(s_.retriever("sparse-idf").idf.sum()) else 0.5,
        "recall@100": 1.0})
    assert adapt(s, pseudo=12, holdout=0.5, fusion="keep", log=None).kept
    _run(monkeypatch, lambda init: init * 2.0)  # worse: not kept, back to the IDF start
    for _ in range(2):
        assert not adapt(s, pseudo=12, holdout=0.5, fusion="keep", log=None).kept
        m = load_manifest(folder, verify=True)  # every listed file there, whole
        assert "weights" not in m.retrievers["sparse-idf"].settings
        assert not any(f.startswith("sparse-idf/weights-") for f in m.files)
    assert not Searcher.load(folder, device="cpu").retriever("sparse-idf").learned


# A real `lsr adapt` child that stops between writing its new weights file and committing the manifest.
STOPPED_BEFORE_COMMIT = """
import sys, time
import numpy as np
from lsr.adapt import run
from lsr.adapt.trainer import FitResult

run.fit_weights = lambda ts, f, s, init, **kw: FitResult(weights=np.asarray(init) * 0.5, history=[], facts={})
run.held_out_figures = lambda s, held, w: {"ndcg@10": 0.9 if float(w.sum()) < float(
    s.retriever("sparse-idf").idf.sum()) else 0.5, "recall@100": 1.0}

def stop(*a, **kw):
    print("committing", flush=True)
    time.sleep(120)

run.write_manifest = stop
run.adapt(sys.argv[1], pseudo=12, holdout=0.5, fusion="keep", hybrid="sparse-idf", log=None)
"""


def test_adapt_killed_before_its_commit_leaves_the_previous_version(mini_index, tmp_path):
    import subprocess
    import sys

    folder = tmp_path / "idx"
    shutil.copytree(mini_index, folder)
    before = load_manifest(folder)
    p = subprocess.Popen([sys.executable, "-c", STOPPED_BEFORE_COMMIT, str(folder)], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    try:
        assert p.stdout.readline().strip() == "committing"
        stray = list((folder / "sparse-idf").glob("weights-*.npy"))
        assert len(stray) == 1  # the new version's file is written, its manifest is not
    finally:
        p.kill()
        p.wait(timeout=60)
    m = load_manifest(folder, verify=True)  # the previous version, whole
    assert m.generation == before.generation and "weights" not in m.retrievers["sparse-idf"].settings
    s = Searcher.load(folder, device="cpu")
    assert not s.retriever("sparse-idf").learned and s.search("volcano", k=3, mode="sparse-idf")
    # the next adaptation commits and removes what the killed one left
    res = adapt(s, pseudo=12, holdout=0.5, fusion="keep", hybrid="sparse", log=None)
    assert res.written
    left = {p.name for p in (folder / "sparse-idf").glob("weights-*.npy")}
    assert stray[0].name not in left or load_manifest(folder).retrievers["sparse-idf"].settings.get(
        "weights") == stray[0].name


def test_lsr_eval_adapt_evaluates_an_adapted_copy(mini_beir, tmp_path, capsys):
    folder = tmp_path / "beir" / "mini"
    shutil.copytree(mini_beir, folder)
    shutil.copy(folder / "qrels" / "test.tsv", folder / "qrels" / "train.tsv")  # a train split: supervised
    out, idx = tmp_path / "results", tmp_path / "indexes"
    assert main(["eval", "--beir", str(folder), "--index-dir", str(idx), "--out", str(out), "--no-progress",
                 "--warmup", "0", "--modes", "sparse-idf,hybrid", "--adapt"]) == 0
    res = json.loads((out / "mini" / "metrics.json").read_text())
    a = res["adapt"]
    assert a["source"] == "labelled" and a["split"] == "train" and a["held_queries"] >= 1
    assert set(a["held_out"]) >= {"idf", "learned"} and isinstance(a["kept"], bool)
    assert set(res["runs"]) == {"sparse-idf", "hybrid"}
    assert res["settings"]["fusion"]["weights"].keys() == set(a["hybrid"])
    # the cached index itself is left as built; the adapted copy is gone
    cached = [p for p in idx.iterdir() if not p.name.startswith(".")]
    assert len(cached) == 1
    assert load_manifest(cached[0]).generation == 1 and load_manifest(cached[0]).hybrid is None
    assert not [p for p in idx.iterdir() if p.name.startswith(".work")]
    capsys.readouterr()
