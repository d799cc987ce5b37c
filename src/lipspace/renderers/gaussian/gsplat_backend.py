"""Optional CUDA backend: projection + rasterisation by gsplat (>= 1.0, ``gsplat.rasterization``) with the inputs
of the pure-torch path (``projection.project_gaussians`` + ``rasterise.rasterise``); outputs in the same form.

gsplat uses the same conventions: quaternions (w, x, y, z), world (here head) -> camera view matrices, OpenCV
pinhole K, pixel centres at i + 0.5, the 0.3 px^2 low-pass (eps2d), alpha clamped to 0.99 and skipped below 1/255.
It bins by a 3-sigma radius (the torch path by the exact 1/255 ellipse) and stops at transmittance 1e-4, so the two
agree to about 1e-3, not bit for bit. It takes one background colour per camera, so the background image is
composited here: rgb + (1 - alpha) bg."""

from __future__ import annotations

import torch

from lipspace.utils.errors import LipspaceError


def gsplat_available() -> bool:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


def _gsplat():
    try:
        import gsplat
    except ImportError as e:
        raise LipspaceError("renderer.backend=gsplat needs the gsplat package (CUDA kernels for Gaussian splatting): "
                            "`pip install 'lipspace[gsplat]'` (or gsplat) on a CUDA machine, or use "
                            "renderer.backend=torch (pure PyTorch, CPU or GPU)") from e
    if not torch.cuda.is_available():
        raise LipspaceError("renderer.backend=gsplat runs on CUDA only and no CUDA device is available; use "
                            "renderer.backend=torch")
    return gsplat


def rasterise_gsplat(means, log_scales, quats, colours, opacities, pose, intrinsics, hw, bg=None,
                     near: float = 0.01, eps2d: float = 0.3) -> dict[str, torch.Tensor]:
    """means, log_scales [N,3] or [F,N,3]; quats [N,4] or [F,N,4]; colours [N,C] or [F,N,C]; opacities [N] or [F,N];
    pose [F,4,4] (head -> camera); intrinsics [F,4]; bg [F,h,w,C] or None -> rgb [F,h,w,C], alpha, depth [F,h,w]
    (depth: sum of alpha-weighted camera depths, as the torch path)."""
    gsplat = _gsplat()
    h, w = hw
    f = pose.shape[0]
    ks = torch.zeros(f, 3, 3, dtype=pose.dtype, device=pose.device)
    ks[:, 0, 0], ks[:, 1, 1], ks[:, 0, 2], ks[:, 1, 2] = intrinsics.unbind(-1)
    ks[:, 2, 2] = 1.0
    per = lambda x, d: x[i] if x.dim() == d + 1 else x  # noqa: E731
    rgb, alpha, depth = [], [], []
    for i in range(f):
        out, acc, _ = gsplat.rasterization(
            per(means, 2), per(quats, 2), torch.exp(per(log_scales, 2)), per(opacities, 1), per(colours, 2),
            pose[i:i + 1], ks[i:i + 1], w, h, near_plane=near, eps2d=eps2d, render_mode="RGB+D",
            rasterize_mode="classic", packed=False)
        rgb.append(out[0, ..., :-1])
        depth.append(out[0, ..., -1])
        alpha.append(acc[0, ..., 0])
    rgb, alpha, depth = torch.stack(rgb), torch.stack(alpha), torch.stack(depth)
    if bg is not None:
        rgb = rgb + (1 - alpha[..., None]) * bg
    return {"rgb": rgb, "alpha": alpha, "depth": depth}
