"""Camera, static background and torso (camera space), neck, per-frame compositing and anti-aliased downsampling.

The camera is fixed (fx = fy = 2 * resolution, principal point at the image centre); the head sits at
HEAD_T0 in camera space (head height about 0.55 of the frame) and moves by the pose track; the torso is
static in camera space, as in real video; the neck joins a point fixed in the head to one fixed in the torso.
Frames are rendered at SS x SS supersampling and area-downsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipspace.data.synthetic import head as hd

SS = 2  # supersampling factor per axis
HEAD_T0 = np.array([0.0, -0.45, 7.64])  # head origin in camera space at rest (units of head.py)
PIVOT = np.array([0.0, 0.9, 0.1])  # head-space point the head rotates about (base of the skull)
TORSO_C, TORSO_A = HEAD_T0 + np.array([0.0, 2.9, 0.35]), np.array([2.3, 1.45, 0.95])
NECK_TOP = np.array([0.0, 0.7, 0.1])  # head space (inside the skull/jaw)
NECK_BOTTOM = np.array([0.0, 1.4, 7.9])  # camera space (inside the torso)
NECK_R = 0.36
HEAD_BOX = np.array([[x, y, z] for x in (-0.95, 0.95) for y in (-1.15, 1.3) for z in (-1.15, 1.0)])
LIGHT = np.array([-0.35, -0.55, -0.75]) / np.linalg.norm([-0.35, -0.55, -0.75])  # towards the light, camera space


@dataclass
class Scene:
    res: int
    K: np.ndarray  # fx, fy, cx, cy (stored-frame pixels)
    rays: np.ndarray  # [H*SS, W*SS, 3] camera-space directions with z = 1 (t = depth)
    bg_hi: np.ndarray  # [H*SS, W*SS, 3] background, float32 0..1
    static_rgb: np.ndarray  # background with the torso drawn in
    static_lab: np.ndarray  # 0 / 9
    static_t: np.ndarray  # torso depth (inf elsewhere)
    torso_pts: np.ndarray  # [P,3] visible torso surface points, camera space (for the scene bounds)


def make_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth two-colour gradient, soft coloured blobs, faint stripes and low-frequency grain; float32 0..1."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(0.25, 0.75, (2, 3)).astype(np.float32)
    tilt = rng.uniform(-0.3, 0.3)
    g = np.clip(yy + tilt * (xx - 0.5), 0, 1)[..., None]
    img = c1 * (1 - g) + c2 * g
    for _ in range(6):
        col = rng.uniform(0.15, 0.9, 3).astype(np.float32)
        cx, cy, s, w = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.05, 0.25), rng.uniform(0.2, 0.5)
        blob = (w * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * s * s)))[..., None]
        img = img * (1 - blob) + col * blob
    th, fr, ph = rng.uniform(0, np.pi), rng.uniform(6, 14), rng.uniform(0, 2 * np.pi)
    img *= (0.93 + 0.07 * np.sin(2 * np.pi * fr * (xx * np.cos(th) + yy * np.sin(th)) + ph))[..., None]
    grain = cv2.resize(rng.standard_normal((24, 24, 3)).astype(np.float32), (size, size),
                       interpolation=cv2.INTER_CUBIC)
    return np.clip(img + 0.035 * grain, 0, 1).astype(np.float32)


def make_scene(rng: np.random.Generator, model: hd.HeadModel, res: int) -> Scene:
    f = 2.0 * res
    K = np.array([f, f, res / 2.0, res / 2.0], np.float32)
    n = res * SS
    c = (np.arange(n, dtype=np.float32) + 0.5) / SS  # hi-res pixel centres in stored-pixel units
    u, v = np.meshgrid((c - K[2]) / K[0], (c - K[3]) / K[1])
    rays = np.stack([u, v, np.ones_like(u)], -1).astype(np.float32)
    bg = make_background(rng, n)
    d = rays.reshape(-1, 3)
    t = hd._hit(np.zeros(3, np.float32), d, TORSO_C.astype(np.float32), TORSO_A.astype(np.float32))
    hit = np.isfinite(t)
    p = t[hit, None] * d[hit]
    nrm = (p - TORSO_C) / TORSO_A ** 2
    nrm /= np.linalg.norm(nrm, axis=1, keepdims=True)
    # Shirt: two-colour stripes in camera space, a darker collar band at the top, Lambert shading.
    stripe = np.clip(2.0 * np.sin(9.0 * p[:, 0] + 2.0 * p[:, 1]), -1, 1)[:, None] * 0.5 + 0.5
    alb = model.colours["shirt"] * stripe + model.colours["shirt2"] * (1 - stripe)
    top = TORSO_C[1] - TORSO_A[1]
    collar = (p[:, 1] - top < 0.12) & (np.abs(p[:, 0]) < 0.7)
    alb[collar] *= 0.7
    lit = 0.32 + 0.78 * np.clip(nrm @ LIGHT, 0, None)
    rgb = bg.reshape(-1, 3).copy()
    rgb[hit] = alb * lit[:, None]
    lab = np.where(hit, 9, 0).astype(np.uint8)
    return Scene(res=res, K=K, rays=rays, bg_hi=bg, static_rgb=rgb.reshape(n, n, 3).astype(np.float32),
                 static_lab=lab.reshape(n, n), static_t=t.reshape(n, n), torso_pts=p[::7].astype(np.float32))


def hit_neck(d: np.ndarray, a: np.ndarray, b: np.ndarray, r: float):
    """First hit of rays from the camera centre with the finite cylinder a->b: (t [M], unit normal [M,3], s [M]
    axial fraction 0 at a .. 1 at b)."""
    w = b - a
    length = np.linalg.norm(w)
    w = (w / length).astype(np.float32)
    dw = d @ w
    dp = d - dw[:, None] * w
    ap = -a + (a @ w) * w
    qa = np.einsum("ij,ij->i", dp, dp)
    qb = dp @ ap
    disc = qb * qb - qa * (ap @ ap - r * r)
    t = (-qb - np.sqrt(np.clip(disc, 0, None))) / np.maximum(qa, 1e-12)
    s = (t * dw - a @ w) / length
    ok = (disc > 0) & (t > 0) & (s >= 0) & (s <= 1)
    nrm = (t[:, None] * d - a) - (s * length)[:, None] * w
    nrm /= np.maximum(np.linalg.norm(nrm, axis=1, keepdims=True), 1e-9)
    return np.where(ok, t, np.inf).astype(np.float32), nrm.astype(np.float32), s


def project(pts: np.ndarray, pose: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Head-space points [P,3] -> pixel coordinates [P,2] of the stored frames."""
    pc = pts @ pose[:3, :3].T + pose[:3, 3]
    return np.stack([K[0] * pc[:, 0] / pc[:, 2] + K[2], K[1] * pc[:, 1] / pc[:, 2] + K[3]], 1)


