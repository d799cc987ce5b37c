"""Shared CLI plumbing: pre-flight checks and turning LipspaceError into one clear line + exit status 2."""

from __future__ import annotations

import functools
import sys

from lipspace.utils.config import check_group_overrides
from lipspace.utils.errors import LipspaceError


def friendly(fn):
    """Run a CLI main; a LipspaceError (bad input, bad config) prints `lipspace: <message>` and exits 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            check_group_overrides(sys.argv[1:])
            return fn(*args, **kwargs)
        except LipspaceError as e:
            print(f"lipspace: error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper


def hydra_choices() -> dict:
    from hydra.core.hydra_config import HydraConfig

    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:
        return {}
