import numpy as np
import pytest
import torch

from lipspace.eval.metrics import frame_metrics, mouth_box, psnr, ssim


def test_psnr_known_value():
    a = torch.zeros(8, 8, 3)
    b = torch.full((8, 8, 3), 0.1)  # mse 0.01 -> 20 dB
    assert psnr(a, b) == pytest.approx(20.0, abs=1e-4)


def test_ssim_identical_is_one():
    img = torch.rand(32, 32, 3, generator=torch.Generator().manual_seed(0))
    assert ssim(img, img) == pytest.approx(1.0, abs=1e-5)


def test_mouth_box_pads_and_clips_and_scales():
    lmk = np.zeros((68, 2), np.float32)
    lmk[48:68] = [[40, 60], [60, 70]] * 10
    assert mouth_box(lmk, (128, 128)) == (52, 78, 32, 68)  # 25 % of 20x10 but at least 8 px padding
    assert mouth_box(lmk, (64, 64), scale=0.5) == (26, 39, 16, 34)
    lmk[48:68] = [[0, 0], [120, 127]] * 10
    y0, y1, x0, x1 = mouth_box(lmk, (128, 128))
    assert (y0, x0) == (0, 0) and y1 == 128 and x1 == 128


def test_frame_metrics_mouth_error_only_in_mouth():
    gt = torch.rand(64, 64, 3, generator=torch.Generator().manual_seed(1))
    pred = gt.clone()
    pred[30:34, 28:36] = 0  # damage inside the mouth box only
    lmk = np.zeros((68, 2), np.float32)
    lmk[48:68] = [[28, 30], [36, 34]] * 10
    m = frame_metrics(pred, gt, lmk)
    assert m["mouth_psnr"] < m["psnr"] and m["mouth_l1"] > m["l1"]


def test_frame_metrics_batch_equals_frame_by_frame():
    """SSIM batched (the mean frame against every target, as the eval task's baseline rows): within 1e-6 of
    frame_metrics; PSNR, L1 and the mouth columns are computed per frame as before: exact."""
    from lipspace.eval.metrics import frame_metrics_batch

    gen = torch.Generator().manual_seed(2)
    targets = torch.rand(5, 36, 44, 3, generator=gen)
    baseline = targets.mean(0)
    lmk = np.zeros((68, 2), np.float32)
    lmk[48:68] = [[14, 18], [28, 26]] * 10
    lmks = [lmk, None, lmk, lmk, None]
    got = frame_metrics_batch(baseline.expand_as(targets), targets, lmks)
    expected = [frame_metrics(baseline, t, lm) for t, lm in zip(targets, lmks)]
    for g, e in zip(got, expected, strict=True):
        assert list(g) == list(e)
        assert abs(g["ssim"] - e["ssim"]) < 1e-6
        assert {k: v for k, v in g.items() if k != "ssim"} == {k: v for k, v in e.items() if k != "ssim"}
    with pytest.raises(ValueError):
        frame_metrics_batch(targets, targets, lmks[:2])
