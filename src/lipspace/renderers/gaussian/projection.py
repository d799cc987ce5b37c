"""EWA projection of 3-D Gaussians (3DGS, Kerbl et al. 2023, eq. 5; Zwicker et al. 2002) through a head -> camera
pose and a pinhole camera to 2-D means, 2-D covariances, depths and 3-sigma radii.

Conventions (as ``lipspace.data.sampling.frame_cameras``): OpenCV camera (x right, y down, z forward); a point
p_cam = R mu + t projects to u = fx x / z + cx, v = fy y / z + cy in continuous pixel coordinates where pixel
(row i, column j) has its centre at (j + 0.5, i + 0.5). Quaternions are (w, x, y, z) like 3DGS and gsplat.

Covariance: Sigma = R_q S S^T R_q^T with S = diag(exp(log_scale)); in the camera Sigma_cam = R Sigma R^T; the
Jacobian of the perspective map at p_cam is J = [[fx/z, 0, -fx x/z^2], [0, fy/z, -fy y/z^2]], so the 2-D
covariance is J Sigma_cam J^T + eps2d I (3DGS's 0.3 px^2 low-pass: every splat covers at least about a pixel). As
3DGS, x/z and y/z inside J are clamped to 1.3x the image's half-extent so splats far outside the view stay finite.
Gaussians whose depth is below ``near`` are culled (``visible`` False, radius 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

EPS2D = 0.3  # 3DGS's screen-space low-pass, px^2


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """(w, x, y, z) quaternions [..., 4] (normalised here) -> rotation matrices [..., 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariance_3d(log_scales: torch.Tensor, quats: torch.Tensor) -> torch.Tensor:
    """Sigma = R S S^T R^T [..., 3, 3] from log-scales [..., 3] and quaternions [..., 4]."""
    m = quat_to_rotmat(quats) * torch.exp(log_scales)[..., None, :]  # R S
    return m @ m.transpose(-1, -2)


@dataclass
class Projected:
    """Gaussians seen by F cameras: means2d [F,N,2] (px), cov2d [F,N,2,2] (px^2, low-pass included), depths [F,N]
    (camera z), radii [F,N] (3 sigma of the largest axis, px; 0 when culled), visible [F,N] (in front of near)."""

    means2d: torch.Tensor
    cov2d: torch.Tensor
    depths: torch.Tensor
    radii: torch.Tensor
    visible: torch.Tensor


def project_gaussians(means: torch.Tensor, log_scales: torch.Tensor, quats: torch.Tensor, pose: torch.Tensor,
                      intrinsics: torch.Tensor, hw: tuple[int, int] | None = None, near: float = 0.01,
                      eps2d: float = EPS2D) -> Projected:
    """Project Gaussians through F cameras.

    means, log_scales [N,3] or [F,N,3] (head space; one set for every camera, or one per camera, e.g. deformed per
    frame), quats [N,4] or [F,N,4]; pose [F,4,4] or [4,4] (head -> camera), intrinsics [F,4] or [4] (fx, fy, cx,
    cy); ``hw`` (h, w): the image, for the clamp of J (None: no clamp). Differentiable in means, scales, quats."""
    if pose.dim() == 2:
        pose = pose[None]
    if intrinsics.dim() == 1:
        intrinsics = intrinsics[None].expand(pose.shape[0], 4)
    rot, trans = pose[:, None, :3, :3], pose[:, None, :3, 3]  # [F,1,3,3], [F,1,3]
    p = (rot @ means[..., None]).squeeze(-1) + trans  # [F,N,3]
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = (v[:, None] for v in intrinsics.unbind(-1))
    visible = z > near
    zs = torch.where(visible, z, torch.ones_like(z))  # culled ones: finite arithmetic, masked below
    tx, ty = x / zs, y / zs
    if hw is not None:
        h, w = hw
        tx = torch.minimum(torch.maximum(tx, -1.3 * cx / fx), 1.3 * (w - cx) / fx)
        ty = torch.minimum(torch.maximum(ty, -1.3 * cy / fy), 1.3 * (h - cy) / fy)
    zero = torch.zeros_like(zs)
    jac = torch.stack([fx / zs, zero, -fx * tx / zs, zero, fy / zs, -fy * ty / zs], -1).reshape(*zs.shape, 2, 3)
    cov_cam = rot @ covariance_3d(log_scales, quats) @ rot.transpose(-1, -2)  # [F,N,3,3]
    cov2d = jac @ cov_cam @ jac.transpose(-1, -2) + eps2d * torch.eye(2, dtype=p.dtype, device=p.device)
    means2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], -1)
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    mid = 0.5 * (a + c)
    lam = mid + torch.sqrt((mid * mid - (a * c - b * b)).clamp_min(0.0))  # exact (3DGS floors the root at 0.1)
    radii = torch.where(visible, 3.0 * torch.sqrt(lam.detach()), zero.detach())
    return Projected(means2d, cov2d, z, radii, visible)


def conics(cov2d: torch.Tensor) -> torch.Tensor:
    """Inverse 2-D covariances as (A, B, C) [..., 3] with Sigma^-1 = [[A, B], [B, C]]."""
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    return torch.stack([c / det, -b / det, a / det], -1)
