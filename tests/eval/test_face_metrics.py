"""Face metrics (LMD, AUE, blink rate) on hand-made tracks with known answers, plus MediaPipe on a real clip."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from lipspace.data.schema import MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError
from lipspace.eval.face_metrics import (LIP_INDICES, PROVENANCE, FaceTracks, analyse_frames, aue, blink_rate,
                                        face_metrics, face_model_provenance, lip_indices, lmd, metrics_from_tracks)
from tests.conftest import assets_dir

ASSETS = assets_dir()
MODEL = ASSETS / "models" / "face_landmarker.task" if ASSETS else None
CLIP = ASSETS / "video" / "obama_en_25fps_20s.mp4" if ASSETS else None
needs_assets = pytest.mark.skipif(ASSETS is None or not MODEL.is_file() or not CLIP.is_file(),
                                  reason="shared assets (face_landmarker.task, obama clip) not present")
NAMES = list(MP_BLENDSHAPE_NAMES)
BS = {n: k for k, n in enumerate(NAMES)}


def _tracks(t: int = 10, seed: int = 0) -> FaceTracks:
    rng = np.random.default_rng(seed)
    lmk = rng.uniform(50, 150, (t, 478, 2))
    lmk[:, 33] = (100.0, 80.0)
    lmk[:, 263] = (150.0, 80.0)  # inter-ocular distance 50 px
    blend = rng.uniform(0, 0.3, (t, 52))
    return FaceTracks(lmk=lmk, blend=blend, found=np.ones(t, bool), names=list(NAMES))


def _copy(tr: FaceTracks) -> FaceTracks:
    return FaceTracks(tr.lmk.copy(), tr.blend.copy(), tr.found.copy(), list(tr.names))


def _drop(tr: FaceTracks, i: int) -> None:
    tr.lmk[i], tr.blend[i], tr.found[i] = np.nan, np.nan, False


def test_lip_indices_are_mediapipes_40_lip_points():
    assert len(LIP_INDICES) == 40 and lip_indices() == LIP_INDICES


def test_lmd_of_lip_points_shifted_by_3_4_is_5_px():
    gt = _tracks()
    pred = _copy(gt)
    pred.lmk[:, list(LIP_INDICES)] += (3.0, 4.0)
    pred.lmk[:, 1] += 40.0  # nose tip: not a lip point, must not count
    out = lmd(pred, gt)
    assert out["lmd"] == pytest.approx(5.0)
    assert out["lmd_norm"] == pytest.approx(10.0)  # 5 px of a 50 px eye distance
    assert out["lmd_frames"] == 10
    assert lmd(gt, gt)["lmd"] == 0.0


def test_lmd_ignores_frames_missing_in_either_and_normalises_per_frame():
    gt = _tracks()
    pred = _copy(gt)
    pred.lmk[:, list(LIP_INDICES)] += (3.0, 0.0)
    pred.lmk[4, list(LIP_INDICES)] += 500.0  # wild, but the ground truth has no face there
    _drop(gt, 4)
    _drop(pred, 7)
    gt.lmk[2, 263] = (125.0, 80.0)  # eye distance 25 px in frame 2 only
    out = lmd(pred, gt)
    assert out["lmd"] == pytest.approx(3.0) and out["lmd_frames"] == 8
    assert out["lmd_norm"] == pytest.approx((7 * 6.0 + 12.0) / 8)


def test_all_missing_gives_nan_and_a_status():
    gt, pred = _tracks(), _tracks(seed=1)
    pred.found[:] = False
    pred.lmk[:] = pred.blend[:] = np.nan
    out = metrics_from_tracks(pred, gt, fps=25)
    assert out["lmd_frames"] == 0 and math.isnan(out["lmd"]) and math.isnan(out["lmd_norm"])
    assert math.isnan(out["aue_upper"]) and math.isnan(out["aue_lower"]) and math.isnan(out["blink_rate"])
    assert out["face_found"] == 0.0 and out["face_found_gt"] == 1.0
    assert "no frame has a face in both" in out["face_status"] and "render 0/10" in out["face_status"]
    solo = metrics_from_tracks(pred, None, fps=25)
    assert set(solo) == {"face_found", "blink_rate", "face_status"} and "no face" in solo["face_status"]
    with pytest.raises(LipspaceError, match="same number of frames"):
        lmd(_tracks(t=9), gt)


def test_aue_groups_upper_and_lower_blendshapes():
    gt = _tracks()
    pred = _copy(gt)
    upper = [k for n, k in BS.items() if n.startswith(("brow", "eyeBlink", "eyeSquint", "eyeWide"))]
    lower = [k for n, k in BS.items() if n.startswith(("jaw", "mouth", "cheek", "nose"))]
    assert len(upper) == 11 and len(lower) == 32
    pred.blend[:, upper] += 0.1
    pred.blend[:, lower] -= 0.2
    pred.blend[:, [BS["_neutral"], BS["eyeLookInLeft"], BS["eyeLookUpRight"]]] += 0.9  # in neither group
    _drop(pred, 3)
    out = aue(pred, gt)
    assert out == pytest.approx({"aue_upper": 0.1, "aue_lower": 0.2})
    assert aue(gt, gt) == {"aue_upper": 0.0, "aue_lower": 0.0}


def test_blink_rate_counts_events_and_bridges_missing_frames():
    t = 100  # 4 s at 25 fps
    tr = _tracks(t=t)
    blink = np.full(t, 0.12)
    for s in (10, 40, 70):
        blink[s:s + 5] = 0.6
    blink[42] = 0.3  # a dip that stays above the 0.25 release: still one blink
    tr.blend[:, BS["eyeBlinkLeft"]] = blink
    tr.blend[:, BS["eyeBlinkRight"]] = blink
    assert blink_rate(tr, fps=25) == pytest.approx(3 / 4)
    _drop(tr, 72)  # no face in the middle of the third blink: interpolated, not split
    assert blink_rate(tr, fps=25) == pytest.approx(3 / 4)
    assert blink_rate(tr, fps=50) == pytest.approx(3 / 2)
    tr.blend[:, BS["eyeBlinkLeft"]] = 0.12  # one eye only: mean 0.36 never reaches 0.4
    assert blink_rate(tr, fps=25) == 0.0
    tr.found[:] = False
    assert math.isnan(blink_rate(tr, fps=25))


def test_missing_model_path_is_a_one_line_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "face_landmarker.task"
    frames = np.zeros((2, 64, 64, 3), np.uint8)
    with pytest.raises(LipspaceError, match="face landmarker model not found") as e:
        analyse_frames(frames, model_path=missing)
    assert str(missing) in str(e.value) and "\n" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__context__ is None  # no chained traceback
    with pytest.raises(LipspaceError, match=str(missing)):
        face_metrics(frames, frames, model_path=missing)
    with pytest.raises(LipspaceError, match="uint8 RGB"):
        analyse_frames(frames.astype(np.float32), model_path=missing)


def test_provenance_names_every_metric():
    assert {"lmd", "lmd_norm", "blink_rate", "blink_rate_gt", "aue_upper", "aue_lower", "face_found"} <= set(
        PROVENANCE)
    assert "OpenFace" in PROVENANCE["aue_upper"] and "33 and 263" in PROVENANCE["lmd_norm"]


@pytest.fixture(scope="module")
def clip_frames() -> np.ndarray:
    from lipspace.prep.io import decode_video_25fps

    return decode_video_25fps(CLIP, max_seconds=3.2)[0]  # 80 frames; a blink at ~2.7 s


@needs_assets
def test_provenance_of_the_shared_model(monkeypatch):
    import mediapipe

    s = face_model_provenance(MODEL)
    assert s.endswith("(official float16/1)")
    assert s.startswith(f"MediaPipe FaceLandmarker {mediapipe.__version__}, face_landmarker.task sha256 64184e229b26")
    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))  # model_path=None: resolved like every other asset
    assert face_model_provenance() == s


@needs_assets
def test_upsampled_small_frames_map_landmarks_back(clip_frames):
    frame = clip_frames[:1]  # 450 x 450
    full = analyse_frames(frame, MODEL)
    assert full.found.all()
    for side, tol in ((128, 1.0), (64, 1.0)):
        small = cv2.resize(frame[0], (side, side), interpolation=cv2.INTER_AREA)[None]
        tr = analyse_frames(small, MODEL)
        assert tr.found.all(), f"no face at {side}^2 after upsampling"
        err = np.linalg.norm(tr.lmk[0] - full.lmk[0] * side / 450, axis=-1).mean()
        assert err < tol, f"{side}^2: landmarks {err:.2f} px off the full-resolution ones"
    # Non-square input: both axes map back with their own size.
    rect = np.ascontiguousarray(cv2.resize(frame[0, 50:400], (160, 124), interpolation=cv2.INTER_AREA)[None])
    tr = analyse_frames(rect, MODEL)
    ref = (full.lmk[0] - (0, 50)) * (160 / 450, 124 / 350)
    assert tr.found.all() and np.linalg.norm(tr.lmk[0] - ref, axis=-1).mean() < 1.5


@needs_assets
def test_real_clip_metrics(clip_frames):
    frames = clip_frames
    gt = analyse_frames(frames, MODEL)
    assert gt.lmk.shape == (len(frames), 478, 2) and gt.blend.shape == (len(frames), 52) and gt.names == NAMES
    assert gt.found.mean() >= 0.95
    assert np.nanmax(gt.lmk) <= 450 + 5 and np.nanmin(gt.blend) >= 0
    assert lmd(gt, gt)["lmd"] == 0.0
    shifted = FaceTracks(gt.lmk[2:], gt.blend[2:], gt.found[2:], gt.names)
    head = FaceTracks(gt.lmk[:-2], gt.blend[:-2], gt.found[:-2], gt.names)
    assert lmd(shifted, head)["lmd"] > 0
    rate = blink_rate(gt, fps=25)
    assert 0 < rate <= 2

    out = face_metrics(frames[2:], frames[:-2], fps=25, model_path=MODEL)
    assert out["lmd"] > 0 and 0 < out["lmd_norm"] < 20 and out["lmd_frames"] >= 0.95 * (len(frames) - 2)
    assert out["aue_upper"] >= 0 and out["aue_lower"] > 0 and out["face_status"].startswith("ok")
    assert 0 <= out["blink_rate"] <= 2 and 0 <= out["blink_rate_gt"] <= 2
    solo = face_metrics(frames, None, fps=25, model_path=MODEL)
    assert solo["face_found"] >= 0.95 and solo["blink_rate"] == pytest.approx(rate)


@needs_assets
def test_blank_frames_give_nan_not_an_error():
    blank = np.full((4, 64, 64, 3), 128, np.uint8)
    out = face_metrics(blank, blank, model_path=MODEL)
    assert out["face_found"] == 0.0 and out["lmd_frames"] == 0 and math.isnan(out["lmd"])
    assert "no frame has a face in both" in out["face_status"]
