import pytest
import torch

from lipspace.data.clip import load_clip, split_frames
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.data.sampling import RayBatches, frame_rays
from lipspace.utils.errors import LipspaceError


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    return load_clip(tiny_dataset)


def test_load_clip_shapes(clip):
    assert clip.frames.shape == (20, 24, 24, 3) and clip.frames.dtype == torch.uint8
    assert clip.parsing.shape == (20, 24, 24) and clip.pose.shape == (20, 4, 4)
    assert clip.background.max() <= 1.0


def test_held_out_tail_is_the_same_whatever_clip_seconds(clip):
    full = split_frames(clip, 0.1)
    short = split_frames(clip, 0.1, clip_seconds=0.4)
    assert full.test.tolist() == short.test.tolist() == [18, 19]
    assert short.train.tolist() == list(range(10)) and full.train.tolist() == list(range(18))


def test_clip_seconds_longer_than_available_is_a_clear_error(clip):
    with pytest.raises(LipspaceError, match="clip_seconds=5"):
        split_frames(clip, 0.1, clip_seconds=5)


def test_invalid_frames_are_skipped(clip):
    clip.tracks["valid"] = clip.tracks["valid"].copy()
    clip.tracks["valid"][3] = False
    try:
        assert 3 not in split_frames(clip, 0.1).train
    finally:
        clip.tracks["valid"][3] = True


def test_ray_batch_shapes_and_hits(clip):
    split = split_frames(clip, 0.1)
    ds = RayBatches(clip, split.train, {"expr": 53}, rays_per_batch=64, frames_per_batch=4, head_fraction=0.5,
                    steps_per_epoch=3, seed=0)
    batches = list(ds)
    assert len(batches) == 3
    b = batches[0]
    assert b["rays_o"].shape == (64, 3) and b["target"].shape == (64, 3) and b["bg"].shape == (64, 3)
    assert b["inputs"]["expr"].shape == (4, 53) and b["ray_frame"].max() == 3
    assert set(b["frame_idx"].tolist()) <= set(split.train.tolist())
    assert (b["far"] > b["near"]).all(), "training rays are drawn among rays that hit the bounds"
    assert torch.allclose(b["rays_d"].norm(dim=-1), torch.ones(64), atol=1e-5)


def test_ray_batches_reproducible_per_seed(clip):
    split = split_frames(clip, 0.1)
    make = lambda seed: next(iter(RayBatches(clip, split.train, {"expr": 53}, 32, 2, 0.5, 1, seed)))  # noqa: E731
    assert torch.equal(make(0)["target"], make(0)["target"])
    assert not torch.equal(make(0)["rays_d"], make(1)["rays_d"])


def test_head_fraction_one_samples_only_head_pixels(clip):
    split = split_frames(clip, 0.1)
    b = next(iter(RayBatches(clip, split.train, {}, 256, 2, 1.0, 1, 0)))
    # head pixels of the tiny set are the disc (skin) or the mouth: never the gradient background colour
    assert ((b["target"] - b["bg"]).abs().sum(-1) > 0.01).float().mean() > 0.95


def test_frame_rays_downscaled(clip):
    r = frame_rays(clip, 0, downscale=2)
    assert r["hw"] == (12, 12) and r["rays_o"].shape == (144, 3) and r["target"].shape == (12, 12, 3)


def test_datamodule_checks_declared_inputs(tiny_dataset):
    dm = TalkingHeadDataModule(str(tiny_dataset))
    dm.check_inputs({"expr": 53}, "expression")
    with pytest.raises(LipspaceError, match="declares input 'expr' of dim 79"):
        dm.check_inputs({"expr": 79}, "expression")
    with pytest.raises(LipspaceError, match="needs input 'audio_ds'"):
        dm.check_inputs({"audio_ds": 29}, "deepspeech")


def test_datamodule_missing_root_is_clear(tmp_path):
    with pytest.raises(LipspaceError, match="does not exist"):
        TalkingHeadDataModule(str(tmp_path / "missing")).load()


