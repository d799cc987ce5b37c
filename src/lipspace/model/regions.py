"""What the system checks of the parts it joins: the Renderer class behind a built renderer or a partial, and a
conditioner's declared regions for region attention."""

from __future__ import annotations

import functools

from lipspace.renderers.base import Renderer
from lipspace.utils.errors import LipspaceError


def renderer_class(renderer) -> type[Renderer]:
    """The Renderer class of a built renderer, a class, or a partial of one (Hydra ``_partial_``)."""
    if isinstance(renderer, Renderer):
        return type(renderer)
    cls = renderer.func if isinstance(renderer, functools.partial) else renderer
    if not (isinstance(cls, type) and issubclass(cls, Renderer)):
        raise LipspaceError(f"renderer {renderer!r}: must be a lipspace.renderers.base.Renderer subclass (built, "
                            "or a partial of one built at the conditioner's width)")
    return cls


def region_spec(conditioner) -> dict:
    """A conditioner's declared regions ``{name: (slice of its output c, parsing classes)}``, checked; {} if none."""
    regions = dict(conditioner.regions or {})
    for name, spec in regions.items():
        try:
            sl, classes = spec
            ok = isinstance(sl, slice) and 0 <= (sl.start or 0) < sl.stop <= conditioner.out_dim and len(classes) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise LipspaceError(f"conditioner '{conditioner.name}': region '{name}' must be (slice of the "
                                f"{conditioner.out_dim} condition columns, non-empty parsing classes), got {spec!r}")
    return regions
