"""The synthetic talking head: the embedded default dataset (procedural head, speech and exact ground truth)."""

from lipspace.data.synthetic.generate import GENERATOR_VERSION, generate_synthetic

__all__ = ["GENERATOR_VERSION", "generate_synthetic"]
