"""Whole-frame camera batches (batch_kind "images"): the cameras agree with the ray path, the data module switches
to them when told the renderer's batch kind."""

import pytest
import torch

from lipspace.data.clip import load_clip, split_frames
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.data.rays import camera_rays
from lipspace.data.sampling import ImageBatches, RayBatches, frame_cameras, frame_rays
from lipspace.utils.errors import LipspaceError


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    return load_clip(tiny_dataset, gt_background_classes=(2,))


@pytest.mark.parametrize("downscale", [1, 2])
def test_frame_cameras_match_frame_rays(clip, downscale):
    cams = frame_cameras(clip, [3, 7], downscale)
    h, w = cams["hw"]
    assert cams["pose"].shape == (2, 4, 4) and cams["intrinsics"].shape == (2, 4)
    assert cams["target"].shape == cams["bg"].shape == (2, h, w, 3)
    for k, i in enumerate((3, 7)):
        rays = frame_rays(clip, i, downscale)
        assert rays["hw"] == (h, w)
        torch.testing.assert_close(cams["target"][k], rays["target"])
        torch.testing.assert_close(cams["bg"][k].reshape(-1, 3), rays["bg"])
        # the camera at this resolution gives the same rays as the full-resolution camera at the block centres
        vv, uu = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        o, d = camera_rays(cams["pose"][k:k + 1], cams["intrinsics"][k], uu.reshape(1, -1), vv.reshape(1, -1))
        torch.testing.assert_close(d[0], rays["rays_d"])
        torch.testing.assert_close(o[0], rays["rays_o"])


def test_image_batches_are_whole_training_frames(clip):
    split = split_frames(clip, 0.1)
    ds = ImageBatches(clip, split.train, {"expr": 53}, frames_per_batch=4, steps_per_epoch=3, seed=0)
    batches = list(ds)
    assert len(batches) == 3
    b = batches[0]
    assert b["frame_idx"].shape == (4,) and set(b["frame_idx"].tolist()) <= set(split.train.tolist())
    assert b["inputs"]["expr"].shape == (4, 53) and b["target"].shape == (4, 24, 24, 3)
    again = list(ImageBatches(clip, split.train, {"expr": 53}, 4, 3, seed=0))
    assert all(torch.equal(x["frame_idx"], y["frame_idx"]) for x, y in zip(batches, again))  # reproducible


def test_datamodule_makes_the_declared_batch_kind(tiny_dataset):
    dm = TalkingHeadDataModule(str(tiny_dataset), rays_per_batch=32, frames_per_batch=2, steps_per_epoch=2)
    dm.load()
    assert isinstance(dm.train_dataloader().dataset, RayBatches)
    dm.set_batch_kind("images")
    assert isinstance(dm.train_dataloader().dataset, ImageBatches)
    val = next(iter(dm.val_dataloader()))
    assert val["pose"].shape == (1, 4, 4) and val["target"].shape == (1, 12, 12, 3)  # val_downscale 2
    with pytest.raises(LipspaceError, match="batch kind 'points'"):
        dm.set_batch_kind("points")
    with pytest.raises(LipspaceError, match="patch_size"):
        TalkingHeadDataModule(str(tiny_dataset), patch_size=8, batch_kind="images")
