"""LSE-D / LSE-C: the shared offset search (against syncnet_python's own reduction), the official SyncNet path with
random-init weights (no official weights exist here), weight resolution and checksums, and the local AVE path."""

from __future__ import annotations

import shutil
import urllib.error

import numpy as np
import pytest
import torch

from lipspace.utils.assets import file_sha256
from lipspace.utils.errors import LipspaceError
from lipspace.eval.lse import S3FD, S3FD_ENV, SYNCNET, SYNCNET_ENV, lse_local, lse_official, offset_search
from tests.conftest import make_tiny_dataset
from tests.prep.videos import write_video

needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the SyncNet pipeline needs the ffmpeg binary")
N_FRAMES = 56  # > min_track (50) frames: the shortest clip syncnet_python will track a face in


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No weights from the user's environment or cache leak into a test."""
    for name in (SYNCNET_ENV, S3FD_ENV, "LIPSPACE_ASSETS", "LIPSPACE_AVE_WEIGHTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def talking_mp4(tmp_path_factory):
    """A 256 px face-like disc with a mouth box opening and closing, plus an AAC tone: 56 frames at 25 fps."""
    hw = 256
    yy, xx = np.mgrid[0:hw, 0:hw]
    frames = np.zeros((N_FRAMES, hw, hw, 3), np.uint8)
    for i, f in enumerate(frames):
        f[:] = (90, 110, 130)
        f[(xx - 128) ** 2 + (yy - 120) ** 2 < 80 ** 2] = (200, 160, 130)
        f[(abs(xx - 128) < 20) & (abs(yy - 165) < 4 + 12 * abs(np.sin(i * 0.5)))] = (60, 20, 20)
    return write_video(tmp_path_factory.mktemp("lse") / "talk.mp4", frames, audio_s=N_FRAMES / 25)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """Random-init SyncNet and S3FD state dicts (the official files are not obtainable here) and their digests."""
    from syncnet_python.detectors.s3fd.nets import S3FDNet
    from syncnet_python.SyncNetModel import S

    d = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(S().state_dict(), d / "syncnet_random.pt")
    torch.save(S3FDNet(device="cpu").state_dict(), d / "s3fd_random.pt")
    return {k: (d / f"{k}_random.pt", file_sha256(d / f"{k}_random.pt")) for k in ("syncnet", "s3fd")}


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_offset_search_recovers_a_known_shift_and_shuffling_kills_confidence():
    rng = np.random.default_rng(0)
    z = _unit(rng.normal(size=(300, 64)))
    for shift in (-6, 0, 4, 15):
        video = _unit(z[30:230] + 0.04 * rng.normal(size=(200, 64)))  # noise of norm ~0.3
        audio = z[30 + shift:230 + shift]  # audio window t holds the content of video window t + shift
        r = offset_search(video, audio, vshift=15)
        assert r["offset"] == shift
        assert r["conf"] > 0.5 and r["min_dist"] < 0.6 and r["mean_dist"].shape == (31,)
        assert r["mean_dist"][15 - shift] == pytest.approx(r["min_dist"])
    shuffled = offset_search(video, audio[rng.permutation(len(audio))], vshift=15)
    assert 0 <= shuffled["conf"] < 0.05 * r["conf"]  # only the zero-padded ends differ a little
    with pytest.raises(LipspaceError, match="one shape"):
        offset_search(video, audio[:10])


def test_offset_search_is_syncnet_calc_pdist_and_evaluate_reduction():
    from syncnet_python.SyncNetInstance import calc_pdist

    g = torch.Generator().manual_seed(1)
    for n, dim, vshift in ((40, 1024, 15), (7, 32, 15), (25, 16, 3), (5, 8, 0)):
        video, audio = torch.randn(n, dim, generator=g) * 3, torch.randn(n, dim, generator=g) * 3
        dists = calc_pdist(video, audio, vshift=vshift)  # SyncNetInstance.evaluate, verbatim from here on
        mdist = torch.mean(torch.stack(dists, 1), 1)
        minval, minidx = torch.min(mdist, 0)
        r = offset_search(video.numpy(), audio.numpy(), vshift=vshift)
        assert r["offset"] == vshift - int(minidx)
        np.testing.assert_allclose(r["mean_dist"], mdist.numpy(), rtol=1e-5)
        assert r["min_dist"] == pytest.approx(float(minval), rel=1e-5)
        assert r["conf"] == pytest.approx(float(torch.median(mdist) - minval), rel=1e-4, abs=1e-5)


def test_official_without_weights_is_nan_with_a_status_naming_where_it_looked(talking_mp4, tmp_path):
    r = lse_official(talking_mp4)
    assert set(r) == {"lse_d", "lse_c", "lse_offset", "lse_status", "lse_model"}
    assert np.isnan(r["lse_d"]) and np.isnan(r["lse_c"]) and r["lse_offset"] is None
    s = r["lse_status"]  # download=auto, with $LIPSPACE_OFFLINE set by tests/conftest.py
    assert s.startswith("official SyncNet/S3FD weights not found, not downloaded ($LIPSPACE_OFFLINE) (download=auto)")
    assert "\n" not in s and SYNCNET_ENV in s and S3FD_ENV in s and "syncnet_weights=PATH" in s
    assert str(tmp_path / "cache" / "syncnet_v2.model") in s and SYNCNET.url in s and S3FD.url in s
    r = lse_official(talking_mp4, download=False)
    assert r["lse_status"].startswith("official SyncNet/S3FD weights not found (download=false)")
    assert "download=false never touches the network" in r["lse_status"]
    assert "not found" in r["lse_model"]
    r = lse_official(talking_mp4, syncnet_weights=tmp_path / "nope.model")  # an explicit path that is not there
    assert np.isnan(r["lse_d"]) and f"syncnet_weights={tmp_path / 'nope.model'} (no file there)" in r["lse_status"]


def test_official_bad_video_raises(tmp_path):
    with pytest.raises(LipspaceError, match="no such file"):
        lse_official(tmp_path / "missing.mp4")
    (tmp_path / "junk.mp4").write_bytes(b"not a video at all" * 10)
    with pytest.raises(LipspaceError, match="junk.mp4: not a readable video"):
        lse_official(tmp_path / "junk.mp4")
    mute = write_video(tmp_path / "mute.mp4", np.zeros((10, 32, 32, 3), np.uint8))
    with pytest.raises(LipspaceError, match="mute.mp4: has no audio track"):
        lse_official(mute)


def test_official_checksums_are_enforced_everywhere(talking_mp4, random_weights, tmp_path, monkeypatch):
    import lipspace.utils.assets as assets

    sn, _ = random_weights["syncnet"]
    with pytest.raises(LipspaceError, match=f"sha256 .*expected {SYNCNET.sha256}.*syncnet_sha256="):
        lse_official(talking_mp4, syncnet_weights=sn)  # explicit path, default (official) digest
    monkeypatch.setenv(SYNCNET_ENV, str(sn))
    with pytest.raises(LipspaceError, match=rf"\${SYNCNET_ENV}=.*expected {SYNCNET.sha256}"):
        lse_official(talking_mp4)
    monkeypatch.delenv(SYNCNET_ENV)
    (tmp_path / "cache").mkdir()
    shutil.copy(sn, tmp_path / "cache" / "syncnet_v2.model")  # a cache copy goes through lipspace.utils.assets
    with pytest.raises(LipspaceError, match="checksum mismatch \\(cache copy\\)"):
        lse_official(talking_mp4)
    (tmp_path / "cache" / "syncnet_v2.model").unlink()

    def fetch_random(url, dest):
        shutil.copy(sn, dest)

    monkeypatch.setattr(assets, "_fetch", fetch_random)  # a server holding another file: reported, nothing kept
    r = lse_official(talking_mp4, download=True)
    assert np.isnan(r["lse_d"]) and r["lse_status"].startswith("official SyncNet/S3FD weights download failed its "
                                                               "checksum (download=true)")
    assert f"downloaded from {SYNCNET.url} has sha256 {file_sha256(sn)}" in r["lse_status"]
    assert not (tmp_path / "cache" / "syncnet_v2.model").exists()

    def offline(url, dest):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(assets, "_fetch", offline)
    r = lse_official(talking_mp4, download=True)
    assert np.isnan(r["lse_d"]) and "not found, download failed (download=true)" in r["lse_status"]
    assert f"the requested download (download=true) from {SYNCNET.url} failed (no network)" in r["lse_status"]
    with pytest.raises(LipspaceError, match="unknown pipeline option"):
        lse_official(talking_mp4, min_face_sise=50)


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def online(monkeypatch):
    """download=auto allowed ($LIPSPACE_OFFLINE unset), no remembered reachability probe, the real probe."""
    import lipspace.utils.assets as assets

    monkeypatch.delenv(assets.OFFLINE_ENV, raising=False)
    monkeypatch.setattr(assets, "_REACHABILITY", {})
    return assets


def test_official_auto_with_an_unreachable_host_is_fast_and_says_why(talking_mp4, tmp_path, monkeypatch, online):
    """The official host not answering (here: a closed localhost port in place of its URL) costs at most the probe's
    limit, once, and the status says it is not reachable and how to supply the files by hand."""
    import dataclasses
    import time

    import lipspace.eval.lse as lse

    port = _closed_port()
    for name in ("SYNCNET", "S3FD"):
        a = getattr(lse, name)
        monkeypatch.setattr(lse, name, dataclasses.replace(a, url=f"http://127.0.0.1:{port}/{a.name}"))
    monkeypatch.setattr(online, "_fetch", lambda url, dest: pytest.fail("no download after a failed probe"))
    t0 = time.monotonic()
    r = lse_official(talking_mp4)  # download="auto" is the default
    assert time.monotonic() - t0 < online.CONNECT_TIMEOUT_S + 2
    s = r["lse_status"]
    assert np.isnan(r["lse_d"]) and np.isnan(r["lse_c"]) and r["lse_offset"] is None and "\n" not in s
    assert s.startswith("official SyncNet/S3FD weights not found, their host not reachable (download=auto), LSE not "
                        "computed")
    assert s.count(f"127.0.0.1:{port} is not reachable (connection refused)") == 2
    for a, env in ((SYNCNET, SYNCNET_ENV), (S3FD, S3FD_ENV)):
        assert env in s and str(tmp_path / "cache" / a.name) in s and f"$LIPSPACE_ASSETS/models/{a.name}" in s


@needs_ffmpeg
def test_official_auto_downloads_from_a_reachable_server_into_the_cache(talking_mp4, random_weights, tmp_path,
                                                                       monkeypatch, online):
    """A local HTTP server holds the two weight files under their official names: download=auto probes it, fetches
    both into the cache (sha256-checked), the pipeline runs on them, and a second call reads the cache."""
    import dataclasses

    import lipspace.eval.lse as lse
    from local_http import serve_folder

    (sn, sn_sha), (fd, fd_sha) = random_weights["syncnet"], random_weights["s3fd"]
    www = tmp_path / "www"
    www.mkdir()
    shutil.copy(sn, www / SYNCNET.name)
    shutil.copy(fd, www / S3FD.name)
    with serve_folder(www) as srv:
        for name in ("SYNCNET", "S3FD"):
            a = getattr(lse, name)
            monkeypatch.setattr(lse, name, dataclasses.replace(a, url=f"{srv.url}/{a.name}"))
        r = lse_official(talking_mp4, syncnet_sha256=sn_sha, s3fd_sha256=fd_sha)  # download="auto"
        assert srv.requested == [f"/{SYNCNET.name}", f"/{S3FD.name}"]
        assert r["lse_status"].startswith("no face track found"), r["lse_status"]  # random S3FD: ran, found none
        assert r["lse_model"].startswith(f"SyncNet syncnet_v2.model (sha256 {sn_sha}) + S3FD sfd_face.pth "
                                         f"(sha256 {fd_sha})")
        cache = tmp_path / "cache"
        assert sorted(p.name for p in cache.iterdir()) == sorted([SYNCNET.name, S3FD.name])
        assert file_sha256(cache / SYNCNET.name) == sn_sha and file_sha256(cache / S3FD.name) == fd_sha
        r2 = lse_official(talking_mp4, syncnet_sha256=sn_sha, s3fd_sha256=fd_sha)
        assert r2["lse_model"] == r["lse_model"] and len(srv.requested) == 2  # from the cache: no second download


@needs_ffmpeg
def test_official_pipeline_with_random_weights_finds_no_face_track(talking_mp4, random_weights, monkeypatch):
    (sn, sn_sha), (fd, fd_sha) = random_weights["syncnet"], random_weights["s3fd"]
    monkeypatch.setenv(SYNCNET_ENV, str(sn))  # resolution through the environment variables
    monkeypatch.setenv(S3FD_ENV, str(fd))
    r = lse_official(talking_mp4, syncnet_sha256=sn_sha, s3fd_sha256=fd_sha)
    assert np.isnan(r["lse_d"]) and np.isnan(r["lse_c"]) and r["lse_offset"] is None
    assert r["lse_status"].startswith("no face track found: S3FD detected no face") and "min_face_size=100" in \
        r["lse_status"]
    assert r["lse_model"] == (f"SyncNet syncnet_v2.model (sha256 {sn_sha}) + S3FD sfd_face.pth (sha256 {fd_sha}), "
                              f"syncnet-python 0.2.3")


@needs_ffmpeg
def test_official_pipeline_scores_a_tracked_face_as_offset_search_does(talking_mp4, random_weights, monkeypatch):
    """Random S3FD finds nothing, so detection is replaced by one fixed 160 px box: the rest of the pipeline (scene
    detection, tracking, 224 px crops, MFCC, SyncNet evaluate) runs for real, and its numbers must be those of
    offset_search on the very features SyncNet computed."""
    import importlib

    from syncnet_python.detectors.s3fd import S3FD as S3FDDetector

    sni = importlib.import_module("syncnet_python.SyncNetInstance")  # the package exports a class of that name

    (sn, sn_sha), (fd, fd_sha) = random_weights["syncnet"], random_weights["s3fd"]
    monkeypatch.setattr(S3FDDetector, "detect_faces",
                        lambda self, image, conf_th=0.8, scales=(1,): np.array([[48.0, 40.0, 208.0, 200.0, 0.99]]))
    seen = []
    original = sni.calc_pdist

    def spy(feat1, feat2, vshift=10):
        seen.append((feat1.clone(), feat2.clone(), vshift))
        return original(feat1, feat2, vshift)

    monkeypatch.setattr(sni, "calc_pdist", spy)
    r = lse_official(talking_mp4, syncnet_weights=sn, s3fd_weights=fd, syncnet_sha256=sn_sha, s3fd_sha256=fd_sha)
    assert r["lse_status"].startswith("ok: 1 face track(s)"), r["lse_status"]
    (video, audio, vshift), = seen
    assert vshift == 15 and video.shape == audio.shape and len(video) == N_FRAMES - 5
    ref = offset_search(video, audio, vshift)
    assert r["lse_d"] == pytest.approx(ref["min_dist"], rel=1e-5)
    assert r["lse_c"] == pytest.approx(ref["conf"], rel=1e-3, abs=1e-5)
    assert r["lse_offset"] == ref["offset"] and np.isfinite(r["lse_d"]) and r["lse_c"] >= 0


def _random_ave(path, seed=0):
    from lipspace.av.sync import AVEncoder, save

    torch.manual_seed(seed)
    return save(AVEncoder(width=4), path, {"weights": "random init for lipspace tests", "train_clips": ["nothing"]})


def _dataset_arrays(root):
    import cv2

    from lipspace.data.schema import frame_name

    with np.load(root / "tracks.npz") as t:
        lmk = t["lmk68"]
    frames = np.stack([cv2.cvtColor(cv2.imread(str(root / "frames" / frame_name(i))), cv2.COLOR_BGR2RGB)
                       for i in range(len(lmk))])
    return frames, lmk


def test_local_without_weights_is_nan_with_status(tmp_path):
    frames, lmk = np.zeros((8, 24, 24, 3), np.uint8), np.zeros((8, 68, 2))
    r = lse_local(frames, lmk, tmp_path / "a.wav", weights=tmp_path / "none.pt")
    assert set(r) == {"lse_d_local", "lse_c_local", "lse_offset_local", "lse_local_status", "lse_local_model"}
    assert np.isnan(r["lse_d_local"]) and np.isnan(r["lse_c_local"]) and r["lse_offset_local"] is None
    assert str(tmp_path / "none.pt") in r["lse_local_status"] and "LIPSPACE_AVE_WEIGHTS" in r["lse_local_status"]
    assert "NOT SyncNet" in r["lse_local_model"]


def test_local_uses_the_training_windows_of_the_ave(tmp_path, monkeypatch):
    """lse_local on in-memory frames == offset_search over the windows lipspace.av.train scores (load_sync_clip)."""
    from lipspace.av import data as avd
    from lipspace.av.sync import load

    import soundfile as sf

    root = make_tiny_dataset(tmp_path / "ds", n=30, heldout=0)
    rng = np.random.default_rng(0)  # speech-like: loudness and spectrum change every frame (the tone would not)
    envelope = np.repeat(rng.uniform(0, 1, 30), 640)
    sf.write(root / "audio.wav", (0.2 * envelope * rng.normal(size=envelope.size)).astype(np.float32), 16000)
    weights = _random_ave(tmp_path / "ave.pt")
    frames, lmk = _dataset_arrays(root)
    monkeypatch.setenv("LIPSPACE_AVE_WEIGHTS", str(weights))
    r = lse_local(frames, lmk, root / "audio.wav")
    model = load(weights)
    clip = avd.load_sync_clip(root, tuple(model.config["crop_hw"]))
    with torch.no_grad():
        a = torch.nn.functional.normalize(model.audio(torch.from_numpy(clip.audio[clip.centres])), dim=1)
        v = torch.nn.functional.normalize(model.mouth(torch.from_numpy(avd.centre_crop(clip.video(clip.centres)))),
                                          dim=1)
    ref = offset_search(v, a, 15)
    assert r["lse_offset_local"] == ref["offset"]
    assert r["lse_d_local"] == pytest.approx(ref["min_dist"], abs=1e-4)
    assert r["lse_c_local"] == pytest.approx(ref["conf"], abs=1e-4)
    assert 0 <= r["lse_d_local"] <= 2 and r["lse_c_local"] >= 0
    assert f"sha256 {file_sha256(weights)}, trained on nothing" in r["lse_local_model"]
    assert "NOT SyncNet: not comparable to published LSE-D/LSE-C" in r["lse_local_model"]
    other = lse_local(frames, lmk, root / "audio.wav", weights=_random_ave(tmp_path / "other.pt", seed=1))
    assert other["lse_d_local"] != r["lse_d_local"]  # the explicit argument wins over the environment
    with pytest.raises(LipspaceError, match="fps=30"):
        lse_local(frames, lmk, root / "audio.wav", fps=30)
    with pytest.raises(LipspaceError, match="lmk68 must be"):
        lse_local(frames, lmk[:5], root / "audio.wav")
