"""Head-motion and blink statistics of a generated sequence against the ground truth (DFA-NeRF-style evaluation).

Definitions (poses are ``[T, 4, 4]`` head -> camera transforms, ``X_cam = R X_head + t``, translations in head
units; generated and ground-truth sequences are compared frame by frame, so both start at the same moment of the
same audio):

- **D-Rot** (degrees): mean over frames of the geodesic angle between the generated and the ground-truth head
  rotation, ``arccos((tr(R_gen R_gt^T) - 1) / 2)``. DFA-NeRF and AD-NeRF report head-motion statistics without
  a formula; this per-frame angular distance is the one used here.
- **D-Pos** (head units, and cm with 1 unit = ``HEAD_UNIT_CM`` = 11 cm, see ``lipspace.prep.facemodel``): mean over
  frames of the Euclidean distance between generated and ground-truth translations.
- **blinks per second**: closed-eye events of a blink track (0 open .. 1 closed) counted with hysteresis: an event
  starts when the track reaches ``high`` (0.5) and ends when it falls below ``low`` (0.3), so a noisy track
  hovering at the threshold counts once; events shorter than ``min_frames`` are dropped; the count is divided by
  the track's duration ``T / fps``.
"""

from __future__ import annotations

import numpy as np

from lipspace.data.schema import FPS
from lipspace.utils.errors import LipspaceError
from lipspace.prep.facemodel import HEAD_UNIT_CM  # 1 head-space unit = 11 cm


def _poses(x, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 3 or a.shape[1:] != (4, 4):
        raise LipspaceError(f"{name} must be [T, 4, 4] head -> camera poses, got {a.shape}")
    return a


def rotation_angle_deg(r_a: np.ndarray, r_b: np.ndarray) -> np.ndarray:
    """[T] geodesic angles (degrees) between rotation matrices r_a, r_b [T, 3, 3]."""
    rel = np.einsum("tij,tkj->tik", r_a, r_b)  # R_a R_b^T
    cos = (np.trace(rel, axis1=1, axis2=2) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def pose_errors(generated, ground_truth) -> dict:
    """{"d_rot_deg", "d_pos", "d_pos_cm"} per the module docstring; sequences must have the same length."""
    g, t = _poses(generated, "generated"), _poses(ground_truth, "ground_truth")
    if len(g) != len(t) or len(g) == 0:
        raise LipspaceError(f"generated ({len(g)} frames) and ground-truth ({len(t)} frames) poses must be "
                            f"non-empty and of the same length; generate for the utterance's own frames")
    d_rot = float(rotation_angle_deg(g[:, :3, :3], t[:, :3, :3]).mean())
    d_pos = float(np.linalg.norm(g[:, :3, 3] - t[:, :3, 3], axis=-1).mean())
    return {"d_rot_deg": d_rot, "d_pos": d_pos, "d_pos_cm": d_pos * HEAD_UNIT_CM}


def blink_events(blink, high: float = 0.5, low: float = 0.3, min_frames: int = 1) -> list[tuple[int, int]]:
    """Closed-eye events (start, end exclusive) of a blink track by hysteresis thresholds ``high`` > ``low``."""
    b = np.asarray(blink.detach().cpu() if hasattr(blink, "detach") else blink, np.float64).reshape(-1)
    if not low < high:
        raise LipspaceError(f"blink hysteresis needs low < high, got low={low}, high={high}")
    events, start = [], None
    for i, v in enumerate(b):
        if start is None and v >= high:
            start = i
        elif start is not None and v < low:
            events.append((start, i))
            start = None
    if start is not None:
        events.append((start, len(b)))
    return [(s, e) for s, e in events if e - s >= min_frames]


def blinks_per_second(blink, fps: float = FPS, high: float = 0.5, low: float = 0.3, min_frames: int = 1) -> float:
    """Blink events per second of track (0 for an empty track)."""
    n = int(np.asarray(blink).size)
    return 0.0 if n == 0 else len(blink_events(blink, high, low, min_frames)) / (n / fps)


def motion_report(gen_poses, gt_poses, gen_blink, gt_blink, fps: float = FPS) -> dict:
    """D-Rot, D-Pos (units and cm) and blinks per second of the generated and the ground-truth tracks."""
    return {**pose_errors(gen_poses, gt_poses), "blinks_per_s": blinks_per_second(gen_blink, fps),
            "gt_blinks_per_s": blinks_per_second(gt_blink, fps)}
