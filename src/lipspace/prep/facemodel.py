"""Linear 3D face models (ICT-FaceKit, optionally BFM) in lipspace head space, and MediaPipe -> iBUG-68 landmarks.

Head space (shared with lipspace.data.synthetic.head): x to the subject's LEFT (image right in a frontal view),
y DOWN, z from the face towards the back of the head (the face looks along -z, a frontal pose has R ~ I).
Unit: ``HEAD_UNIT_CM`` = 11 cm (the skull half-height), so heads are of order 1 for the NeRF encoding.
Origin, "about the skull centre", is defined from the model's own iBUG-68 landmarks so that every model gets the
same one: the midpoint of the outer eye corners (points 36, 45) moved ``EYE_TO_ORIGIN_HEAD`` = 0.08 units down
and 0.80 units back (the synthetic head's eyes sit 0.08 above and ~0.8 in front of its centre).

ICT-FaceKit (MIT, USC ICT; the shared assets' models/ict_face_light.npz) is in cm with y UP and z TOWARDS the
viewer (nose tip at max z, jawOpen moves vertices to -y), x to the subject's left (point 36, the subject's right
outer eye corner, is at x = -4.46 cm; eyeBlink_L moves vertices at x > 0). So ICT -> head space is
``head = ICT_TO_HEAD_ROT @ (ict - origin) / HEAD_UNIT_CM`` with ICT_TO_HEAD_ROT = diag(1, -1, -1) (a proper
rotation: 180 deg about x). ICT's ``_L``/``_R`` therefore name the SUBJECT's left/right, like MediaPipe's
``Left``/``Right``: ``eyeBlink_L`` <-> ``eyeBlinkLeft`` (see ``mp_blendshapes_to_expr``).

BFM (Deep3DFaceRecon's ``BFM_model_front.mat``: meanshape, idBase, exBase, tri, keypoints) is optional for users
who hold that licence. It shares ICT's axes (y up, z to the viewer); its unit varies between conversions, so it is
scaled to make the outer-eye-corner distance ``EYE_CORNER_DIST_CM`` (ICT's value). Its expressions are unbounded
PCA weights (``expr_range=None``), ICT's are blendshape weights in [0, 1].

MediaPipe -> iBUG/Multi-PIE 68 (``MP_TO_LMK68``, dlib order): checked on a frontal frame of the May clip and
against the ICT model's own ``lmk68`` vertices (both sides mirror-consistent, eye 36 = image-left outer corner,
mouth 48 = image-left corner, 48-59 outer lip clockwise in the image, 60-67 inner lip). lipspace.eval.metrics uses
points 48-67 for its mouth box. The jaw points 0-16 of a 2-D detector are silhouette points that slide over the
face; MediaPipe's 0-16 here are fixed mesh vertices near the face outline, so they correspond to fixed model
vertices only approximately: the fitter down-weights them (``JAW_WEIGHT``) and leaves them out of the error it
reports.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from lipspace.data.schema import ICT_EXPR_NAMES, MP_BLENDSHAPE_NAMES
from lipspace.utils.errors import LipspaceError

HEAD_UNIT_CM = 11.0
EYE_TO_ORIGIN_HEAD = np.array([0.0, 0.08, 0.80])  # head units, from the outer-eye-corner midpoint to the origin
EYE_CORNER_DIST_CM = 8.92  # ICT neutral, points 36-45
ICT_TO_HEAD_ROT = np.diag([1.0, -1.0, -1.0])  # ICT (x left, y up, z to viewer) -> head (x left, y down, z back)
JAW_WEIGHT = 0.2

# MediaPipe 478-mesh indices approximating the 68 iBUG points, dlib order.
MP_TO_LMK68 = np.array([
    127, 234, 93, 132, 58, 136, 150, 176, 152, 400, 379, 365, 288, 361, 323, 454, 356,  # jaw 0-16
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,  # brows 17-26 (subject right, then left)
    168, 197, 5, 4, 75, 97, 2, 326, 305,  # nose bridge 27-30, lower nose 31-35
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,  # eyes 36-47
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,  # outer lip 48-59
    78, 82, 13, 312, 308, 317, 14, 87,  # inner lip 60-67
], dtype=np.int64)


@dataclass
class FaceModel:
    """A linear face model in head space/units: mesh = neutral + id @ id_basis + expr @ expr_basis."""

    neutral: np.ndarray  # [V,3] float32
    id_basis: np.ndarray  # [K,V,3] float32
    expr_basis: np.ndarray  # [E,V,3] float32
    expr_names: tuple[str, ...]
    faces: np.ndarray  # [F,3|4] int64 vertex indices (0-based)
    lmk68: np.ndarray  # [68] int64 vertex indices of the iBUG-68 points
    rigid_verts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    kind: str = "ict"
    expr_range: tuple[float, float] | None = (0.0, 1.0)  # None: unbounded (PCA) expressions
    source: str = "<memory>"

    @property
    def n_id(self) -> int:
        return len(self.id_basis)

    @property
    def n_expr(self) -> int:
        return len(self.expr_basis)

    def vertices(self, identity=None, expr=None) -> np.ndarray:
        """Mesh vertices [...,V,3] for identity [K] and expressions [..., E] (zeros when None)."""
        v = self.neutral
        if identity is not None:
            v = v + np.tensordot(np.asarray(identity, np.float32), self.id_basis, 1)
        if expr is not None:
            v = v + np.tensordot(np.asarray(expr, np.float32), self.expr_basis, 1)
        return v

    def subset(self, verts) -> FaceModel:
        """The model restricted to the given vertices (for fitting landmarks only); faces dropped."""
        verts = np.asarray(verts, np.int64)
        return replace(self, neutral=self.neutral[verts], id_basis=self.id_basis[:, verts],
                       expr_basis=self.expr_basis[:, verts], faces=np.zeros((0, 3), np.int64),
                       lmk68=np.zeros(0, np.int64), rigid_verts=np.zeros(0, np.int64))


def _to_head(model_pts: np.ndarray, lmk68: np.ndarray, scale_cm: float) -> tuple[np.ndarray, np.ndarray]:
    """(rotation*scale [3,3], offset [3]) mapping y-up/z-to-viewer model coords in units of scale_cm to head."""
    eye_mid = 0.5 * (model_pts[lmk68[36]] + model_pts[lmk68[45]])
    a = ICT_TO_HEAD_ROT * (scale_cm / HEAD_UNIT_CM)
    return a, -(a @ eye_mid) - EYE_TO_ORIGIN_HEAD


def _fail(path, what: str) -> LipspaceError:
    return LipspaceError(f"{path}: {what}")


ICT_KEYS = ("neutral", "quads", "expr_names", "expr_basis", "id_basis", "lmk68")


def load_ict(path) -> FaceModel:
    """The ICT-FaceKit light model (npz converted from ICT-VGL/ICT-FaceKit, see module docstring) in head space."""
    path = Path(path)
    hint = "use ict_face_light.npz (ICT-FaceKit, MIT; keys " + ", ".join(ICT_KEYS) + ")"
    if not path.is_file():
        raise _fail(path, f"face model file not found; {hint} or set LIPSPACE_ASSETS to the shared assets folder")
    try:
        d = np.load(path, allow_pickle=False)
        data = {k: d[k] for k in d.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise _fail(path, f"cannot read as an npz face model ({type(e).__name__}); {hint}") from None
    missing = [k for k in ICT_KEYS if k not in data]
    if missing:
        raise _fail(path, f"face model npz lacks key(s) {', '.join(missing)}; {hint}")
    neutral = np.asarray(data["neutral"], np.float32)
    if neutral.ndim != 2 or neutral.shape[1] != 3 or len(neutral) < 68:
        raise _fail(path, f"'neutral' must be [V,3], got {neutral.shape}; {hint}")
    v = len(neutral)
    for k in ("expr_basis", "id_basis"):
        if data[k].ndim != 3 or data[k].shape[1:] != (v, 3):
            raise _fail(path, f"'{k}' must be [K,{v},3] (deltas per vertex), got {data[k].shape}; {hint}")
    names = tuple(str(s) for s in data["expr_names"])
    if len(names) != len(data["expr_basis"]):
        raise _fail(path, f"{len(names)} expr_names for {len(data['expr_basis'])} expression deltas; {hint}")
    if names != ICT_EXPR_NAMES:
        raise _fail(path, f"expr_names do not follow lipspace.data.schema.ICT_EXPR_NAMES (got {names[:3]}...); "
                          f"{hint}")
    lmk68 = np.asarray(data["lmk68"], np.int64)
    if lmk68.shape != (68,) or lmk68.min() < 0 or lmk68.max() >= v:
        raise _fail(path, f"'lmk68' must be 68 vertex indices in [0,{v}), got shape {lmk68.shape}; {hint}")
    quads = np.asarray(data["quads"], np.int64)
    if quads.ndim != 2 or quads.shape[1] not in (3, 4) or (quads.size and (quads.min() < 0 or quads.max() >= v)):
        raise _fail(path, f"'quads' must be [F,4] vertex indices in [0,{v}), got {quads.shape}; {hint}")
    a, b = _to_head(neutral.astype(np.float64), lmk68, 1.0)
    rigid = np.asarray(data.get("rigid_verts", np.zeros(0)), np.int64)
    return FaceModel(
        neutral=(neutral @ a.T + b).astype(np.float32),
        id_basis=(np.asarray(data["id_basis"], np.float32) @ a.T).astype(np.float32),
        expr_basis=(np.asarray(data["expr_basis"], np.float32) @ a.T).astype(np.float32),
        expr_names=names, faces=quads, lmk68=lmk68, rigid_verts=rigid, kind="ict", expr_range=(0.0, 1.0),
        source=str(path))


BFM_KEYS = ("meanshape", "idBase", "exBase", "tri", "keypoints")


def load_bfm(path) -> FaceModel:
    """Basel Face Model in Deep3DFaceRecon's BFM_model_front.mat layout (meanshape [1,3V], idBase [3V,K],
    exBase [3V,E], tri [F,3] 1-based, keypoints [1,68] 1-based). Needs the user's own BFM licence."""
    path = Path(path)
    hint = "use Deep3DFaceRecon's BFM_model_front.mat (keys " + ", ".join(BFM_KEYS) + ")"
    if not path.is_file():
        raise _fail(path, f"BFM face model file not found; {hint}")
    try:
        from scipy.io import loadmat

        d = loadmat(str(path))
    except Exception as e:  # scipy raises several unrelated types for non-.mat input
        raise _fail(path, f"cannot read as a MATLAB .mat face model ({type(e).__name__}); {hint}") from None
    missing = [k for k in BFM_KEYS if k not in d]
    if missing:
        raise _fail(path, f"BFM .mat lacks key(s) {', '.join(missing)}; {hint}")
    mean = np.asarray(d["meanshape"], np.float64).reshape(-1)
    if mean.size % 3 or mean.size < 3 * 68:
        raise _fail(path, f"'meanshape' must hold 3V values, got {mean.size}; {hint}")
    v = mean.size // 3
    bases = {}
    for k in ("idBase", "exBase"):
        b = np.asarray(d[k], np.float64)
        if b.ndim != 2 or b.shape[0] != 3 * v:
            raise _fail(path, f"'{k}' must be [{3 * v},K], got {b.shape}; {hint}")
        bases[k] = b.T.reshape(-1, v, 3)
    kp = np.asarray(d["keypoints"], np.int64).reshape(-1) - 1
    if kp.shape != (68,) or kp.min() < 0 or kp.max() >= v:
        raise _fail(path, f"'keypoints' must be 68 1-based vertex indices in [1,{v}]; {hint}")
    tri = np.asarray(d["tri"], np.int64) - 1
    mean = mean.reshape(v, 3)
    scale_cm = EYE_CORNER_DIST_CM / max(float(np.linalg.norm(mean[kp[36]] - mean[kp[45]])), 1e-12)
    a, b = _to_head(mean, kp, scale_cm)
    return FaceModel(
        neutral=(mean @ a.T + b).astype(np.float32), id_basis=(bases["idBase"] @ a.T).astype(np.float32),
        expr_basis=(bases["exBase"] @ a.T).astype(np.float32),
        expr_names=tuple(f"bfm_exp_{i:02d}" for i in range(len(bases["exBase"]))), faces=tri, lmk68=kp,
        kind="bfm", expr_range=None, source=str(path))


