"""Lip-sync error LSE-D / LSE-C (Prajwal et al. 2020, the Wav2Lip protocol), official and local.

The protocol: an embedding per 5-frame video window and per 0.2 s audio window; for every offset s in
[-vshift, vshift] the distance between video window t and audio window t + s, averaged over t; LSE-D is the minimum
of that curve over s, LSE-C its median minus its minimum (:func:`offset_search`, shared by both pairs below).

1. :func:`lse_official`: the published metric. syncnet-python's pipeline (S3FD face detection, scene cuts, face
   tracking, 224 px face crops, SyncNet ``syncnet_v2.model`` on MFCC) on a rendered mp4 with its audio track; LSE-D
   and LSE-C are averaged over face tracks, as Wav2Lip's ``calculate_scores_real_videos.sh`` averages its lines.
2. :func:`lse_local`: the same offset search with lipspace's LOCALLY trained audio-visual sync encoder
   (``lipspace.av``) on mouth crops from 68-point landmarks. A sanity signal for this project only: never comparable
   to published LSE-D / LSE-C.
"""

from __future__ import annotations

import math
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from lipspace.utils.assets import (Asset, AssetUnavailable, DownloadChecksumMismatch, asset_places, download_mode,
                             file_sha256, resolve_asset)
from lipspace.utils.errors import LipspaceError

# VGG publishes no checksum for either file. These digests are the ones independent public projects record for them
# (found by searching public code): syncnet_v2.model, 54,573,114 bytes, pinned identically by many
# LSE evaluation scripts, one of which downloads it from exactly SYNCNET.url and checks this digest (LatentSync's
# mirror holds the same bytes); sfd_face.pth, 89,844,381 bytes, recorded for the Oxford URL, LatentSync's mirror and
# TalkNet's Google-Drive copy alike. Neither file is reachable from the machine this was written on, so neither
# digest was checked here: a mismatch means "not the file everyone else uses". lse_model always records the sha256
# of the file actually used.
SYNCNET = Asset("syncnet_v2.model", "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442",
                "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model", 54_573_114,
                licence="SyncNet (Chung & Zisserman 2016), VGG Oxford; no licence stated for the weights")
S3FD = Asset("sfd_face.pth", "d54a87c2b7543b64729c9a25eafd188da15fd3f6e02f0ecec76ae1b30d86c491",
             "https://www.robots.ox.ac.uk/~vgg/software/lipsync/data/sfd_face.pth", 89_844_381,
             licence="S3FD (Zhang et al. 2017) as distributed with syncnet_python; no licence stated for the weights")
SYNCNET_ENV, S3FD_ENV = "LIPSPACE_SYNCNET_WEIGHTS", "LIPSPACE_S3FD_WEIGHTS"
SYNCNET_PYTHON_VERSION = "0.2.3"
_INSTALL = (f"`pip install --no-deps syncnet-python=={SYNCNET_PYTHON_VERSION}` then `pip install scenedetect==0.6.7.1 "
            "python-speech-features==0.6 ffmpeg-python==0.2.0` (make install does both)")


def offset_search(video_feats, audio_feats, vshift: int = 15) -> dict:
    """SyncNet's offset search, exactly as ``syncnet_python``: ``calc_pdist`` then ``SyncNetInstance.evaluate``.

    ``video_feats`` [N, D] (window t) and ``audio_feats`` [N, D] (window t); the audio sequence is zero-padded by
    ``vshift`` at both ends and d[t, k] = ||video_t - audio_{t+k-vshift} + 1e-6|| (``pairwise_distance``), so near
    the clip ends some distances are to zero vectors, as in SyncNet. mean_dist[k] = mean over t of d[t, k];
    ``min_dist`` (LSE-D) = min_k mean_dist, ``conf`` (LSE-C) = median_k mean_dist - min_dist, ``offset`` =
    vshift - argmin_k: a positive offset says the audio matching video window t is at t - offset (the audio runs
    ahead of the picture by that many frames). Returns {offset, min_dist, conf, mean_dist [2*vshift+1]}."""
    v = torch.as_tensor(np.asarray(video_feats), dtype=torch.float32)
    a = torch.as_tensor(np.asarray(audio_feats), dtype=torch.float32)
    if v.ndim != 2 or v.shape != a.shape or len(v) == 0:
        raise LipspaceError(f"offset_search needs video and audio features of one shape [N, D], N >= 1; "
                            f"got {tuple(v.shape)} and {tuple(a.shape)}")
    if int(vshift) < 0:
        raise LipspaceError(f"vshift={vshift}: must be >= 0 frames")
    w = 2 * int(vshift) + 1
    windows = F.pad(a, (0, 0, vshift, vshift)).unfold(0, w, 1).transpose(1, 2)  # [N, w, D]: audio t-vshift..t+vshift
    d = F.pairwise_distance(v[:, None, :].expand_as(windows), windows)  # [N, w], eps 1e-6 as calc_pdist
    mean_dist = d.mean(0)
    min_dist, k = torch.min(mean_dist, 0)
    return {"offset": int(vshift) - int(k), "min_dist": float(min_dist),
            "conf": float(torch.median(mean_dist) - min_dist), "mean_dist": mean_dist.numpy()}


