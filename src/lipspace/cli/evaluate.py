"""`lipspace-eval run_dir=<run>`: evaluate a trained run (or every run of a sweep directory); prints the results
table and where the files are."""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from lipspace.cli._common import friendly
from lipspace.utils.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    import sys

    from lipspace.utils.errors import LipspaceError
    from lipspace.reporting.results_table import record
    from lipspace.model.runs import is_run
    from lipspace.tasks.evaluate import evaluate_run, evaluate_sweep
    from lipspace.tasks.report import results_table

    ev = cfg.evaluation
    with open_dict(ev):
        for key in ("ckpt", "videos", "downscale"):  # top-level shortcuts
            if cfg.get(key) is not None:
                ev[key] = cfg[key]
    run_dir = Path(cfg.run_dir)
    try:
        if run_dir.is_dir() and not is_run(run_dir) and any(is_run(p) for p in run_dir.iterdir() if p.is_dir()):
            df = evaluate_sweep(run_dir, ev)
            print(df.groupby("status").size().to_string())
        else:
            df = evaluate_run(run_dir, ev)
            record(run_dir, ev, df)
            print(results_table(df))
            print(f"results: {run_dir}/eval/results.csv")
    except LipspaceError as e:
        print(f"lipspace: error: {e}", file=sys.stderr)
        sys.exit(2)
    if ev.get("results_table"):
        print(f"study table: {ev.results_table}")


main = friendly(_app)

if __name__ == "__main__":
    main()
