"""Import hygiene: no import cycles among lsr's modules (lsr/, index/ as lsr.index, service/ as lsr.service),
and ``import lsr`` stays light (no torch, transformers or faiss).

The graph is read from the source with ``ast``: the imports a module runs when it is imported (its top
level, including ``try``/``if`` blocks, not ``if TYPE_CHECKING:`` ones, not function bodies). Importing
``a.b.c`` also imports the packages ``a`` and ``a.b``, so those are edges too, except a package the
importing module lives in (Python has already begun importing it).
"""

from __future__ import annotations

import ast
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"lsr": ROOT / "lsr", "lsr.index": ROOT / "index", "lsr.service": ROOT / "service"}


def module_files(packages: dict[str, Path]) -> dict[str, Path]:
    """``{dotted module name: file}`` for every ``.py`` file under each package folder."""
    out = {}
    for package, folder in packages.items():
        for f in sorted(folder.rglob("*.py")):
            parts = list(f.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join([package, *parts])] = f
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(body: list[ast.stmt]):
    """The import statements that run when the module body runs (not those inside functions)."""
    for node in body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, (ast.Try, ast.TryStar)):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _import_time_nodes(block)
        elif isinstance(node, (ast.With, ast.For, ast.While, ast.ClassDef)):
            yield from _import_time_nodes(node.body)


def imported_names(name: str, path: Path, known: set[str]) -> set[str]:
    """The dotted names module ``name`` imports at import time (relative imports resolved)."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = set()
    for node in _import_time_nodes(ast.parse(path.read_text(encoding="utf-8")).body):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
            continue
        base = node.module or ""
        if node.level:
            anchor = package.split(".")
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        for a in node.names:  # "from pkg import mod" imports the module pkg.mod
            sub = f"{base}.{a.name}"
            out.add(sub if sub in known else base)
    return out


def import_graph(packages: dict[str, Path]) -> dict[str, set[str]]:
    """``{module: modules it imports at import time}``, only among the modules of ``packages``."""
    files = module_files(packages)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = set()
        for target in imported_names(name, path, known):
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in known and prefix not in ancestors:
                    edges.add(prefix)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_among_lsr_modules():
    graph = import_graph(PACKAGES)
    assert {"lsr", "lsr.cli", "lsr.eval.run", "lsr.index.storage", "lsr.service.app"} <= set(graph)
    assert "lsr.eval.metrics" in graph["lsr.eval.beir"]  # the graph does see the imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def _write(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def test_a_planted_cycle_is_found(tmp_path):
    _write(tmp_path / "pkg", {
        "__init__.py": "",
        "a.py": "import json\nfrom pkg import b\n",
        "b.py": "try:\n    from .c import helper\nexcept ImportError:\n    helper = None\n",
        "c.py": "from pkg.a import thing\n",
        # not cycles: a function-level import, a TYPE_CHECKING import, the own package
        "d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import e\n",
        "e.py": "import pkg\nfrom pkg import d\n\ndef f():\n    from pkg import e  # noqa\n",
        "sub/__init__.py": "from pkg.sub.x import y\n",
        "sub/x.py": "from pkg.sub import z\n",
        "sub/z.py": "",
    })
    graph = import_graph({"pkg": tmp_path / "pkg"})
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert graph["pkg.d"] == set() and graph["pkg.e"] == {"pkg.d"} and graph["pkg.sub.x"] == {"pkg.sub.z"}
    assert find_cycle(graph) == ["pkg.a", "pkg.b", "pkg.c", "pkg.a"]
    (tmp_path / "pkg" / "c.py").write_text("def later():\n    from pkg.a import thing\n")
    assert find_cycle(import_graph({"pkg": tmp_path / "pkg"})) is None


def test_eval_does_not_import_the_cli():
    """``lsr.cli`` imports the eval command; the eval package never imports ``lsr.cli`` back (not even
    inside a function)."""
    for f in sorted((ROOT / "lsr" / "eval").glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            assert not any(n == "lsr.cli" or n.startswith("lsr.cli.") for n in names), f"{f} imports lsr.cli"


@pytest.mark.parametrize("module", ["lsr", "lsr.params", "lsr.cli"])
def test_importing_is_light(module):
    """``import lsr`` (and the CLI, for ``lsr --help``) loads no torch, transformers or faiss."""
    code = (f"import sys, {module}; "
            "print(','.join(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules))")
    # outside the checkout: from its root, Python would find the source folder instead of the install
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                       cwd=tempfile.gettempdir())
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"import {module} loaded {r.stdout.strip()}"