def _nan(prefix: str, status: str, model: str) -> dict:
    sfx = "_local" if prefix == "lse_local" else ""
    return {f"lse_d{sfx}": math.nan, f"lse_c{sfx}": math.nan, f"lse_offset{sfx}": None,
            f"{prefix}_status": status, f"{prefix}_model": model}


def _resolve_weight(asset: Asset, explicit, env: str, sha256: str | None, download, arg: str
                    ) -> tuple[Path | None, str, str]:
    """(path checked against sha256, '', '') or (None, why: where it looked and what happened, reason: ``missing``
    / ``offline`` / ``unreachable`` / ``failed`` / ``checksum``). A local file with the wrong checksum raises
    LipspaceError; a downloaded one is reported (nothing was kept)."""
    sha = (sha256 or asset.sha256).lower()
    given = (Path(explicit).expanduser(), f"{arg}={explicit}") if explicit else None
    if given is None and os.environ.get(env):
        given = (Path(os.environ[env]).expanduser(), f"${env}={os.environ[env]}")
    if given is not None:
        p, where = given
        if not p.is_file():
            return None, f"{where} (no file there)", "missing"
        found = file_sha256(p)
        if found != sha:
            raise LipspaceError(f"{p} ({where}): sha256 {found}, expected {sha} for {asset.name}; a corrupted or "
                                f"different file: replace it with {asset.url}, or pass {arg.replace('weights', '')}"
                                f"sha256=<its digest> if you trust this one")
        return p, "", ""
    # the project folders, through the one asset resolver: $LIPSPACE_ASSETS/models/<name>, the cache, the URL
    places = asset_places(asset.name, asset.subdir)
    looked = f"{arg}=None, ${env} unset, " + ", ".join(map(str, places)) + (
        "" if os.environ.get("LIPSPACE_ASSETS") else ", $LIPSPACE_ASSETS unset")
    try:
        return resolve_asset(asset.name, sha, asset.url, asset.subdir, download=download), "", ""
    except DownloadChecksumMismatch as e:
        return None, f"{looked}; {str(e).split('; ')[0].removeprefix(asset.name + ': ')}", "checksum"
    except AssetUnavailable as e:
        return None, f"{looked}; {e.detail}", e.reason


_REASONS = {"missing": "not found", "offline": "not found, not downloaded ($LIPSPACE_OFFLINE)",
            "unreachable": "not found, their host not reachable", "failed": "not found, download failed",
            "checksum": "download failed its checksum"}