FACE_MODEL_LOADERS = {"ict": load_ict, "bfm": load_bfm}


def load_face_model(path, kind: str = "ict") -> FaceModel:
    """Load a face model of a registered kind ('ict' default, 'bfm' for users who hold the BFM licence)."""
    try:
        loader = FACE_MODEL_LOADERS[kind]
    except KeyError:
        raise LipspaceError(f"{path}: unknown face model kind '{kind}'; known: "
                            f"{', '.join(sorted(FACE_MODEL_LOADERS))}") from None
    return loader(path)


def lmk68_from_mediapipe(landmarks) -> np.ndarray:
    """The iBUG-68 points [N,68,2] float32 (pixels) from MediaPipe mesh landmarks [N,478,>=2]."""
    lmk = np.asarray(landmarks)
    if lmk.ndim != 3 or lmk.shape[1] != 478 or lmk.shape[2] < 2:
        raise LipspaceError(f"lmk68_from_mediapipe needs MediaPipe landmarks [N,478,>=2], got {lmk.shape}")
    return lmk[:, MP_TO_LMK68, :2].astype(np.float32)


def _mp_name(ict_name: str) -> str:
    base = ict_name[:-2] if ict_name.endswith(("_L", "_R")) else ict_name
    if base in ("browInnerUp", "cheekPuff"):
        return base
    return base + {"_L": "Left", "_R": "Right"}.get(ict_name[-2:], "")


