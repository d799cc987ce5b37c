"""`lipspace-demo [--walkthrough] [overrides...]`: the main job on the embedded synthetic talking head.

Without flags: the four conditioning spaces trained and compared (lipspace.demo.run.run_compare; overrides apply
to all four). ``--walkthrough``: LipNeRF alone on the MLP renderer (lipspace.demo.run.run_walkthrough)."""

from __future__ import annotations

import sys

from lipspace.cli._common import friendly


@friendly
def main() -> None:
    from lipspace.demo.run import run_compare, run_walkthrough

    args = sys.argv[1:]
    if "--walkthrough" in args:
        run_walkthrough([a for a in args if a != "--walkthrough"])
    else:
        run_compare(args)


if __name__ == "__main__":
    main()
