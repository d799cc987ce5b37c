"""EWA projection: a known Gaussian lands at the analytic 2-D mean and covariance; quaternions rotate as rotation
matrices; a small Gaussian's projection matches the empirical moments of projected samples (Monte Carlo)."""

import math

import torch

from lipspace.renderers.gaussian.projection import conics, covariance_3d, project_gaussians, quat_to_rotmat


def _axis_angle_quat(axis, angle):
    axis = torch.tensor(axis, dtype=torch.float64)
    axis = axis / axis.norm()
    return torch.cat([torch.tensor([math.cos(angle / 2)], dtype=torch.float64), math.sin(angle / 2) * axis])


def _rodrigues(axis, angle):
    k = torch.tensor(axis, dtype=torch.float64)
    k = k / k.norm()
    kx = torch.tensor([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]], dtype=torch.float64)
    return torch.eye(3, dtype=torch.float64) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def test_isotropic_gaussian_on_the_axis():
    # sigma at depth z, focal f: the 2-D std is f sigma / z in each direction; + the 0.3 px^2 low-pass
    f, z, sigma, cx, cy = 100.0, 4.0, 0.05, 31.5, 20.0
    pose = torch.eye(4, dtype=torch.float64)
    pose[2, 3] = z  # head origin z units in front of the camera
    proj = project_gaussians(torch.zeros(1, 3, dtype=torch.float64),
                             torch.full((1, 3), math.log(sigma), dtype=torch.float64),
                             torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), pose,
                             torch.tensor([f, f, cx, cy], dtype=torch.float64))
    assert torch.allclose(proj.means2d[0, 0], torch.tensor([cx, cy], dtype=torch.float64))
    expected = (f * sigma / z) ** 2 + 0.3
    assert torch.allclose(proj.cov2d[0, 0], expected * torch.eye(2, dtype=torch.float64))
    assert torch.allclose(proj.depths[0, 0], torch.tensor(z, dtype=torch.float64))
    assert torch.allclose(proj.radii[0, 0], torch.tensor(3 * math.sqrt(expected), dtype=torch.float64))
    c = conics(proj.cov2d)[0, 0]
    assert torch.allclose(c, torch.tensor([1 / expected, 0, 1 / expected], dtype=torch.float64))


def test_off_axis_anisotropic_gaussian_by_hand():
    # axis-aligned scales (sx, sy, sz) at (x, y, z): J = [[f/z, 0, -f x/z^2], [0, f/z, -f y/z^2]]
    f, (x, y, z), (sx, sy, sz) = 80.0, (0.3, -0.2, 2.5), (0.02, 0.05, 0.1)
    proj = project_gaussians(torch.tensor([[x, y, z]], dtype=torch.float64),
                             torch.log(torch.tensor([[sx, sy, sz]], dtype=torch.float64)),
                             torch.tensor([[1.0, 0, 0, 0]], dtype=torch.float64), torch.eye(4, dtype=torch.float64),
                             torch.tensor([f, f, 10.0, 12.0], dtype=torch.float64), eps2d=0.0)
    a = (f / z) ** 2 * sx ** 2 + (f * x / z ** 2) ** 2 * sz ** 2
    c = (f / z) ** 2 * sy ** 2 + (f * y / z ** 2) ** 2 * sz ** 2
    b = (f * x / z ** 2) * (f * y / z ** 2) * sz ** 2
    assert torch.allclose(proj.cov2d[0, 0], torch.tensor([[a, b], [b, c]], dtype=torch.float64))
    assert torch.allclose(proj.means2d[0, 0], torch.tensor([f * x / z + 10.0, f * y / z + 12.0], dtype=torch.float64))


def test_quaternion_rotation_matches_rotation_matrix():
    for axis, angle in [((0, 0, 1), 0.3), ((1, 2, -0.5), 1.7), ((-1, 0.2, 0.9), -2.4)]:
        q = _axis_angle_quat(axis, angle)
        assert torch.allclose(quat_to_rotmat(q), _rodrigues(axis, angle), atol=1e-12)
        assert torch.allclose(quat_to_rotmat(3.0 * q), _rodrigues(axis, angle), atol=1e-12)  # normalised
    q = _axis_angle_quat((1, 2, -0.5), 1.7)
    log_s = torch.log(torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64))
    r = _rodrigues((1, 2, -0.5), 1.7)
    assert torch.allclose(covariance_3d(log_s, q), r @ torch.diag(torch.exp(2 * log_s)) @ r.T)


