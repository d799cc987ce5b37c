"""Conditioning spaces: each maps per-frame inputs (expression, audio windows, ...) to one condition vector."""

from lipspace.conditioners.base import Conditioner

__all__ = ["Conditioner"]
