"""Image metrics on [H,W,3] float images in [0,1]: PSNR / SSIM (torchmetrics) over the frame and the mouth region."""

from __future__ import annotations

import numpy as np
import torch
import torchmetrics
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lipspace.data.schema import MOUTH_LMK68

PROVENANCE = {
    "psnr": f"torchmetrics {torchmetrics.__version__} peak_signal_noise_ratio, data_range=1, RGB in [0,1]",
    "ssim": f"torchmetrics {torchmetrics.__version__} structural_similarity_index_measure, gaussian 11/1.5",
    "mouth_region": "box around iBUG-68 points 48-67 of the ground-truth frame, padded by 25% of its size "
                    "on each side (min 8 px)",
}


def _chw(img: torch.Tensor) -> torch.Tensor:
    return img.permute(2, 0, 1)[None].float()


def psnr(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(peak_signal_noise_ratio(_chw(pred), _chw(target), data_range=1.0))


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(structural_similarity_index_measure(_chw(pred), _chw(target), data_range=1.0))


def mouth_box(lmk68: np.ndarray, hw: tuple[int, int], scale: float = 1.0, pad: float = 0.25) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1) of the mouth box in an image of size ``hw`` whose landmarks were taken at 1/scale."""
    pts = np.asarray(lmk68)[list(MOUTH_LMK68)] * scale
    x0, y0 = pts.min(0)
    x1, y1 = pts.max(0)
    px = max((x1 - x0) * pad, 8 * scale)
    py = max((y1 - y0) * pad, 8 * scale)
    h, w = hw
    box = (int(np.floor(y0 - py)), int(np.ceil(y1 + py)), int(np.floor(x0 - px)), int(np.ceil(x1 + px)))
    return max(box[0], 0), min(box[1], h), max(box[2], 0), min(box[3], w)


def frame_metrics(pred: torch.Tensor, target: torch.Tensor, lmk68: np.ndarray | None, scale: float = 1.0) -> dict:
    """PSNR, SSIM and L1 over the frame; PSNR and L1 inside the mouth box when landmarks are given."""
    out = {"psnr": psnr(pred, target), "ssim": ssim(pred, target), "l1": float((pred - target).abs().mean())}
    if lmk68 is not None:
        y0, y1, x0, x1 = mouth_box(lmk68, target.shape[:2], scale)
        if y1 > y0 and x1 > x0:
            p, t = pred[y0:y1, x0:x1], target[y0:y1, x0:x1]
            out["mouth_psnr"] = psnr(p, t)
            out["mouth_l1"] = float((p - t).abs().mean())
    return out
