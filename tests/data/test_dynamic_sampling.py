"""Semantic-aware dynamic ray sampling (data.sampling=semantic): the allocation rule, RayBatches' class shares after
set_class_weights, the first epoch and the default sampling unchanged, the data module's checks and hand-over."""

import pytest
import torch

from lipspace.data.clip import load_clip, split_frames
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.data.dynamic_sampling import class_allocation, class_boxes, class_pixel_counts
from lipspace.data.sampling import RayBatches
from lipspace.utils.errors import LipspaceError

K = 10


@pytest.fixture(scope="module")
def clip(tiny_dataset):
    return load_clip(tiny_dataset)


def test_allocation_follows_the_losses_with_a_floor():
    present = torch.zeros(1, K, dtype=torch.bool)
    present[0, [0, 2, 4]] = True
    w = torch.zeros(K)
    w[[0, 2, 4]] = torch.tensor([1.0, 1.0, 2.0])
    counts = class_allocation(w, present, 1000, floor=0.0)
    assert counts[0].tolist() == [250, 0, 250, 0, 500, 0, 0, 0, 0, 0]  # N_i = L_i / sum_j L_j * N
    w[4] = 1000.0  # one class's loss dominates: the others keep the floor
    counts = class_allocation(w, present, 1000, floor=0.05)
    assert counts[0, 0] >= 50 and counts[0, 2] >= 50 and counts[0, 4] > 890 and counts.sum() == 1000
    assert counts[0, [1, 3, 5, 6, 7, 8, 9]].sum() == 0  # absent classes get nothing


def test_allocation_renormalises_per_frame_and_handles_unknown_and_empty():
    present = torch.zeros(3, K, dtype=torch.bool)
    present[0, [0, 2]] = True
    present[1, [2, 4]] = True  # class 0 absent here: its share goes to the present ones
    w = torch.full((K,), float("nan"))
    w[[0, 2, 4]] = torch.tensor([3.0, 1.0, 1.0])
    counts = class_allocation(w, present, 13, floor=0.0)
    assert counts.sum(1).tolist() == [13, 13, 0]  # frame 2 has no class to draw: all rays stay uniform
    assert counts[0, 0] in (9, 10) and counts[1, 2] in (6, 7) and counts[1, 0] == 0
    w[4] = float("nan")  # no ray fell on class 4 last epoch: it counts as the mean of the known ones (2)
    counts = class_allocation(w, present, 30, floor=0.0)
    assert counts[1, 4] == 20 and counts[1, 2] == 10
    assert class_allocation(torch.zeros(K), present, 10, 0.0)[0].tolist()[:3] == [5, 0, 5]  # all zero: even split


def test_class_boxes_in_one_pass(clip):
    boxes, present = class_boxes(clip.parsing, K)
    assert present[:, 0].all() and present[:, 2].all() and not present[:, 1].any()
    m = clip.parsing[3] == 2
    ys, xs = torch.nonzero(m, as_tuple=True)
    assert boxes[3, 2].tolist() == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _batches(clip, sampling, seed=3, rays=2000, **kw):
    split = split_frames(clip, 0.1)
    return RayBatches(clip, split.train, {"expr": 53}, rays, 4, 0.5, 2, seed, sampling=sampling, **kw)


def test_before_weights_and_by_default_the_batches_are_those_of_head_fraction(clip):
    a, b = list(_batches(clip, "head_fraction")), list(_batches(clip, "semantic"))
    for x, y in zip(a, b):
        for k in x:
            if isinstance(x[k], torch.Tensor):
                assert torch.equal(x[k], y[k]), k


def test_default_batches_unchanged():
    """head_fraction batches of a fixed seed: sums recorded at the commit before semantic sampling (ee4e665)."""
    import tempfile
    from pathlib import Path

    from tests.conftest import make_tiny_dataset

    c = load_clip(make_tiny_dataset(Path(tempfile.mkdtemp()) / "ds"))
    rb = RayBatches(c, split_frames(c, 0.1).train, {"expr": 53}, 96, 3, 0.5, 2, 7)
    recorded = [([97.239395, 155.752944, 126.733336, 132.0, 283.042663], [11, 13, 8]),
                ([93.55762, 148.262748, 119.333336, 122.0, 283.264324], [6, 1, 12])]
    for b, (sums, frames) in zip(rb, recorded):
        got = [float(b[k].double().sum()) for k in ("rays_d", "target", "bg", "ray_class", "near")]
        assert got == pytest.approx(sums, abs=2e-6) and b["frame_idx"].tolist() == frames


