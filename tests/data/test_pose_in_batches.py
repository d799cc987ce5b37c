"""Ray batches and whole frames carry each frame's head pose (a torso model marches the same rays in camera space),
and ray batches may draw their pixels from a larger sphere than the one near / far come from (data.draw_bounds)."""

import pytest
import torch

from lipspace.data.clip import load_clip, split_frames
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.data.sampling import RayBatches, frame_rays
from lipspace.utils.errors import LipspaceError


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    c = load_clip(tiny_dataset, bounds_key="head_bounds")
    c.meta["head_bounds"] = {"center": [0.0, 0.0, 0.0], "radius": 0.4}  # a head sphere inside the scene's (1.2)
    return c


def _batch(clip, draw_bounds=None, n=512):
    split = split_frames(clip, 0.1)
    return next(iter(RayBatches(clip, split.train, {}, n, 4, 0.0, 1, 0, draw_bounds=draw_bounds)))


def test_ray_batches_carry_each_frames_pose(clip):
    b = _batch(clip)
    assert torch.equal(b["pose"], clip.pose[b["frame_idx"]]) and b["pose"].shape == (4, 4, 4)
    # the rays are the camera's: mapped by their frame's pose they start at the camera centre
    pose = b["pose"][b["ray_frame"]]
    o_cam = torch.einsum("rij,rj->ri", pose[:, :3, :3], b["rays_o"]) + pose[:, :3, 3]
    assert torch.allclose(o_cam, torch.zeros_like(o_cam), atol=1e-5)


def test_whole_frames_carry_their_pose(clip):
    r = frame_rays(clip, 3, downscale=2)
    assert torch.equal(r["pose"], clip.pose[3])


def test_draw_bounds_draws_pixels_of_the_larger_sphere(clip):
    head = _batch(clip)
    assert (head["far"] > head["near"]).all()  # default: pixels whose rays hit the sphere near / far come from
    scene = _batch(clip, "bounds")
    missed = scene["far"] == scene["near"]  # near / far still from the head sphere: these rays miss it
    assert 0.2 < missed.float().mean() < 0.95
    # the default is the sphere of data.bounds: naming it draws the same batch
    same = _batch(clip, "head_bounds")
    assert all(torch.equal(head[k], same[k]) for k in ("rays_o", "rays_d", "near", "far", "target"))


def test_draw_bounds_is_checked(tiny_dataset):
    with pytest.raises(LipspaceError, match="draw_bounds"):
        TalkingHeadDataModule(str(tiny_dataset), draw_bounds="torso")