@contextmanager
def _captured_output(log_path: Path):
    """Send this process's stdout/stderr (SyncNet's prints, ffmpeg's banners) to log_path meanwhile."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(log_path, "wb") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def official_setup(*, syncnet_weights=None, s3fd_weights=None, vshift: int = 15, download="auto",
                   syncnet_sha256: str | None = None, s3fd_sha256: str | None = None, **pipeline_overrides):
    """What :func:`lse_official` needs besides the video, checked without one: (syncnet-python's PipelineConfig,
    the weights label, None) when it can run, else (None, label, its NaN result with ``lse_status`` saying why: no
    syncnet-python, weights not found / not downloadable, no ffmpeg). Unknown ``pipeline_overrides`` raise
    LipspaceError. An evaluation asks once and skips encoding renders for a metric that cannot run."""
    try:
        import syncnet_python
        from syncnet_python.syncnet_pipeline import PipelineConfig
    except ImportError as e:
        return None, "none", _nan("lse", f"syncnet-python is not importable ({e}); install it: {_INSTALL}", "none")
    fields = set(PipelineConfig.__annotations__) - {"s3fd_weights", "syncnet_weights", "vshift"}
    if set(pipeline_overrides) - fields:
        raise LipspaceError(f"lse_official: unknown pipeline option(s) {sorted(set(pipeline_overrides) - fields)}; "
                            f"choose from {sorted(fields)}")
    version = getattr(syncnet_python, "__version__", "?")
    mode = download_mode(download)
    sp, why_s, r_s = _resolve_weight(SYNCNET, syncnet_weights, SYNCNET_ENV, syncnet_sha256, mode, "syncnet_weights")
    fp, why_f, r_f = _resolve_weight(S3FD, s3fd_weights, S3FD_ENV, s3fd_sha256, mode, "s3fd_weights")
    label = " + ".join(f"{name} {a.name} ({f'sha256 {file_sha256(p)}' if p else 'not found'})"
                       for name, a, p in (("SyncNet", SYNCNET, sp), ("S3FD", S3FD, fp))) + f", syncnet-python {version}"
    if sp is None or fp is None:
        from lipspace.utils.assets import cache_dir

        reasons = "; ".join(dict.fromkeys(_REASONS[r] for r in (r_s, r_f) if r))
        missing = " | ".join(f"no {a.name} (looked at {why}); to provide it: get {a.url} and pass {arg}=PATH, "
                             f"set ${env}, or put it at {cache_dir() / a.name} or $LIPSPACE_ASSETS/models/{a.name}"
                             for a, why, arg, env in ((SYNCNET, why_s, "syncnet_weights", SYNCNET_ENV),
                                                      (S3FD, why_f, "s3fd_weights", S3FD_ENV)) if why)
        return None, label, _nan("lse", f"official SyncNet/S3FD weights {reasons} (download={mode}), LSE not "
                                        f"computed: {missing}", label)
    cfg = PipelineConfig(syncnet_weights=str(sp), s3fd_weights=str(fp), vshift=int(vshift), **pipeline_overrides)
    if shutil.which(cfg.ffmpeg_bin) is None:
        return None, label, _nan("lse", f"the ffmpeg binary ({cfg.ffmpeg_bin}) is not on PATH: the SyncNet pipeline "
                                        f"needs it (apt-get install ffmpeg)", label)
    return cfg, label, None


def lse_official(video_path, *, syncnet_weights=None, s3fd_weights=None, vshift: int = 15, device: str = "cpu",
                 download="auto", syncnet_sha256: str | None = None, s3fd_sha256: str | None = None,
                 **pipeline_overrides) -> dict:
    """LSE-D / LSE-C of a rendered mp4 (its own audio track) with the official SyncNet + S3FD weights.

    Returns {lse_d, lse_c, lse_offset, lse_status, lse_model}. Weights, each: ``syncnet_weights`` /
    ``s3fd_weights`` > ``$LIPSPACE_SYNCNET_WEIGHTS`` / ``$LIPSPACE_S3FD_WEIGHTS`` > ``$LIPSPACE_ASSETS/models/`` and
    the project cache (``lipspace.utils.assets.cache_dir()``) > the official URL into that cache, as ``download`` says:
    ``auto`` (default) when the host answers within ``lipspace.utils.assets.CONNECT_TIMEOUT_S`` s (probed once per
    process; never with ``$LIPSPACE_OFFLINE`` set), ``true`` always, ``false`` never. Every file is checked against
    a sha256 (the pinned digests above, see their comment: not published by VGG; pass ``syncnet_sha256`` /
    ``s3fd_sha256`` for another copy you trust). A local file with a wrong checksum and a missing or unreadable
    video raise LipspaceError; missing weights (not found, not reachable, a failed download or one failing its
    checksum), a missing syncnet-python / ffmpeg, or no usable face track give NaN (``lse_offset`` None) with
    ``lse_status`` saying why and how to get the files. With several face tracks, LSE-D and LSE-C are their
    means and ``lse_offset`` is that of the track with the lowest distance. ``pipeline_overrides``: fields of
    syncnet_python's PipelineConfig (min_face_size=100 px, min_track=50 frames, facedet_scale, crop_scale, ...)."""
    from lipspace.prep.io import probe_video

    info = probe_video(video_path)  # LipspaceError for a missing / unreadable / audio-only file
    if not info.has_audio:
        raise LipspaceError(f"{video_path}: has no audio track; LSE scores the video against its own audio, so mux "
                            f"it first: `ffmpeg -i video.mp4 -i audio.wav -c:v copy -map 0:v -map 1:a out.mp4`")
    cfg, label, not_ready = official_setup(syncnet_weights=syncnet_weights, s3fd_weights=s3fd_weights, vshift=vshift,
                                           download=download, syncnet_sha256=syncnet_sha256, s3fd_sha256=s3fd_sha256,
                                           **pipeline_overrides)
    if not_ready is not None:
        return not_ready
    from syncnet_python.syncnet_pipeline import SyncNetPipeline

    with tempfile.TemporaryDirectory(prefix="lipspace-lse-") as work:
        log = Path(work) / "pipeline.log"
        try:
            with _captured_output(log):
                pipe = SyncNetPipeline(cfg, device=device)
                offsets, confs, dists, _, _, _, has_face = pipe.inference(
                    str(video_path), None, cache_dir=str(Path(work) / "cache"))
        except Exception as e:  # ffmpeg / torch.load / decoding failures inside syncnet_python
            tail = " | ".join(log.read_text(errors="replace").strip().splitlines()[-3:])[-300:]
            raise LipspaceError(f"{video_path}: the SyncNet pipeline failed ({type(e).__name__}: "
                                f"{' '.join(str(e).split())[:200]}); last output: {tail}") from None
    if not offsets:
        seen = "S3FD detected no face in any frame" if not has_face else "faces were detected, but none formed"
        return _nan("lse", f"no face track found: {seen} (SyncNet needs a track of more than min_track="
                           f"{cfg.min_track} frames within one scene, mean face size above min_face_size="
                           f"{cfg.min_face_size} px; this video: {info.n_frames} frames of {info.width}x"
                           f"{info.height}); render a larger face or a longer clip", label)
    best = int(np.argmin(dists))
    return {"lse_d": float(np.mean(dists)), "lse_c": float(np.mean(confs)), "lse_offset": int(offsets[best]),
            "lse_status": f"ok: {len(offsets)} face track(s), offsets {list(map(int, offsets))}, LSE-D / LSE-C "
                          f"averaged over tracks (Wav2Lip protocol)", "lse_model": label}


