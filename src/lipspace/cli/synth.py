"""`lipspace-synth out_dir=<dir> [seconds=20 resolution=128 seed=0 torso_follow=0]`: write a synthetic talking-head
dataset (torso_follow > 0: the torso follows the head's yaw / pitch by that fraction, torso_lag_s seconds late)."""

from __future__ import annotations

import sys

from lipspace.cli._common import friendly
from lipspace.utils.errors import LipspaceError

USAGE = ("usage: lipspace-synth out_dir=DIR [seconds=20] [resolution=128] [seed=0] [heldout_utterances=2] "
         "[torso_follow=0] [torso_lag_s=0.2] [overwrite=false]")


@friendly
def main() -> None:
    from lipspace.data.synthetic import generate_synthetic

    kwargs = {}
    types = {"out_dir": str, "seconds": float, "resolution": int, "seed": int, "heldout_utterances": int,
             "heldout_seconds": float, "torso_follow": float, "torso_lag_s": float,
             "overwrite": lambda s: s.lower() in ("1", "true", "yes")}
    for arg in sys.argv[1:]:
        key, eq, value = arg.partition("=")
        if not eq or key not in types:
            raise LipspaceError(f"unexpected argument '{arg}'. {USAGE}")
        try:
            kwargs[key] = types[key](value)
        except ValueError:
            raise LipspaceError(f"{key}={value!r} is not a valid {types[key].__name__}. {USAGE}") from None
    if "out_dir" not in kwargs:
        raise LipspaceError(f"out_dir is required. {USAGE}")
    print(generate_synthetic(**kwargs))


if __name__ == "__main__":
    main()
