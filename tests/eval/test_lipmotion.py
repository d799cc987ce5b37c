"""Weight-free lip-sync measures: known synthetic answers, the documented zero/NaN cases and the bias of the peak,
the Scorer's columns on every kind of row, and real clips (in sync vs shifted audio vs a still frame)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile as sf

from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.eval import face_metrics as F
from lipspace.eval.lipmotion import (KEYS, PROVENANCE, STILL_STD, audio_sync, lip_opening, lipmotion_metrics,
                                     open_corr, unavailable)
from lipspace.eval.scoring import EvalSettings, Scorer
from lipspace.prep.avsync import audio_envelope
from tests.conftest import assets_dir, prepared_real_clip

FPS, SR, HOP = 25, 16000, 640


def _speech(seconds: float = 12.0, seed: int = 0) -> np.ndarray:
    """Syllable-like bursts of a 150 Hz tone over faint noise: a speech envelope with onsets and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * FPS)
    loud = np.convolve((rng.uniform(size=n) < 0.35).astype(float), np.hanning(5), mode="same")
    t = np.arange(n * HOP) / SR
    return (0.3 * np.repeat(loud, HOP) * np.sin(2 * np.pi * 150 * t) + 1e-3 * rng.normal(size=len(t))).astype(
        np.float32)


