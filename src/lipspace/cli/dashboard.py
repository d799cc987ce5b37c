"""`lipspace-dashboard study=<name> [project=lipspace entity=<you>]`: publish a study's comparison W&B Report."""

from __future__ import annotations

import json
import sys

from lipspace.cli._common import friendly
from lipspace.utils.errors import LipspaceError

USAGE = ("usage: lipspace-dashboard study=NAME [project=lipspace] [entity=ENTITY] [title=TEXT] "
         "[conditioners=a,b,...] [dry_run=false]")
SYNC_HINT = "wandb sync <run_dir>/wandb/offline-run-*"


def parse_args(argv: list[str]) -> dict:
    args = {"project": "lipspace", "entity": None, "study": None, "title": None, "conditioners": None,
            "dry_run": False}
    for arg in argv:
        key, eq, value = arg.partition("=")
        if not eq or key not in args:
            raise LipspaceError(f"unexpected argument '{arg}'. {USAGE}")
        if key == "conditioners":
            args[key] = [c for c in value.split(",") if c] or None
        elif key == "dry_run":
            args[key] = value.lower() in ("1", "true", "yes")
        else:
            args[key] = value or None
    if not args["study"]:
        raise LipspaceError(f"study is required (the W&B group of the runs to compare). {USAGE}")
    return args


@friendly
def main() -> None:
    from lipspace.reporting.loggers import resolve_wandb_mode
    from lipspace.reporting.wandb_report import publish_report, report_spec, require_report_package, study_conditioners

    args = parse_args(sys.argv[1:])
    spec = report_spec(args["project"], args["study"], args["entity"], args["conditioners"], args["title"])
    if args["dry_run"]:
        print(json.dumps(spec, indent=2))
        return
    require_report_package()
    if resolve_wandb_mode(None) != "online":
        raise LipspaceError("the dashboard is a W&B Report and needs an online W&B account, but no API key is "
                            "configured (or WANDB_MODE is offline/disabled): run `wandb login`, upload offline runs "
                            f"with `{SYNC_HINT}`, then run lipspace-dashboard again (dry_run=true prints the spec).")
    import wandb

    try:
        if not args["conditioners"]:
            spec = report_spec(args["project"], args["study"], args["entity"],
                               study_conditioners(args["project"], args["study"], args["entity"]), args["title"])
        url = publish_report(spec)
    except (wandb.errors.Error, ValueError) as e:
        raise LipspaceError(f"W&B refused the report for {args['entity'] or '<default entity>'}/"
                            f"{args['project']}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    print(url)


if __name__ == "__main__":
    main()
