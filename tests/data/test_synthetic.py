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


# --- torso_follow: a torso that follows the head's yaw / pitch, late (exact ground truth for torso models) ---

def _tree(root: Path) -> dict:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_torso_follow_zero_is_the_default(tmp_path):
    kw = dict(seconds=0.4, resolution=32, seed=2, heldout_utterances=1, heldout_seconds=0.2)
    a = generate_synthetic(tmp_path / "a", **kw)
    b = generate_synthetic(tmp_path / "b", torso_follow=0.0, torso_lag_s=0.7, **kw)
    assert _tree(a) == _tree(b)  # byte-identical: same frames, tracks (no torso_pose) and meta (same cache key)
    assert "torso_pose" not in np.load(a / "tracks.npz") and "torso_follow" not in load(a)["meta"]["source"]


@pytest.fixture(scope="module")
def moving(tmp_path_factory) -> Path:
    # The main clip of `synth` (same seed, length, size: same head poses) with the torso following the head fully.
    return generate_synthetic(tmp_path_factory.mktemp("synth_torso") / "ds", seconds=4.0, resolution=64, seed=0,
                              heldout_utterances=1, heldout_seconds=1.0, torso_follow=1.0, torso_lag_s=0.2)


@pytest.fixture(scope="module")
def mdata(moving) -> dict:
    return load(moving)


def test_moving_torso_dataset_valid(moving, mdata, data):
    meta = validate_dataset(moving)
    assert meta["source"]["torso_follow"] == 1.0 and meta["source"]["torso_lag_s"] == 0.2
    t = mdata["tracks"]
    for tracks in (t, load(moving / "heldout" / "utt_00")["tracks"]):
        r = tracks["torso_pose"][:, :3, :3]
        assert tracks["torso_pose"].shape == (len(tracks["pose"]), 4, 4) and tracks["torso_pose"].dtype == np.float32
        assert np.allclose(r @ np.transpose(r, (0, 2, 1)), np.eye(3), atol=1e-5)
    for key in data["tracks"]:  # only the torso differs from the static-torso dataset
        assert np.array_equal(t[key], data["tracks"][key]), key
    p = mdata["parsing"]
    assert p.max() <= 9 and ((p == 8).any((1, 2)) & (p == 9).any((1, 2))).all()  # neck and torso in every frame
    bgmask = p == 0
    assert np.array_equal(mdata["frames"][bgmask], np.broadcast_to(mdata["bg"], mdata["frames"].shape)[bgmask])
    assert not np.array_equal(mdata["frames"], data["frames"])


def test_torso_follows_head_yaw_late(mdata, data):
    from lipspace.data.synthetic.torso import exp_lag, yaw_pitch

    yaw, pitch = yaw_pitch(mdata["tracks"]["pose"])
    tyaw, tpitch = yaw_pitch(mdata["tracks"]["torso_pose"])
    assert np.allclose(tyaw, exp_lag(yaw, 0.2), atol=1e-5) and np.allclose(tpitch, exp_lag(pitch, 0.2), atol=1e-5)
    xx = np.arange(64)[None, None, :]
    cx = [((d["parsing"] == 9) * xx).sum((1, 2)) / (d["parsing"] == 9).sum((1, 2)) for d in (mdata, data)]
    dx = cx[0] - cx[1]  # the static-torso clip takes out the head's changing occlusion of the torso
    assert np.ptp(dx) > 0.3  # pixels
    # A head turning to positive yaw moves the face (and the torso's front) to image left: dx follows -yaw, late.
    u, v = -yaw - (-yaw).mean(), dx - dx.mean()
    corr = [np.corrcoef(u[:len(u) - k], v[k:])[0, 1] for k in range(15)]
    assert 2 <= int(np.argmax(corr)) <= 8 and max(corr) > 0.9 and max(corr) > corr[0]