def _opening_following(audio: np.ndarray, late: int) -> np.ndarray:
    """A lip opening equal to the envelope shifted so that the audio is ``late`` frames late (lips at t show the
    sound heard at t + late); frames without a counterpart have no face (NaN)."""
    env = audio_envelope(audio, len(audio) // HOP)
    n = len(env)
    lip = np.full(n, np.nan)
    src = np.arange(n) + late
    ok = (src >= 0) & (src < n)
    lip[ok] = 0.05 + 0.01 * (env[src[ok]] - env.min())
    return lip


def _tracks(opening: np.ndarray, iod: float = 50.0, scale: float = 1.0) -> F.FaceTracks:
    """Face tracks whose inner-lip gap (points 13-14) is ``opening`` x eye distance; NaN opening: no face."""
    t = len(opening)
    lmk = np.full((t, 478, 2), 100.0)
    lmk[:, 33] = (100.0 - iod / 2, 80.0)
    lmk[:, 263] = (100.0 + iod / 2, 80.0)
    lmk[:, 13] = (100.0, 120.0)
    lmk[:, 14, 0] = 100.0
    lmk[:, 14, 1] = 120.0 + np.nan_to_num(opening) * iod
    lmk = lmk * scale + 7.0  # head size / position must not matter
    found = np.isfinite(opening)
    lmk[~found] = np.nan
    return F.FaceTracks(lmk, np.zeros((t, 52)), found, list(MP_BLENDSHAPE_NAMES))


@pytest.mark.parametrize("late", [0, 4, -3])
def test_lips_following_the_envelope_give_its_lag_and_a_correlation_near_1(late):
    audio = _speech()
    res, note = audio_sync(_opening_following(audio, late), audio)
    assert note is None
    assert res["lag_s"] == pytest.approx(late / FPS)
    assert res["peak"] > 0.99
    if late == 0:
        assert res["corr"] == pytest.approx(res["peak"])
    else:  # lag 0 is not where the lips follow the audio: clearly below the peak
        assert res["corr"] < res["peak"] - 0.3


def test_still_mouth_scores_0_and_silent_audio_is_nan_with_the_reason():
    audio = _speech()
    n = len(audio) // HOP
    for still in (np.full(n, 0.08), 0.08 + STILL_STD / 10 * np.sin(np.arange(n))):  # constant, or sub-floor jitter
        res, note = audio_sync(still, audio)
        assert res["corr"] == 0.0 and res["peak"] == 0.0 and math.isnan(res["lag_s"])
        assert "still" in note and "scored 0" in note
    res, note = audio_sync(_opening_following(audio, 0), np.zeros_like(audio))
    assert all(math.isnan(v) for v in res.values()) and "silent" in note
    few = np.full(n, np.nan)
    few[:8] = np.linspace(0, 0.1, 8)  # 7 frame pairs with a face
    res, note = audio_sync(few, audio)
    assert math.isnan(res["corr"]) and "7 consecutive frame pairs" in note


def test_lag_0_is_unbiased_for_unrelated_speech_and_the_peak_is_not():
    """The figures in PROVENANCE: unrelated signals give ~0 at lag 0, but the maximum over ±0.5 s is > 0."""
    audios = [_speech(10.0, seed) for seed in range(12)]
    lips = [_opening_following(_speech(10.0, 100 + seed), 0) for seed in range(12)]
    zero, peak = [], []
    for i, lip in enumerate(lips):
        for j, audio in enumerate(audios):
            res, _ = audio_sync(lip, audio)
            zero.append(res["corr"])
            peak.append(res["peak"])
    zero, peak = np.array(zero), np.array(peak)
    assert abs(zero.mean()) < 0.02 and 0.03 < zero.std() < 0.12  # ~1/sqrt(249 pairs) = 0.063
    assert peak.mean() > 0.1 and (peak >= zero).all()


def test_lip_opening_is_normalised_by_the_eye_distance():
    opening = np.array([0.0, 0.05, np.nan, 0.1])
    near, far = _tracks(opening), _tracks(opening, iod=20.0, scale=0.3)
    np.testing.assert_allclose(lip_opening(near.lmk, near.found), opening)
    np.testing.assert_allclose(lip_opening(far.lmk, far.found), opening)
    lmk = near.lmk.copy()
    lmk[3, 263] = lmk[3, 33]  # no eye distance: no scale
    assert np.isnan(lip_opening(lmk)[[2, 3]]).all()
    assert np.isnan(lip_opening(near.lmk, np.array([True, False, True, True]))[1])
    mp3 = np.concatenate([near.lmk, np.ones((4, 478, 1))], -1)  # [N,478,3] as in tracks.npz: z is ignored
    np.testing.assert_allclose(lip_opening(mp3), lip_opening(near.lmk))


def test_lip_open_corr_cases():
    rng = np.random.default_rng(0)
    g = 0.05 + 0.03 * rng.uniform(size=60)
    value, note = open_corr(g, g)
    assert value == pytest.approx(1.0) and note is None
    assert open_corr(2 * g + 0.1, g)[0] == pytest.approx(1.0)
    assert open_corr(g[::-1], g)[0] < 0.5
    value, note = open_corr(np.full(60, 0.07), g)
    assert value == 0.0 and "render's lip opening is still" in note
    value, note = open_corr(g, np.full(60, 0.07))
    assert math.isnan(value) and "ground truth's lip opening is still" in note
    p = g.copy()
    p[5:] = np.nan
    value, note = open_corr(p, g)
    assert math.isnan(value) and "5 frames with a face in both" in note


def test_metrics_always_carry_every_column():
    audio = _speech(6.0)
    gt = _tracks(_opening_following(audio, 0))
    full = lipmotion_metrics(gt, gt, audio)
    assert set(full) == {*KEYS, "lipmotion_status"} and full["lipmotion_status"] == "ok"
    assert full["lip_open_corr"] == pytest.approx(1.0)
    assert full["lip_audio_corr"] == full["lip_audio_corr_gt"] > 0.99 and full["lip_audio_lag_s"] == 0.0
    dub = lipmotion_metrics(gt, None, audio)
    assert set(dub) == set(full) and dub["lip_audio_corr"] > 0.99
    assert all(math.isnan(dub[k]) for k in ("lip_open_corr", "lip_audio_corr_gt", "lip_audio_lag_s_gt"))
    assert "no ground truth" in dub["lipmotion_status"]
    silent = lipmotion_metrics(gt, gt, None, no_audio="audio not read: broken.wav")
    assert math.isnan(silent["lip_audio_corr"]) and silent["lip_open_corr"] == pytest.approx(1.0)
    assert "broken.wav" in silent["lipmotion_status"]
    assert set(unavailable("x")) == set(full) and unavailable("x")["lipmotion_status"] == "not computed: x"
    with pytest.raises(LipspaceError, match="differ in length"):
        lipmotion_metrics(gt, _tracks(np.zeros(10)), audio)
    assert set(KEYS) <= set(PROVENANCE) and all("MediaPipe" in PROVENANCE[k] for k in
                                                ("lip_open_corr", "lip_audio_corr"))


# ---------------------------------------------------------------------------------------- the Scorer's rows
def _brightness_tracks(frames, model_path=None, min_side=256, fps=25.0):
    """Stand-in for MediaPipe: the lip opening is each frame's mean brightness (frames of value 0: no face)."""
    level = np.asarray(frames, np.float64).mean((1, 2, 3))
    return _tracks(np.where(level > 0, level / 255.0, np.nan))


def test_scorer_rows_with_and_without_ground_truth_get_the_columns(monkeypatch, tmp_path):
    monkeypatch.setattr(F, "analyse_frames", _brightness_tracks)
    monkeypatch.setattr(F, "face_model_provenance", lambda model_path=None: "fake model")
    lead = 10  # the sequence's audio starts 10 frames (0.4 s) into the file
    audio = _speech(8.0, seed=3)
    opening = _opening_following(audio, 0)[lead:]
    frames = np.repeat((np.nan_to_num(opening, nan=0.05) * 255 * 8).astype(np.uint8)[:, None, None, None],
                       4, 1).repeat(4, 2).repeat(3, 3)
    wav = tmp_path / "audio.wav"
    sf.write(wav, audio, SR, subtype="FLOAT")
    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False))
    gt_row = scorer.sequence(frames, frames, None, wav, lead / FPS, fps=FPS, gt_key=("clip", 0))
    assert gt_row["lipmotion_status"] == "ok", gt_row
    assert gt_row["lip_open_corr"] == pytest.approx(1.0) and gt_row["lip_audio_corr"] > 0.9
    assert gt_row["lip_audio_corr_gt"] == gt_row["lip_audio_corr"]
    off = scorer.sequence(frames, frames, None, wav, 0.0, fps=FPS, gt_key=("clip", 0))  # audio 10 frames late
    assert off["lip_audio_corr"] < gt_row["lip_audio_corr"] - 0.5 and off["lip_audio_lag_s"] == pytest.approx(0.4)
    dub = scorer.sequence(frames, None, None, wav, lead / FPS, fps=FPS)
    assert set(KEYS) <= set(dub) and dub["lip_audio_corr"] == gt_row["lip_audio_corr"]
    assert math.isnan(dub["lip_open_corr"]) and "no ground truth" in dub["lipmotion_status"]
    bad = tmp_path / "not_audio.wav"
    bad.write_text("no")
    row = scorer.sequence(frames, frames, None, bad, 0.0, fps=FPS, gt_key=("clip", 0))
    assert math.isnan(row["lip_audio_corr"]) and "not_audio.wav" in row["lipmotion_status"]
    assert set(KEYS) <= set(scorer.provenance)
    off_face = Scorer(EvalSettings(lpips=False, face=False, lse=False, lse_local=False))
    row = off_face.sequence(frames, frames, None, wav, 0.0, fps=FPS)
    assert all(math.isnan(row[k]) for k in KEYS) and "evaluation.face=false" in row["lipmotion_status"]