def render_frame(sc: Scene, m: hd.HeadModel, pose: np.ndarray, st: dict):
    """Hi-res (rgb float32 [n,n,3], labels uint8 [n,n]) of one frame; only the head/neck box is re-rendered."""
    R, t = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
    a_cam = R @ NECK_TOP + t
    box = np.concatenate([project(HEAD_BOX, pose, sc.K), project(NECK_BOTTOM[None], np.eye(4), sc.K)])
    n = sc.rays.shape[0]
    margin = SS * (2 + NECK_R * sc.K[0] / HEAD_T0[2])  # neck radius in pixels + 2
    lo = np.clip(np.floor(box.min(0) * SS - margin), 0, n).astype(int)
    hi = np.clip(np.ceil(box.max(0) * SS + margin), 0, n).astype(int)
    rgb, lab = sc.static_rgb.copy(), sc.static_lab.copy()
    win = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    d = sc.rays[win].reshape(-1, 3)
    th, lh, ch = hd.shade(m, -R.T @ t, d @ R, R, st, LIGHT.astype(np.float32))
    tn, nn, s = hit_neck(d, a_cam, NECK_BOTTOM.astype(np.float32), NECK_R)
    ts = sc.static_t[win].reshape(-1)
    # Neck: skin, textured in head space (it follows the head), shadowed under the chin.
    nk = np.isfinite(tn) & (tn < th) & (tn < ts)
    p_head = ((tn[nk, None] * d[nk]) - t) @ R
    alb = m.colours["skin"] * 0.92 * (1.0 + 0.08 * hd.texture(p_head.astype(np.float32), m.waves["skin"]))[:, None]
    shadow = 0.5 + 0.5 * np.clip(s[nk] / 0.45, 0, 1)
    neck_rgb = alb * ((0.32 + 0.78 * np.clip(nn[nk] @ LIGHT, 0, None)) * shadow)[:, None]
    hd_ = np.isfinite(th) & (th <= ts) & ~nk
    wr, wl = rgb[win].reshape(-1, 3), lab[win].reshape(-1)
    wr[hd_], wl[hd_] = ch[hd_], lh[hd_]
    wr[nk], wl[nk] = neck_rgb, 8
    rgb[win], lab[win] = wr.reshape(rgb[win].shape), wl.reshape(lab[win].shape)
    return rgb, lab


def downsample(rgb: np.ndarray, lab: np.ndarray):
    """Area-average colours to uint8; a pixel is background only if all its subsamples are (so background.png
    equals the frame wherever parsing == 0), else the most frequent foreground class."""
    n = rgb.shape[0] // SS
    out = rgb.reshape(n, SS, n, SS, 3).mean((1, 3))
    img = np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)
    blocks = lab.reshape(n, SS, n, SS).transpose(0, 2, 1, 3).reshape(n, n, SS * SS)
    counts = np.stack([(blocks == k).sum(-1) for k in range(1, 10)], -1)
    cls = (np.argmax(counts, -1) + 1).astype(np.uint8)
    return img, np.where(counts.max(-1) > 0, cls, 0).astype(np.uint8)
