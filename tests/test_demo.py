import re
from pathlib import Path

from lsr.demo import demo_queries, demo_records, write_demo_corpus


def test_demo_corpus_is_deterministic_and_judged(tmp_path):
    recs = demo_records()
    assert len(recs) > 500
    ids = [r.id for r in recs]
    assert len(set(ids)) == len(ids)
    assert ids == [r.id for r in demo_records()]
    known = set(ids)
    for qid, q in demo_queries().items():
        assert q["text"].strip(), qid
        assert any(d in known for d in q["relevant"]), qid
    n = write_demo_corpus(tmp_path / "demo.jsonl")
    assert n == len(recs) and len((tmp_path / "demo.jsonl").read_text().splitlines()) == n


def test_the_search_page_example_finds_its_answer_in_the_demo_corpus(tmp_path):
    """The search box's example query ("e.g. ...") fits the demo corpus: BM25 over the demo passages (the
    index's own BM25 side, without SPLADE encoding) ranks an argparse passage first."""
    from transformers import AutoTokenizer

    from lsr.bm25 import BM25Encoder
    from lsr.encoders import resolve_model
    from lsr.index import SparseIndex

    html = (Path(__file__).parent.parent / "service" / "static" / "index.html").read_text()
    example = re.search(r'placeholder="[^"]*e\.g\. ([^"]+)"', html).group(1)
    recs = demo_records()
    texts = [r.content for r in recs]
    enc = BM25Encoder.fit(texts, tokenizer=AutoTokenizer.from_pretrained(resolve_model("splade-tiny")))
    index = SparseIndex.build(enc.encode_documents(texts), [r.id for r in recs], tmp_path / "bm25",
                              quantization="float32", reorder=False)
    ids, _ = index.search(enc.encode_queries([example], index=index), k=3)
    assert ids[0].split(".")[0] == "argparse", (example, ids.tolist())
