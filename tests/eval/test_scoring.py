"""Scorer: a ground truth scored under several drivers is analysed once; audio_slice cuts and pads exactly; the
batched / threaded / cached paths give the values of the one-call metric functions."""

import math

import numpy as np
import soundfile as sf

from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.eval import face_metrics as F
from lipspace.eval.scoring import EvalSettings, Scorer, audio_slice


def test_ground_truth_face_tracks_are_analysed_once_per_sequence(monkeypatch):
    calls = []

    def fake_analyse(frames, model_path=None, min_side=256, fps=25.0):
        calls.append(len(frames))
        t = len(frames)
        return F.FaceTracks(np.zeros((t, 478, 2)), np.zeros((t, 52)), np.ones(t, bool), list(MP_BLENDSHAPE_NAMES))

    monkeypatch.setattr(F, "analyse_frames", fake_analyse)
    monkeypatch.setattr(F, "face_model_provenance", lambda model_path=None: "fake model")
    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False))
    frames = np.zeros((4, 8, 8, 3), np.uint8)
    for _ in range(2):  # two drivers of one held-out sequence
        out = scorer.sequence(frames, frames, None, None, gt_key=("clip", (0, 1, 2, 3), 1))
        assert out.get("lmd") == 0.0, out
    assert calls == [4, 4, 4], "render, ground truth, render: the ground truth once"
    scorer.sequence(frames, frames, None, None, gt_key=("clip", (4, 5, 6, 7), 1))
    assert len(calls) == 5  # another sequence is analysed again


def test_audio_slice_cuts_from_the_offset_and_zero_pads(tmp_path):
    y = np.arange(16000, dtype=np.float32) / 16000 * 0.5
    sf.write(tmp_path / "a.wav", y, 16000, subtype="FLOAT")
    out = sf.read(audio_slice(tmp_path / "a.wav", 0.5, 1.0, tmp_path / "b.wav"), dtype="float32")[0]
    assert len(out) == 16000
    np.testing.assert_allclose(out[:8000], y[8000:], atol=1e-4)
    assert not out[8000:].any()


def test_lpips_without_weights_is_a_nan_column_with_its_status():
    """The documented contract: a metric that cannot be computed is NaN with a status, never a missing column."""
    import torch

    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False))
    img = torch.rand(40, 40, 3)
    out = scorer.frame(img, img, None, scale=1.0)
    assert "lpips" in out and math.isnan(out["lpips"]) and scorer.lpips_status.startswith("disabled")


def test_frames_in_batches_equal_frame_by_frame(monkeypatch):
    """Scorer.frames (SSIM and LPIPS batched, in chunks) == Scorer.frame per frame, to float32 summation order."""
    import torch

    from lipspace.eval import scoring
    from lipspace.eval.lpips import LPIPS

    torch.manual_seed(0)
    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False))
    scorer._lpips = LPIPS().eval()  # random weights: the arithmetic is what is compared
    for p in scorer._lpips.parameters():
        p.data.normal_(0, 0.1)
    for lin in scorer._lpips.lins:  # non-negative heads, as LPIPS' own
        lin.weight.data.abs_()
    gen = torch.Generator().manual_seed(1)
    targets = torch.rand(7, 40, 48, 3, generator=gen)
    preds = (targets + 0.1 * torch.randn(7, 40, 48, 3, generator=gen)).clamp(0, 1)
    lmk = np.zeros((7, 68, 2))
    lmk[:, 48:68] = [[18, 24], [30, 30]] * 10
    lmks = [lmk[i] for i in range(7)]
    lmks[3] = None  # a frame without landmarks: no mouth columns
    expected = [scorer.frame(p, t, lm, scale=1.0) for p, t, lm in zip(preds, targets, lmks)]
    monkeypatch.setattr(scoring, "BATCH_PIXELS", 3 * 40 * 48)  # chunks of 3, 3, 1 frames
    got = scorer.frames(preds, targets, lmks, scale=1.0)
    assert [list(r) for r in got] == [list(r) for r in expected]  # same columns, same order
    for g, e in zip(got, expected):
        assert {k: g[k] for k in ("psnr", "l1", "mouth_psnr", "mouth_l1") if k in e} == \
            {k: e[k] for k in ("psnr", "l1", "mouth_psnr", "mouth_l1") if k in e}  # computed as before: exact
        for k in ("ssim", "lpips"):  # batched: the stated tolerance
            assert abs(g[k] - e[k]) < 1e-6 and g[k] != 0, (k, g[k], e[k])
    assert all(np.isfinite(r["lpips"]) and r["lpips"] > 0 for r in got)
    small = scorer.frames(preds[:2, :20, :20], targets[:2, :20, :20], None, scale=1.0)
    assert all(math.isnan(r["lpips"]) for r in small) and "below LPIPS-alex's 32 px" in scorer.lpips_status


def _one_second(tmp_path, n=25, hw=24):
    y = (0.1 * np.random.default_rng(0).standard_normal(16000)).astype(np.float32)
    sf.write(tmp_path / "a.wav", y, 16000, subtype="PCM_16")
    return np.zeros((n, hw, hw, 3), np.uint8), tmp_path / "a.wav"


