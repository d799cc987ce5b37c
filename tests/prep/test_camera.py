"""Camera helpers: intrinsics/projection, focal search, pose smoothing and invalid-frame interpolation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.camera import (
    fill_invalid, intrinsics_for, project, rodrigues, rotation_angle_deg, search_focal, smooth_poses,
)


def test_intrinsics_and_projection():
    k = intrinsics_for(800.0, (480, 640))
    np.testing.assert_allclose(k, [800, 800, 320, 240])
    uv = project(np.array([[0.0, 0.0, 4.0], [1.0, -0.5, 4.0]]), k)
    np.testing.assert_allclose(uv, [[320, 240], [520, 140]])


def test_search_focal_finds_minimum_of_log_parabola():
    calls = []

    def err(f):
        calls.append(f)
        return (math.log(f) - math.log(1234.0)) ** 2 + 1.0

    f, curve = search_focal(err, (512, 512))
    assert f == pytest.approx(1234.0, rel=0.03)
    assert len(curve) == len(calls) <= 18 and curve == sorted(curve)
    assert min(c[0] for c in curve) == pytest.approx(256) and max(c[0] for c in curve) == pytest.approx(3072)


def _trajectory(n=120):
    tt = np.arange(n) / 25.0
    rv = np.stack([0.1 * np.sin(tt), 0.2 * np.sin(0.7 * tt + 1), 0.05 * np.cos(tt)], 1)
    pose = np.tile(np.eye(4), (n, 1, 1))
    pose[:, :3, :3] = rodrigues(rv)
    pose[:, :3, 3] = np.stack([0.1 * np.sin(tt), 0.2 + 0.05 * np.cos(tt), 4 + 0.1 * np.sin(0.5 * tt)], 1)
    return pose


def test_smoothing_reduces_jitter():
    rng = np.random.default_rng(0)
    truth = _trajectory()
    noisy = truth.copy()
    noisy[:, :3, :3] = rodrigues(rng.normal(0, np.radians(1.0), (len(truth), 3))) @ truth[:, :3, :3]
    noisy[:, :3, 3] += rng.normal(0, 0.02, (len(truth), 3))
    valid = np.ones(len(truth), bool)
    sm = smooth_poses(noisy, valid)
    assert sm.dtype == np.float32 and sm.shape == truth.shape
    r_noisy = rotation_angle_deg(noisy[:, :3, :3], truth[:, :3, :3]).mean()
    r_sm = rotation_angle_deg(sm[:, :3, :3].astype(np.float64), truth[:, :3, :3]).mean()
    assert r_sm < 0.6 * r_noisy
    t_noisy = np.linalg.norm(noisy[:, :3, 3] - truth[:, :3, 3], axis=1).mean()
    assert np.linalg.norm(sm[:, :3, 3] - truth[:, :3, 3], axis=1).mean() < 0.6 * t_noisy
    np.testing.assert_allclose(np.linalg.det(sm[:, :3, :3]), 1.0, atol=1e-5)
    # sigma 0 keeps valid poses as they are
    np.testing.assert_allclose(smooth_poses(noisy, valid, sigma_s=0.0), noisy, atol=1e-5)


def test_invalid_frames_are_interpolated():
    truth = _trajectory(40)
    valid = np.ones(40, bool)
    valid[[0, 1, 15, 16, 17, 39]] = False
    broken = truth.copy()
    broken[~valid] = 0.0  # garbage where invalid
    out = smooth_poses(broken, valid, sigma_s=0.0)
    assert np.isfinite(out).all()
    err = rotation_angle_deg(out[:, :3, :3].astype(np.float64), truth[:, :3, :3])
    assert err[2:39].max() < 0.1  # gaps inside the clip: interpolated between their valid neighbours
    np.testing.assert_allclose(out[0], truth[2], atol=1e-5)  # leading/trailing gaps hold the nearest valid pose
    np.testing.assert_allclose(out[39], truth[38], atol=1e-5)
    with pytest.raises(LipspaceError, match="without any valid frame"):
        fill_invalid(np.zeros((3, 2)), np.zeros(3, bool))
