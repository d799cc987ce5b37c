"""lipspace: which feature space should lip-sync a talking-head NeRF? Conditioners × renderers on equal terms."""

__version__ = "0.1.0"
