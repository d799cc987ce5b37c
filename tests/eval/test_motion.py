"""Head-motion and blink statistics on known small cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from lipspace.utils.errors import LipspaceError
from lipspace.eval.motion import blink_events, blinks_per_second, motion_report, pose_errors


def _poses(angles_deg, trans):
    p = np.tile(np.eye(4), (len(angles_deg), 1, 1))
    p[:, :3, :3] = Rotation.from_euler("y", np.asarray(angles_deg, float)[:, None], degrees=True).as_matrix()
    p[:, :3, 3] = trans
    return p


def test_pose_errors_known_case():
    gt = _poses([0, 10, 20], [[0, 0, 7]] * 3)
    gen = _poses([5, 10, 35], [[0, 0, 7], [0.1, 0, 7], [0, 0.3, 7.4]])
    e = pose_errors(gen, gt)
    assert e["d_rot_deg"] == pytest.approx((5 + 0 + 15) / 3, abs=1e-6)
    assert e["d_pos"] == pytest.approx((0 + 0.1 + 0.5) / 3, abs=1e-9)
    assert e["d_pos_cm"] == pytest.approx(e["d_pos"] * 11.0)
    assert pose_errors(gt, gt)["d_rot_deg"] == pytest.approx(0.0, abs=1e-5)


def test_pose_errors_reject_bad_shapes():
    with pytest.raises(LipspaceError, match=r"\[T, 4, 4\]"):
        pose_errors(np.zeros((3, 3, 4)), np.zeros((3, 4, 4)))
    with pytest.raises(LipspaceError, match="same length"):
        pose_errors(_poses([0, 1], [[0, 0, 1]] * 2), _poses([0], [[0, 0, 1]]))


def test_blink_events_hysteresis_counts_a_hovering_closure_once():
    # one blink that wobbles around 0.5 (never below 0.3 inside), then a second clean blink
    b = np.array([0, 0.2, 0.55, 0.45, 0.6, 0.35, 0.1, 0, 0, 0.9, 1.0, 0.2, 0])
    assert blink_events(b) == [(2, 6), (9, 11)]
    assert blinks_per_second(b, fps=13) == pytest.approx(2.0)  # 13 frames at 13 fps = 1 s
    assert blink_events(b, min_frames=3) == [(2, 6)]
    assert blink_events(np.array([0.0, 0.9, 0.9])) == [(1, 3)]  # still closed at the end
    assert blinks_per_second(np.zeros(0)) == 0.0
    with pytest.raises(LipspaceError, match="low < high"):
        blink_events(b, high=0.3, low=0.5)


def test_motion_report_keys():
    gt = _poses([0, 0, 0, 0], [[0, 0, 7]] * 4)
    r = motion_report(gt, gt, np.array([0, 1, 0, 0]), np.zeros(4), fps=4)
    assert r["blinks_per_s"] == 1.0 and r["gt_blinks_per_s"] == 0.0 and r["d_pos"] == 0.0
