"""Batched Levenberg-Marquardt for the head fit of lipspace.prep.fit3dmm: the residual of the face model's
landmark vertices (identity + expressions) projected by a pinhole camera against the observed landmarks, its
Jacobians with respect to the per-frame pose (left SO(3) update), the expressions and the shared identity; per-frame
LM steps batched over frames (expressions kept in the model's range by an active set, pulled towards a prior and
towards 0), joint steps that eliminate the per-frame blocks with a Schur complement to solve the shared identity, and
a closed-form weak-perspective initial pose. All tensors float64 on CPU.
"""

from __future__ import annotations

import numpy as np
import torch

from lipspace.prep.facemodel import FaceModel


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


class LMFitter:
    """Batched LM over frames for a fixed focal; all tensors float64 on CPU. ``corr`` is a
    lipspace.prep.fit3dmm.Correspondence (its vert_idx, weight and report are read)."""

    def __init__(self, model: FaceModel, corr, obs: np.ndarray, image_hw, scale_px: float,
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