def test_class_weights_move_rays_toward_the_class_with_the_highest_loss(clip):
    rb = _batches(clip, "semantic", class_floor=0.05, class_loss="mean")  # the weights are the shares
    uniform = torch.zeros(K)
    uniform[[0, 2, 4]] = 1.0
    rb.set_class_weights(uniform)
    even = torch.bincount(next(iter(rb))["ray_class"], minlength=K).float()
    heavy = uniform.clone()
    heavy[4] = 20.0  # the mouth's loss dominates
    rb.set_class_weights(heavy)
    b = next(iter(rb))
    cls = b["ray_class"]
    share = torch.bincount(cls, minlength=K).float() / len(cls)
    assert share[4] > 0.6 > even[4] / even.sum()
    assert share[0] >= 0.04 and share[2] >= 0.04  # the floor
    assert (b["far"] > b["near"]).all()  # still only rays that hit the bounds
    # per frame, each class's slots hold pixels of that class where the class is present
    fr = b["ray_frame"]
    for f in range(4):
        c = cls[fr == f]
        assert (c[:-1] <= c[1:]).all()  # class-major slots: 0s, then 2s, then 4s


def test_total_class_loss_weights_each_class_by_its_pixels_in_the_frame(clip):
    counts = class_pixel_counts(clip.parsing, K, chunk_bytes=1)  # one frame a chunk: the chunking is exercised
    assert counts[3].tolist() == torch.bincount(torch.as_tensor(clip.parsing[3]).reshape(-1).long(),
                                                minlength=K).double().tolist()
    equal = torch.zeros(K)
    equal[[0, 2, 4]] = 1.0  # the same mean loss in every class present
    shares = {}
    for loss in ("mean", "total"):
        rb = _batches(clip, "semantic", class_floor=0.0, class_loss=loss)
        rb.set_class_weights(equal)
        b = next(iter(rb))
        shares[loss] = torch.bincount(b["ray_class"], minlength=K).double() / len(b["ray_class"])
    frames = torch.as_tensor(b["frame_idx"])
    area = counts[frames][:, [0, 2, 4]].sum(0) / counts[frames][:, [0, 2, 4]].sum()
    assert shares["mean"][[0, 2, 4]].tolist() == pytest.approx([1 / 3] * 3, abs=0.02)  # one third each
    # total: in proportion to the classes' pixels in the batch's frames (0.72 / 0.26 / 0.02 here)
    assert shares["total"][[0, 2, 4]].tolist() == pytest.approx(area.tolist(), abs=0.02)
    assert shares["total"][4] < shares["mean"][4] / 2  # the small mouth no longer draws a third of the rays
    with pytest.raises(LipspaceError, match="class_loss"):
        _batches(clip, "semantic", class_loss="sum")


def test_set_class_weights_checks_and_the_datamodule_hands_over(clip, tiny_dataset):
    with pytest.raises(LipspaceError, match="one weight per parsing class"):
        _batches(clip, "head_fraction").set_class_weights(torch.ones(K))
    with pytest.raises(LipspaceError, match="one weight per parsing class"):
        _batches(clip, "semantic").set_class_weights(torch.ones(3))
    with pytest.raises(LipspaceError, match="data.sampling"):
        TalkingHeadDataModule(root=str(tiny_dataset), sampling="area")
    with pytest.raises(LipspaceError, match="sampling=semantic"):
        TalkingHeadDataModule(root=str(tiny_dataset), sampling="semantic", batch_kind="images")
    dm = TalkingHeadDataModule(root=str(tiny_dataset), sampling="semantic", rays_per_batch=64, steps_per_epoch=1)
    assert dm.class_weighted and not TalkingHeadDataModule(root=str(tiny_dataset)).class_weighted
    dm.setup()
    dm.set_class_weights(torch.arange(K, dtype=torch.float32))  # before the loader: kept for the RayBatches
    dm.train_dataloader()
    assert torch.equal(dm._train.class_weights, torch.arange(K, dtype=torch.float64))
