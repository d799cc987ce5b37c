"""Camera, static background and torso (camera space), neck, per-frame compositing and anti-aliased downsampling.

The camera is fixed (fx = fy = 2 * resolution, principal point at the image centre); the head sits at
HEAD_T0 in camera space (head height about 0.55 of the frame) and moves by the pose track; the torso is
static in camera space, as in real video (drawn once into a static layer), or follows the head a little and late
(torso.py; redrawn each frame); the neck joins a point fixed in the head to one fixed in the torso.
Frames are rendered at SS x SS supersampling and area-downsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lipspace.data.synthetic import head as hd
from lipspace.data.synthetic.torso import draw as draw_torso

SS = 2  # supersampling factor per axis
HEAD_T0 = np.array([0.0, -0.45, 7.64])  # head origin in camera space at rest (units of head.py)
PIVOT = np.array([0.0, 0.9, 0.1])  # head-space point the head rotates about (base of the skull)
TORSO_C, TORSO_A = HEAD_T0 + np.array([0.0, 2.9, 0.35]), np.array([2.3, 1.45, 0.95])
NECK_TOP = np.array([0.0, 0.7, 0.1])  # head space (inside the skull/jaw)
NECK_BOTTOM = np.array([0.0, 1.4, 7.9])  # torso space = camera space at rest (inside the torso)
# What a moving torso turns about (torso space): low in the torso, towards its back (the lower spine).
TORSO_PIVOT = TORSO_C + np.array([0.0, 0.6, 0.4]) * TORSO_A
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
    rgb, lab, t, pts = draw_torso(rays.reshape(-1, 3), bg.reshape(-1, 3), model, TORSO_C, TORSO_A, LIGHT)
    return Scene(res=res, K=K, rays=rays, bg_hi=bg, static_rgb=rgb.reshape(n, n, 3).astype(np.float32),
                 static_lab=lab.reshape(n, n), static_t=t.reshape(n, n), torso_pts=pts)


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


@dataclass
class TorsoLayer:
    """Background with the torso of one frame drawn in (hi-res), and where the neck meets it (camera space)."""

    rgb: np.ndarray  # [n,n,3] float32
    lab: np.ndarray  # [n,n] 0 / 9
    t: np.ndarray  # [n,n] torso depth (inf elsewhere)
    neck_bottom: np.ndarray  # [3]
    pts: np.ndarray  # [P,3] visible torso surface points (for the scene bounds)


def torso_layer(sc: Scene, m: hd.HeadModel, torso_pose: np.ndarray | None) -> TorsoLayer:
    """The torso layer for torso pose ``torso_pose`` (torso -> camera; None: the static layer of the scene)."""
    if torso_pose is None:
        return TorsoLayer(sc.static_rgb, sc.static_lab, sc.static_t, NECK_BOTTOM, sc.torso_pts)
    n = sc.rays.shape[0]
    rgb, lab, t, pts = draw_torso(sc.rays.reshape(-1, 3), sc.bg_hi.reshape(-1, 3), m, TORSO_C, TORSO_A, LIGHT,
                                  torso_pose)
    nb = torso_pose[:3, :3].astype(np.float64) @ NECK_BOTTOM + torso_pose[:3, 3]
    return TorsoLayer(rgb.reshape(n, n, 3), lab.reshape(n, n), t.reshape(n, n), nb, pts)


def render_frame(sc: Scene, m: hd.HeadModel, pose: np.ndarray, st: dict, torso: TorsoLayer | None = None):
    """Hi-res (rgb float32 [n,n,3], labels uint8 [n,n]) of one frame over ``torso`` (None: the static torso);
    only the head/neck box is rendered on top."""
    R, t = pose[:3, :3].astype(np.float32), pose[:3, 3].astype(np.float32)
    a_cam = R @ NECK_TOP + t
    torso = torso_layer(sc, m, None) if torso is None else torso
    box = np.concatenate([project(HEAD_BOX, pose, sc.K), project(torso.neck_bottom[None], np.eye(4), sc.K)])
    n = sc.rays.shape[0]
    margin = SS * (2 + NECK_R * sc.K[0] / HEAD_T0[2])  # neck radius in pixels + 2
    lo = np.clip(np.floor(box.min(0) * SS - margin), 0, n).astype(int)
    hi = np.clip(np.ceil(box.max(0) * SS + margin), 0, n).astype(int)
    rgb, lab = torso.rgb.copy(), torso.lab.copy()
    win = (slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    d = sc.rays[win].reshape(-1, 3)
    th, lh, ch = hd.shade(m, -R.T @ t, d @ R, R, st, LIGHT.astype(np.float32))
    tn, nn, s = hit_neck(d, a_cam, torso.neck_bottom.astype(np.float32), NECK_R)
    ts = torso.t[win].reshape(-1)
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
