"""`lipspace-eval run_dir=<run>`: evaluate a trained run; prints the results table and where files are."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lipspace.cli._common import friendly
from lipspace.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="eval", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    import sys

    from lipspace.errors import LipspaceError
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.report import results_table

    try:
        df = evaluate(cfg.run_dir, cfg.ckpt, videos=cfg.videos, downscale=cfg.downscale)
    except LipspaceError as e:
        print(f"lipspace: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(results_table(df))
    print(f"results: {cfg.run_dir}/eval/results.csv")


main = friendly(_app)

if __name__ == "__main__":
    main()
