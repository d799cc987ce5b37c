import math

import torch

from lipspace.data.rays import camera_rays, full_frame_pixels, sphere_near_far


def test_identity_pose_centre_pixel_looks_forward():
    pose = torch.eye(4)[None]
    k = torch.tensor([10.0, 10.0, 2.0, 2.0])
    o, d = camera_rays(pose, k, torch.tensor([[1.5]]) , torch.tensor([[1.5]]))  # pixel centre (2,2) = principal point
    assert torch.allclose(o, torch.zeros(3)) and torch.allclose(d[0, 0], torch.tensor([0.0, 0.0, 1.0]))


def test_camera_centre_and_direction_in_head_space():
    # head 5 units in front of the camera, rotated 90 degrees about y
    r = torch.tensor([[0.0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    pose = torch.eye(4)
    pose[:3, :3] = r
    pose[:3, 3] = torch.tensor([0.0, 0, 5])
    k = torch.tensor([10.0, 10.0, 0.0, 0.0])
    o, d = camera_rays(pose[None], k, torch.tensor([[-0.5]]), torch.tensor([[-0.5]]))
    # the ray from the camera centre through the principal point must pass through the head origin
    t = -(o[0, 0] * d[0, 0]).sum()
    assert torch.allclose(o[0, 0] + t * d[0, 0], torch.zeros(3), atol=1e-5)
    assert math.isclose(float(t), 5.0, rel_tol=1e-5)


def test_sphere_near_far_hit_and_miss():
    o = torch.tensor([[0.0, 0, -5], [0.0, 3, -5]])
    d = torch.tensor([[0.0, 0, 1], [0.0, 0, 1]])
    near, far, hit = sphere_near_far(o, d, torch.zeros(3), 1.0)
    assert hit.tolist() == [True, False]
    assert torch.allclose(near[0], torch.tensor(4.0)) and torch.allclose(far[0], torch.tensor(6.0))
    assert near[1] == far[1]


def test_full_frame_pixels_downscale_centres():
    u, v, hw = full_frame_pixels(4, 6, downscale=2)
    assert hw == (2, 3) and u.numel() == 6
    # block (0,0) covers pixels 0..1: its centre is at 1.0 = u + 0.5 with u = 0.5
    assert float(u[0]) == 0.5 and float(v[0]) == 0.5
