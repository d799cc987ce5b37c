"""Generate (or reuse) a synthetic talking-head dataset directory plus held-out utterances, atomically."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from lipspace.data.schema import FPS, ICT_EXPR_NAMES, MP_BLENDSHAPE_NAMES, SAMPLE_RATE, validate_dataset, write_dataset
from lipspace.data.synthetic import head as hd
from lipspace.data.synthetic import params as pm
from lipspace.data.synthetic import scene as sn
from lipspace.data.synthetic.landmarks import face_points, landmarks68
from lipspace.data.synthetic.speech import synthesize
from lipspace.data.synthetic.torso import torso_poses
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)
GENERATOR_VERSION = "3"  # 3: tracks.npz gains face_points (every other array as in 2)
MIN_RESOLUTION = 32


def _expr_tracks(fr: dict, blink: np.ndarray, brow: np.ndarray):
    """expr [N,53] (ICT names) and blendshapes [N,52] (MediaPipe order) carrying the same articulation."""
    vals = {"jawOpen": fr["jaw"], "mouthPucker": fr["round"], "mouthFunnel": 0.5 * fr["round"],
            "mouthClose": fr["close"] * fr["jaw"],  # ARKit: lips held shut while the jaw is open
            "mouthStretch_L": fr["spread"], "mouthStretch_R": fr["spread"],
            "mouthSmile_L": 0.4 * fr["spread"], "mouthSmile_R": 0.4 * fr["spread"],
            "eyeBlink_L": blink, "eyeBlink_R": blink, "browInnerUp_L": brow, "browInnerUp_R": brow,
            "browOuterUp_L": 0.8 * brow, "browOuterUp_R": 0.8 * brow}
    n = len(blink)
    expr = np.zeros((n, len(ICT_EXPR_NAMES)), np.float32)
    bs = np.zeros((n, len(MP_BLENDSHAPE_NAMES)), np.float32)
    for j, name in enumerate(ICT_EXPR_NAMES):
        if name in vals:
            expr[:, j] = vals[name]
            mp = name[:-2] + {"_L": "Left", "_R": "Right"}[name[-2:]] if name[-2:] in ("_L", "_R") else name
            mp = "browInnerUp" if mp.startswith("browInnerUp") else mp  # MediaPipe has one, ICT two halves
            bs[:, MP_BLENDSHAPE_NAMES.index(mp)] = vals[name]
    return expr, bs


def _clip(m: hd.HeadModel, sc: sn.Scene, seed: int, key: int, seconds: float, follow: float = 0.0,
          lag_s: float = 0.0) -> dict:
    """One utterance: audio, rendered frames/parsing and tracks. key 0 = training clip, 1.. = held-out.
    ``follow`` > 0: the torso follows the head (torso.py), redrawn each frame; its poses go to tracks 'torso_pose'."""
    n = max(1, int(round(seconds * FPS)))
    rng = [np.random.default_rng([seed, 100 + key, s]) for s in range(5)]  # independent sub-streams
    segs = pm.phone_sequence(rng[0], n / FPS)
    ctrl = pm.articulation(segs, n / FPS, m.f0, rng[0])
    audio = synthesize(ctrl, n * SAMPLE_RATE // FPS, rng[1])
    fr = pm.at_frames(ctrl, n)
    blink, brow = pm.blink_track(rng[2], n), pm.brow_track(rng[3], n)
    poses = pm.pose_track(rng[4], n, sn.HEAD_T0, sn.PIVOT)
    states = [{"jaw": fr["jaw"][i], "round": fr["round"][i], "spread": fr["spread"][i], "close": fr["close"][i],
               "blink": blink[i], "brow": brow[i]} for i in range(n)]
    tposes = torso_poses(poses, follow, lag_s, sn.TORSO_PIVOT) if follow else None
    frames = np.zeros((n, sc.res, sc.res, 3), np.uint8)
    parsing = np.zeros((n, sc.res, sc.res), np.uint8)
    torso_pts = []
    for i in range(n):
        layer = sn.torso_layer(sc, m, None if tposes is None else tposes[i])
        torso_pts.append(layer.pts)
        frames[i], parsing[i] = sn.downsample(*sn.render_frame(sc, m, poses[i], states[i], layer))
    expr, bs = _expr_tracks(fr, blink, brow)
    tracks = {"pose": poses, "intrinsics": sc.K.astype(np.float32), "expr": expr,
              "expr_names": np.array(ICT_EXPR_NAMES), "blendshapes": bs,
              "lmk68": landmarks68(m, states, poses, sc.K), "blink": blink, "valid": np.ones(n, bool),
              "identity": m.vector(), "face_points": face_points(m, states)}
    if tposes is not None:
        tracks["torso_pose"] = tposes
    return {"frames": frames, "parsing": parsing, "audio": audio, "tracks": tracks, "torso_pts": torso_pts}


def _sphere(pts: np.ndarray) -> dict:
    centre = 0.5 * (pts.min(0) + pts.max(0))
    radius = float(np.linalg.norm(pts - centre, axis=1).max()) * 1.02
    return {"center": [round(float(c), 5) for c in centre], "radius": round(radius, 5)}


def _bounds(poses: np.ndarray, torso_pts: list, tposes: np.ndarray | None) -> tuple[dict, dict]:
    """Head-space spheres: ``bounds`` around the head box and, in every frame, the visible torso (``torso_pts``:
    camera space, one array a frame) and the neck; ``head_bounds`` around the head box and the neck only (for a
    head NeRF composited over the torso). ``tposes``: torso -> camera a frame (None: the torso is static)."""
    ring0 = sn.NECK_BOTTOM + sn.NECK_R * np.array([[1, 0, 0], [-1, 0, 0], [0, 0, 1], [0, 0, -1]])
    to_head = lambda cam, p: (cam - p[:3, 3]) @ p[:3, :3]  # noqa: E731  X_head = R^T (X_cam - t)
    full, head = [sn.HEAD_BOX], [sn.HEAD_BOX]
    for i, p in enumerate(poses.astype(np.float64)):
        tp = None if tposes is None else tposes[i].astype(np.float64)
        ring = ring0 if tp is None else ring0 @ tp[:3, :3].T + tp[:3, 3]
        full.append(to_head(np.concatenate([torso_pts[i], ring]).astype(np.float64), p))
        head.append(to_head(ring.astype(np.float64), p))
    return _sphere(np.concatenate(full)), _sphere(np.concatenate(head))


def _remove_stale(out: Path) -> None:
    """Delete temp/old directories left beside out by generator processes that were killed."""
    for p in list(out.parent.glob(f".{out.name}.tmp-*")) + list(out.parent.glob(f".{out.name}.old-*")):
        try:
            os.kill(int(p.name.rsplit("-", 1)[1]), 0)  # raises if that process is gone
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, PermissionError, OSError):
            pass  # not ours to judge: leave it


def _kind(out: Path) -> str | None:
    try:
        return json.loads((out / "meta.json").read_text()).get("kind")
    except Exception:  # missing or unreadable meta: not a dataset we wrote
        return None


def _reusable(out: Path, source: dict) -> bool:
    try:
        meta = json.loads((out / "meta.json").read_text())
        if meta.get("kind") != "synthetic" or meta.get("source") != source:
            return False
        validate_dataset(out, check_images=False)
        return True
    except Exception:  # anything unreadable or stale is simply regenerated
        return False


def generate_synthetic(out_dir, seconds: float = 20.0, resolution: int = 128, seed: int = 0,
                       heldout_utterances: int = 2, heldout_seconds: float = 4.0, overwrite: bool = False,
                       torso_follow: float = 0.0, torso_lag_s: float = 0.2) -> Path:
    """Write the synthetic talking-head dataset to out_dir and return its path.

    ``seconds`` of speech at 25 fps, ``resolution`` x ``resolution`` frames; frame i shows the articulation at
    time (i + 0.5) / 25 s of audio.wav. Held-out utterances (new syllables from another sub-seed, same head,
    camera and background) go to out_dir/heldout/utt_XX. If out_dir already holds a dataset from this generator
    version with the same parameters it is reused as is (unless overwrite). ``torso_follow`` in [0, 1]: the
    fraction of the head's yaw and pitch the torso follows, ``torso_lag_s`` seconds late (torso.py; 0 = the
    static torso, and then the dataset is the one this generator wrote before the option existed); > 0 adds the
    track 'torso_pose'. The dataset is built in a hidden
    directory beside out_dir and renamed into place, so an interrupted run never leaves a complete-looking one.
    """
    out = Path(out_dir).expanduser()
    if not (0.0 <= torso_follow <= 1.0 and torso_lag_s >= 0.0):
        raise LipspaceError(f"synthetic data: need 0 <= torso_follow <= 1 and torso_lag_s >= 0 (got torso_follow="
                            f"{torso_follow}, torso_lag_s={torso_lag_s}). Fix the arguments.")
    if seconds * FPS < 1 or resolution < MIN_RESOLUTION or heldout_utterances < 0 or \
            (heldout_utterances and heldout_seconds * FPS < 1):
        raise LipspaceError(f"synthetic data: need seconds >= {1 / FPS}, resolution >= {MIN_RESOLUTION}, "
                            f"heldout_utterances >= 0 (got seconds={seconds}, resolution={resolution}, "
                            f"heldout_utterances={heldout_utterances}, heldout_seconds={heldout_seconds}). "
                            "Fix the arguments.")
    source = {"generator": "lipspace.data.synthetic", "version": GENERATOR_VERSION, "seed": int(seed),
              "seconds": float(seconds), "resolution": int(resolution),
              "heldout_utterances": int(heldout_utterances), "heldout_seconds": float(heldout_seconds)}
    if torso_follow:  # only then: a static-torso dataset keeps the source (and cache key) it had before the option
        source.update(torso_follow=float(torso_follow), torso_lag_s=float(torso_lag_s))
    if not overwrite and _reusable(out, source):
        log.info("reusing synthetic dataset %s (same generator version and parameters)", out)
        return out
    if out.exists() and not overwrite and any(out.iterdir()) and _kind(out) != "synthetic":
        raise LipspaceError(f"{out}: exists, is not empty and is not a synthetic lipspace dataset. "
                            "Choose another out_dir or pass overwrite=True to replace it.")
    t_start = time.perf_counter()
    m = hd.make_head(np.random.default_rng([seed, 0]))
    sc = sn.make_scene(np.random.default_rng([seed, 1]), m, int(resolution))
    background, _ = sn.downsample(sc.bg_hi, np.zeros(sc.bg_hi.shape[:2], np.uint8))
    torso = (float(torso_follow), float(torso_lag_s))
    clips = [_clip(m, sc, seed, 0, seconds, *torso)]
    clips += [_clip(m, sc, seed, 1 + k, heldout_seconds, *torso) for k in range(heldout_utterances)]
    # One sphere for all clips, so a model trained on the main clip covers the held-out ones.
    cat = lambda key: np.concatenate([c["tracks"][key] for c in clips])  # noqa: E731
    bounds, head_bounds = _bounds(cat("pose"), [q for c in clips for q in c["torso_pts"]],
                                  cat("torso_pose") if torso_follow else None)
    names = [f"utt_{k:02d}" for k in range(heldout_utterances)]
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        stages = {"synthetic": GENERATOR_VERSION}
        for k, (name, c) in enumerate(zip(names, clips[1:], strict=True)):
            write_dataset(tmp / "heldout" / name, c["frames"], c["parsing"], background, c["audio"], c["tracks"],
                          {"kind": "synthetic_heldout", "bounds": bounds, "head_bounds": head_bounds, "stages": stages,
                           "source": {**source, "utterance": k}})
        c = clips[0]
        write_dataset(tmp, c["frames"], c["parsing"], background, c["audio"], c["tracks"],
                      {"kind": "synthetic", "bounds": bounds, "head_bounds": head_bounds, "source": source,
                       "stages": stages, "heldout": names})
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            out.rename(old)  # the complete new dataset replaces the old one in two renames
        tmp.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    n_total = sum(len(c["frames"]) for c in clips)
    log.info("synthetic dataset %s: %d frames (%d held-out utterances) at %d^2 in %.1f s", out, n_total,
             heldout_utterances, resolution, time.perf_counter() - t_start)
    return out
