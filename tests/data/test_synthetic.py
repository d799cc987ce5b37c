"""The synthetic talking head: deterministic, schema-valid, physically consistent (mouth <-> sound), cached."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf

from lipspace.data.schema import ICT_EXPR_NAMES, MP_BLENDSHAPE_NAMES, validate_dataset
from lipspace.data.synthetic import GENERATOR_VERSION, generate_synthetic
from lipspace.utils.errors import LipspaceError


def load(root: Path) -> dict:
    meta = json.loads((root / "meta.json").read_text())
    n = meta["n_frames"]
    frames = np.stack([cv2.imread(str(root / "frames" / f"{i:06d}.png"))[:, :, ::-1] for i in range(n)])
    parsing = np.stack([cv2.imread(str(root / "parsing" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED) for i in range(n)])
    audio, sr = sf.read(str(root / "audio.wav"), dtype="float32")
    bg = cv2.imread(str(root / "background.png"))[:, :, ::-1]
    return {"meta": meta, "frames": frames, "parsing": parsing, "audio": audio, "sr": sr, "bg": bg,
            "tracks": dict(np.load(root / "tracks.npz"))}


def expr(d: dict, name: str) -> np.ndarray:
    return d["tracks"]["expr"][:, ICT_EXPR_NAMES.index(name)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    # 4 s guarantees at least one blink (the first starts before 3 s); 64^2 keeps it around a second.
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "ds", seconds=4.0, resolution=64, seed=0,
                              heldout_utterances=2, heldout_seconds=1.0)


@pytest.fixture(scope="module")
def data(synth) -> dict:
    return load(synth)


def test_schema_valid_main_and_heldout(synth, data):
    meta = validate_dataset(synth)
    assert meta["kind"] == "synthetic" and meta["n_frames"] == 100 and meta["width"] == meta["height"] == 64
    assert meta["heldout"] == ["utt_00", "utt_01"]
    assert meta["source"]["generator"] == "lipspace.data.synthetic"
    assert meta["source"]["version"] == GENERATOR_VERSION and meta["stages"] == {"synthetic": GENERATOR_VERSION}
    for name in meta["heldout"]:
        sub = validate_dataset(synth / "heldout" / name)
        assert sub["kind"] == "synthetic_heldout" and sub["n_frames"] == 25 and sub["bounds"] == meta["bounds"]
        held = load(synth / "heldout" / name)
        n = min(len(held["audio"]), len(data["audio"]))
        assert not np.allclose(held["audio"][:n], data["audio"][:n], atol=1e-3)
        assert np.array_equal(held["bg"], data["bg"])  # same scene
        assert np.array_equal(held["tracks"]["identity"], data["tracks"]["identity"])  # same head
    a0, a1 = (load(synth / "heldout" / k)["audio"] for k in meta["heldout"])
    assert not np.allclose(a0, a1, atol=1e-3)
    assert len(data["audio"]) == 4 * 16000 and data["sr"] == 16000


def test_tracks_consistent(data):
    t = data["tracks"]
    assert list(t["expr_names"]) == list(ICT_EXPR_NAMES) and t["valid"].all()
    bs_jaw = t["blendshapes"][:, MP_BLENDSHAPE_NAMES.index("jawOpen")]
    assert np.array_equal(bs_jaw, expr(data, "jawOpen")) and expr(data, "jawOpen").max() > 0.3
    assert np.array_equal(expr(data, "eyeBlink_L"), t["blink"]) and 0 <= t["blink"].min() and t["blink"].max() <= 1
    r = t["pose"][:, :3, :3]
    assert np.allclose(r @ np.transpose(r, (0, 2, 1)), np.eye(3), atol=1e-5)
    assert (t["lmk68"] > 0).all() and (t["lmk68"] < 64).all()
    # The inner-lip centre landmark lands on lips / mouth interior pixels: landmarks agree with the rendering.
    c = np.round(t["lmk68"][:, 60:68].mean(1) - 0.5).astype(int)
    cls = data["parsing"][np.arange(len(c)), c[:, 1], c[:, 0]]
    assert np.isin(cls, (3, 4)).mean() > 0.9


def test_determinism(tmp_path, data):
    kw = dict(seconds=0.6, resolution=40, heldout_utterances=1, heldout_seconds=0.4)
    a = load(generate_synthetic(tmp_path / "a", seed=3, **kw))
    b = load(generate_synthetic(tmp_path / "b", seed=3, **kw))
    c = load(generate_synthetic(tmp_path / "c", seed=4, **kw))
    for key in ("frames", "parsing", "audio", "bg"):
        assert np.array_equal(a[key], b[key]), key
    for key in a["tracks"]:
        assert np.array_equal(a["tracks"][key], b["tracks"][key]), key
    assert not np.array_equal(a["frames"], c["frames"]) and not np.allclose(a["audio"], c["audio"], atol=1e-3)
    assert not np.array_equal(a["tracks"]["identity"], c["tracks"]["identity"])


def test_mouth_interior_follows_jaw(data):
    interior = (data["parsing"] == 4).sum((1, 2))
    jaw = expr(data, "jawOpen")
    assert np.corrcoef(interior, jaw)[0, 1] > 0.8
    assert interior[jaw < 0.02].max() == 0  # silence: mouth shut


def test_inner_lip_gap_grows_with_jaw(data):
    lmk = data["tracks"]["lmk68"]
    gap = lmk[:, 66, 1] - lmk[:, 62, 1]
    jaw = expr(data, "jawOpen")
    assert np.corrcoef(gap, jaw)[0, 1] > 0.8
    assert np.abs(gap[jaw < 0.02]).max() < 0.05 and gap[jaw > 0.5].min() > 1.0


def test_blink_closes_eyes(data):
    eyes = (data["parsing"] == 5).sum((1, 2))
    blink = data["tracks"]["blink"]
    assert (blink > 0.7).any() and (blink < 0.05).any()
    assert eyes[blink > 0.7].mean() < 0.5 * eyes[blink < 0.05].mean()
    lmk = data["tracks"]["lmk68"]  # eyelid landmarks close too (upper 37/38 onto lower 41/40)
    lid = (lmk[:, 41, 1] - lmk[:, 37, 1] + lmk[:, 40, 1] - lmk[:, 38, 1]) / 2
    assert lid[blink > 0.7].mean() < 0.4 * lid[blink < 0.05].mean()


def test_audio_silent_when_mouth_closed(data):
    a, jaw = data["audio"], expr(data, "jawOpen")
    rms = np.sqrt((a[: len(jaw) * 640].reshape(len(jaw), 640) ** 2).mean(1))  # one frame of audio each
    assert (jaw < 0.02).sum() >= 3 and (jaw > 0.5).sum() >= 3
    assert rms[jaw < 0.02].mean() < 0.05 * rms[jaw > 0.5].mean()


def test_background_matches_frames(data):
    bgmask = data["parsing"] == 0
    assert bgmask.any(1).any(1).all()
    frames, bg = data["frames"], np.broadcast_to(data["bg"], data["frames"].shape)
    assert np.array_equal(frames[bgmask], bg[bgmask])
    present = set(np.unique(data["parsing"]).tolist())
    assert {0, 1, 2, 3, 4, 5, 6, 7, 8, 9} <= present


def test_cache_reuse_and_regenerate(tmp_path):
    kw = dict(seconds=0.4, resolution=32, heldout_utterances=1, heldout_seconds=0.2)
    out = generate_synthetic(tmp_path / "ds", seed=0, **kw)
    stamp = [(out / p).stat().st_mtime_ns for p in ("meta.json", "frames/000000.png", "heldout/utt_00/meta.json")]
    assert generate_synthetic(tmp_path / "ds", seed=0, **kw) == out
    assert [(out / p).stat().st_mtime_ns for p in ("meta.json", "frames/000000.png",
                                                   "heldout/utt_00/meta.json")] == stamp
    generate_synthetic(tmp_path / "ds", seed=1, **kw)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["source"]["seed"] == 1 and (out / "meta.json").stat().st_mtime_ns != stamp[0]
    generate_synthetic(tmp_path / "ds", seed=1, overwrite=True, **kw)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ds"]  # no temp or old directories left behind


def test_refuses_foreign_directory_and_bad_args(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(LipspaceError, match="not a synthetic"):
        generate_synthetic(tmp_path / "x", seconds=0.4, resolution=32)
    with pytest.raises(LipspaceError, match="resolution"):
        generate_synthetic(tmp_path / "y", seconds=1.0, resolution=8)
