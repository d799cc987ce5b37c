"""Scorer: a ground truth scored under several drivers is analysed once; audio_slice cuts and pads exactly."""

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
    import math

    import torch

    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False))
    img = torch.rand(40, 40, 3)
    out = scorer.frame(img, img, None, scale=1.0)
    assert "lpips" in out and math.isnan(out["lpips"]) and scorer.lpips_status.startswith("disabled")
