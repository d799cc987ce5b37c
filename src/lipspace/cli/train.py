"""`lipspace-train`: Hydra app over conf/train.yaml, e.g. `lipspace-train experiment=lipnerf budget=tiny`."""

from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from lipspace.cli._common import friendly, hydra_choices
from lipspace.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="train", version_base="1.3")
def _app(cfg: DictConfig) -> float | None:
    from lipspace.errors import LipspaceError
    from lipspace.tasks.train import train

    try:
        metrics = train(cfg, HydraConfig.get().runtime.output_dir, hydra_choices())
    except LipspaceError as e:  # Hydra would print a traceback; keep it to one line
        import sys

        print(f"lipspace: error: {e}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("val/psnr")


main = friendly(_app)

if __name__ == "__main__":
    main()
