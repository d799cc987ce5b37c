"""Evaluation: image metrics, mouth-region errors, results tables, videos."""
