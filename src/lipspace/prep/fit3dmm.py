"""Camera, head pose and 3DMM fit of a face model to MediaPipe landmarks: one batched Gauss-Newton fit per clip.

``fit_head`` (the pipeline's one entry point):

1. Correspondence: MediaPipe mesh indices <-> model vertices: the iBUG-68 points (facemodel.MP_TO_LMK68 <->
   the model's own lmk68 vertices), the 17 jaw points down-weighted (facemodel.JAW_WEIGHT) because a mesh
   vertex only approximates a contour point; the error is reported over the 51 others.
2. Focal length: searched like SyncTalk does (lipspace.prep.camera.search_focal: log grid over 0.5-6 x image
   size, then golden section); each candidate fits pose + identity + expressions on a subset of valid frames and
   is scored by the mean landmark reprojection error. Principal point = image centre, fx = fy.
3. Identity (shared by the clip, L2-regularised PCA weights) on a larger subset at the chosen focal.
4. Pose (rotation, translation) and expressions of every valid frame, identity fixed: Levenberg-Marquardt
   (lipspace.prep.lm) batched over frames (no per-frame Python loop), expressions kept in the model's range
   ([0, 1] for ICT) by an active-set projection, pulled weakly towards the MediaPipe blendshapes (ICT only) and
   towards 0.
5. Poses smoothed in time (Gaussian on translation and sign-continuous quaternions), invalid frames interpolated;
   expressions re-fitted with the smoothed poses so that they explain the landmarks under the poses the NeRF sees.

Errors reported in pixels over the 51 inner iBUG-68 points (jaw excluded): ``fit_px`` with the raw per-frame
pose (the fit residual), ``reproj_px`` with the final smoothed pose.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lipspace.utils.errors import LipspaceError
from lipspace.prep.camera import fill_invalid, intrinsics_for, project, search_focal, smooth_poses
from lipspace.prep.runs import evenly_spaced
from lipspace.prep.facemodel import JAW_WEIGHT, MP_TO_LMK68, FaceModel, mp_blendshapes_to_expr
from lipspace.prep.lm import LMFitter

log = logging.getLogger(__name__)

EYE_CORNERS_MP = (33, 263)


@dataclass(frozen=True)
class Correspondence:
    """Landmark <-> vertex pairs: MediaPipe mesh index, model vertex index, fit weight, used for the error report."""

    mp_idx: np.ndarray  # [L] int64
    vert_idx: np.ndarray  # [L] int64
    weight: np.ndarray  # [L] float32
    report: np.ndarray  # [L] bool

    def __len__(self) -> int:
        return len(self.mp_idx)


def lmk68_correspondence(model: FaceModel, jaw_weight: float = JAW_WEIGHT) -> Correspondence:
    """The iBUG-68 pairs (MP_TO_LMK68 <-> model.lmk68); jaw points 0-16 weighted ``jaw_weight`` (0 drops them)."""
    if len(model.lmk68) != 68:
        raise LipspaceError(f"{model.source}: the face model has no 68 landmark vertices (lmk68)")
    w = np.ones(68, np.float32)
    w[:17] = jaw_weight
    keep = w > 0
    report = np.arange(68) >= 17
    return Correspondence(MP_TO_LMK68[keep], np.asarray(model.lmk68, np.int64)[keep], w[keep], report[keep])


def default_correspondence(model: FaceModel) -> Correspondence:
    """The correspondence ``fit_head`` uses unless given one: the iBUG-68 pairs (jaw down-weighted). A denser
    MediaPipe <-> model table can be passed as ``correspondence=`` (same dataclass)."""
    return lmk68_correspondence(model)


@dataclass
class HeadFit:
    intrinsics: np.ndarray  # [4] float32 fx, fy, cx, cy (pixels)
    pose: np.ndarray  # [N,4,4] float32 head -> OpenCV camera, smoothed, invalid frames interpolated
    pose_raw: np.ndarray  # [N,4,4] float32 per-frame fit (invalid frames interpolated, not smoothed)
    identity: np.ndarray  # [K] float32
    expr: np.ndarray  # [N,E] float32 (ICT: in [0, 1]), fitted under the smoothed pose
    expr_names: tuple[str, ...]
    valid: np.ndarray  # [N] bool: frames with landmarks that were fitted
    reproj_px: np.ndarray  # [N] float32 mean reprojection error (px) with the smoothed pose; NaN where invalid
    fit_px: np.ndarray  # [N] float32 mean error (px) with the raw pose; NaN where invalid
    lmk68: np.ndarray  # [N,68,2] float32 the model's iBUG-68 vertices projected with the smoothed pose
    focal_curve: list = field(default_factory=list)  # [(focal_px, error_px)] of the focal search
    timings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        r, e = self.reproj_px[self.valid], self.fit_px[self.valid]
        return {"focal_px": round(float(self.intrinsics[0]), 2),
                "reproj_px_median": round(float(np.median(r)), 3),
                "reproj_px_p95": round(float(np.percentile(r, 95)), 3),
                "fit_px_median": round(float(np.median(e)), 3), "fit_px_p95": round(float(np.percentile(e, 95)), 3),
                "n_landmarks": int(self.lmk68.shape[1]), "valid_frames": int(self.valid.sum()),
                "seconds": {k: round(v, 3) for k, v in self.timings.items()}}


def _check_inputs(landmarks, valid, image_hw, blendshapes):
    lmk = np.asarray(landmarks)
    if lmk.ndim != 3 or lmk.shape[1] != 478 or lmk.shape[2] < 2:
        raise LipspaceError(f"fit_head needs MediaPipe landmarks [N,478,>=2] in pixels, got {lmk.shape}")
    valid = np.asarray(valid)
    if valid.shape != (len(lmk),):
        raise LipspaceError(f"fit_head: valid must be [N]={len(lmk)} booleans, got {valid.shape}")
    valid = valid.astype(bool) & np.isfinite(lmk[..., :2]).all((1, 2))
    if not valid.any():
        raise LipspaceError(f"fit_head: none of the {len(lmk)} frames has valid face landmarks, so there is no "
                            f"head to fit; check the face tracking stage")
    if len(image_hw) != 2 or min(image_hw) <= 0:
        raise LipspaceError(f"fit_head: image_hw must be (height, width) > 0, got {image_hw}")
    if blendshapes is not None and np.shape(blendshapes)[0] != len(lmk):
        raise LipspaceError(f"fit_head: blendshapes must have one row per frame ({len(lmk)}), got "
                            f"{np.shape(blendshapes)}")
    return lmk, valid


def fit_head(landmarks, valid, image_hw, model: FaceModel, blendshapes=None, fps: float = 25.0, progress=None,
             correspondence: Correspondence | None = None, focal: float | None = None, smooth_s: float = 0.06,
             n_search: int = 24, n_identity: int = 96) -> HeadFit:
    """Fit focal length, per-frame head pose and expressions and a shared identity to MediaPipe landmarks
    [N,478,>=2] (pixels) of frames of size ``image_hw``; see the module docstring. ``focal`` skips the search;
    ``progress`` (optional) is called with a short stage name before each stage."""
    torch.manual_seed(0)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    lmk, valid = _check_inputs(landmarks, valid, image_hw, blendshapes)
    corr = correspondence or default_correspondence(model)
    n = len(lmk)
    vidx = np.flatnonzero(valid)
    obs = lmk[vidx][:, corr.mp_idx, :2].astype(np.float64)
    eyes = lmk[vidx][:, list(EYE_CORNERS_MP), :2]
    scale_px = float(np.median(np.linalg.norm(eyes[:, 0] - eyes[:, 1], axis=-1)))
    if not scale_px > 0:
        raise LipspaceError("fit_head: the landmarks are degenerate (zero eye-corner distance)")
    prior = mp_blendshapes_to_expr(blendshapes, model.expr_names)
    prior = None if prior is None else np.clip(prior[vidx], *(model.expr_range or (-np.inf, np.inf)))
    fitter = LMFitter(model, corr, obs, image_hw, scale_px, prior)
    # Focal and identity are chosen without the blendshape prior: it is a per-frame hint whose bias would make
    # the focal-error curve ragged; the prior only steers the per-frame expressions (step 4).
    rigid = LMFitter(model, corr, obs, image_hw, scale_px, None)
    alpha0 = torch.zeros(model.n_id, dtype=torch.float64)
    all_frames = torch.arange(len(vidx))

    with torch.no_grad():
        curve: list = []
        if focal is None:
            if progress:
                progress("focal search")
            sub = torch.as_tensor(evenly_spaced(np.arange(len(vidx)), n_search))

            def error_at(fc: float) -> float:
                rot, t, alpha, beta = rigid.fit(fc, sub, alpha0, iters=10)
                return float(rigid.px_error(fc, rot, t, alpha, beta, sub).mean())

            focal, curve = search_focal(error_at, image_hw, n_grid=8, n_refine=6)
        timings["focal_search"] = time.perf_counter() - t0
        if progress:
            progress("identity")
        sub = torch.as_tensor(evenly_spaced(np.arange(len(vidx)), n_identity))
        _, _, alpha, _ = rigid.fit(focal, sub, alpha0, iters=12)
        timings["identity"] = time.perf_counter() - t0 - sum(timings.values())
        if progress:
            progress("pose and expressions")
        rot, t, _, beta = fitter.fit(focal, all_frames, alpha, iters=4, fit_identity=False)
        fit_px = fitter.px_error(focal, rot, t, alpha, beta, all_frames).numpy()
        pose_v = np.tile(np.eye(4), (len(vidx), 1, 1))
        pose_v[:, :3, :3], pose_v[:, :3, 3] = rot.numpy(), t.numpy()
        pose_raw = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
        pose_raw[vidx] = pose_v
        pose_raw = smooth_poses(pose_raw, valid, fps, sigma_s=0.0)
        pose = smooth_poses(pose_raw, valid, fps, sigma_s=smooth_s)
        rot_s = torch.as_tensor(pose[vidx, :3, :3], dtype=torch.float64)
        t_s = torch.as_tensor(pose[vidx, :3, 3], dtype=torch.float64)
        _, _, beta = fitter.frame_steps(focal, rot_s, t_s, alpha, beta, all_frames, 3, pose=False)
        reproj = fitter.px_error(focal, rot_s, t_s, alpha, beta, all_frames).numpy()
        timings["frames"] = time.perf_counter() - t0 - sum(timings.values())

    expr = np.zeros((n, model.n_expr))
    expr[vidx] = beta.numpy()
    expr = fill_invalid(expr, valid)
    intr = intrinsics_for(focal, image_hw)
    ident = alpha.numpy().astype(np.float32)
    verts68 = model.subset(model.lmk68).vertices(ident, expr) if len(model.lmk68) == 68 else np.zeros((n, 68, 3))
    x_cam = np.einsum("nij,nlj->nli", pose[:, :3, :3], verts68) + pose[:, None, :3, 3]
    lmk68 = project(x_cam, intr).astype(np.float32)
    full = np.full(n, np.nan, np.float32)
    reproj_px, fit_err = full.copy(), full.copy()
    reproj_px[vidx], fit_err[vidx] = reproj, fit_px
    timings["total"] = time.perf_counter() - t0
    fit = HeadFit(intrinsics=intr, pose=pose, pose_raw=pose_raw, identity=ident, expr=expr.astype(np.float32),
                  expr_names=tuple(model.expr_names), valid=valid, reproj_px=reproj_px, fit_px=fit_err, lmk68=lmk68,
                  focal_curve=curve, timings=timings)
    log.info("head fit: %s", fit.summary())
    return fit
