"""The BEIR loader: good folders, malformed ones (file and line named), download by name, the demo set."""

import http.server
import importlib
import io
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
import zipfile
from pathlib import Path

import pytest

from lsr.errors import CorpusError, LsrError
from lsr.eval.beir import download_beir, load_beir, read_queries, resolve_beir


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_load_good_folder(mini_beir, mini_queries):
    ds = load_beir(mini_beir)
    assert ds.name == "mini" and ds.split == "test"
    # only judged queries, as BEIR's loader keeps them
    assert set(ds.queries) == set(mini_queries) and "q-unjudged" not in ds.queries
    assert ds.queries["q-volcano"] == mini_queries["q-volcano"]["text"]
    assert ds.qrels["q-bread"] == {"cook-1": 1}
    assert set(ds.checksums) == {"corpus.jsonl", "queries.jsonl", "qrels/test.tsv"}
    assert all(len(v) == 64 for v in ds.checksums.values())
    assert ds.corpus == mini_beir / "corpus.jsonl"


def test_checksums_follow_content(mini_beir, tmp_path):
    other = _copy(mini_beir, tmp_path / "mini")
    with open(other / "queries.jsonl", "a") as f:
        f.write('{"_id": "extra", "text": "more"}\n')
    a, b = load_beir(mini_beir), load_beir(other)
    assert a.checksums["corpus.jsonl"] == b.checksums["corpus.jsonl"]
    assert a.checksums["queries.jsonl"] != b.checksums["queries.jsonl"]


@pytest.mark.parametrize("remove, message", [
    ("queries.jsonl", "queries.jsonl is missing"),
    ("corpus.jsonl", "corpus.jsonl is missing"),
    ("qrels/test.tsv", "no qrels for split 'test'"),
])
def test_missing_files_are_named(mini_beir, tmp_path, remove, message):
    folder = _copy(mini_beir, tmp_path / "broken")
    (folder / remove).unlink()
    with pytest.raises(CorpusError, match=message):
        load_beir(folder)


def test_missing_split_lists_the_splits(mini_beir):
    with pytest.raises(CorpusError, match=r"split 'dev'.*splits: test"):
        load_beir(mini_beir, split="dev")


@pytest.mark.parametrize("line, message", [
    ("{not json", r"queries.jsonl:2: not valid JSON"),
    ('{"text": "no id"}', r"queries.jsonl:2: no '_id'"),
    ('{"_id": "q9"}', r"queries.jsonl:2: query 'q9' has no 'text'"),
    ('["a", "list"]', r"queries.jsonl:2: expected a JSON object"),
    ('{"_id": "q-volcano", "text": "again"}', r"queries.jsonl:2: repeats query id 'q-volcano'"),
])
def test_bad_query_line_is_named(mini_beir, tmp_path, line, message):
    folder = _copy(mini_beir, tmp_path / "broken")
    lines = (folder / "queries.jsonl").read_text().splitlines()
    lines.insert(1, line)
    (folder / "queries.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=message):
        load_beir(folder)


@pytest.mark.parametrize("row, message", [
    ("q-bread\tcook-1\thigh", r"test.tsv:3: relevance 'high' is not an integer"),
    ("q-bread\tcook-1", r"test.tsv:3: expected 3 \(BEIR\) or 4 \(TREC\) columns, got 2"),
    ("q-nowhere\tcook-1\t1", r"judged queries are not in queries.jsonl \(first: 'q-nowhere'\)"),
])
def test_bad_qrels_line_is_named(mini_beir, tmp_path, row, message):
    folder = _copy(mini_beir, tmp_path / "broken")
    lines = (folder / "qrels" / "test.tsv").read_text().splitlines()
    lines.insert(2, row)
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(CorpusError, match=message):
        load_beir(folder)


def test_read_queries_rejects_non_utf8(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_bytes(b'{"_id": "1", "text": "ok"}\n{"_id": "2", "text": "\xff\xfe"}\n')
    with pytest.raises(CorpusError, match="not valid UTF-8"):
        read_queries(f)


def test_a_file_or_a_bad_path_is_not_a_data_set(tmp_path, mini_beir):
    with pytest.raises(CorpusError, match="is a folder, not a file"):
        resolve_beir(mini_beir / "corpus.jsonl", cache_dir=tmp_path)
    with pytest.raises(CorpusError, match="no such folder"):
        resolve_beir(tmp_path / "nope" / "scifact", cache_dir=tmp_path)


def test_demo_data_set(tmp_path):
    ds = load_beir("demo", cache_dir=tmp_path)
    assert ds.name == "demo" and ds.path == tmp_path / "beir" / "demo"
    assert len(ds.queries) >= 10
    assert "json.dumps" in ds.qrels["q1"]


def _zip_of(folder: Path, inner: str) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for f in folder.rglob("*"):
            if f.is_file():
                z.write(f, f"{inner}/{f.relative_to(folder)}")
    return buf.getvalue()


@pytest.fixture
def zip_server(mini_beir):
    """An HTTP server on 127.0.0.1 serving /tiny.zip (a BEIR archive), counting requests."""
    payload = _zip_of(mini_beir, "tiny")
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            hits.append(self.path)
            if self.path == "/tiny.zip":
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            elif self.path == "/notzip.zip":
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"<html>not a zip</html>")
            else:
                self.send_error(404)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{{name}}.zip", hits
    server.shutdown()
    server.server_close()


def test_download_by_name_once(zip_server, tmp_path, monkeypatch):
    url, hits = zip_server
    monkeypatch.setenv("LSR_BEIR_URL", url)
    folder = resolve_beir("tiny", cache_dir=tmp_path)
    assert folder == tmp_path / "beir" / "tiny"
    ds = load_beir("tiny", cache_dir=tmp_path)
    assert len(ds.queries) == 5 and ds.name == "tiny"
    assert hits == ["/tiny.zip"]  # the second call used the cache
    assert not [p for p in (tmp_path / "beir").iterdir() if p.name.startswith(".")]  # no temp left


def test_download_errors_are_one_line(zip_server, tmp_path):
    url, _ = zip_server
    with pytest.raises(LsrError, match=r"answered HTTP 404 \(is the name right\?\)"):
        download_beir("unknown", cache_dir=tmp_path, url=url)
    with pytest.raises(LsrError, match="not a zip archive"):
        download_beir("notzip", cache_dir=tmp_path, url=url)
    assert not (tmp_path / "beir" / "unknown").exists()


def test_offline_download_says_what_to_do(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now: connection refused, as offline
    with pytest.raises(LsrError) as e:
        download_beir("scifact", cache_dir=tmp_path, url=f"http://127.0.0.1:{port}/{{name}}.zip")
    msg = str(e.value)
    assert "cannot download BEIR data set 'scifact'" in msg and "--beir DIR" in msg and "\n" not in msg


@pytest.mark.parametrize("old, new", [("lsr.beir", "lsr.eval.beir"), ("lsr.evaluation", "lsr.eval.metrics"),
                                      ("lsr.baselines", "lsr.eval.baselines")])
def test_old_module_names_still_work_and_warn(old, new):
    """The modules before lsr.eval are deprecated shims: the same objects, and a DeprecationWarning naming
    the new module (checked in a fresh interpreter: the warning fires once, at import)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        shim, target = importlib.import_module(old), importlib.import_module(new)
    assert shim.__all__ == target.__all__
    assert all(getattr(shim, n) is getattr(target, n) for n in target.__all__)
    code = f"import warnings; warnings.simplefilter('error'); import {old}"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 1 and "DeprecationWarning" in r.stderr and f"import from {new}" in r.stderr
