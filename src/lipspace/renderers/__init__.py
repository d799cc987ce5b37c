"""Renderers: the Renderer contract (base), encodings, fields and volume rendering; a volume renderer sees rays, bounds
and a per-ray condition only, a rasteriser whole cameras and one condition per frame."""

from lipspace.renderers.base import Rasteriser, Renderer, VolumeRenderer
from lipspace.renderers.encodings import PositionalEncoding
from lipspace.renderers.fields import MLPField
from lipspace.renderers.nerf import NeRFRenderer, mse_chunk_loss
from lipspace.renderers.volume import composite, sample_pdf, stratified_samples

__all__ = [
    "MLPField",
    "NeRFRenderer",
    "PositionalEncoding",
    "Rasteriser",
    "Renderer",
    "VolumeRenderer",
    "composite",
    "mse_chunk_loss",
    "sample_pdf",
    "stratified_samples",
]
