"""Where the study plumbing used to live, kept for ``lipspace.tasks.compare`` (owned elsewhere; it imports
``evaluate_run`` from here): evaluating with the `evaluation` config is in :mod:`lipspace.tasks.evaluate`, the
results table in :mod:`lipspace.results_table`. New code imports from those; this module goes once compare does."""

from lipspace.results_table import append_rows, failed_row, record  # noqa: F401
from lipspace.runs import is_run  # noqa: F401
from lipspace.tasks.evaluate import evaluate_run, evaluate_sweep, log_to_wandb  # noqa: F401
