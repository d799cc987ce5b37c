"""Thin command-line entry points (Hydra apps); the work lives in lipspace.tasks."""
