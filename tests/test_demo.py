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
