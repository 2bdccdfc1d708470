"""Loading Hugging Face models quietly, with one-line errors (shared by the SPLADE and dense encoders)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator

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
