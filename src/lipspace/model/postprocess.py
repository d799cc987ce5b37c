"""Render-time post-processing of whole rendered frames, one option shared by every model (``evaluation.postprocess``,
``lipspace-render postprocess=``): ``none`` (the renders as they are), ``portrait_sync`` (SyncTalk's Portrait-Sync
Generator) or ``inpaint_neck`` (LipNeRF's neck-gap inpainting).

``portrait_sync`` (Peng et al., CVPR 2024; their ``--portrait`` test mode): the rendered face is pasted into the
ORIGINAL frame of the same time index (the source frame whose head pose the render used) through a face mask whose
border is Gaussian-blurred, so hair, background, neck and torso are the source's pixels. Their mask is the face parsing
(skin, brows, eyes, nose, lips, mouth; no hair) pushed a few pixels below the jaw and blurred; ours is the source
frame's parsing classes ``FACE_CLASSES`` (``HEAD_CLASSES`` without hair) dilated by ``pad_px`` and blurred over
``blur_px``. Pixels deep inside that mask are the render's exactly, pixels beyond its blurred border the source's
exactly. Its scores are NOT comparable with scores without it: the pasted-in pixels are the ground truth itself on
the held-out tail and utterances (its rows say ``postprocess=portrait_sync``).

``inpaint_neck`` (LipNeRF): the gap between the rendered head and the torso is inpainted. The paper uses an inpainting
network trained on CelebA-HQ; its weights are not obtainable here, so OpenCV's ``cv2.inpaint`` (Telea's fast
marching, or Navier-Stokes) fills the gap from its surroundings instead. Every other pixel is the render's exactly.

Masks. Renderers return RGB only (no alpha), so which pixels the rendered head covers is read from the render
itself: a pixel is *uncovered* where the render equals the background it was composited over (``frame["bg"]``:
background.png and any ground-truth torso) within ``UNCOVERED_TOL``. Which pixels should hold a head or a neck
comes from the source frame's parsing (at render resolution: the majority class of each downscale block). The neck
gap is the uncovered pixels of the source's neck and of its face within ``pad_px`` of the neck, never its torso:
between the rendered head and the (source) torso, covered by neither. ``portrait_sync`` fills the gap, where its
mask reaches it, with the mean colour of the source frame's neck (as SyncTalk's torso images fill theirs);
``inpaint_neck`` inpaints it.
"""

from __future__ import annotations

import numpy as np
import torch

from lipspace.data.schema import HEAD_CLASSES, PARSING_CLASSES
from lipspace.utils.errors import LipspaceError

POSTPROCESS = {
    "none": "the renders as they are",
    "portrait_sync": "SyncTalk's Portrait-Sync: the rendered face pasted into the source frame (blurred border)",
    "inpaint_neck": "LipNeRF's neck-gap inpainting (cv2.inpaint instead of their CelebA-HQ network)",
}
_CLASS = {name: k for k, name in PARSING_CLASSES.items()}
FACE_CLASSES = tuple(c for c in HEAD_CLASSES if c != _CLASS["hair"])  # the part Portrait-Sync pastes
NECK_CLASS, TORSO_CLASS = _CLASS["neck"], _CLASS["torso"]
UNCOVERED_TOL = 2.0 / 255.0  # render within 2 grey levels of its background in every channel: not covered


def check_postprocess(name, key: str = "evaluation.postprocess") -> str:
    """``name`` when it is a known option (None means ``none``); else one clear LipspaceError listing them."""
    name = "none" if name is None else str(name)
    if name not in POSTPROCESS:
        options = "; ".join(f"{k} ({v})" for k, v in POSTPROCESS.items())
        raise LipspaceError(f"{key}={name!r}: unknown render post-processing; valid options: {options}.")
    return name


def parsing_at(clip, i: int, hw: tuple[int, int], downscale: int = 1) -> torch.Tensor:
    """Parsing classes of frame ``i`` of ``clip`` at the render's resolution ``hw`` [h,w] uint8: the majority class of
    each downscale x downscale block (whole blocks only, as the renders); the parsing itself when downscale is 1."""
    h, w = hw
    lab = torch.as_tensor(clip.parsing[i])[:h * downscale, :w * downscale]
    if downscale == 1:
        return lab.to(torch.uint8)
    one_hot = torch.nn.functional.one_hot(lab.long(), len(PARSING_CLASSES)).permute(2, 0, 1).float()
    return torch.nn.functional.avg_pool2d(one_hot[None], downscale)[0].argmax(0).to(torch.uint8)


def _isin(parsing: np.ndarray, classes) -> np.ndarray:
    return np.isin(parsing, np.asarray(classes, dtype=parsing.dtype))


