"""Render whole frames from a trained conditioner + renderer: the one path shared by validation, eval and render."""

from __future__ import annotations

import torch

from lipspace.data.clip import Clip
from lipspace.data.sampling import whole_frame
from lipspace.model.postprocess import apply_postprocess, check_postprocess


@torch.no_grad()
def render_sequence(conditioner, renderer, clip: Clip, inputs: dict[str, torch.Tensor], frame_idx=None,
                    downscale: int = 1, prepare: bool = True, indices=None, postprocess: str = "none"):
    """Render frames ``indices`` of ``clip`` (its poses and background) under per-frame ``inputs`` [T, dim].

    ``frame_idx`` selects trained per-frame state (reconstruction); None drives by new inputs. ``prepare``
    applies the conditioner's inference processing (e.g. Savitzky-Golay smoothing) to the whole sequence.
    ``postprocess`` (``lipspace.model.postprocess``: none, portrait_sync, inpaint_neck) is applied to each render
    with the clip's frame of the same index as its source frame.
    Yields (index, rendered [h,w,3] float, target [h,w,3] float).
    """
    postprocess = check_postprocess(postprocess)
    device = next(renderer.parameters()).device
    if prepare:
        inputs = conditioner.prepare_sequence(inputs)
    indices = range(clip.n_frames) if indices is None else indices
    for k, i in enumerate(indices):
        step_inputs = {name: v[k : k + 1].to(device) for name, v in inputs.items()}
        fidx = None if frame_idx is None else torch.as_tensor([frame_idx[k]], device=device)
        cond = conditioner(step_inputs, fidx)[0]
        frame = whole_frame(clip, int(i), downscale, renderer.batch_kind)
        pred = renderer.render_frame(frame, cond)
        pred = apply_postprocess(postprocess, pred.cpu(), frame, clip, int(i), downscale)
        yield int(i), pred, frame["target"].reshape(pred.shape)
