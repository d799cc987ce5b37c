"""The stabilize stage of the preprocessing pipeline (``stabilize=sync``): SyncTalk's Head-Sync Stabilizer.

SyncTalk (Peng et al., CVPR 2024) tracks facial keypoints by optical flow and refines the head poses by a two-stage
bundle adjustment. Here:

1. Keypoints: rigid-face features tracked by pyramidal Lucas-Kanade with a forward-backward check on the cropped
   frames, read from frames/ in chunks (lipspace.prep.keypoints).
2. 3-D initialisation: each track's first observation is back-projected onto the fitted 3DMM mesh of its seed frame
   (identity + that frame's expressions, under the head stage's smoothed pose): the nearest mesh triangle under the
   pixel gives a head-space point by barycentric interpolation; tracks off the mesh are dropped.
3. Bundle adjustment (lipspace.prep.bundle): per-frame axis-angle rotation and translation by Adam with the points
   fixed, then points and poses jointly; Huber reprojection loss, a small temporal smoothness prior and a weak anchor
   to the fitted poses.
4. The same light Gaussian (``SMOOTH_S``) the head fit applies to its per-frame poses, so that ``none`` and ``sync``
   differ only in where the per-frame poses come from (the report also gives the jitter before it).

The result replaces ``pose`` in tracks.npz; the fitted (smoothed, un-stabilised) pose is kept as ``pose_fit``. The
stage's report holds the pose jitter (lipspace.prep.camera.pose_jitter) of the fitted, raw and stabilised poses.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from lipspace.data.schema import FPS
from lipspace.prep.camera import pose_jitter, smooth_poses
from lipspace.prep.pipeline import Preprocessor, _bar
from lipspace.utils.errors import LipspaceError

log = logging.getLogger("lipspace.prep.pipeline")

METHODS = ("none", "sync")
SMOOTH_S = 0.06  # the Gaussian the head fit applies to its poses (fit3dmm.fit_head smooth_s), applied here too


def mesh_triangles(faces: np.ndarray) -> np.ndarray:
    """[F,3|4] polygons -> [T,3] triangles (quads split along their 0-2 diagonal)."""
    faces = np.asarray(faces, np.int64)
    if faces.shape[1] == 3:
        return faces
    return np.concatenate([faces[:, [0, 1, 2]], faces[:, [0, 2, 3]]])


def backproject(uv: np.ndarray, verts_head: np.ndarray, tris: np.ndarray, pose: np.ndarray, intrinsics,
                chunk: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Head-space points [k,3] under pixels ``uv`` [k,2] on the mesh (``verts_head`` [V,3], ``tris`` [T,3]) seen
    with ``pose`` [4,4]: the front-most triangle containing each pixel, perspective-correct barycentric
    interpolation. Returns the points and a hit mask [k] (False: no triangle under the pixel; its point is NaN)."""
    fx, fy, cx, cy = (float(v) for v in intrinsics)
    xc = verts_head @ pose[:3, :3].T + pose[:3, 3]
    p2 = np.stack([fx * xc[:, 0] / xc[:, 2] + cx, fy * xc[:, 1] / xc[:, 2] + cy], -1)
    uv = np.asarray(uv, np.float64)
    out = np.full((len(uv), 3), np.nan)
    if not len(uv):
        return out, np.zeros(0, bool)
    lo, hi = uv.min(0), uv.max(0)
    tri2 = p2[tris]  # [T,3,2]
    near = (tri2.max(1) >= lo).all(1) & (tri2.min(1) <= hi).all(1) & (xc[tris][..., 2] > 0).all(1)
    tris, tri2 = tris[near], tri2[near]
    a, b, c = tri2[:, 0], tri2[:, 1], tri2[:, 2]
    den = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok_tri = np.abs(den) > 1e-12
    tris, a, b, c, den = tris[ok_tri], a[ok_tri], b[ok_tri], c[ok_tri], den[ok_tri]
    if not len(tris):  # the pixels are all off the mesh
        return out, np.zeros(len(uv), bool)
    z = xc[tris][..., 2]  # [T,3]
    for s in range(0, len(uv), chunk):
        q = uv[s:s + chunk, None]  # [k,1,2]
        l1 = ((b[:, 1] - c[:, 1]) * (q[..., 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (q[..., 1] - c[:, 1])) / den
        l2 = ((c[:, 1] - a[:, 1]) * (q[..., 0] - c[:, 0]) + (a[:, 0] - c[:, 0]) * (q[..., 1] - c[:, 1])) / den
        l3 = 1 - l1 - l2
        inside = (l1 >= 0) & (l2 >= 0) & (l3 >= 0)  # [k,T]
        inv_z = l1 / z[:, 0] + l2 / z[:, 1] + l3 / z[:, 2]  # perspective-correct interpolation
        depth = np.where(inside, 1.0 / np.where(inside, inv_z, 1.0), np.inf)
        best = depth.argmin(1)
        rows = np.arange(len(q))
        hit = np.isfinite(depth[rows, best])
        w = np.stack([l1, l2, l3], -1)[rows, best] / z[best] * depth[rows, best][:, None]  # [k,3]
        pts = np.einsum("kc,kcd->kd", w, verts_head[tris[best]])
        out[s:s + chunk][hit] = pts[hit]
    return out, np.isfinite(out).all(1)


def initial_points(kp, model, identity, expr, pose, intrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Head-space points [P,3] of the keypoint tracks ``kp`` (lipspace.prep.keypoints.KeypointTracks) from their
    first observations, and the hit mask [P]."""
    tris = mesh_triangles(model.faces)
    points = np.full((kp.n_tracks, 3), np.nan)
    first = np.full(kp.n_tracks, -1, np.int64)
    order = np.argsort(kp.frame, kind="stable")
    tr_sorted = kp.track[order]
    uniq, pos = np.unique(tr_sorted, return_index=True)
    first[uniq] = order[pos]
    for f in np.unique(kp.seed_frame):
        ids = np.flatnonzero(kp.seed_frame == f)
        verts = model.vertices(identity, expr[f]).astype(np.float64)
        points[ids], _ = backproject(kp.uv[first[ids]], verts, tris, pose[f], intrinsics)
    return points, np.isfinite(points).all(1)


def stabilize(prep: Preprocessor) -> dict:
    """The stabilize stage of ``prep`` (see the module docstring); saves ``pose`` and returns the stage's report."""
    from lipspace.prep.bundle import BundleConfig, bundle_adjust
    from lipspace.prep.facemodel import load_face_model
    from lipspace.prep.keypoints import track_keypoints

    t0 = time.perf_counter()
    tr = prep.cache.load_arrays("track")
    lmk = prep.cache.load_arrays("crop")["landmarks"]
    head = prep.cache.load_arrays("head")
    valid = tr["valid"].astype(bool) & np.isfinite(lmk[..., :2]).all((1, 2))
    with _bar(prep.n_frames, "stabilize", prep.opt.progress) as bar:
        kp = track_keypoints(prep.crop_frames, lmk[..., :2], valid, progress=bar.update)
    t_track = time.perf_counter()
    model = load_face_model(prep._face_model_path(), kind=prep.opt.face_model_kind)
    points, hit = initial_points(kp, model, head["identity"], head["expr"], head["pose"], head["intrinsics"])
    keep = hit[kp.track]
    remap = np.cumsum(hit) - 1
    t_init = time.perf_counter()
    pose, _, used, ba = bundle_adjust(kp.frame[keep], remap[kp.track[keep]], kp.uv[keep], points[hit], head["pose"],
                                      head["intrinsics"], valid, prep.opt.size)
    if not used.any():
        raise LipspaceError(f"{prep.out}: the head-sync stabilizer found no frame with {BundleConfig.min_points} "
                            f"tracked keypoints; run with stabilize=none")
    ba_pose = smooth_poses(pose, used, FPS, sigma_s=0.0)  # frames not optimised: interpolated
    pose = smooth_poses(pose, used, FPS, sigma_s=SMOOTH_S)
    prep.cache.save_arrays("stabilize", pose=pose.astype(np.float32))
    t_end = time.perf_counter()
    jitter = {"fit": pose_jitter(head["pose"], valid), "fit_raw": pose_jitter(head["pose_raw"], valid),
              "stabilized": pose_jitter(pose, valid),
              "stabilized_unsmoothed": pose_jitter(ba_pose, valid)}
    log.info("%s: head-sync stabilizer: jitter %s", prep.out, jitter)
    return {"method": prep.opt.stabilize, **kp.summary(), "tracks_on_mesh": int(hit.sum()), **ba,
            "jitter": jitter, "seconds": {"track": round(t_track - t0, 3), "init": round(t_init - t_track, 3),
                                          "bundle": round(t_end - t_init, 3)}}
