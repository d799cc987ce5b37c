"""Renderers: encodings, fields and volume rendering; they see rays, bounds and a per-ray condition only."""

from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.fields import MLPField
from lipspace.renderers.nerf import NeRFRenderer, mse_chunk_loss
from lipspace.renderers.volume import composite, sample_pdf, stratified_samples

__all__ = [
    "MLPField",
    "NeRFRenderer",
    "PositionalEncoding",
    "composite",
    "mse_chunk_loss",
    "sample_pdf",
    "stratified_samples",
]