# ICT expression k <- MediaPipe blendshape MP_FOR_ICT[k]; same subject side (see module docstring).
MP_FOR_ICT = np.array([MP_BLENDSHAPE_NAMES.index(_mp_name(n)) for n in ICT_EXPR_NAMES], np.int64)


def mp_blendshapes_to_expr(blendshapes, expr_names=ICT_EXPR_NAMES) -> np.ndarray | None:
    """MediaPipe blendshapes [N,52] -> ICT expression weights [N,53] (None if the model is not ICT-named)."""
    if tuple(expr_names) != ICT_EXPR_NAMES or blendshapes is None:
        return None
    bs = np.asarray(blendshapes, np.float32)
    if bs.ndim != 2 or bs.shape[1] != len(MP_BLENDSHAPE_NAMES):
        raise LipspaceError(f"blendshapes must be [N,{len(MP_BLENDSHAPE_NAMES)}] in MediaPipe order, got {bs.shape}")
    return bs[:, MP_FOR_ICT]


FACE_POINTS = 512  # the default number of per-frame face points (tracks.npz 'face_points') of a prepared clip
CHIN_MARGIN_HEAD = 0.05  # head units (~0.5 cm) of the surface below the chin landmark kept in the face region


def face_region(model: FaceModel) -> np.ndarray:
    """Vertex indices of the model's face region (sorted): in front of the outermost jaw landmarks 0 and 16 (which
    drops the ears, the back of the jaw and the sides of the head) and no lower than ``CHIN_MARGIN_HEAD`` below the
    chin landmark 8 (which drops the neck). Needs the 68 landmark vertices."""
    if len(model.lmk68) != 68:
        raise LipspaceError(f"{model.source}: the face model has no 68 landmark vertices (lmk68)")
    lmk = model.neutral[model.lmk68]
    z_back = max(float(lmk[0, 2]), float(lmk[16, 2]))  # head space: the face looks along -z
    y_low = float(lmk[8, 1]) + CHIN_MARGIN_HEAD  # y down
    v = model.neutral
    return np.flatnonzero((v[:, 2] <= z_back) & (v[:, 1] <= y_low))


def face_point_indices(model: FaceModel, n_points: int = FACE_POINTS) -> np.ndarray:
    """``n_points`` vertex indices [P] int64 for the per-frame face points: the model's 68 landmark vertices first
    (iBUG-68 order), then a farthest-point sample of the neutral mesh's ``face_region`` (deterministic: each next
    point is the region vertex farthest from all chosen so far, the lowest index on ties). Fewer than
    ``n_points`` only when the region has fewer distinct vertices."""
    if n_points < 68:
        raise LipspaceError(f"face points: n_points={n_points} must be at least 68 (the landmark vertices come first)")
    chosen = list(np.asarray(model.lmk68, np.int64))
    region = face_region(model)
    pts = model.neutral[region].astype(np.float64)
    d = np.min(np.linalg.norm(pts[:, None] - model.neutral[chosen][None].astype(np.float64), axis=-1), axis=1)
    while len(chosen) < n_points:
        k = int(np.argmax(d))
        if d[k] <= 0:
            break  # every region vertex is already chosen
        chosen.append(int(region[k]))
        d = np.minimum(d, np.linalg.norm(pts - pts[k], axis=-1))
    return np.asarray(chosen, np.int64)
