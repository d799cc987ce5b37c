"""Render whole frames from a trained conditioner + renderer: the one path shared by validation, eval and render."""

from __future__ import annotations

import torch

from lipspace.data.clip import Clip
from lipspace.data.sampling import frame_rays


@torch.no_grad()
def render_rays_image(renderer, rays: dict, cond: torch.Tensor) -> torch.Tensor:
    """Render the rays of one frame (as made by ``frame_rays``) with condition ``cond`` [C] -> image [h,w,3]."""
    device = cond.device
    n = rays["rays_o"].shape[0]
    out = renderer.render_chunked(rays["rays_o"].to(device), rays["rays_d"].to(device), rays["near"].to(device),
                                  rays["far"].to(device), cond[None].expand(n, -1), rays["bg"].to(device))
    h, w = rays["hw"]
    return out["rgb"].clamp(0, 1).reshape(h, w, 3)


@torch.no_grad()
def render_sequence(conditioner, renderer, clip: Clip, inputs: dict[str, torch.Tensor], frame_idx=None,
                    downscale: int = 1, prepare: bool = True, indices=None):
    """Render frames ``indices`` of ``clip`` (its poses and background) under per-frame ``inputs`` [T, dim].

    ``frame_idx`` selects trained per-frame state (reconstruction); None drives by new inputs. ``prepare``
    applies the conditioner's inference processing (e.g. Savitzky-Golay smoothing) to the whole sequence.
    Yields (index, rendered [h,w,3] float, target [h,w,3] float).
    """
    device = next(renderer.parameters()).device
    if prepare:
        inputs = conditioner.prepare_sequence(inputs)
    indices = range(clip.n_frames) if indices is None else indices
    for k, i in enumerate(indices):
        step_inputs = {name: v[k : k + 1].to(device) for name, v in inputs.items()}
        fidx = None if frame_idx is None else torch.as_tensor([frame_idx[k]], device=device)
        cond = conditioner(step_inputs, fidx)[0]
        rays = frame_rays(clip, int(i), downscale)
        yield int(i), render_rays_image(renderer, rays, cond).cpu(), rays["target"]
