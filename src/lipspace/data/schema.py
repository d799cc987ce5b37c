"""The versioned dataset-directory schema: constants, writer and validator shared by prep, synthesis and loading.

A dataset directory (schema version 1)::

    meta.json        schema_version, kind, fps, width, height, n_frames, sample_rate, bounds, parsing_classes,
                     source (path + sha256, or generator + seed), stages {name: version}, heldout [names]
    frames/          000000.png ... RGB frames, width x height
    parsing/         000000.png ... uint8 class index per pixel (PARSING_CLASSES)
    background.png   static background, RGB, width x height
    audio.wav        16 kHz mono PCM16, n_frames / fps seconds long (+- one frame)
    tracks.npz       see TRACK_KEYS
    heldout/<name>/  optional: held-out utterances, each itself a dataset directory of this schema

Geometry conventions: ``pose[i]`` maps canonical head space to the OpenCV camera of frame i
(x right, y down, z forward): ``X_cam = R @ X_head + t``. ``intrinsics`` = (fx, fy, cx, cy) in pixels of the
stored frames, pixel centres at integer + 0.5. ``bounds`` is a sphere in head space (centre, radius) enclosing
head, neck and the visible torso in every frame; the optional ``head_bounds`` encloses head and neck only (what
a head NeRF composited over the ground-truth torso models).

Optional ground truth of synthetic data: ``torso_pose[i]`` (tracks.npz, written only when the torso moves,
``lipspace-synth torso_follow=...``) maps torso space to the camera of frame i like ``pose`` (``X_cam = R @ X_torso
+ t``); torso space is the camera space of the torso at rest, so a dataset without it has a static torso (identity).

Optional on real clips prepared with ``stabilize=sync`` (lipspace.prep.stabilize): ``pose_fit[i]``, the 3DMM-fitted
(smoothed) head pose before the Head-Sync Stabilizer; ``pose`` then holds the stabilised pose.

Optional on both (datasets written before it existed lack it): ``face_points[i]`` [P, 3] float32, P >= 4, points on
the face in HEAD space and head units (the space ``pose`` maps to the camera, so ``pose[i]`` projects them onto frame
i): the same P surface points in the same order in every frame, moving with the expression (identity + expression
of frame i), not with the head pose; for 3-D latent codes anchored on the face (SSP-NeRF). Rows 0..67 are the
iBUG-68 landmarks (LMK68_GROUPS order), so projecting them gives about ``lmk68``. Written by the finalize stage of
``lipspace-prep`` (lipspace.prep.finalize: the fitted 3DMM's vertices, ``FACE_POINTS`` = 512 of them: the 68
landmark vertices + a farthest-point sample of the face region) and by ``lipspace-synth`` (the synthetic head's 3-D
landmarks and a fixed grid on its face surface, lipspace.data.synthetic.landmarks.face_points3d).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lipspace.utils.errors import LipspaceError

SCHEMA_VERSION = 1
FPS = 25
SAMPLE_RATE = 16000

PARSING_CLASSES: dict[int, str] = {
    0: "background",
    1: "hair",
    2: "face_skin",
    3: "lips",
    4: "mouth_interior",  # teeth and tongue included
    5: "eyes",
    6: "brows",
    7: "nose",
    8: "neck",
    9: "torso",
}
HEAD_CLASSES = (1, 2, 3, 4, 5, 6, 7)
MOUTH_CLASSES = (3, 4)

# ICT-FaceKit expression names (53), one-to-one with MediaPipe's ARKit blendshapes (see shared assets README).
ICT_EXPR_NAMES = (
    "browDown_L", "browDown_R", "browInnerUp_L", "browInnerUp_R", "browOuterUp_L", "browOuterUp_R",
    "cheekPuff_L", "cheekPuff_R", "cheekSquint_L", "cheekSquint_R", "eyeBlink_L", "eyeBlink_R",
    "eyeLookDown_L", "eyeLookDown_R", "eyeLookIn_L", "eyeLookIn_R", "eyeLookOut_L", "eyeLookOut_R",
    "eyeLookUp_L", "eyeLookUp_R", "eyeSquint_L", "eyeSquint_R", "eyeWide_L", "eyeWide_R",
    "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimple_L", "mouthDimple_R",
    "mouthFrown_L", "mouthFrown_R", "mouthFunnel", "mouthLeft", "mouthLowerDown_L", "mouthLowerDown_R",
    "mouthPress_L", "mouthPress_R", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper",
    "mouthShrugLower", "mouthShrugUpper", "mouthSmile_L", "mouthSmile_R", "mouthStretch_L", "mouthStretch_R",
    "mouthUpperUp_L", "mouthUpperUp_R", "noseSneer_L", "noseSneer_R",
)
# MediaPipe FaceLandmarker blendshape order (52 = _neutral + 51 ARKit names).
MP_BLENDSHAPE_NAMES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
    "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft",
    "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft",
    "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft",
    "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft",
    "mouthPressRight", "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
# iBUG/Multi-PIE 68-point landmark groups (0-based).
LMK68_GROUPS = {
    "jaw": range(0, 17), "brow_r": range(17, 22), "brow_l": range(22, 27), "nose": range(27, 36),
    "eye_r": range(36, 42), "eye_l": range(42, 48), "mouth_outer": range(48, 60), "mouth_inner": range(60, 68),
}
MOUTH_LMK68 = tuple(range(48, 68))


@dataclass(frozen=True)
class TrackSpec:
    """Expected shape (None = any size, 'N' = n_frames) and dtype kind of one array in tracks.npz."""

    shape: tuple
    kind: str  # numpy dtype kind: 'f' float, 'b' bool, 'U' str
    required: bool = True


TRACK_KEYS: dict[str, TrackSpec] = {
    "pose": TrackSpec(("N", 4, 4), "f"),  # head -> camera rigid transform (OpenCV camera)
    "intrinsics": TrackSpec((4,), "f"),  # fx, fy, cx, cy in pixels
    "expr": TrackSpec(("N", None), "f"),  # expression coefficients (ICT-FaceKit: 53)
    "expr_names": TrackSpec((None,), "U"),
    "blendshapes": TrackSpec(("N", 52), "f"),  # MediaPipe order, MP_BLENDSHAPE_NAMES
    "lmk68": TrackSpec(("N", 68, 2), "f"),  # projected landmarks, pixels (x, y)
    "blink": TrackSpec(("N",), "f"),  # 0 open .. 1 closed
    "valid": TrackSpec(("N",), "b"),  # per-frame validity (face found, fit converged)
    "identity": TrackSpec((None,), "f"),  # identity coefficients shared by the clip
    "mp_landmarks": TrackSpec(("N", 478, 3), "f", required=False),  # MediaPipe mesh landmarks (real clips)
    "torso_pose": TrackSpec(("N", 4, 4), "f", required=False),  # torso -> camera (synthetic moving torso)
    "pose_fit": TrackSpec(("N", 4, 4), "f", required=False),  # fitted head pose when ``pose`` is stabilised
    "face_points": TrackSpec(("N", None, 3), "f", required=False),  # [N,P,3] face points, head space (docstring)
}
MIN_FACE_POINTS = 4
META_KEYS = ("schema_version", "kind", "fps", "width", "height", "n_frames", "sample_rate", "bounds",
             "parsing_classes", "source", "stages")


def frame_name(i: int) -> str:
    return f"{i:06d}.png"


def _fail(path: Path, what: str, fix: str) -> LipspaceError:
    return LipspaceError(f"{path}: {what}. {fix}")


def write_dataset(out_dir, frames: np.ndarray, parsing: np.ndarray, background: np.ndarray, audio: np.ndarray,
                  tracks: dict, meta: dict) -> Path:
    """Write one dataset directory. ``frames`` uint8 [N,H,W,3] RGB, ``parsing`` uint8 [N,H,W], ``background``
    uint8 [H,W,3], ``audio`` float32 [T] in [-1, 1] at 16 kHz, ``tracks`` per TRACK_KEYS, ``meta`` the keys of
    META_KEYS that the writer cannot derive (kind, bounds, source, stages, optional heldout)."""
    import cv2
    import soundfile as sf

    out = Path(out_dir)
    (out / "frames").mkdir(parents=True, exist_ok=True)
    (out / "parsing").mkdir(parents=True, exist_ok=True)
    n, h, w, _ = frames.shape
    for i in range(n):
        cv2.imwrite(str(out / "frames" / frame_name(i)), np.ascontiguousarray(frames[i, :, :, ::-1]))
        cv2.imwrite(str(out / "parsing" / frame_name(i)), parsing[i])
    cv2.imwrite(str(out / "background.png"), np.ascontiguousarray(background[:, :, ::-1]))
    sf.write(str(out / "audio.wav"), np.clip(audio, -1, 1).astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
    np.savez(out / "tracks.npz", **tracks)
    full = {"schema_version": SCHEMA_VERSION, "fps": FPS, "width": int(w), "height": int(h), "n_frames": int(n),
            "sample_rate": SAMPLE_RATE, "parsing_classes": {str(k): v for k, v in PARSING_CLASSES.items()}}
    full.update(meta)
    (out / "meta.json").write_text(json.dumps(full, indent=2))
    return out


def read_meta(root) -> dict:
    root = Path(root)
    if not root.is_dir():
        raise _fail(root, "dataset directory does not exist",
                    "Generate one with `lipspace-synth out_dir=...` or preprocess a video with `lipspace-prep`.")
    path = root / "meta.json"
    if not path.is_file():
        raise _fail(path, "missing meta.json, so this is not a lipspace dataset directory",
                    "Point data.root at a directory written by lipspace-synth or lipspace-prep.")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise _fail(path, f"is not valid JSON ({e.msg} at line {e.lineno})", "Regenerate the dataset.") from None
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise _fail(path, f"missing keys {missing}", "Regenerate the dataset with the current lipspace version.")
    if meta["schema_version"] != SCHEMA_VERSION:
        raise _fail(path, f"schema_version {meta['schema_version']}, this lipspace reads {SCHEMA_VERSION}",
                    "Regenerate the dataset with this version of lipspace.")
    return meta


def validate_dataset(root, check_images: bool = True) -> dict:
    """Check a dataset directory against the schema; return its meta. Raises LipspaceError naming the file."""
    import soundfile as sf

    root = Path(root)
    meta = read_meta(root)
    n, h, w = meta["n_frames"], meta["height"], meta["width"]
    if meta["fps"] != FPS:
        raise _fail(root / "meta.json", f"fps is {meta['fps']}, lipspace datasets are {FPS} fps",
                    "Re-run preprocessing; it resamples video to 25 fps.")
    for key in ("bounds", "head_bounds"):
        b = meta.get(key)
        if key == "head_bounds" and b is None:
            continue
        if not (isinstance(b, dict) and len(b.get("center", [])) == 3 and float(b.get("radius", 0)) > 0):
            raise _fail(root / "meta.json", f"{key} must be {{center: [x,y,z], radius: r>0}}, got {b}",
                        "Regenerate the dataset.")
    tpath = root / "tracks.npz"
    if not tpath.is_file():
        raise _fail(tpath, "missing", "Regenerate the dataset (tracks are written by the pose/fit stages).")
    try:
        tracks = dict(np.load(tpath))
    except Exception as e:  # a truncated or foreign file: numpy's message is not actionable on its own
        raise _fail(tpath, f"unreadable ({type(e).__name__}: {e})", "Regenerate the dataset.") from None
    for key, spec in TRACK_KEYS.items():
        if key not in tracks:
            if spec.required:
                raise _fail(tpath, f"missing array '{key}'", "Regenerate the dataset.")
            continue
        arr = tracks[key]
        if key == "face_points":
            _check_face_points(tpath, arr, n)
            continue
        want = tuple(n if s == "N" else s for s in spec.shape)
        if arr.ndim != len(want) or any(s is not None and s != a for s, a in zip(want, arr.shape)):
            raise _fail(tpath, f"array '{key}' has shape {arr.shape}, expected {want} (None = any)",
                        "Regenerate the dataset; frames and tracks disagree.")
        if arr.dtype.kind != spec.kind:
            raise _fail(tpath, f"array '{key}' has dtype {arr.dtype}, expected kind '{spec.kind}'",
                        "Regenerate the dataset.")
        if spec.kind == "f" and not np.isfinite(arr).all():
            raise _fail(tpath, f"array '{key}' contains NaN or inf", "Regenerate the dataset.")
    if len(tracks["expr_names"]) != tracks["expr"].shape[1]:
        raise _fail(tpath, "expr_names and expr disagree in length", "Regenerate the dataset.")
    apath = root / "audio.wav"
    if not apath.is_file():
        raise _fail(apath, "missing", "Regenerate the dataset; every dataset carries its 16 kHz mono audio.")
    info = sf.info(str(apath))
    if info.samplerate != SAMPLE_RATE or info.channels != 1:
        raise _fail(apath, f"is {info.samplerate} Hz, {info.channels} channel(s); expected 16000 Hz mono",
                    "Regenerate the dataset.")
    expected = n / FPS
    if abs(info.frames / SAMPLE_RATE - expected) > 1.0 / FPS + 1e-6:
        raise _fail(apath, f"lasts {info.frames / SAMPLE_RATE:.3f} s but {n} frames need {expected:.3f} s",
                    "Regenerate the dataset; audio and video must be aligned.")
    if check_images:
        _check_images(root, n, h, w)
    for name in meta.get("heldout", []):
        validate_dataset(root / "heldout" / name, check_images=check_images)
    return meta


def _check_face_points(tpath: Path, arr: np.ndarray, n: int) -> None:
    """The optional track ``face_points``: [n_frames, P >= MIN_FACE_POINTS, 3], float, finite."""
    fix = ("Re-run `lipspace-prep` on the source video (only its finalize stage is redone) or regenerate the "
           "synthetic dataset with `lipspace-synth`; the track is optional, so deleting it from tracks.npz also works")
    if arr.ndim != 3 or arr.shape[0] != n or arr.shape[2] != 3 or arr.shape[1] < MIN_FACE_POINTS:
        raise _fail(tpath, f"array 'face_points' has shape {arr.shape}, expected [n_frames={n}, P>={MIN_FACE_POINTS}, "
                           f"3] (head-space points per frame)", fix)
    if arr.dtype.kind != "f":
        raise _fail(tpath, f"array 'face_points' has dtype {arr.dtype}, expected float32", fix)
    if not np.isfinite(arr).all():
        bad = np.flatnonzero(~np.isfinite(arr).all((1, 2)))
        raise _fail(tpath, f"array 'face_points' contains NaN or inf (frames {bad[:5].tolist()}"
                           f"{'...' if len(bad) > 5 else ''})", fix)


def _check_images(root: Path, n: int, h: int, w: int) -> None:
    import cv2

    bg = root / "background.png"
    img = cv2.imread(str(bg)) if bg.is_file() else None
    if img is None or img.shape[:2] != (h, w):
        raise _fail(bg, f"missing or not a {w}x{h} image", "Regenerate the dataset.")
    for sub in ("frames", "parsing"):
        d = root / sub
        files = sorted(d.glob("*.png")) if d.is_dir() else []
        if len(files) != n:
            raise _fail(d, f"holds {len(files)} PNG files, meta.json says n_frames={n}",
                        "Regenerate the dataset; it was probably interrupted.")
        for probe in (files[0], files[-1]):
            im = cv2.imread(str(probe), cv2.IMREAD_UNCHANGED)
            if im is None or im.shape[:2] != (h, w):
                raise _fail(probe, f"unreadable or not {w}x{h}", "Regenerate the dataset.")
            if sub == "parsing" and (im.ndim != 2 or im.max() >= len(PARSING_CLASSES)):
                raise _fail(probe, "is not a single-channel class-index image with classes 0..9",
                            "Regenerate the dataset.")