def test_pose_rotation_matches_rotating_the_gaussian():
    # the camera rotated by R sees a Gaussian as the identity camera sees the Gaussian rotated by R
    r = _rodrigues((0.3, 1, 0.2), 0.4)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3], pose[:3, 3] = r, torch.tensor([0.1, -0.05, 3.0], dtype=torch.float64)
    mu = torch.tensor([[0.2, 0.1, -0.3]], dtype=torch.float64)
    log_s = torch.log(torch.tensor([[0.05, 0.1, 0.02]], dtype=torch.float64))
    q = _axis_angle_quat((1, -1, 0.5), 0.8)[None]
    k = torch.tensor([90.0, 95.0, 30.0, 28.0], dtype=torch.float64)
    a = project_gaussians(mu, log_s, q, pose, k)
    q_rot = _axis_angle_quat((0.3, 1, 0.2), 0.4)
    # quaternion product q_rot * q = rotation R R_q
    w1, v1, w2, v2 = q_rot[0], q_rot[1:], q[0, 0], q[0, 1:]
    qq = torch.cat([(w1 * w2 - v1 @ v2)[None], w1 * v2 + w2 * v1 + torch.linalg.cross(v1, v2)])[None]
    shifted = torch.eye(4, dtype=torch.float64)
    shifted[:3, 3] = pose[:3, 3]
    b = project_gaussians(mu @ r.T, log_s, qq, shifted, k)
    assert torch.allclose(a.means2d, b.means2d) and torch.allclose(a.cov2d, b.cov2d)


def test_small_gaussian_matches_monte_carlo_moments():
    torch.manual_seed(0)
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = _rodrigues((0.2, 1, 0.1), 0.5)
    pose[:3, 3] = torch.tensor([0.1, 0.2, 3.0], dtype=torch.float64)
    k = torch.tensor([120.0, 110.0, 40.0, 35.0], dtype=torch.float64)
    mu = torch.tensor([[0.3, -0.2, 0.1]], dtype=torch.float64)
    log_s = torch.log(torch.tensor([[0.004, 0.01, 0.006]], dtype=torch.float64))
    q = _axis_angle_quat((1, 0.3, -0.4), 0.9)[None]
    proj = project_gaussians(mu, log_s, q, pose, k, eps2d=0.0)
    n = 400_000
    pts = mu + torch.randn(n, 3, dtype=torch.float64) @ torch.linalg.cholesky(covariance_3d(log_s, q)[0]).T
    cam = pts @ pose[:3, :3].T + pose[:3, 3]
    uv = torch.stack([k[0] * cam[:, 0] / cam[:, 2] + k[2], k[1] * cam[:, 1] / cam[:, 2] + k[3]], -1)
    emp_mean, emp_cov = uv.mean(0), torch.cov(uv.T)
    cov = proj.cov2d[0, 0]
    assert (emp_mean - proj.means2d[0, 0]).abs().max() < 0.01 * cov.diagonal().sqrt().max()
    assert torch.allclose(emp_cov, cov, rtol=0.02, atol=0.02 * float(cov.diagonal().max()))


def test_behind_the_near_plane_is_culled_and_batches_of_cameras():
    means = torch.tensor([[0.0, 0, 1.0], [0.0, 0, -1.0]])
    poses = torch.eye(4).expand(3, 4, 4).clone()
    poses[1, 2, 3] = 2.0  # moves both in front
    proj = project_gaussians(means, torch.full((2, 3), -3.0), torch.tensor([[1.0, 0, 0, 0]]).expand(2, 4), poses,
                             torch.tensor([50.0, 50, 16, 16]), hw=(32, 32))
    assert proj.means2d.shape == (3, 2, 2) and proj.cov2d.shape == (3, 2, 2, 2)
    assert proj.visible.tolist() == [[True, False], [True, True], [True, False]]
    assert (proj.radii[~proj.visible] == 0).all() and (proj.radii[proj.visible] > 0).all()
    assert torch.isfinite(proj.cov2d).all()
