"""`lipspace-train`: Hydra app over conf/train.yaml, e.g. `lipspace-train experiment=lipnerf budget=tiny`.

With evaluation.after_train=true the run is evaluated when training ends (rows appended to
evaluation.results_table). In a multirun sweep (-m, or hydra.mode=MULTIRUN in a sweep config) a job that fails is
recorded as a failed row (traceback in <run>/FAILED) and the sweep goes on with the next job."""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lipspace.cli._common import friendly, hydra_choices
from lipspace.utils.config import CONF_DIR


def _multirun() -> bool:
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:
        return False


def _train_and_evaluate(cfg: DictConfig, out: str) -> float | None:
    from lipspace.tasks.train import train

    metrics = train(cfg, out, hydra_choices())
    ev = cfg.get("evaluation")
    if ev is not None and ev.get("after_train"):
        from lipspace.reporting.results_table import record
        from lipspace.tasks.evaluate import evaluate_run
        from lipspace.tasks.report import results_table

        stage = "eval"
        try:
            df = evaluate_run(out, ev)
        except Exception as e:  # noqa: BLE001 - recorded as a failed row, then re-raised (or swallowed in sweeps)
            from lipspace.reporting.results_table import failed_row

            record(out, ev, failed_row(out, e, stage))
            raise
        record(out, ev, df)
        print(results_table(df))
    return metrics.get("val/psnr")


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    import sys

    from lipspace.utils.errors import LipspaceError

    out = HydraConfig.get().runtime.output_dir
    try:
        return _train_and_evaluate(cfg, out)
    except Exception as e:  # noqa: BLE001
        if _multirun():  # never stop a sweep: the failure is in the results table and <run>/FAILED
            from lipspace.reporting.results_table import failed_row, record

            if not (Path(out) / "FAILED").is_file():
                ev = cfg.get("evaluation") or {}
                record(out, ev, failed_row(out, e, "train"))
            print(f"lipspace: job {out} failed ({type(e).__name__}: {e}); recorded, the sweep goes on",
                  file=sys.stderr)
            return None
        if isinstance(e, LipspaceError):  # Hydra would print a traceback; keep it to one line
            print(f"lipspace: error: {e}", file=sys.stderr)
            sys.exit(2)
        raise


main = friendly(_app)

if __name__ == "__main__":
    main()
