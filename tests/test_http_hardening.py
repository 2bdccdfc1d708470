"""Issue 11 hardening of the HTTP layer and of fusion settings: out-of-range fusion numbers (every
interface), fusion given to a single-retriever mode, HEAD, unparsable bodies, bodies not sent as JSON,
strict integers, the Authorization scheme's case, and no tokenizer warning for long texts."""

import json
import logging

import pytest
from fastapi.testclient import TestClient

from lsr.cli import main
from lsr.errors import IndexFormatError
from lsr.searcher import Searcher
from lsr.service import Settings, create_app

Q = "glaciers carve valleys"
HUGE = {"method": "convex", "weights": {"sparse": 1e308, "dense": 1e308}}
HALF = {"method": "convex", "weights": {"sparse": 0.5, "dense": 0.5}}
HUGE_K = {"method": "rrf", "k": 1e308}


@pytest.fixture(scope="module")
def client(mini_searcher):
    settings = Settings(index_path="unused", admin_token="s3cret")
    with TestClient(create_app(settings, searcher=mini_searcher)) as c:
        yield c


def _error(r, status: int, fragment: str = "") -> str:
    """Check an error answer's status and shape {"error": {"code", "message"}}; returns the message."""
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and isinstance(body["error"]["code"], str), body
    message = body["error"]["message"]
    assert fragment in message, message
    return message


def _ranking(hits) -> tuple[list[str], list[float]]:
    pairs = [(h["id"], h["score"]) if isinstance(h, dict) else (h.id, h.score) for h in hits]
    return [i for i, _ in pairs], [s for _, s in pairs]


def _same_ranking(got, expected) -> None:
    (ids, scores), (want_ids, want_scores) = _ranking(got), _ranking(expected)
    assert ids == want_ids and scores == pytest.approx(want_scores, rel=1e-6)


# -- defect 4: out-of-range fusion numbers -----------------------------------------------------------------
def test_huge_convex_weights_python(mini_searcher):
    got = mini_searcher.search(Q, k=10, fusion=HUGE, with_text=False)
    expected = mini_searcher.search(Q, k=10, fusion=HALF, with_text=False)
    _same_ranking(got, expected)
    assert got[0].score > 0 and len({h.score for h in got}) > 1  # not all 0.0 (alphabetical)
    run = mini_searcher.batch_search({"q": Q}, k=10, fusion=HUGE)
    assert run == mini_searcher.batch_search({"q": Q}, k=10, fusion=HALF)
    with pytest.raises(ValueError, match="fusion k"):
        mini_searcher.search(Q, fusion=HUGE_K)


def test_huge_convex_weights_http(client, mini_searcher):
    r = client.post("/search", json={"query": Q, "k": 10, "fusion": HUGE})
    assert r.status_code == 200, r.text
    expected = mini_searcher.search(Q, k=10, fusion=HALF, with_text=False)
    _same_ranking(r.json()["hits"], expected)
    assert r.json()["fusion"]["weights"] == {"sparse": 0.5, "dense": 0.5}
    _error(client.post("/search", json={"query": Q, "fusion": HUGE_K}), 422, "fusion k")
    _error(client.post("/search/batch", json={"queries": [Q], "fusion": HUGE_K}), 422, "fusion k")


def _one_error_line(err: str, fragment: str) -> None:
    """The CLI refused with ONE line on stderr: parameters are checked before the warm-up prints anything."""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("lsr search: error: ") and fragment in lines[0], err


@pytest.fixture
def cli_searcher(mini_searcher, monkeypatch):
    """``lsr search`` on the session searcher (opening the index again would load the models again)."""
    monkeypatch.setattr(Searcher, "load", classmethod(lambda cls, *a, **k: mini_searcher))
    return mini_searcher


def test_huge_fusion_numbers_cli(cli_searcher, capsys):
    assert main(["search", "--index", "unused", Q, "--json", "--fusion", json.dumps(HUGE)]) == 0
    out = json.loads(capsys.readouterr().out)
    expected = cli_searcher.search(Q, k=10, fusion=HALF, with_text=False)
    _same_ranking(out["hits"], expected)
    assert main(["search", "--index", "unused", Q, "--fusion", json.dumps(HUGE_K)]) == 2
    _one_error_line(capsys.readouterr().err, "fusion k")


# -- a fusion given with a single-retriever mode is refused ------------------------------------------------
def test_fusion_with_single_retriever_mode_is_refused(client, mini_searcher, cli_searcher, capsys):
    bad = {"method": "convex", "weights": {"sparse": -1}}
    for mode in ("sparse", "dense", "bm25"):
        _error(client.post("/search", json={"query": Q, "mode": mode, "fusion": bad}), 422,
               "fusion applies only to mode 'hybrid'")
        _error(client.post("/search", json={"query": Q, "mode": mode, "fusion": {"method": "rrf"}}), 422,
               "fusion applies only")
        with pytest.raises(ValueError, match="fusion applies only to mode 'hybrid'"):
            mini_searcher.search(Q, mode=mode, fusion={"method": "rrf"})
        with pytest.raises(ValueError, match="fusion applies only"):
            mini_searcher.batch_search({"q": Q}, mode=mode, fusion={"method": "rrf"})
    _error(client.post("/search/batch", json={"queries": [Q], "mode": "bm25", "fusion": {}}), 422,
           "fusion applies only")
    assert main(["search", "--index", "unused", Q, "--mode", "sparse", "--fusion", '{"method": "rrf"}']) == 2
    _one_error_line(capsys.readouterr().err, "fusion applies only")
    assert client.post("/search", json={"query": Q, "mode": "sparse", "fusion": None}).status_code == 200


