"""What the SPLADE and dense encoders share: loading Hugging Face models quietly with one-line errors,
the device choice, and the checks of their arguments.

torch and transformers are imported inside the functions that need them, so that this module (and
:func:`weights_file`, which ``lsr eval`` and the export use) loads without them.

Example:
    >>> from lsr.encoders._hf import check_int
    >>> check_int("batch_size", 32, 1)
    32
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lsr.encoders.resolve import KNOWN_MODELS
from lsr.errors import ModelNotFoundError

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                "pytorch_model.bin.index.json")


@contextlib.contextmanager
def quiet_hf() -> Iterator[None]:
    """No progress bars and only errors from transformers inside the block (restored after)."""
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    verbosity = hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar_was_on:
            hf_logging.enable_progress_bar()


def load_error(e: BaseException, name: str, path: str, hint: str) -> ModelNotFoundError:
    """The one-line error for a model that transformers could not load from ``path``."""
    if os.path.isdir(path):
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return ModelNotFoundError(f"cannot load the model in folder {path!r}: {first}")
    return ModelNotFoundError(
        f"model {name!r} is not a known alias ({', '.join(sorted(KNOWN_MODELS))}) nor a local "
        f"folder, and could not be loaded from the Hugging Face Hub (offline, or unknown name): "
        f"pass a folder with config.json and the weights, or use {hint}")


def weights_file(path: str) -> Path | None:
    """The weights file of a local model folder (None for a Hub name or a folder without one)."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    return next((folder / f for f in WEIGHT_FILES if (folder / f).is_file()), None)


def resolve_device(device: Any):
    """The ``torch.device`` for ``device``: ``"auto"``/None picks CUDA when available, else the CPU.

    Example:
        >>> resolve_device("cpu")   # doctest: +SKIP
        device(type='cpu')
    """
    import torch

    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available (use device='cpu')")
    return dev


def check_int(name: str, value: Any, minimum: int, maximum: int | None = None) -> int:
    """``value`` as an int in ``minimum..maximum`` (TypeError / ValueError naming ``name`` otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})")
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"at least {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name} must be {bound}, got {value}")
    return value


def check_texts(texts: Any) -> list[str]:
    """``texts`` as a list of str (TypeError naming the first bad item; a lone string is refused)."""
    if isinstance(texts, (str, bytes)):
        raise TypeError("texts must be a list of strings, got a single "
                        f"{type(texts).__name__}: pass [text] to encode one text")
    if isinstance(texts, (Mapping, set, frozenset)) or not isinstance(texts, Iterable):
        raise TypeError(f"texts must be a list of strings, got {type(texts).__name__}")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"texts[{i}] must be a str, got {type(t).__name__}")
    return texts