def lse_local(frames, lmk68, audio_path, fps: float = 25.0, weights=None, vshift: int = 15, source=None) -> dict:
    """LSE-D / LSE-C protocol with lipspace's locally trained AVE (``lipspace.av``) instead of SyncNet.

    ``frames`` uint8 [T, H, W, 3] RGB (any size), ``lmk68`` [T, 68, 2] pixel coordinates in those frames,
    ``audio_path`` a 16 kHz wav holding the audio of frame 0 onwards. Windows are built exactly as the AVE was
    trained (``lipspace.av.data``): mouth crops of frames t-2..t+2 (box from landmarks 48-67, grayscale) and the 20
    per-clip-standardised log-mel frames centred on frame t; every frame t with its 5-frame window inside the clip
    is scored. Distance: Euclidean between L2-normalised embeddings (in [0, 2]), then :func:`offset_search`.
    Weights: ``weights`` > ``$LIPSPACE_AVE_WEIGHTS`` > $LIPSPACE_CACHE/ave_local.pt (as the ``ave`` audio backend);
    missing weights give NaN and ``lse_local_status`` (the evaluation passes the run's automatically trained
    expert, ``lipspace.av.auto``, when none is given). Returns {lse_d_local, lse_c_local, lse_offset_local,
    lse_local_status, lse_local_model}; with ``source`` = (the sequence's original audio file, its offset in s)
    also ``lse_local_seen``: whether the sequence was among the expert's training data (then the score is
    optimistic; None when the checkpoint does not record its data, ``lipspace.av.record.seen_by``). Scoring many
    sequences: ``lipspace.eval.lse_local.LocalSyncExpert`` loads the expert once."""
    from lipspace.eval.lse_local import LocalSyncExpert

    return LocalSyncExpert(weights).score(frames, lmk68, audio_path, fps=fps, vshift=vshift, source=source)
