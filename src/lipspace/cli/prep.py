"""`lipspace-prep VIDEO OUT_DIR [key=value ...]`: preprocess a talking-head video into a lipspace dataset.

Options are the fields of lipspace.prep.options.PrepOptions, e.g. ``size=512 max_seconds=20 hair_stride=2``.
Re-running the same command reuses every finished stage (a killed run resumes where it stopped).
"""

from __future__ import annotations

import dataclasses
import logging
import sys

from lipspace.cli._common import friendly
from lipspace.utils.errors import LipspaceError


def _usage() -> str:
    from lipspace.prep.options import PrepOptions

    opts = " ".join(f"[{f.name}={f.default}]" for f in dataclasses.fields(PrepOptions))
    return f"usage: lipspace-prep VIDEO OUT_DIR {opts}"


def _parse_value(annotation: str, text: str):
    """Parse ``text`` by the PrepOptions field's annotation ('int', 'float | None', 'bool | None', 'str | None')."""
    kinds = [k.strip() for k in annotation.split("|")]
    low = text.lower()
    if "None" in kinds and low in ("none", "null", ""):
        return None
    if "bool" in kinds:
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    if "int" in kinds:
        return int(text)
    if "float" in kinds:
        return float(text)
    return text


def parse_args(argv: list[str]):
    from lipspace.prep.options import PrepOptions

    fields = {f.name: f for f in dataclasses.fields(PrepOptions)}
    positional, kwargs = [], {}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\n" + _usage())
            sys.exit(0)
        key, eq, value = arg.partition("=")
        if not eq:
            positional.append(arg)
            continue
        if key not in fields:
            raise LipspaceError(f"unknown option '{key}'. {_usage()}")
        try:
            kwargs[key] = _parse_value(str(fields[key].type), value)
        except ValueError:
            raise LipspaceError(f"{key}={value!r} is not a valid {fields[key].type} for {key} "
                                f"(default {fields[key].default!r})") from None
    if len(positional) != 2:
        raise LipspaceError(f"expected a video path and an output directory, got {positional or 'nothing'}. "
                            f"{_usage()}")
    return positional[0], positional[1], PrepOptions(**kwargs)


@friendly
def main() -> None:
    from lipspace.prep.pipeline import Preprocessor

    video, out, options = parse_args(sys.argv[1:])
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    res = Preprocessor(video, out, options).run()
    n = res.n_frames
    for name, s in res.seconds.items():
        tag = "cached" if name in res.cached else f"{s:6.1f} s  {n / s if s > 0 else float('inf'):7.1f} fr/s"
        print(f"  {name:<10} {tag}")
    head = res.summary.get("head", {})
    if head:
        print("  head fit: " + ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                                          for k, v in head.items() if not isinstance(v, (list, dict))))
    print(f"dataset: {res.out_dir}  ({n} frames, {res.total_seconds:.1f} s)")
    for p in res.summary.get("finalize", {}).get("overlays", [])[:3]:
        print(f"  overlay: {p}")


if __name__ == "__main__":
    main()
