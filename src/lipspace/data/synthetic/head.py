"""The synthetic head: identity, ellipsoid geometry, mouth/eye shapes, vectorised ray casting, shading, parsing.

Head space (all geometry of this package): origin at the skull centre, x to the subject's left (image right in
a frontal view), y down, z from the face towards the back of the head (OpenCV-like, so a frontal pose has
R ~ I). Unit: 1 = the skull half-height, about 11 cm on a real head. The face looks along -z.
Face features (eyes, brows, lips, mouth interior) are painted in a surface parameterisation: the head-space
(x, y) of the 3-D hit point on the front of the skull/jaw, so they move and foreshorten with the head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SKULL, JAW, NOSE, EAR_R, EAR_L, HAIR = range(6)  # EAR_R at -x (subject right)


@dataclass(frozen=True)
class HeadModel:
    centres: np.ndarray  # [6,3] primitive centres (jaw at rest), order SKULL..HAIR
    axes: np.ndarray  # [6,3] semi-axes
    eye: np.ndarray  # x, y, half-width, upper height, lower height, iris radius
    brow: np.ndarray  # height above the eye, half-width
    mouth: np.ndarray  # y of the lip line, half-width at rest
    jaw_drop: float  # chin drop at jaw=1
    f0: float  # speaking pitch, Hz
    colours: dict  # name -> float32 [3] albedo
    waves: dict  # name -> (freqs [K,3], phases [K], amps [K]) procedural texture

    def vector(self) -> np.ndarray:
        """Identity coefficients for tracks.npz: every shape parameter plus pitch and colours."""
        parts = [self.centres.ravel(), self.axes.ravel(), self.eye, self.brow, self.mouth,
                 [self.jaw_drop, self.f0 / 100.0]] + [self.colours[k] for k in sorted(self.colours)]
        return np.concatenate([np.ravel(p) for p in parts]).astype(np.float32)


def _waves(rng, k, fmin, fmax, squash=(1.0, 1.0, 1.0)):
    d = rng.standard_normal((k, 3)) * np.array(squash)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    f = np.exp(rng.uniform(np.log(fmin), np.log(fmax), k))
    return ((d * f[:, None]).astype(np.float32), rng.uniform(0, 2 * np.pi, k).astype(np.float32),
            (1.0 / np.sqrt(f) / np.sum(1.0 / np.sqrt(f))).astype(np.float32))


def make_head(rng: np.random.Generator) -> HeadModel:
    """A seeded identity: proportions vary a few percent, colours from plausible palettes."""
    def j(x, s=0.04):
        return np.asarray(x, float) * (1.0 + s * rng.uniform(-1, 1, np.shape(x)))

    skull = j([0.78, 1.0, 0.88])
    centres = np.array([[0, 0, 0], [0, 0.45, -0.12], [0, 0.10, -0.80], [-0.75, 0.0, 0.05], [0.75, 0.0, 0.05],
                        [0, -0.03, 0.0]], float)
    axes = np.array([skull, j([0.60, 0.58, 0.72]), j([0.13, 0.21, 0.2], 0.1), [0.09, 0.20, 0.12],
                     [0.09, 0.20, 0.12], skull * 1.06])
    centres[EAR_R, 0], centres[EAR_L, 0] = -skull[0] * 0.98, skull[0] * 0.98
    skin_tones = np.array([[0.93, 0.76, 0.65], [0.85, 0.64, 0.50], [0.70, 0.50, 0.36], [0.48, 0.33, 0.24]])
    hair_tones = np.array([[0.10, 0.08, 0.07], [0.28, 0.18, 0.10], [0.60, 0.46, 0.28], [0.40, 0.20, 0.10]])
    iris_tones = np.array([[0.30, 0.18, 0.08], [0.25, 0.40, 0.60], [0.30, 0.45, 0.30]])
    skin = skin_tones[rng.integers(4)] * rng.uniform(0.95, 1.05, 3)
    colours = {
        "skin": skin, "lips": skin * np.array([0.95, 0.55, 0.55]) + np.array([0.1, 0.0, 0.02]),
        "hair": hair_tones[rng.integers(4)], "iris": iris_tones[rng.integers(3)],
        "shirt": rng.uniform(0.1, 0.8, 3), "shirt2": rng.uniform(0.1, 0.8, 3),
    }
    colours = {k: np.clip(v, 0, 1).astype(np.float32) for k, v in colours.items()}
    waves = {"skin": _waves(rng, 8, 6.0, 40.0), "hair": _waves(rng, 6, 30.0, 90.0, (1.0, 0.15, 1.0)),
             "lips": _waves(rng, 4, 40.0, 80.0, (1.0, 0.1, 0.3))}
    return HeadModel(centres=centres.astype(np.float32), axes=axes.astype(np.float32),
                     eye=j([0.30, -0.08, 0.14, 0.07, 0.05, 0.055], 0.05).astype(np.float32),
                     brow=j([0.15, 0.17], 0.08).astype(np.float32), mouth=j([0.52, 0.27], 0.05).astype(np.float32),
                     jaw_drop=0.12, f0=float(rng.uniform(100.0, 200.0)), colours=colours, waves=waves)


def texture(p: np.ndarray, waves) -> np.ndarray:
    """Procedural noise in [-1, 1]-ish at head-space points: a few random plane waves."""
    f, ph, a = waves
    return np.sin(p @ f.T + ph) @ a


def primitives(m: HeadModel, jaw: float) -> tuple[np.ndarray, np.ndarray]:
    """Centres/axes of the primitives for this jaw opening (the jaw ellipsoid drops, lowering the chin)."""
    c = m.centres.copy()
    c[JAW, 1] += m.jaw_drop * jaw
    return c, m.axes


def front_z(m: HeadModel, x, y, jaw: float, prims=(SKULL, JAW)) -> np.ndarray:
    """z of the frontmost surface among prims at head-space (x, y) (NaN if none covers it)."""
    c, a = primitives(m, jaw)
    x, y = np.asarray(x, float), np.asarray(y, float)
    z = np.full(np.broadcast(x, y).shape, np.inf)
    for k in prims:
        q = 1.0 - ((x - c[k, 0]) / a[k, 0]) ** 2 - ((y - c[k, 1]) / a[k, 1]) ** 2
        zk = np.where(q > 0, c[k, 2] - a[k, 2] * np.sqrt(np.clip(q, 0, None)), np.inf)
        z = np.minimum(z, zk)
    return np.where(np.isfinite(z), z, np.nan)


@dataclass(frozen=True)
class MouthShape:
    cy: float  # lip line
    w: float  # outer half-width
    wi: float  # inner (opening) half-width
    h: float  # aperture at the centre
    tu: float  # upper lip thickness
    tl: float  # lower lip thickness


def mouth_shape(m: HeadModel, jaw, rnd, spread, close) -> MouthShape:
    """Lip geometry: jaw opens (h), spreading widens, rounding narrows/thickens and keeps a small round hole."""
    w = float(m.mouth[1] * (1.0 + 0.22 * spread - 0.38 * rnd))
    h = float((0.34 * jaw + 0.06 * rnd) * (1.0 - close))
    return MouthShape(float(m.mouth[0]), w, 0.8 * w, h, 0.05 * (1 + 0.5 * rnd), 0.065 * (1 + 0.5 * rnd))


def mouth_curves(x, ms: MouthShape):
    """y of the upper-outer, upper-inner, lower-inner, lower-outer lip contours at head-space x."""
    so = np.sqrt(np.clip(1.0 - (x / ms.w) ** 2, 0, None))
    a = ms.h * np.sqrt(np.clip(1.0 - (x / ms.wi) ** 2, 0, None))
    bow = 1.0 - 0.3 * np.exp(-(x / (0.18 * ms.w)) ** 2)  # cupid's bow: the upper lip dips at the centre
    y_ui, y_li = ms.cy - 0.25 * a, ms.cy + 0.75 * a  # the lower lip rides on the jaw, so it moves most
    return y_ui - ms.tu * so ** 0.8 * bow, y_ui, y_li, y_li + ms.tl * so ** 0.8


def eye_curves(m: HeadModel, xe, blink):
    """Upper-lid (after blink), lower-lid y at eye-local x (|x| - eye_x); the upper lid sweeps down on blink."""
    u2 = np.clip(1.0 - (xe / m.eye[2]) ** 2, 0, None)
    y_up, y_low = m.eye[1] - m.eye[3] * u2 ** 0.6, m.eye[1] + m.eye[4] * u2 ** 0.8
    return y_up + blink * (y_low - y_up), y_low


def brow_curve(m: HeadModel, xb, raise_):
    ub = xb / m.brow[1]
    return m.eye[1] - m.brow[0] - 0.06 * raise_ - 0.035 * (1.0 - ub ** 2)


def _hit(o, d, c, a):
    """Ray parameter of the first ellipsoid hit (inf if none): rays o + t d, d [M,3]."""
    oc, dd = (o - c) / a, d / a
    aa = np.einsum("ij,ij->i", dd, dd)
    b = dd @ oc
    disc = b * b - aa * (oc @ oc - 1.0)
    t = (-b - np.sqrt(np.clip(disc, 0, None))) / aa
    return np.where((disc > 0) & (t > 0), t, np.inf).astype(np.float32)


def cast(m: HeadModel, o, d, jaw: float):
    """Nearest head primitive per ray: (t [M], prim [M]); the hair shell counts only inside the hair region."""
    c, a = primitives(m, jaw)
    ts = np.stack([_hit(o, d, c[k], a[k]) for k in range(6)])
    hit = np.isfinite(ts[HAIR])
    p = o + ts[HAIR, hit, None] * d[hit]
    ts[HAIR, hit] = np.where(hair_region(p), ts[HAIR, hit], np.inf)
    prim = np.argmin(ts, 0)
    return ts[prim, np.arange(len(prim))], prim


def hair_region(p):
    """Hairline: a curved front edge, dropping towards the sides and covering the back of the head."""
    return p[:, 1] < -0.52 + 0.3 * p[:, 0] ** 2 + 2.0 * np.clip(p[:, 2] - 0.05, 0, None)


def _normals(m: HeadModel, p, pr, jaw: float) -> np.ndarray:
    c, a = primitives(m, jaw)
    n = (p - c[pr]) / a[pr] ** 2
    # Skull/jaw: blend both gradients by a soft-min of their implicit values, hiding the crease of the union.
    sj = np.nonzero((pr == SKULL) | (pr == JAW))[0]
    g = [(p[sj] - c[k]) / a[k] ** 2 for k in (SKULL, JAW)]
    f = [np.sqrt((((p[sj] - c[k]) / a[k]) ** 2).sum(1)) - 1.0 for k in (SKULL, JAW)]
    w0 = 1.0 / (1.0 + np.exp(np.clip((f[0] - f[1]) / 0.04, -50, 50)))  # weight of the skull
    n[sj] = w0[:, None] * g[0] / np.linalg.norm(g[0], axis=1, keepdims=True) + \
        (1 - w0)[:, None] * g[1] / np.linalg.norm(g[1], axis=1, keepdims=True)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def _paint_eyes_brows(m: HeadModel, p, front, st, alb, L, spec) -> None:
    """Eyes (symmetric in |x|): sclera, iris, pupil, a lash line on the lid edge, skin lid; then the brows."""
    x, y = p[:, 0], p[:, 1]
    xe = np.abs(x) - m.eye[0]
    y_lid, y_low = eye_curves(m, xe, st["blink"])
    inside = front & (np.abs(xe) < m.eye[2])
    alb[inside] *= 1.0 - 0.12 * (np.exp(-((y[inside] - m.eye[1]) / 0.1) ** 2))[:, None]  # socket shadow
    vis = inside & (y > y_lid) & (y < y_low)
    lash = inside & (y <= y_lid) & (y > y_lid - 0.02 * np.sqrt(np.clip(1 - (xe / m.eye[2]) ** 2, 0, None)))
    r2 = xe ** 2 + (y - m.eye[1]) ** 2
    lid_shadow = np.clip((y - y_lid) / 0.04, 0, 1)
    sclera = np.array([0.93, 0.91, 0.88], np.float32)
    iris = m.colours["iris"] * (0.8 + 0.2 * np.cos(40 * np.arctan2(y - m.eye[1], xe)))[:, None]
    eye_col = np.where((r2 < m.eye[5] ** 2)[:, None], iris, sclera)
    eye_col = np.where((r2 < (0.45 * m.eye[5]) ** 2)[:, None], 0.03, eye_col) * (0.6 + 0.4 * lid_shadow)[:, None]
    alb[vis], L[vis], spec[vis] = eye_col[vis], 5, 0.25
    alb[lash], L[lash] = 0.08, 5
    xb = np.abs(x) - m.eye[0] - 0.02
    yb = brow_curve(m, xb, st["brow"])
    thick = 0.034 * (1.0 - 0.5 * np.clip(xb / m.brow[1], 0, 1))  # tapers towards the temple
    br = front & ~(vis | lash) & (np.abs(xb) < m.brow[1]) & (np.abs(y - yb) < thick)
    alb[br], L[br] = m.colours["hair"] * (0.8 + 0.3 * texture(p[br], m.waves["hair"]))[:, None], 6


def _paint_mouth(m: HeadModel, p, front, st, alb, L, spec) -> np.ndarray:
    """Lips ring, dark interior with upper/lower teeth bands and a tongue; returns the interior mask."""
    x, y = p[:, 0], p[:, 1]
    ms = mouth_shape(m, st["jaw"], st["round"], st["spread"], st["close"])
    y_uo, y_ui, y_li, y_lo = mouth_curves(x, ms)
    lips = front & (np.abs(x) < ms.w) & (y > y_uo) & (y < y_lo)
    inner = lips & (np.abs(x) < ms.wi) & (y > y_ui) & (y < y_li)
    lp = lips & ~inner
    alb[lp], L[lp], spec[lp] = m.colours["lips"] * (1.0 + 0.12 * texture(p[lp], m.waves["lips"]))[:, None], 3, 0.15
    hide = 1.0 - 0.7 * st["round"]  # protruding rounded lips hide the teeth
    teeth = inner & (np.abs(x) < 0.85 * ms.wi) & ((y - y_ui < 0.05 * hide) | (y_li - y < 0.03 * hide))
    gap = ((x / 0.045 + 0.5) % 1.0) < 0.1  # dark seams between teeth
    tongue = inner & ~teeth & (y > y_ui + 0.6 * (y_li - y_ui))
    alb[inner] = np.array([0.20, 0.05, 0.06], np.float32)
    alb[tongue] = np.array([0.55, 0.22, 0.24], np.float32)
    alb[teeth] = np.where(gap[teeth, None], 0.55, np.array([0.92, 0.90, 0.82], np.float32))
    L[inner] = 4
    return inner


def shade(m: HeadModel, o, d, R, st: dict, light):
    """Render head rays: (t [M], label [M] uint8 (0 = miss), rgb [M,3] float32 0..1)."""
    t, prim = cast(m, o, d, st["jaw"])
    lab = np.zeros(len(t), np.uint8)
    rgb = np.zeros((len(t), 3), np.float32)
    idx = np.nonzero(np.isfinite(t))[0]
    if len(idx) == 0:
        return t, lab, rgb
    pr = prim[idx]
    p = (o + t[idx, None] * d[idx]).astype(np.float32)
    n = _normals(m, p, pr, st["jaw"])
    q = p.copy()
    q[pr == JAW, 1] -= m.jaw_drop * st["jaw"]  # skin texture rides with the jaw
    alb = m.colours["skin"] * (1.0 + 0.10 * texture(q, m.waves["skin"]))[:, None]
    x, y = p[:, 0], p[:, 1]
    cheek = np.exp(-(((np.abs(x) - 0.42) / 0.16) ** 2 + ((y - 0.25) / 0.16) ** 2))
    alb *= (1.0 - 0.12 * cheek[:, None] * np.array([0.0, 1.0, 0.8], np.float32))  # blush: less green/blue
    L = np.full(len(idx), 2, np.uint8)
    spec = np.full(len(idx), 0.06, np.float32)
    # Hair: dark strands running mostly vertically (waves squashed in y).
    hr = pr == HAIR
    L[hr], spec[hr] = 1, 0.1
    alb[hr] = m.colours["hair"] * (0.75 + 0.35 * texture(p[hr], m.waves["hair"]))[:, None]
    # Nose, with dark nostril ovals on its underside.
    L[pr == NOSE] = 7
    ns = (pr == NOSE) & ((((np.abs(x) - 0.045) / 0.035) ** 2 + ((y - m.centres[NOSE, 1] - 0.17) / 0.03) ** 2) < 1)
    alb[ns] *= 0.45
    front = ((pr == SKULL) | (pr == JAW)) & (p[:, 2] < -0.2)
    _paint_eyes_brows(m, p, front, st, alb, L, spec)
    flat = _paint_mouth(m, p, front, st, alb, L, spec)  # the mouth interior is an unlit cavity colour
    # Lambert + a little Blinn-Phong from a light fixed in camera space (shading changes as the head turns).
    nc = n @ R.T
    lam = np.clip(nc @ light, 0, None)
    half = light + np.array([0, 0, -1.0], np.float32)  # towards the light + towards the camera
    half /= np.linalg.norm(half)
    sp = spec * np.clip(nc @ half, 0, None) ** 24
    lit = np.where(flat, 0.9, 0.32 + 0.78 * lam)
    rgb[idx] = alb * lit[:, None] + sp[:, None]
    lab[idx] = L
    return t, lab, rgb
