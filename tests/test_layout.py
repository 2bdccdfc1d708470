"""The card's layout: one import root ``lsr``, importable from a checkout's root as it is once installed."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _checkout_copy(dest: Path) -> Path:
    """What a fresh clone of this working tree holds (tracked, untracked not ignored), copied to ``dest``."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_checkout_root_imports_lsr_index_and_service(tmp_path):
    clone = _checkout_copy(tmp_path / "clone")
    r = _python("import lsr, lsr.index, lsr.index.sparse, lsr.service.app, lsr.service.routers.search\n"
                "for m in (lsr, lsr.index, lsr.service.app): print(m.__file__)", clone)
    assert r.returncode == 0, r.stderr
    files = [Path(line) for line in r.stdout.split()]
    assert files == [clone / "lsr" / "__init__.py", clone / "index" / "__init__.py",
                     clone / "service" / "app.py"]


def test_no_top_level_index_or_service_module_is_installed(tmp_path):
    r = _python("import importlib.util as u; print(u.find_spec('index'), u.find_spec('service'))", tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["None", "None"]
    r = _python("import lsr.index, lsr.service; print(lsr.index.__name__, lsr.service.__name__)", tmp_path)
    assert r.returncode == 0 and r.stdout.split() == ["lsr.index", "lsr.service"], r.stderr


def test_readme_python_example_runs_from_the_checkout_root(tmp_path, mini_index):
    clone = _checkout_copy(tmp_path / "clone")
    readme = (clone / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    example = next(b for b in blocks if "Searcher.load(" in b)
    # the README points at an index a user has built; here it is the test's own mini index
    code = re.sub(r"Searcher\.load\([^#\n]*\)", f"Searcher.load({str(mini_index)!r})", example, count=1)
    assert str(mini_index) in code
    code = code.replace('"tiny-index"', repr(str(tmp_path / "tiny-index")))
    r = _python(code + "\nprint('example ran', len(hits), len(ids))", clone)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "example ran 10" in r.stdout