# ---------------------------------------------------------------------------------------------- real clips
ASSETS = assets_dir()
MODEL = ASSETS / "models" / "face_landmarker.task" if ASSETS else None


def _real(name: str):
    from lipspace.audio.features import read_audio

    root = prepared_real_clip(name, 20, 128)
    tracks = np.load(root / "tracks.npz")
    return root, lip_opening(tracks["mp_landmarks"], tracks["valid"]), read_audio(root / "audio.wav")


def _late(audio: np.ndarray, frames: int) -> np.ndarray:
    """The audio ``frames`` frames late (positive) or early (negative), zero-padded."""
    k = frames * HOP
    return np.concatenate([np.zeros(k, audio.dtype), audio[:len(audio) - k]]) if k >= 0 else \
        np.concatenate([audio[-k:], np.zeros(-k, audio.dtype)])


@pytest.mark.parametrize("name", ["anchor", "obama"])
def test_real_clip_in_sync_beats_shifted_audio_and_a_still_frame(name):
    _, opening, audio = _real(name)
    res, note = audio_sync(opening, audio)
    assert note is None and res["corr"] > 0.15 and abs(res["lag_s"]) <= 1 / FPS
    for shift in (5, -5, 8, -12):
        shifted, _ = audio_sync(opening, _late(audio, shift))
        assert shifted["corr"] < res["corr"] - 0.12, (shift, shifted, res)
    still, note = audio_sync(np.full_like(opening, opening[0]), audio)
    assert still["corr"] == 0.0 and "still" in note
    assert open_corr(opening, opening)[0] == pytest.approx(1.0)
    for shift in (5, 10):
        assert open_corr(opening[shift:], opening[:-shift])[0] < 0.4


def test_real_obama_source_offset_is_found_without_the_correction():
    from lipspace.prep.io import extract_audio_16k
    from tests.conftest import REAL_CLIPS

    _, opening, corrected = _real("obama")
    raw = extract_audio_16k(ASSETS / "video" / REAL_CLIPS["obama"][0], len(opening), FPS, video_start_s=0.0)
    res, _ = audio_sync(opening, raw)
    assert 0.16 <= res["lag_s"] <= 0.28  # ~0.21 s late in the source
    assert res["corr"] < audio_sync(opening, corrected)[0]["corr"] - 0.1


def test_real_frames_through_the_scorer():
    """The evaluation path on real 128² frames: MediaPipe once per sequence, the columns from its landmarks."""
    import cv2

    root, _, _ = _real("anchor")
    files = sorted((root / "frames").glob("*.png"))[:250]  # 10 s
    frames = np.stack([cv2.imread(str(f))[:, :, ::-1] for f in files])
    scorer = Scorer(EvalSettings(lpips=False, lse=False, lse_local=False, face_model=str(MODEL)))
    key = (str(root), "first 10 s")
    sync = scorer.sequence(frames, frames, None, root / "audio.wav", 0.0, fps=FPS, gt_key=key)
    assert sync["lipmotion_status"] == "ok", sync
    assert sync["lip_open_corr"] == pytest.approx(1.0, abs=1e-6)
    assert sync["lip_audio_corr"] == pytest.approx(sync["lip_audio_corr_gt"]) and sync["lip_audio_corr"] > 0.12
    late = scorer.sequence(frames, frames, None, root / "audio.wav", 8 / FPS, fps=FPS, gt_key=key)  # 8 frames off
    assert late["lip_audio_corr"] < sync["lip_audio_corr"] - 0.1
    still = scorer.sequence(np.repeat(frames[:1], len(frames), 0), frames, None, root / "audio.wav", 0.0, fps=FPS,
                            gt_key=key)
    # MediaPipe's landmarks on a repeated frame settle within 0.005 % of the eye distance: below STILL_STD, so 0
    assert still["lip_audio_corr"] == 0.0 and still["lip_open_corr"] == 0.0, still
    assert "render's lip opening is still" in still["lipmotion_status"]
    assert sync["lip_audio_corr_gt"] == still["lip_audio_corr_gt"]  # the ground truth was analysed once
