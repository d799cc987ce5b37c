"""`lipspace-render run_dir=<run> driver=heldout/utt_00`: write an mp4 with the driving audio."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from lipspace.cli._common import friendly
from lipspace.utils.config import CONF_DIR


@hydra.main(config_path=str(CONF_DIR), config_name="render", version_base="1.3")
def _app(cfg: DictConfig) -> None:
    import sys

    from lipspace.utils.errors import LipspaceError
    from lipspace.tasks.render import render

    try:
        path = render(cfg.run_dir, cfg.driver, cfg.out, cfg.ckpt, cfg.side_by_side, cfg.get("postprocess", "none"))
    except LipspaceError as e:
        print(f"lipspace: error: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"video: {path}")


main = friendly(_app)

if __name__ == "__main__":
    main()