def _dilate(mask: np.ndarray, px: int) -> np.ndarray:
    import cv2

    if px <= 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def neck_gap(render: np.ndarray, background: np.ndarray, parsing: np.ndarray, pad_px: int) -> np.ndarray:
    """Pixels [h,w] bool between the rendered head and the torso that the render does not cover: uncovered (render
    equal to its background) where the source frame has neck, or face within ``pad_px`` of its neck; never torso."""
    uncovered = np.abs(render - background).max(-1) <= UNCOVERED_TOL
    neck = parsing == NECK_CLASS
    near_neck = _isin(parsing, FACE_CLASSES) & _dilate(neck, pad_px)
    return uncovered & (neck | near_neck) & (parsing != TORSO_CLASS)


def paste_mask(parsing: np.ndarray, pad_px: int, blur_px: int) -> np.ndarray:
    """Portrait-Sync's blend weight [h,w] float32 in [0,1]: 1 on the source's face (``FACE_CLASSES``) dilated by
    ``pad_px``, Gaussian-blurred over ``blur_px`` at its border. Exactly 1 deeper than ``blur_px`` inside, exactly 0
    farther than ``blur_px`` outside (the blur's kernel is cut there)."""
    import cv2

    region = _dilate(_isin(parsing, FACE_CLASSES), pad_px)
    if blur_px <= 0:
        return region.astype(np.float32)
    k = 2 * blur_px + 1
    alpha = cv2.GaussianBlur(region.astype(np.float32), (k, k), blur_px / 2.0, borderType=cv2.BORDER_REPLICATE)
    inner = ~_dilate(~region, blur_px)  # whole blur window inside the region: 1, not 1 - float rounding
    alpha[inner] = 1.0
    alpha[~_dilate(region, blur_px)] = 0.0
    return np.clip(alpha, 0.0, 1.0)


def portrait_sync(render: torch.Tensor, source: torch.Tensor, parsing: torch.Tensor, background: torch.Tensor,
                  pad_px: int = 2, blur_px: int = 4) -> torch.Tensor:
    """The rendered face pasted into ``source`` (the original frame of the same time index) [h,w,3] float in [0,1]:
    ``alpha * render + (1 - alpha) * source`` with ``alpha = paste_mask``; the neck gap inside the mask's reach
    filled with the mean colour of the source's neck pixels (left as blended when the source shows no neck)."""
    r, s = render.numpy(), source.numpy().astype(render.numpy().dtype)
    lab = parsing.numpy()
    alpha = paste_mask(lab, pad_px, blur_px)[..., None]
    out = alpha * r + (1.0 - alpha) * s
    neck = lab == NECK_CLASS
    gap = neck_gap(r, background.numpy(), lab, pad_px) & (alpha[..., 0] > 0)
    if gap.any() and neck.any():
        out[gap] = s[neck].mean(0)
    return torch.from_numpy(out.astype(r.dtype))


def inpaint_neck(render: torch.Tensor, parsing: torch.Tensor, background: torch.Tensor, method: str = "telea",
                 radius_px: int = 3, pad_px: int = 2) -> torch.Tensor:
    """``render`` [h,w,3] float in [0,1] with its neck gap (``neck_gap``) inpainted by ``cv2.inpaint`` (``method``
    telea or ns, neighbourhood ``radius_px``); every other pixel unchanged, bit for bit."""
    import cv2

    flags = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}
    if method not in flags:
        raise LipspaceError(f"inpaint_neck: method={method!r} unknown; use one of {sorted(flags)}.")
    r = render.numpy()
    hole = neck_gap(r, background.numpy(), parsing.numpy(), pad_px)
    if not hole.any():
        return render
    img = np.clip(np.rint(r * 255.0), 0, 255).astype(np.uint8)
    filled = cv2.inpaint(img, hole.astype(np.uint8), radius_px, flags[method])
    out = r.copy()
    out[hole] = filled[hole].astype(r.dtype) / 255.0
    return torch.from_numpy(out)


def apply_postprocess(name: str, pred: torch.Tensor, frame: dict, clip, i: int, downscale: int = 1) -> torch.Tensor:
    """``pred`` [h,w,3] (on the CPU) of frame ``i`` of ``clip`` post-processed by option ``name``; ``frame`` is what
    the renderer drew it from (``lipspace.data.sampling.whole_frame``: its ``target`` is the source frame at the
    render's resolution, its ``bg`` the background the render was composited over)."""
    if name == "none":
        return pred
    source = frame["target"].reshape(pred.shape)
    background = frame["bg"].reshape(pred.shape).to(pred.dtype)
    parsing = parsing_at(clip, i, tuple(pred.shape[:2]), downscale)
    # SyncTalk at 512 px: the face mask pushed 5 px below the jaw, a 9x9 blur; here in proportion to the render
    h = pred.shape[0]
    pad_px, blur_px = max(1, round(h / 100)), max(2, round(h / 64))
    if name == "portrait_sync":
        return portrait_sync(pred, source, parsing, background, pad_px=pad_px, blur_px=blur_px)
    return inpaint_neck(pred, parsing, background, pad_px=pad_px)
