"""Reporting: the results table every evaluation appends to, its analysis for notebooks, and the Weights & Biases
logger, evaluation upload and report."""
