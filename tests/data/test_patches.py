"""RayBatches' LPIPS patch: a contiguous square of one frame's pixels appended after the random rays."""

import numpy as np
import pytest
import torch

from lipspace.data.clip import load_clip
from lipspace.data.sampling import RayBatches
from lipspace.utils.errors import LipspaceError
from tests.conftest import make_tiny_dataset


def test_patch_rays_form_a_square_of_the_first_frame(tmp_path):
    clip = load_clip(make_tiny_dataset(tmp_path / "ds", n=6, hw=40))
    rb = RayBatches(clip, np.arange(6), {}, rays_per_batch=64, frames_per_batch=2, head_fraction=0.5,
                    steps_per_epoch=1, seed=0, patch_size=16)
    b = rb.sample(torch.Generator().manual_seed(3))
    start, p = (int(v) for v in b["patch"])
    assert start == 64 and p == 16 and b["rays_o"].shape[0] == 64 + 256 == b["target"].shape[0]
    assert (b["ray_frame"][start:] == 0).all()
    frame = clip.frames[int(b["frame_idx"][0])].float() / 255.0  # [H, W, 3]
    patch = b["target"][start:].reshape(p, p, 3)
    # the patch is the frame's pixels of some p x p window (find it by exact match)
    hits = [(y, x) for y in range(40 - p + 1) for x in range(40 - p + 1)
            if torch.equal(frame[y:y + p, x:x + p], patch)]
    assert hits, "patch target is not a contiguous window of the first frame"
    assert len(b["ray_class"]) == len(b["near"]) == 320


def test_patch_larger_than_the_frame_is_refused(tmp_path):
    clip = load_clip(make_tiny_dataset(tmp_path / "ds", n=4, hw=24))
    with pytest.raises(LipspaceError, match="patch_size=32"):
        RayBatches(clip, np.arange(4), {}, 64, 2, 0.5, 1, 0, patch_size=32)
