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
   batched over frames (no per-frame Python loop), expressions kept in the model's range ([0, 1] for ICT) by
   an active-set projection, pulled weakly towards the MediaPipe blendshapes (ICT only) and towards 0.
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


def _skew_neg(a: torch.Tensor) -> torch.Tensor:
    """-[a]x for a [...,3]: d(R X)/d(omega) for the left update R <- exp(omega) R."""
    z = torch.zeros_like(a[..., 0])
    return torch.stack([torch.stack([z, a[..., 2], -a[..., 1]], -1),
                        torch.stack([-a[..., 2], z, a[..., 0]], -1),
                        torch.stack([a[..., 1], -a[..., 0], z], -1)], -2)


def _exp_so3(w: torch.Tensor) -> torch.Tensor:
    th = w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = w / th
    kx = -_skew_neg(k)
    th = th[..., None]
    eye = torch.eye(3, dtype=w.dtype).expand_as(kx)
    return eye + torch.sin(th) * kx + (1 - torch.cos(th)) * (kx @ kx)


class _Fitter:
    """Batched LM over frames for a fixed focal; all tensors float64 on CPU."""

    def __init__(self, model: FaceModel, corr: Correspondence, obs: np.ndarray, image_hw, scale_px: float,
                 prior: np.ndarray | None, lam_expr: float = 1e-3, lam_prior: float = 1e-3, lam_id: float = 1e-3):
        dt = torch.float64
        v = corr.vert_idx
        self.mu = torch.as_tensor(model.neutral[v], dtype=dt)
        self.bid = torch.as_tensor(model.id_basis[:, v], dtype=dt)  # [K,L,3]
        self.bexp = torch.as_tensor(model.expr_basis[:, v], dtype=dt)  # [E,L,3]
        self.obs = torch.as_tensor(obs, dtype=dt)  # [N,L,2]
        self.sw = torch.as_tensor(np.sqrt(corr.weight) / scale_px, dtype=dt)  # [L]
        self.report = torch.as_tensor(corr.report)
        self.c = torch.tensor([image_hw[1] / 2.0, image_hw[0] / 2.0], dtype=dt)
        self.rng = model.expr_range
        self.e = model.n_expr
        self.prior = None if prior is None else torch.as_tensor(prior, dtype=dt)
        self.lam_expr, self.lam_prior, self.lam_id = lam_expr, lam_prior, lam_id

    # ---- model ---------------------------------------------------------------------------------------------
    def points(self, alpha, beta, frames):
        base = self.mu + torch.einsum("k,klc->lc", alpha, self.bid)
        return base + (beta @ self.bexp.reshape(self.e, -1)).reshape(len(frames), -1, 3)

    def residual(self, f, rot, t, x_head, frames):
        xc = x_head @ rot.transpose(1, 2) + t[:, None]
        z = xc[..., 2:].clamp_min(1e-6)
        uv = f * xc[..., :2] / z + self.c
        return uv - self.obs[frames], xc

    def _prior_terms(self, beta, frames):
        """(residual vector [N,E'], its sqrt weights) of the expression priors."""
        terms = [np.sqrt(self.lam_expr) * beta]
        if self.prior is not None:
            terms.append(np.sqrt(self.lam_prior) * (beta - self.prior[frames]))
        return terms

    def cost(self, f, rot, t, alpha, beta, frames):
        r, _ = self.residual(f, rot, t, self.points(alpha, beta, frames), frames)
        c = ((r * self.sw[:, None]) ** 2).sum((1, 2))
        for p in self._prior_terms(beta, frames):
            c = c + (p ** 2).sum(1)
        return c

    def px_error(self, f, rot, t, alpha, beta, frames) -> torch.Tensor:
        r, _ = self.residual(f, rot, t, self.points(alpha, beta, frames), frames)
        return r.norm(dim=-1)[:, self.report].mean(1)

    # ---- init ----------------------------------------------------------------------------------------------
    def init_pose(self, f, alpha, frames):
        """Weak-perspective (affine) pose per frame, closed form and batched."""
        x = (self.mu + torch.einsum("k,klc->lc", alpha, self.bid))[self.report]
        xm = x.mean(0)
        xc = x - xm
        obs = self.obs[frames][:, self.report]
        om = obs.mean(1)
        m = (obs - om[:, None]).transpose(1, 2) @ (xc @ torch.linalg.inv(xc.T @ xc))  # [N,2,3]
        n0, n1 = m[:, 0].norm(dim=-1, keepdim=True), m[:, 1].norm(dim=-1, keepdim=True)
        r1 = m[:, 0] / n0
        r2 = m[:, 1] - (r1 * m[:, 1]).sum(-1, keepdim=True) * r1
        r2 = r2 / r2.norm(dim=-1, keepdim=True)
        rot = torch.stack([r1, r2, torch.linalg.cross(r1, r2)], 1)
        s = 0.5 * (n0 + n1)[:, 0]
        tz = f / s
        t = torch.empty(len(frames), 3, dtype=x.dtype)
        rx = rot @ xm
        t[:, 2] = tz - rx[:, 2]
        t[:, :2] = (om - self.c) * tz[:, None] / f - rx[:, :2]
        return rot, t

    # ---- steps ---------------------------------------------------------------------------------------------
    def frame_steps(self, f, rot, t, alpha, beta, frames, iters: int, pose: bool = True, expr: bool = True,
                    chunk: int = 256):
        """LM iterations on per-frame (rotation, translation) and/or expressions; returns updated copies.
        Frames are independent given the identity: processed in chunks to bound memory."""
        if len(frames) > chunk:
            parts = [self.frame_steps(f, rot[i:i + chunk], t[i:i + chunk], alpha, beta[i:i + chunk],
                                      frames[i:i + chunk], iters, pose, expr, chunk)
                     for i in range(0, len(frames), chunk)]
            return tuple(torch.cat(x) for x in zip(*parts, strict=True))
        mu = torch.full((len(frames),), 1e-3, dtype=rot.dtype)
        cost = self.cost(f, rot, t, alpha, beta, frames)
        for _ in range(iters):
            res, jf, _ = self._jacobians(f, rot, t, alpha, beta, frames, pose, expr, False)
            h, g, _ = self._frame_system(res, jf, beta, frames, expr)
            hd = h + torch.diag_embed(mu[:, None] * torch.diagonal(h, dim1=1, dim2=2) + 1e-9)
            rot_n, t_n, beta_n = self._update(rot, t, beta, -torch.linalg.solve(hd, g), pose, expr)
            cost_n = self.cost(f, rot_n, t_n, alpha, beta_n, frames)
            ok = cost_n <= cost  # per-frame LM: accept and relax damping, or reject and damp harder
            rot = torch.where(ok[:, None, None], rot_n, rot)
            t = torch.where(ok[:, None], t_n, t)
            beta = torch.where(ok[:, None], beta_n, beta)
            cost = torch.where(ok, cost_n, cost)
            mu = torch.where(ok, mu / 3, mu * 5).clamp(1e-7, 1e7)
        return rot, t, beta

    def _jacobians(self, f, rot, t, alpha, beta, frames, pose: bool, expr: bool, ident: bool):
        r, xc = self.residual(f, rot, t, self.points(alpha, beta, frames), frames)
        z = xc[..., 2].clamp_min(1e-6)
        zero = torch.zeros_like(z)
        proj = torch.stack([torch.stack([f / z, zero, -f * xc[..., 0] / z ** 2], -1),
                            torch.stack([zero, f / z, -f * xc[..., 1] / z ** 2], -1)], -2)  # [N,L,2,3]
        blocks = []
        if pose:
            blocks += [proj @ _skew_neg(xc - t[:, None]), proj]
        if expr:
            blocks.append(proj @ torch.einsum("nij,elj->nlie", rot, self.bexp))
        n = len(frames)
        jf = (torch.cat(blocks, -1) * self.sw[:, None, None]).reshape(n, -1, sum(b.shape[-1] for b in blocks))
        ja = None
        if ident:
            ja = (proj @ torch.einsum("nij,klj->nlik", rot, self.bid)) * self.sw[:, None, None]
            ja = ja.reshape(n, -1, ja.shape[-1])
        return (r * self.sw[:, None]).reshape(n, -1), jf, ja

    def _frame_system(self, res, jf, beta, frames, expr: bool):
        """Per-frame normal equations (h [N,P,P], g [N,P]) with expression priors and the bound active set;
        returns h, g and the free mask [N,P] (as float)."""
        h = jf.transpose(1, 2) @ jf
        g = (jf.transpose(1, 2) @ res[..., None])[..., 0]
        n, p = g.shape
        fm = torch.ones(n, p, dtype=h.dtype)
        if expr:
            k0 = p - self.e
            lam = self.lam_expr + (self.lam_prior if self.prior is not None else 0.0)
            idx = torch.arange(k0, p)
            h[:, idx, idx] += lam
            g[:, k0:] += self.lam_expr * beta
            if self.prior is not None:
                g[:, k0:] += self.lam_prior * (beta - self.prior[frames])
            if self.rng is not None:
                lo, hi = self.rng
                fixed = ((beta <= lo + 1e-9) & (g[:, k0:] > 0)) | ((beta >= hi - 1e-9) & (g[:, k0:] < 0))
                fm[:, k0:] = (~fixed).to(h.dtype)
                h = h * fm[:, :, None] * fm[:, None, :] + torch.diag_embed(1.0 - fm)
                g = g * fm
        return h, g, fm

    def _update(self, rot, t, beta, step, pose: bool, expr: bool):
        k = 0
        if pose:
            rot = _exp_so3(step[:, 0:3]) @ rot
            t = t + step[:, 3:6]
            k = 6
        if expr:
            beta = beta + step[:, k:]
            if self.rng is not None:
                beta = beta.clamp(*self.rng)
        return rot, t, beta

    def joint_steps(self, f, rot, t, alpha, beta, frames, iters: int):
        """LM on all unknowns at once (poses, expressions, shared identity): the per-frame blocks are eliminated
        with a Schur complement, so the shared identity is solved jointly, not by slow alternation."""
        lam_id = self.lam_id

        def total(rot, t, alpha, beta):
            return float(self.cost(f, rot, t, alpha, beta, frames).sum()) + lam_id * float(alpha @ alpha)

        cost, mu = total(rot, t, alpha, beta), 1e-3
        for _ in range(iters):
            res, jf, ja = self._jacobians(f, rot, t, alpha, beta, frames, True, True, True)
            h, g, fm = self._frame_system(res, jf, beta, frames, True)
            hfa = (jf.transpose(1, 2) @ ja) * fm[:, :, None]
            haa = torch.einsum("nrk,nrj->kj", ja, ja) + lam_id * torch.eye(len(alpha), dtype=h.dtype)
            ga = torch.einsum("nrk,nr->k", ja, res) + lam_id * alpha
            for _retry in range(4):
                hd = h + torch.diag_embed(mu * torch.diagonal(h, dim1=1, dim2=2) + 1e-9)
                x = torch.linalg.solve(hd, torch.cat([hfa, g[..., None]], -1))
                s = haa + mu * torch.diag(torch.diagonal(haa)) - torch.einsum("npk,npj->kj", hfa, x[..., :-1])
                da = -torch.linalg.solve(s, ga - torch.einsum("npk,np->k", hfa, x[..., -1]))
                df = -(x[..., -1] + x[..., :-1] @ da)
                rot_n, t_n, beta_n = self._update(rot, t, beta, df, True, True)
                alpha_n = alpha + da
                cost_n = total(rot_n, t_n, alpha_n, beta_n)
                if cost_n <= cost:
                    done = cost - cost_n < 1e-6 * cost
                    rot, t, alpha, beta, cost, mu = rot_n, t_n, alpha_n, beta_n, cost_n, max(mu / 3, 1e-7)
                    break
                mu *= 10
            else:
                return rot, t, alpha, beta  # no decrease found: converged as far as this damping allows
            if done:
                break
        return rot, t, alpha, beta

    def fit(self, f, frames, alpha, iters: int, fit_identity: bool = True):
        beta = self._beta0(frames)
        rot, t = self.init_pose(f, alpha, frames)
        rot, t, _ = self.frame_steps(f, rot, t, alpha, beta, frames, 3, expr=False)
        if fit_identity:
            return self.joint_steps(f, rot, t, alpha, beta, frames, iters)
        rot, t, beta = self.frame_steps(f, rot, t, alpha, beta, frames, iters)
        return rot, t, alpha, beta

    def _beta0(self, frames):
        if self.prior is not None:
            return self.prior[frames].clone()
        return torch.zeros(len(frames), self.e, dtype=self.mu.dtype)


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
    fitter = _Fitter(model, corr, obs, image_hw, scale_px, prior)
    # Focal and identity are chosen without the blendshape prior: it is a per-frame hint whose bias would make
    # the focal-error curve ragged; the prior only steers the per-frame expressions (step 4).
    rigid = _Fitter(model, corr, obs, image_hw, scale_px, None)
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
