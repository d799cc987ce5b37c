"""Fields: map sample points (+ per-ray direction and condition) to colour and density."""

from lipspace.renderers.fields.mlp import MLPField

__all__ = ["MLPField"]
