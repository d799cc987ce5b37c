"""Shared plumbing: the error type every clear failure raises, config composition, and cached assets (weights
fetched from their official URLs with checksums)."""
