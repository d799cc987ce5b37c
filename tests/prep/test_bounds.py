"""Head-space bounding spheres measured from parsing masks: every ray through the region passes the sphere."""

from __future__ import annotations

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.bounds import _rays, clip_bounds, ray_distance


def _scene(n=6, size=64, f=120.0):
    """A head disc (class 2) and a torso block (class 9) in frames of a camera 5 units in front of the head."""
    parsing = np.zeros((n, size, size), np.uint8)
    yy, xx = np.mgrid[0:size, 0:size]
    parsing[:, (xx - 32) ** 2 + (yy - 26) ** 2 < 12 ** 2] = 2
    parsing[:, 50:, 8:56] = 9
    pose = np.tile(np.eye(4, dtype=np.float32), (n, 1, 1))
    pose[:, 2, 3] = 5.0
    pose[:, 0, 3] = np.linspace(-0.2, 0.2, n)  # the head moves sideways
    return parsing, pose, np.array([f, f, size / 2, size / 2], np.float32)


def _max_dist(parsing, pose, K, classes, sphere):
    c = np.array(sphere["center"])
    worst = 0.0
    for i in range(len(parsing)):
        v, u = np.nonzero(np.isin(parsing[i], classes))
        o, d = _rays(pose[i], K, u, v)
        worst = max(worst, ray_distance(c, np.broadcast_to(o, d.shape), d).max())
    return worst


def test_spheres_cover_their_regions_and_are_tight():
    parsing, pose, K = _scene()
    full, head = clip_bounds(parsing, pose, K)
    # every ray through head pixels passes inside head_bounds (pixel_stride sampling + margin)
    assert _max_dist(parsing, pose, K, [2], head) <= head["radius"] * 1.02
    assert _max_dist(parsing, pose, K, [2, 9], full) <= full["radius"] * 1.02
    # head disc radius 12 px at f=120, depth 5 -> 0.5 units (+ the 0.2 sideways motion): not much more
    assert 0.5 < head["radius"] < 0.95
    assert full["radius"] > head["radius"]
    assert head["center"][2] == 0.0


def test_no_head_pixels_is_a_clear_error():
    parsing, pose, K = _scene()
    parsing[:] = 0
    with pytest.raises(LipspaceError, match="no pixel of parsing classes"):
        clip_bounds(parsing, pose, K)