def test_official_lse_that_cannot_run_encodes_no_video_and_is_asked_once(tmp_path, monkeypatch):
    from lipspace.eval import lse, video

    monkeypatch.delenv("LIPSPACE_ASSETS", raising=False)
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    asked, encoded = [], []
    setup = lse.official_setup
    monkeypatch.setattr(lse, "official_setup", lambda **kw: asked.append(kw) or setup(**kw))
    monkeypatch.setattr(video, "write_video", lambda *a, **k: encoded.append(a))
    scorer = Scorer(EvalSettings(lpips=False, face=False, lse_local=False, download=False))
    frames, wav = _one_second(tmp_path)
    rows = [scorer.sequence(frames, None, None, wav, 0.0) for _ in range(3)]
    assert len(asked) == 1 and not encoded
    for row in rows:
        assert math.isnan(row["lse_d"]) and math.isnan(row["lse_c"]) and math.isnan(row["lse_offset"])
        assert row["lse_status"].startswith("official SyncNet/S3FD weights not found") and "download=false" in \
            row["lse_status"]
    assert rows[0] == rows[2] and "not found" in scorer.provenance["lse"]


def test_official_lse_that_can_run_scores_an_encoded_render(tmp_path, monkeypatch):
    from lipspace.eval import lse, video

    scored = []
    monkeypatch.setattr(lse, "official_setup", lambda **kw: (object(), "SyncNet (test)", None))
    monkeypatch.setattr(video, "write_video", lambda frames, path, fps, audio_path: path)
    monkeypatch.setattr(lse, "lse_official", lambda path, **kw: scored.append(path) or {
        "lse_d": 7.0, "lse_c": 2.0, "lse_offset": 1, "lse_status": "ok", "lse_model": "SyncNet (test)"})
    scorer = Scorer(EvalSettings(lpips=False, face=False, lse_local=False))
    frames, wav = _one_second(tmp_path)
    row = scorer.sequence(frames, None, None, wav, 0.0)
    assert row["lse_d"] == 7.0 and scored[0].name == "render.mp4"
    given = scorer.sequence(frames, None, None, wav, 0.0, video_path=tmp_path / "given.mp4")
    assert given["lse_c"] == 2.0 and scored[1] == tmp_path / "given.mp4"  # a written video is not encoded again


def test_sequence_on_a_real_clip_equals_the_one_call_metrics(tmp_path, monkeypatch):
    """Scorer.sequence (face analysis of render and ground truth in two threads, the loaded
    expert, no video for an official LSE that cannot run) == face_metrics + lipmotion_metrics + lse_local called
    one by one, exactly, on real 128² frames with a ground truth and without (a dub row)."""
    import cv2

    from lipspace.eval import lipmotion as L
    from lipspace.eval.lse import lse_local
    from lipspace.eval.scoring import audio_segment
    from tests.conftest import assets_dir, prepared_real_clip
    from tests.eval.test_lse import _random_ave

    root = prepared_real_clip("may", 4.0, 128)
    model = str(assets_dir() / "models" / "face_landmarker.task")
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    files = sorted((root / "frames").glob("*.png"))[:60]
    gts = np.stack([cv2.imread(str(f))[:, :, ::-1] for f in files])
    preds = np.ascontiguousarray(np.clip(gts.astype(int) + 8, 0, 255).astype(np.uint8)[:, :, ::-1])  # a "render"
    lmk = np.load(root / "tracks.npz")["lmk68"][:60]
    weights = _random_ave(tmp_path / "ave.pt")
    scorer = Scorer(EvalSettings(lpips=False, face_model=model, ave_weights=str(weights), download=False))
    row = scorer.sequence(preds, gts, lmk, root / "audio.wav", 0.4, gt_key=("may", "first 60"))
    dub = scorer.sequence(preds, None, lmk, root / "audio.wav", 0.4)

    pred_t, gt_t = F.analyse_frames(preds, model), F.analyse_frames(gts, model)
    wave = audio_segment(root / "audio.wav", 0.4, 60 / 25)
    wav = audio_slice(root / "audio.wav", 0.4, 60 / 25, tmp_path / "slice.wav")
    local, local_gt = lse_local(preds, lmk, wav, weights=weights), lse_local(gts, lmk, wav, weights=weights)
    expected = {**F.face_metrics(preds, gts, model_path=model), **L.lipmotion_metrics(pred_t, gt_t, audio=wave),
                **{k: local[k] for k in ("lse_d_local", "lse_c_local", "lse_offset_local")},
                **{f"{k}_gt": local_gt[k] for k in ("lse_d_local", "lse_c_local", "lse_offset_local")}}
    assert row["face_found"] == 1.0 and row["lse_local_status"].startswith("ok")
    for k, v in expected.items():
        assert row[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(row[k])), k
    expected_dub = {**F.metrics_from_tracks(pred_t, None), **L.lipmotion_metrics(pred_t, None, audio=wave)}
    for k, v in expected_dub.items():
        assert dub[k] == v or (isinstance(v, float) and math.isnan(v) and math.isnan(dub[k])), k
    assert dub["lse_d_local"] == local["lse_d_local"] and math.isnan(dub["lse_d"]) and "lse_status" in dub
