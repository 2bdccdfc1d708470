"""Builds killed for real (kill -9, SIGTERM, Ctrl-C in a child process): what is left is never loadable, the
next build removes it, and a temporary folder a live build holds is kept."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lsr.errors import IndexFormatError
from lsr.index.storage import atomic_folder, read_manifest, write_manifest

MINI_CORPUS = Path(__file__).parent.parent / "data" / "mini" / "corpus.jsonl"

# A build that stops inside atomic_folder once its temp folder holds a manifest (a "complete" half-index).
HOLDER = """
import sys, time
from lsr.index.storage import atomic_folder, write_manifest
with atomic_folder(sys.argv[1], overwrite=True) as tmp:
    (tmp / "data.txt").write_text("half")
    write_manifest(tmp, {"n_docs": 1})
    print(tmp, flush=True)
    time.sleep(120)
"""

# `lsr index` through lsr.cli.main, its encoding replaced by a build that stops in the write phase.
CLI_BUILD = """
import sys, time
import lsr.cli
from lsr.cli import main
from lsr.index.storage import atomic_folder

def index_corpus(corpus, out, **kw):
    with atomic_folder(out, overwrite=kw["overwrite"]) as tmp:
        (tmp / "data.txt").write_text("half")
        print(tmp, flush=True)
        time.sleep(120)

lsr.cli.index_corpus = index_corpus
sys.exit(main(sys.argv[1:]))
"""


def _start(script, *args):
    # outside the checkout: from the repo root the source folder could shadow the install
    # SIGINT as in a terminal, even when this test runs as a background job (which inherits it ignored)
    p = subprocess.Popen([sys.executable, "-c", script, *map(str, args)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, cwd=tempfile.gettempdir(),
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = p.stdout.readline().strip()
    if not line:
        p.kill()
        pytest.fail(f"the child did not start: {p.communicate(timeout=30)[1][-2000:]}")
    return p, Path(line)


def _stop(p, sig):
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    return p.returncode, err


def _search(index):
    return subprocess.run([sys.executable, "-m", "lsr", "search", "--index", str(index), "query"],
                          capture_output=True, text=True, timeout=120, cwd=tempfile.gettempdir())


def test_kill_9_leaves_nothing_loadable_and_the_next_build_cleans_up(tmp_path):
    target = tmp_path / "idx"
    live, live_tmp = _start(HOLDER, target)  # a build still running: its temp folder must survive
    try:
        dead, dead_tmp = _start(HOLDER, target)
        assert _stop(dead, signal.SIGKILL)[0] == -signal.SIGKILL
        assert dead_tmp.is_dir() and (dead_tmp / "manifest.json").is_file()  # kill -9 cannot clean up
        with pytest.raises(IndexFormatError, match="temporary folder"):
            read_manifest(dead_tmp)
        r = _search(dead_tmp)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and "temporary folder of an index build" in lines[0]
        with atomic_folder(target) as tmp:  # the next build of the same target
            (tmp / "data.txt").write_text("done")
            write_manifest(tmp, {"n_docs": 1})
        assert not dead_tmp.exists() and live_tmp.is_dir()
        assert sorted(os.listdir(tmp_path)) == sorted(["idx", live_tmp.name])
    finally:
        live.kill()
        live.communicate(timeout=60)
    with atomic_folder(target, overwrite=True) as tmp:  # now no one holds it: the next build removes it
        write_manifest(tmp, {"n_docs": 0})
    assert os.listdir(tmp_path) == ["idx"]


@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 143, "terminated"),
                                             (signal.SIGINT, 130, "interrupted")])
def test_lsr_index_cleans_up_on_sigterm_and_ctrl_c(tmp_path, sig, code, word):
    target = tmp_path / "idx"
    p, tmp = _start(CLI_BUILD, "index", "--corpus", MINI_CORPUS, "--out", target, "--no-progress")
    assert tmp.is_dir()
    rc, err = _stop(p, sig)
    lines = err.strip().splitlines()
    assert rc == code and len(lines) == 1 and lines[0].startswith(f"lsr index: {word}"), err
    assert os.listdir(tmp_path) == []


def test_real_lsr_index_killed_in_its_write_phase(tmp_path):
    """End to end with the real models: kill -9 once the temp folder holds the SPLADE retriever's manifest
    (the dense and BM25 retrievers are then still being written into it)."""
    corpus = tmp_path / "c.jsonl"
    rows = [json.loads(line) for line in MINI_CORPUS.read_text().splitlines()]
    corpus.write_text("".join(json.dumps({**r, "_id": f"{r['_id']}-{i}"}) + "\n"
                              for i in range(2) for r in rows))
    out = tmp_path / "out"
    out.mkdir()
    p = subprocess.Popen([sys.executable, "-m", "lsr", "index", "--corpus", str(corpus), "--out",
                          str(out / "idx"), "--no-progress", "--device", "cpu"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tempfile.gettempdir())
    try:
        deadline = time.monotonic() + 120
        written = "idx.tmp-*/sparse/manifest.json"
        while not list(out.glob(written)) and p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        half = [m.parent.parent for m in out.glob(written)]
        assert half, "the build ended before its write phase was seen"
    finally:
        p.kill()
        p.wait(timeout=60)
    assert not (out / "idx").exists()
    with pytest.raises(IndexFormatError, match="temporary folder"):
        read_manifest(half[0])
