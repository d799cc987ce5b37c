"""The finalize stage of the preprocessing pipeline (lipspace.prep.pipeline.Preprocessor.stage_finalize): from the
cached track, crop and head stages (and stabilize, whose pose replaces the fitted one) and the parsing maps, the
per-frame signals (blink, lip features, 68 points) and the head-space bounds are written as ``tracks.npz`` and
``meta.json`` (each atomically), the dataset is validated against the schema (lipspace.data.schema), the A/V offset
is checked (a warning with the fix when the audio looks out of sync) and the debug overlays are drawn.

``face_points`` (schema: optional track): the fitted 3DMM's vertices of every frame (the clip's identity + that
frame's expressions, in head space like the fit: the loaded model already is) at ``FACE_POINTS`` fixed vertices
(lipspace.prep.facemodel.face_point_indices: the 68 landmark vertices, then a farthest-point sample of the face
region). The model is the one the head stage fitted (same file and kind); if it cannot be loaded the track is left
out with one warning and the dataset is still written.
"""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np

from lipspace.data.schema import FPS, ICT_EXPR_NAMES, PARSING_CLASSES, SAMPLE_RATE, validate_dataset
from lipspace.prep.pipeline import STAGE_VERSIONS, Preprocessor
from lipspace.prep.runs import evenly_spaced
from lipspace.utils.errors import LipspaceError

log = logging.getLogger("lipspace.prep.pipeline")  # the pipeline's logger: its warnings keep their logger name


def finalize(prep: Preprocessor) -> dict:
    """The finalize stage of ``prep`` (see the module docstring); returns the stage's report."""
    from lipspace.prep.blink import blink_signal, lip_features
    from lipspace.prep.bounds import bounds_frames, clip_bounds
    from lipspace.prep.face import FaceTracks
    from lipspace.prep.facemodel import lmk68_from_mediapipe
    from lipspace.prep.overlays import write_overlays

    tr = prep.cache.load_arrays("track")
    lmk = prep.cache.load_arrays("crop")["landmarks"]
    head = prep.cache.load_arrays("head")
    pose = head["pose"]
    if "stabilize" in prep.stages:  # the stabilised pose becomes ``pose``; the fitted one stays as ``pose_fit``
        pose = prep.cache.load_arrays("stabilize")["pose"]
    crop_tracks = FaceTracks(landmarks=lmk, blendshapes=tr["blendshapes"], transforms=tr["transforms"],
                             valid=tr["valid"], n_faces=tr["n_faces"])
    lmk68 = lmk68_from_mediapipe(lmk)
    # the bounds need a sample of parsing maps only: a re-run of this stage alone does not read the whole clip
    sample = bounds_frames(tr["valid"])
    bounds, head_bounds = clip_bounds(prep.parsing_maps(sample), pose[sample], head["intrinsics"])
    expr_names = prep.cache.marker("head")["info"]["expr_names"]
    tracks = {
        "pose": pose.astype(np.float32), "intrinsics": head["intrinsics"].astype(np.float32),
        "expr": head["expr"].astype(np.float32), "expr_names": np.array(expr_names),
        "blendshapes": tr["blendshapes"].astype(np.float32), "lmk68": lmk68.astype(np.float32),
        "blink": blink_signal(crop_tracks).astype(np.float32), "valid": tr["valid"].astype(bool),
        "identity": head["identity"].astype(np.float32), "mp_landmarks": lmk.astype(np.float32),
        "lip_features": lip_features(crop_tracks), "reproj_px": head["reproj_px"].astype(np.float32),
        "transforms": tr["transforms"].astype(np.float32),
    }
    if "stabilize" in prep.stages:
        tracks["pose_fit"] = head["pose"].astype(np.float32)
    face_points = _face_points(prep, head["identity"], head["expr"])
    if face_points is not None:
        tracks["face_points"] = face_points
    if tuple(expr_names) != ICT_EXPR_NAMES:
        log.warning("%s: expressions come from a %s model (%d names), not ICT-FaceKit; conditioners that expect "
                    "the 53 ICT expressions will refuse this dataset", prep.out, prep.opt.face_model_kind,
                    len(expr_names))
    av_offset = _check_av_offset(prep, tracks["lip_features"][:, 0], tr["valid"])
    tmp = prep.out / ".tracks.tmp.npz"
    np.savez(tmp, **tracks)
    tmp.replace(prep.out / "tracks.npz")
    n = prep.n_frames
    dec = prep.cache.marker("decode")["info"]
    meta = {
        "schema_version": 1, "kind": "video", "fps": FPS, "width": prep.opt.size, "height": prep.opt.size,
        "n_frames": n, "sample_rate": SAMPLE_RATE,
        "parsing_classes": {str(k): v for k, v in PARSING_CLASSES.items()},
        "bounds": bounds, "head_bounds": head_bounds,
        "source": {"path": str(prep.video.resolve()), "sha256": prep._params("decode")["video_sha256"],
                   "fps": dec["source"]["fps"], "width": dec["source"]["width"],
                   "height": dec["source"]["height"], "duration_s": dec["source"]["duration_s"]},
        "stages": {name: STAGE_VERSIONS[name] for name in prep.stages},
        "prep": {name: (prep.cache.marker(name) or {}).get("info", {}) for name in prep.stages if name != "finalize"},
    }
    tmp = prep.out / ".meta.tmp.json"
    tmp.write_text(json.dumps(meta, indent=2, default=float))
    tmp.replace(prep.out / "meta.json")
    validate_dataset(prep.out)

    paths = []
    if prep.opt.overlays > 0:
        idx = evenly_spaced(np.nonzero(tr["valid"])[0], prep.opt.overlays)
        jaw = list(expr_names).index("jawOpen") if "jawOpen" in expr_names else None
        texts = [f"frame {i}  t={i / FPS:.2f}s  reproj {head['reproj_px'][i]:.2f}px  "
                 + (f"jawOpen {tracks['expr'][i, jaw]:.2f}  " if jaw is not None else "")
                 + f"blink {tracks['blink'][i]:.2f}" for i in idx]
        shutil.rmtree(prep.out / "debug", ignore_errors=True)
        paths = write_overlays(prep.out / "debug", idx, prep.crop_frames(idx), prep.parsing_maps(idx), lmk[idx],
                               lmk68[idx], pose[idx], head["intrinsics"], texts)
    return {"overlays": [str(p) for p in paths], "bounds": bounds, "head_bounds": head_bounds,
            "av_offset": av_offset}


