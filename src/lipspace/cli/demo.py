"""`lipspace-demo [overrides...]`: the main job on the embedded synthetic talking head (see lipspace.tasks.demo)."""

from __future__ import annotations

import sys

from lipspace.cli._common import friendly


@friendly
def main() -> None:
    from lipspace.tasks.demo import run_demo

    run_demo(sys.argv[1:])


if __name__ == "__main__":
    main()
