"""The implicit portrait-parsing branch (SSP-NeRF): per-point class logits composited along each ray with the very
weights that composite its colour, plus the whole-frame class map."""

from __future__ import annotations

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError


def composite_logits(weights: torch.Tensor, logits: torch.Tensor, bg_logits: torch.Tensor) -> torch.Tensor:
    """weights [R, S+1] (the last is the background sample's, as ``composite_real`` returns them), logits [R, S, K]
    at the real samples, bg_logits [K] -> the ray's logits [R, K] = sum_i w_i s_i + w_bg s_bg (Semantic-NeRF /
    SSP-NeRF: raw logits, not probabilities, are composited; the cross-entropy takes the softmax afterwards)."""
    return torch.einsum("rs,rsk->rk", weights[:, :-1], logits) + weights[:, -1:] * bg_logits


def semantic_background(n_classes: int) -> nn.Parameter | None:
    """The learnt logits of the background sample (light that crosses the whole field lands on the background
    image, whose class the field cannot show), zeros at start: creating it draws no random numbers, so a
    renderer with the branch off initialises exactly as before. None when ``n_classes`` is 0 (off)."""
    if n_classes < 0:
        raise LipspaceError(f"semantic_classes must be >= 0 (0 = no parsing branch), got {n_classes}")
    return nn.Parameter(torch.zeros(n_classes)) if n_classes else None


def field_extras(extras: list, has_regions: bool, n_classes: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """A field's optional outputs after (rgb, sigma), in their declared order: region attention magnitudes (when
    built with regions), then semantic logits (when ``semantic_classes`` > 0) -> (att or None, logits or None)."""
    extras = list(extras)
    att = extras.pop(0) if has_regions else None
    logits = extras.pop(0) if n_classes else None
    return att, logits