def _face_points(prep: Preprocessor, identity: np.ndarray, expr: np.ndarray) -> np.ndarray | None:
    """[N, P, 3] float32 head-space vertices of the fitted model at ``face_point_indices`` (None, with one warning,
    when the model the head stage fitted cannot be loaded again or does not match its coefficients)."""
    from lipspace.prep.facemodel import FACE_POINTS, face_point_indices, load_face_model

    try:
        model = load_face_model(prep._face_model_path(), kind=prep.opt.face_model_kind)
        if identity.shape != (model.n_id,) or expr.shape[1:] != (model.n_expr,):
            raise LipspaceError(f"{model.source}: {model.n_id} identity / {model.n_expr} expression components, the "
                                f"fit has {identity.shape[0]} / {expr.shape[1]}")
        idx = face_point_indices(model, FACE_POINTS)
    except LipspaceError as e:
        log.warning("%s: no 'face_points' track (the face model is not available: %s)", prep.out, e)
        return None
    pts = model.subset(idx).vertices(identity, expr)  # [N,P,3]: the fit's model, identity and expressions
    return np.ascontiguousarray(pts, dtype=np.float32)


def _check_av_offset(prep: Preprocessor, lip_opening: np.ndarray, valid: np.ndarray) -> dict:
    from lipspace.audio.features import read_audio
    from lipspace.prep.avsync import WARN_OFFSET_S, estimate_av_offset

    est = estimate_av_offset(lip_opening, read_audio(prep.out / "audio.wav"), valid)
    if abs(est["offset_s"]) > WARN_OFFSET_S and (est["correlation"] or 0) > 0.1:
        fix = round(prep.opt.audio_offset_s + est["offset_s"], 2)
        log.warning("%s: the audio looks %.2f s %s relative to the lips (lip-opening / speech-energy correlation "
                    "%.2f at that lag, %.2f at 0); if the source is out of sync, re-run with audio_offset_s=%g",
                    prep.video, abs(est["offset_s"]), "late" if est["offset_s"] > 0 else "early",
                    est["correlation"], est["zero_lag"], fix)
    return est
