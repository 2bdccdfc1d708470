"""Text encoders: SPLADE (sparse) models and the model-name resolver."""

from lsr.encoders.dense import DenseEncoder
from lsr.encoders.resolve import KNOWN_MODELS, resolve_model
from lsr.encoders.splade import SpladeEncoder

__all__ = ["DenseEncoder", "SpladeEncoder", "resolve_model", "KNOWN_MODELS"]