def test_gt_background_classes_paste_ground_truth(tiny_dataset):
    c = load_clip(tiny_dataset, gt_background_classes=(2,))  # the tiny set's disc is class 2
    bg = c.frame_background(0)
    disc = c.parsing[0] == 2
    assert torch.allclose(bg[disc], c.frames[0][disc].float() / 255)
    assert torch.allclose(bg[~disc], c.background[~disc])
    assert torch.equal(load_clip(tiny_dataset).frame_background(0), c.background)


def test_ray_sampling_matches_the_stated_mixture(clip):
    """Half the rays from head pixels, half uniform among pixels whose rays hit the bounds: the head share of a
    large sample is 0.5 + 0.5 * (head pixels / hitting pixels), and the non-head half is spread evenly."""
    from lipspace.data.rays import camera_rays, full_frame_pixels, sphere_near_far

    split = split_frames(clip, 0.1)
    ds = RayBatches(clip, split.train[:1], {}, 20000, 1, 0.5, 1, 0)
    b = next(iter(ds))
    f = int(b["frame_idx"][0])
    h, w = clip.hw
    u, v, _ = full_frame_pixels(h, w)
    o, d = camera_rays(clip.pose[f:f + 1], clip.intrinsics, u[None], v[None])
    hit = sphere_near_far(o, d, *clip.bounds)[2][0]
    head = clip.head_mask(f).reshape(-1)
    expected = 0.5 + 0.5 * float((head & hit).sum() / hit.sum())
    # recover which pixel each ray went through from its direction
    cam_d = torch.einsum("ij,rj->ri", clip.pose[f, :3, :3], b["rays_d"])
    fx, fy, cx, cy = clip.intrinsics
    pu = (cam_d[:, 0] / cam_d[:, 2] * fx + cx - 0.5).round().long()
    pv = (cam_d[:, 1] / cam_d[:, 2] * fy + cy - 0.5).round().long()
    got = head[pv * w + pu].float().mean().item()
    assert abs(got - expected) < 0.02, (got, expected)
    assert hit[pv * w + pu].all()
    # the non-head rays cover the hitting non-head pixels evenly (chi-square-like spread check)
    rest = (~head[pv * w + pu])
    counts = torch.bincount((pv * w + pu)[rest], minlength=h * w)[(~head) & hit].float()
    assert counts.min() > 0 and counts.max() / counts.mean() < 3.0


def test_mouth_fraction_draws_its_share_from_mouth_pixels(clip):
    """mouth_fraction 0.3 on top of head_fraction 0.4: the mouth share of a large sample is 0.3 plus what the head
    and uniform draws bring; 0 leaves the draws exactly as before (same random stream)."""
    split = split_frames(clip, 0.1)
    frames = split.train[:1]

    def mouth_share(mouth_fraction):
        b = next(iter(RayBatches(clip, frames, {}, 8000, 1, 0.4, 1, 0, mouth_fraction=mouth_fraction)))
        return float(torch.isin(b["ray_class"], torch.tensor([3, 4])).float().mean()), b

    base, b0 = mouth_share(0.0)
    more, _ = mouth_share(0.3)
    assert more > base + 0.25, (base, more)
    ref = next(iter(RayBatches(clip, frames, {}, 8000, 1, 0.4, 1, 0)))
    assert torch.equal(b0["rays_d"], ref["rays_d"])  # the default changes nothing
    for bad in (-0.1, 0.7):  # 0.4 + 0.7 > 1
        with pytest.raises(LipspaceError, match="mouth_fraction"):
            RayBatches(clip, frames, {}, 64, 1, 0.4, 1, 0, mouth_fraction=bad)


def test_head_pose_source_says_where_the_pose_comes_from(clip):
    from dataclasses import replace

    prepared = {**clip.meta, "kind": "video", "stages": {"head": 1, "finalize": 2}}
    assert replace(clip, meta=prepared).head_pose_source == "fitted"
    assert replace(clip, meta={**prepared, "stages": {"stabilize": 1}}).head_pose_source == "stabilized"
    assert replace(clip, meta={**clip.meta, "kind": "synthetic"}).head_pose_source == "exact"
    assert replace(clip, meta={**clip.meta, "kind": "synthetic_heldout"}).head_pose_source == "exact"