# -- HEAD --------------------------------------------------------------------------------------------------
def test_head_answers_like_get_without_a_body(client):
    for path in ("/", f"/search?q={Q}", "/health", "/ready", "/documents/geo-1"):
        get, head = client.get(path), client.head(path)
        assert head.status_code == get.status_code == 200, (path, head.status_code)
        assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"]
    head = client.head("/search")  # no query: the same 422 as GET, without a body
    assert head.status_code == 422 and head.content == b""
    assert head.headers["content-type"] == "application/json"
    assert client.head("/no/such/route").status_code == 404
    assert client.head("/encode").status_code == 405


# -- bodies that cannot be parsed, or are not JSON ---------------------------------------------------------
def _post_raw(client, raw: bytes, content_type: str | None = "application/json", path="/search"):
    headers = {} if content_type is None else {"Content-Type": content_type}
    return client.post(path, content=raw, headers=headers)


def test_unparsable_bodies_are_422_with_the_error_shape(client):
    _error(_post_raw(client, b'{"query": "caf\xe9"}'), 422, "not valid UTF-8")
    _error(_post_raw(client, b"[" * 100_000 + b"]" * 100_000), 422, "nested too deeply")
    message = _error(_post_raw(client, b'{"query": "bread",\n "k": }'), 422, "not valid JSON")
    assert "line 2, column 7" in message, message


@pytest.mark.parametrize("content_type", [None, "application/x-www-form-urlencoded", "text/plain"])
def test_body_not_sent_as_json_is_415(client, content_type):
    r = _post_raw(client, b'{"query": "bread"}', content_type)
    message = _error(r, 415, "Content-Type: application/json")
    assert r.json()["error"]["code"] == "unsupported_media_type"
    assert (content_type or "no Content-Type") in message
    _error(_post_raw(client, b'{"text": "bread"}', content_type, "/encode"), 415)
    assert _post_raw(client, b'{"query": "bread"}', "application/json; charset=utf-8").status_code == 200


# -- strict integers ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [True, "5", 10.0, 2.5, None])
def test_k_must_be_an_integer(client, k):
    _error(client.post("/search", json={"query": Q, "k": k}), 422, "k:")
    _error(client.post("/search/batch", json={"queries": [Q], "k": k}), 422, "k:")


@pytest.mark.parametrize("k", ["5.0", "true", "1e1", " 5", "0x5"])
def test_query_string_k_is_parsed_strictly(client, k):
    _error(client.get("/search", params={"q": Q, "k": k}), 422, "k:")


def test_query_string_k_accepts_digits(client):
    r = client.get("/search", params={"q": Q, "k": "5"})
    assert r.status_code == 200 and len(r.json()["hits"]) == 5


# -- Authorization scheme ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_bearer_scheme_is_case_insensitive(client, scheme):
    r = client.post("/admin/reload", headers={"Authorization": f"{scheme} s3cret"},
                    json={"index_path": "/no/such/index"})
    _error(r, 409, "still serving")  # past the token check
    _error(client.post("/admin/reload", headers={"Authorization": f"{scheme} nope"}), 403)
    _error(client.post("/admin/reload", headers={"Authorization": "Basic s3cret"}), 401)


# -- no transformers warning for long texts ----------------------------------------------------------------
class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def test_long_text_logs_no_sequence_length_warning(client, mini_searcher):
    tok = mini_searcher.encoder.tokenizer
    text = "bread " * 600  # 600 tokens: over the tokenizer's 512 and the encoder's 256
    assert len(text) <= 4096 and tok.model_max_length < 600
    tok.deprecation_warnings.pop("sequence-length-is-longer-than-the-specified-maximum", None)
    records, logger = _Records(), logging.getLogger("transformers")
    logger.addHandler(records)
    try:
        r = client.post("/encode", json={"text": text})
        s = client.post("/search", json={"query": text, "mode": "sparse"})
    finally:
        logger.removeHandler(records)
    assert r.status_code == 200 and r.json()["truncated"] is True
    assert s.status_code == 200 and s.json()["truncated"] is True
    assert not [m for m in records.messages if "sequence length" in m], records.messages
    assert mini_searcher.query_tokens(text) == (602, True)
    assert mini_searcher.query_tokens("bread") == (3, False)


def test_a_file_found_damaged_while_serving_is_a_500_naming_it(client, mini_searcher, monkeypatch):
    """A docstore page is only read (and found damaged) when a hit needs it: the answer names the file."""
    def damaged(ids):
        raise IndexFormatError(f"{mini_searcher.index.path / 'docs.sqlite'} is corrupted: "
                               "database disk image is malformed")

    monkeypatch.setattr(mini_searcher.docstore, "get_many", damaged)
    r = client.post("/search", json={"query": Q, "k": 3})
    assert r.status_code == 500 and r.json()["error"]["code"] == "index_damaged"
    assert "docs.sqlite is corrupted" in r.json()["error"]["message"]
    assert client.get("/health").status_code == 200  # the server goes on
