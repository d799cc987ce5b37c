"""The whole preprocessing pipeline: real clip -> schema-valid dataset, stage caching / resume, bad input."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.prep.options import PrepOptions
from lipspace.prep.pipeline import STAGES, Preprocessor, prepare
from tests.conftest import assets_dir
from tests.prep.videos import write_video

ASSETS = assets_dir()
MAY = ASSETS / "video" / "may_en_25fps_5s.mp4" if ASSETS else None
needs_assets = pytest.mark.skipif(
    ASSETS is None or not (ASSETS / "models" / "face_landmarker.task").is_file(),
    reason="shared assets not present (set LIPSPACE_ASSETS to the folder with video/ and models/)")


@pytest.fixture(autouse=True)
def _assets_env(monkeypatch):
    if ASSETS is not None:
        monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))


@pytest.fixture(scope="module")
def may_frames() -> np.ndarray:
    if MAY is None or not MAY.is_file():
        pytest.skip("shared assets not present")
    from lipspace.prep.io import decode_video_25fps

    return decode_video_25fps(MAY, max_seconds=2.0)[0]


FAST = dict(size=128, overlays=2, progress=False)


# ------------------------------------------------------------------------------------------ real clip end to end
@pytest.fixture(scope="module")
def may_dataset(tmp_path_factory):
    if MAY is None or not MAY.is_file():
        pytest.skip("shared assets not present")
    with pytest.MonkeyPatch.context() as mp:  # module scope: the autouse per-test fixture has not run yet
        mp.setenv("LIPSPACE_ASSETS", str(ASSETS))
        out = tmp_path_factory.mktemp("prep") / "may"
        res = prepare(MAY, out, PrepOptions(size=256, max_seconds=3.0, overlays=3, progress=False))
    return out, res


@needs_assets
def test_real_clip_gives_a_valid_trainable_dataset(may_dataset):
    from lipspace.data.clip import load_clip
    from lipspace.data.schema import ICT_EXPR_NAMES, validate_dataset

    out, res = may_dataset
    meta = validate_dataset(out)
    assert meta["kind"] == "video" and meta["n_frames"] == 75 and meta["width"] == 256
    clip = load_clip(out)
    t = clip.tracks
    assert t["expr"].shape == (75, 53) and tuple(t["expr_names"]) == ICT_EXPR_NAMES
    assert t["valid"].all() and t["mp_landmarks"].shape == (75, 478, 3)
    # the 68 points sit on the face: mouth points inside the lips/mouth classes' bounding box region
    lips = np.isin(clip.parsing[0], (3, 4))
    ys, xs = np.nonzero(lips)
    m = t["lmk68"][0, 48:68]
    assert xs.min() - 4 <= m[:, 0].min() and m[:, 0].max() <= xs.max() + 4
    # the head is in front of the camera and roughly frontal; the reprojection error is small
    assert (t["pose"][:, 2, 3] > 0).all()
    assert np.median(t["reproj_px"]) < 4.0
    # every class a talking-head frame shows (mouth interior may be closed)
    present = set(np.unique(clip.parsing[::10]).tolist())
    assert {0, 1, 2, 3, 5, 6, 7, 8, 9} <= present, present
    assert meta["head_bounds"]["radius"] < meta["bounds"]["radius"]
    # face points: the fitted model's vertices in head space, inside the head sphere, landing on the face
    from lipspace.prep.camera import project
    from lipspace.prep.facemodel import FACE_POINTS

    fp = t["face_points"].astype(np.float64)
    assert fp.shape == (75, FACE_POINTS, 3) and t["face_points"].dtype == np.float32
    assert tuple(clip.face_points.shape) == fp.shape
    c, r = clip.sphere("head_bounds")
    assert np.linalg.norm(fp - c.numpy(), axis=-1).max() < r
    uv = project(np.einsum("nij,npj->npi", t["pose"][:, :3, :3], fp) + t["pose"][:, None, :3, 3], t["intrinsics"])
    assert np.linalg.norm(uv[:, 17:68] - t["lmk68"][:, 17:], axis=-1).mean() < 2.0  # px; rows 0..67 = iBUG-68
    motion = np.linalg.norm(np.diff(fp, axis=0), axis=-1).mean(0)  # per point, frame to frame
    mouth = np.linalg.norm(fp.mean(0) - fp.mean(0)[48:68].mean(0), axis=-1) < 0.25
    forehead = fp.mean(0)[:, 1] < fp.mean(0)[17:27, 1].mean() - 0.15
    assert motion[mouth].mean() > 3 * motion[forehead].mean()
    # overlays are there for a person to look at
    overlays = sorted((out / "debug").glob("overlay_*.png"))
    assert len(overlays) == 3
    assert set(res.seconds) == set(STAGES) - {"stabilize"} and not res.cached  # stabilize=none: not chained


@needs_assets
def test_rerun_is_cached_and_a_lost_stage_is_redone(may_dataset, caplog):
    out, _ = may_dataset
    again = prepare(MAY, out, PrepOptions(size=256, max_seconds=3.0, overlays=3, progress=False))
    assert again.cached == [s for s in STAGES if s != "stabilize"]
    # a kill during parsing leaves no parsing marker: parsing and everything after it is redone, nothing before
    (out / ".prep" / "parsing.json").unlink()
    meta_before = json.loads((out / "meta.json").read_text())
    res = prepare(MAY, out, PrepOptions(size=256, max_seconds=3.0, overlays=3, progress=False))
    assert res.cached == ["decode", "track", "crop", "head"]
    assert json.loads((out / "meta.json").read_text())["bounds"] == meta_before["bounds"]
    # a changed parameter redoes its stage and the ones after it
    res = prepare(MAY, out, PrepOptions(size=256, max_seconds=3.0, overlays=1, progress=False))
    assert res.cached == ["decode", "track", "crop", "head", "parsing", "background"]
    assert len(list((out / "debug").glob("overlay_*.png"))) == 1


@needs_assets
def test_thirty_fps_clip_is_resampled(tmp_path):
    macron = ASSETS / "video" / "macron_fr_30fps_50s.mp4"
    res = prepare(macron, tmp_path / "m", PrepOptions(max_seconds=2.0, **FAST))
    meta = json.loads((tmp_path / "m" / "meta.json").read_text())
    assert meta["n_frames"] == 50 and abs(meta["source"]["fps"] - 30) < 0.1
    assert res.summary["decode"]["n_frames"] == 50


# ------------------------------------------------------------------------------------------ bad input
def test_no_audio_fails_before_any_work(tmp_path):
    frames = np.full((30, 64, 64, 3), 128, np.uint8)
    video = write_video(tmp_path / "silent.mp4", frames)
    with pytest.raises(LipspaceError, match=r"silent\.mp4: has no audio track.*ffmpeg"):
        prepare(video, tmp_path / "out", PrepOptions(**FAST))
    assert not (tmp_path / "out" / "frames").exists()


def test_corrupted_and_short_and_missing_files(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x01not a video" * 100)
    with pytest.raises(LipspaceError, match=r"junk\.mp4: not a readable video"):
        prepare(junk, tmp_path / "a", PrepOptions(**FAST))
    short = write_video(tmp_path / "short.mp4", np.full((12, 64, 64, 3), 90, np.uint8), audio_s=0.5)
    with pytest.raises(LipspaceError, match=r"short\.mp4: the clip is 0\.48 s long"):
        prepare(short, tmp_path / "b", PrepOptions(**FAST))
    with pytest.raises(LipspaceError, match=r"nothere\.mp4: no such file"):
        prepare(tmp_path / "nothere.mp4", tmp_path / "c", PrepOptions(**FAST))


def test_foreign_output_dir_is_not_touched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("important")
    video = write_video(tmp_path / "v.mp4", np.full((30, 64, 64, 3), 128, np.uint8), audio_s=1.2)
    with pytest.raises(LipspaceError, match="not written by lipspace-prep"):
        prepare(video, out, PrepOptions(**FAST))
    assert (out / "thesis.tex").read_text() == "important" and len(list(out.iterdir())) == 1


def test_bad_options_are_one_line_errors(tmp_path):
    with pytest.raises(LipspaceError, match="size=63: choose an even frame size"):
        Preprocessor("x.mp4", tmp_path, PrepOptions(size=63))
    with pytest.raises(LipspaceError, match="face_model_kind"):
        Preprocessor("x.mp4", tmp_path, PrepOptions(face_model_kind="flame"))
    with pytest.raises(LipspaceError, match="BFM_model_front.mat"):
        Preprocessor("x.mp4", tmp_path, PrepOptions(face_model_kind="bfm"))._face_model_path()


@needs_assets
def test_no_face_at_all(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (30, 96, 96, 3), dtype=np.uint8)
    video = write_video(tmp_path / "wall.mp4", frames, audio_s=1.2)
    with pytest.raises(LipspaceError, match=r"wall\.mp4: no face found in any of the 30 frames"):
        prepare(video, tmp_path / "o", PrepOptions(**FAST))


@needs_assets
def test_two_faces_takes_the_largest_and_warns(tmp_path, may_frames, caplog):
    import cv2

    big = may_frames[:30]
    small = np.stack([cv2.resize(f, (f.shape[1] // 2, f.shape[0] // 2)) for f in big])
    canvas = np.zeros((30, big.shape[1], big.shape[2] + small.shape[2], 3), np.uint8)
    canvas[:, :, : big.shape[2]] = big
    canvas[:, : small.shape[1], big.shape[2]:] = small
    video = write_video(tmp_path / "two.mp4", canvas, audio_s=1.2)
    with caplog.at_level(logging.WARNING):
        res = prepare(video, tmp_path / "o", PrepOptions(**FAST))
    assert "more than one face" in caplog.text and "largest" in caplog.text
    box = res.summary["crop"]["box"]
    assert box["x0"] + box["side"] <= big.shape[2] + 8  # the crop is on the big (left) face


@pytest.mark.slow
@needs_assets
def test_grayscale_4k_and_variable_rate_sources(tmp_path, may_frames, caplog):
    import cv2

    gray = write_video(tmp_path / "gray.mp4", may_frames[:30], audio_s=1.2, gray=True)
    prepare(gray, tmp_path / "g", PrepOptions(**FAST))
    f = cv2.imread(str(tmp_path / "g" / "frames" / "000000.png"))
    assert np.abs(f[..., 0].astype(int) - f[..., 2]).max() <= 2  # gray stays gray, stored as RGB

    uhd = np.stack([cv2.resize(f, (3840, 2160)) for f in may_frames[:30]])
    big = write_video(tmp_path / "uhd.mp4", uhd, audio_s=1.2)
    del uhd
    res = prepare(big, tmp_path / "u", PrepOptions(**FAST))
    assert res.summary["decode"]["source_hw"] == [720, 1280]  # decoded at max_side 1280

    # variable frame rate: 30 frames at irregular times over 1.4 s -> 35 frames at 25 fps, by timestamp
    pts = np.cumsum([0] + [40 if i % 3 else 60 for i in range(29)]).tolist()
    vfr = write_video(tmp_path / "vfr.mp4", may_frames[:30], audio_s=1.4, pts=pts)
    res = prepare(vfr, tmp_path / "v", PrepOptions(**FAST))
    assert res.n_frames == int((pts[-1] + 40) / 40)


@needs_assets
def test_audio_longer_than_video_is_trimmed(tmp_path, may_frames, caplog):
    import soundfile as sf

    video = write_video(tmp_path / "long_audio.mp4", may_frames[:30], audio_s=3.0)
    with caplog.at_level(logging.WARNING):
        prepare(video, tmp_path / "o", PrepOptions(**FAST))
    assert "longer than the video" in caplog.text
    audio, sr = sf.read(tmp_path / "o" / "audio.wav")
    assert sr == 16000 and len(audio) == 30 * 640


# ------------------------------------------------------------------------------------------ CLI
def test_cli_usage_and_unknown_option(tmp_path):
    exe = [sys.executable, "-m", "lipspace.cli.prep"]
    r = subprocess.run(exe + ["--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "lipspace-prep VIDEO OUT_DIR" in r.stdout and "hair_stride=2" in r.stdout
    r = subprocess.run(exe + ["a.mp4", str(tmp_path), "sise=256"], capture_output=True, text=True)
    assert r.returncode == 2 and "unknown option 'sise'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(exe + [str(tmp_path / "none.mp4"), str(tmp_path / "o")], capture_output=True, text=True)
    assert r.returncode == 2 and "none.mp4: no such file" in r.stderr and "Traceback" not in r.stderr


@needs_assets
def test_frames_without_a_face_are_reported_and_marked_invalid(tmp_path, may_frames, caplog):
    frames = may_frames[:40].copy()
    frames[15:20] = 30  # 0.2 s of black frames in the middle (a cut, a hand over the face)
    video = write_video(tmp_path / "gap.mp4", frames, audio_s=1.6)
    with caplog.at_level(logging.WARNING):
        res = prepare(video, tmp_path / "o", PrepOptions(**FAST))
    assert "no face in 5 of 40 frames" in caplog.text and "0.60-0.80s" in caplog.text
    t = np.load(tmp_path / "o" / "tracks.npz")
    assert t["valid"].tolist() == [True] * 15 + [False] * 5 + [True] * 20
    assert np.isfinite(t["pose"]).all() and np.isfinite(t["expr"]).all()  # filled by interpolation
    assert [list(r) for r in res.summary["track"]["invalid_ranges_s"]] == [[0.6, 0.8]]
    # too many such frames is a clear error naming the file and the fix
    with pytest.raises(LipspaceError, match=r"gap\.mp4: no face in 12\.5% of the frames .*max_invalid_fraction"):
        prepare(video, tmp_path / "o2", PrepOptions(max_invalid_fraction=0.1, **FAST))


def test_cli_values_are_parsed_by_the_option_types():
    from lipspace.cli.prep import parse_args

    _, _, o = parse_args(["a.mp4", "out", "size=256", "max_seconds=3", "progress=false", "face_model=none",
                          "audio_offset_s=0.2"])
    assert (o.size, o.max_seconds, o.progress, o.face_model, o.audio_offset_s) == (256, 3.0, False, None, 0.2)
    with pytest.raises(LipspaceError, match="size='abc' is not a valid int"):
        parse_args(["a.mp4", "out", "size=abc"])