def _torso_hits(tracks: dict, i: int, res: int, torso_pose: np.ndarray):
    """Which stored pixels have a subsample ray hitting the torso ellipsoid in ``torso_pose`` (as the renderer's
    SS x SS subsamples), and the hit points (camera space)."""
    from lipspace.data.synthetic import scene as sn
    from lipspace.data.synthetic.head import _hit

    K = tracks["intrinsics"]
    c = (np.arange(res * sn.SS, dtype=np.float32) + 0.5) / sn.SS
    u, v = np.meshgrid((c - K[2]) / K[0], (c - K[3]) / K[1])
    rays = np.stack([u, v, np.ones_like(u)], -1).reshape(-1, 3).astype(np.float32)
    R, tr = torso_pose[:3, :3], torso_pose[:3, 3]
    t = _hit(-(tr @ R), rays @ R, sn.TORSO_C.astype(np.float32), sn.TORSO_A.astype(np.float32))
    ok = np.isfinite(t)
    return ok.reshape(res, sn.SS, res, sn.SS).any((1, 3)), t[ok, None] * rays[ok]


def test_torso_pose_matches_torso_pixels_and_bounds(mdata):
    t, p = mdata["tracks"], mdata["parsing"]
    bounds = mdata["meta"]["bounds"]
    mismatch = {"recorded": 0, "static": 0}
    for i in range(0, len(p), 3):
        free = ~np.isin(p[i], (1, 2, 3, 4, 5, 6, 7, 8))  # pixels the head and neck do not cover
        for key, pose in (("recorded", t["torso_pose"][i]), ("static", np.eye(4, dtype=np.float32))):
            hit, pts = _torso_hits(t, i, 64, pose)
            mismatch[key] += int((hit != (p[i] == 9))[free].sum())
            if key == "recorded":  # bounds (head space) cover the visible torso in every frame
                head = (pts - t["pose"][i, :3, 3]) @ t["pose"][i, :3, :3]
                assert np.linalg.norm(head - np.array(bounds["center"]), axis=1).max() <= bounds["radius"]
    assert mismatch["recorded"] == 0 and mismatch["static"] > 100, mismatch


def test_torso_option_cache_config_and_cli(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    import lipspace.utils.config  # noqa: F401  registers ${lipspace_torso_tag:...}
    from lipspace.cli.synth import main

    kw = dict(seconds=0.2, resolution=32, heldout_utterances=0)
    out = generate_synthetic(tmp_path / "ds", **kw)
    stamp = (out / "meta.json").stat().st_mtime_ns
    generate_synthetic(tmp_path / "ds", torso_follow=0.3, **kw)  # another torso: not reused
    assert load(out)["meta"]["source"]["torso_follow"] == 0.3 and (out / "meta.json").stat().st_mtime_ns != stamp
    stamp = (out / "meta.json").stat().st_mtime_ns
    generate_synthetic(tmp_path / "ds", torso_follow=0.3, **kw)
    assert (out / "meta.json").stat().st_mtime_ns == stamp
    with pytest.raises(LipspaceError, match="torso_follow"):
        generate_synthetic(tmp_path / "ds", torso_follow=1.5, **kw)
    conf = OmegaConf.load(Path(lipspace.utils.config.PACKAGE_CONF_DIR) / "data" / "synthetic.yaml")
    roots = []
    for follow in (0.0, 0.3):
        cfg = OmegaConf.create({"paths": {"data_dir": "/d"}, "data": conf})
        cfg.data.synthetic.torso_follow = follow
        roots.append(cfg.data.root)
    assert roots == ["/d/synthetic_128px_20s_seed0", "/d/synthetic_128px_20s_seed0_torso0.3lag0.2"]
    monkeypatch.setattr("sys.argv", ["lipspace-synth", f"out_dir={tmp_path / 'cli'}", "seconds=0.2", "resolution=32",
                                     "heldout_utterances=0", "torso_follow=0.5", "torso_lag_s=0.1"])
    main()
    assert load(tmp_path / "cli")["meta"]["source"]["torso_lag_s"] == 0.1 and "cli" in capsys.readouterr().out
