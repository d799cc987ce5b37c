"""Seeded parameter streams: phone sequence, articulatory trajectories (1 kHz control rate), blink, brows, head pose.

Articulation is one stream shared by the audio (sampled at 16 kHz) and the video (sampled at frame times
``(i + 0.5) / FPS``), so the mouth is a deterministic function of the sound around each frame.
All articulatory parameters lie in [0, 1]: ``jaw`` opening, lip ``round``-ing, lip ``spread``-ing,
bilabial ``close``-ure, ``voice`` amplitude, and one noise envelope per noise colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d

from lipspace.data.schema import FPS

CONTROL_RATE = 1000  # Hz; smooth enough for formants, cheap to filter
NOISE_TYPES = ("hi", "mid", "low", "flat")  # s/t, k, p/b, f


@dataclass(frozen=True)
class Phone:
    kind: str  # vowel | nasal | approx | stop | fric | sil
    dur: tuple  # duration range, seconds
    jaw: float
    rnd: float = np.nan  # NaN: not specified by this phone, inherited from neighbours (coarticulation)
    spread: float = np.nan
    close: float = 0.0
    voice: float = 0.0
    noise: str | None = None
    noise_amp: float = 0.0


PHONES: dict[str, Phone] = {
    # open a <-> jaw, rounded o/u <-> pucker, spread i/e <-> wide lips
    "a": Phone("vowel", (0.11, 0.22), 0.85, 0.0, 0.25, voice=1.0),
    "e": Phone("vowel", (0.10, 0.20), 0.50, 0.0, 0.65, voice=0.9),
    "i": Phone("vowel", (0.09, 0.18), 0.22, 0.0, 1.00, voice=0.8),
    "o": Phone("vowel", (0.11, 0.22), 0.50, 0.75, 0.0, voice=0.95),
    "u": Phone("vowel", (0.10, 0.20), 0.18, 1.00, 0.0, voice=0.8),
    "m": Phone("nasal", (0.06, 0.11), 0.12, close=1.0, voice=0.30),
    "n": Phone("nasal", (0.05, 0.09), 0.20, voice=0.30),
    "l": Phone("approx", (0.05, 0.09), 0.25, voice=0.55),
    "b": Phone("stop", (0.06, 0.10), 0.10, close=1.0, voice=0.12, noise="low", noise_amp=0.25),
    "p": Phone("stop", (0.07, 0.11), 0.10, close=1.0, noise="low", noise_amp=0.45),
    "t": Phone("stop", (0.06, 0.10), 0.18, noise="hi", noise_amp=0.45),
    "k": Phone("stop", (0.07, 0.11), 0.30, noise="mid", noise_amp=0.45),
    "s": Phone("fric", (0.08, 0.14), 0.12, spread=0.35, noise="hi", noise_amp=0.40),
    "f": Phone("fric", (0.08, 0.13), 0.12, close=0.75, noise="flat", noise_amp=0.25),
    "sil": Phone("sil", (0.2, 0.8), 0.0, 0.0, 0.0),
}
VOWELS, VOWEL_P = ("a", "e", "i", "o", "u"), (0.3, 0.2, 0.17, 0.18, 0.15)
ONSETS = ("m", "n", "l", "b", "p", "t", "k", "s", "f")
CODAS = ("m", "n", "l", "s", "t", "k")
BURST_S = 0.02  # stop release burst at the end of the closure


def phone_sequence(rng: np.random.Generator, seconds: float) -> list[tuple[str, float, float, float]]:
    """(phone, start, end, stress) covering [0, seconds]: phrases of (C)V(C) words separated by pauses."""
    segs, t = [], 0.0

    def add(name, stress=1.0, dur=None):
        nonlocal t
        d = dur if dur is not None else rng.uniform(*PHONES[name].dur)
        segs.append((name, t, t + d, stress))
        t += d

    add("sil", dur=rng.uniform(0.15, 0.4))
    while t < seconds:
        for _ in range(rng.integers(2, 6)):  # words per phrase
            for _ in range(rng.integers(1, 4)):  # syllables per word
                stress = rng.uniform(0.75, 1.1)
                if rng.random() < 0.8:
                    add(ONSETS[rng.integers(len(ONSETS))], stress)
                add(VOWELS[rng.choice(len(VOWELS), p=VOWEL_P)], stress)
                if rng.random() < 0.25:
                    add(CODAS[rng.integers(len(CODAS))], stress)
        add("sil")
    return segs


def _fill_nan(x: np.ndarray, default: float = 0.0) -> np.ndarray:
    """Linear interpolation across unspecified (NaN) targets, so consonants inherit lip shape from neighbours."""
    ok = np.isfinite(x)
    if not ok.any():
        return np.full_like(x, default)
    idx = np.arange(len(x))
    return np.interp(idx, idx[ok], x[ok])


def articulation(segs, seconds: float, f0_base: float, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Smooth control tracks at CONTROL_RATE (sample k at time k / CONTROL_RATE) from the phone targets."""
    n = int(np.ceil(seconds * CONTROL_RATE)) + 2
    tg = {k: np.full(n, np.nan) for k in ("jaw", "round", "spread", "close", "voice")}
    noise = {k: np.zeros(n) for k in NOISE_TYPES}
    phrase_pos = np.zeros(n)  # 0 at phrase start .. 1 at its end, drives pitch declination
    for name, t0, t1, stress in segs:
        i0, i1 = int(round(t0 * CONTROL_RATE)), min(n, int(round(t1 * CONTROL_RATE)))
        if i1 <= i0:
            continue
        ph = PHONES[name]
        tg["jaw"][i0:i1], tg["round"][i0:i1], tg["spread"][i0:i1] = ph.jaw, ph.rnd, ph.spread
        tg["close"][i0:i1], tg["voice"][i0:i1] = ph.close, ph.voice * stress
        if ph.noise is not None:
            j0 = max(i0, i1 - int(BURST_S * CONTROL_RATE)) if ph.kind == "stop" else i0
            noise[ph.noise][j0:i1] = ph.noise_amp * stress
    tg["jaw"][np.isnan(tg["jaw"])] = 0.0
    for k in ("close", "voice"):
        tg[k][np.isnan(tg[k])] = 0.0
    # Coarticulation: slow lips/jaw (Gaussian smoothing anticipates the next target), fast closure and sources.
    ms = CONTROL_RATE / 1000.0
    ctrl = {
        "jaw": gaussian_filter1d(tg["jaw"], 22 * ms, mode="nearest"),
        "round": gaussian_filter1d(_fill_nan(tg["round"]), 28 * ms, mode="nearest"),
        "spread": gaussian_filter1d(_fill_nan(tg["spread"]), 28 * ms, mode="nearest"),
        "close": gaussian_filter1d(tg["close"], 10 * ms, mode="nearest"),
        "voice": gaussian_filter1d(tg["voice"], 8 * ms, mode="nearest"),
    }
    for k, v in noise.items():
        ctrl["noise_" + k] = gaussian_filter1d(v, 4 * ms, mode="nearest")
    for k in ctrl:
        ctrl[k] = np.clip(ctrl[k], 0.0, 1.0)
    # Pitch: per-phrase declination plus slow intonation; only audible where voice > 0.
    t = np.arange(n) / CONTROL_RATE
    starts = [s[1] for s in segs if s[0] == "sil"] + [seconds + 1.0]
    for a, b in zip(starts[:-1], starts[1:], strict=True):
        m = (t >= a) & (t < b)
        phrase_pos[m] = (t[m] - a) / max(b - a, 1e-3)
    ph1, ph2 = rng.uniform(0, 2 * np.pi, 2)
    ctrl["f0"] = f0_base * (1.12 - 0.22 * phrase_pos + 0.05 * np.sin(2 * np.pi * 2.7 * t + ph1)
                            + 0.03 * np.sin(2 * np.pi * 0.6 * t + ph2))
    return ctrl


def at_frames(ctrl: dict[str, np.ndarray], n_frames: int) -> dict[str, np.ndarray]:
    """Sample control tracks at frame-centre times (i + 0.5) / FPS (linear interpolation)."""
    tc = np.arange(len(next(iter(ctrl.values())))) / CONTROL_RATE
    tf = (np.arange(n_frames) + 0.5) / FPS
    return {k: np.interp(tf, tc, v).astype(np.float32) for k, v in ctrl.items()}


def blink_track(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    """Blinks every 3-6 s lasting 0.2-0.3 s: fast close, short hold, slower open."""
    tf = (np.arange(n_frames) + 0.5) / FPS
    out = np.zeros(n_frames)
    t0 = rng.uniform(0.4, 3.0)
    while t0 < tf[-1] + 1.0:
        d = rng.uniform(0.2, 0.3)
        tau = (tf - t0) / d
        b = np.where(tau < 0.3, np.sin(0.5 * np.pi * np.clip(tau, 0, 0.3) / 0.3) ** 2,
                     np.cos(0.5 * np.pi * np.clip((tau - 0.45) / 0.55, 0, 1)) ** 2)
        out = np.maximum(out, np.where((tau >= 0) & (tau <= 1), b, 0.0))
        t0 += d + rng.uniform(3.0, 6.0)
    return out.astype(np.float32)


def _slow(rng: np.random.Generator, tf: np.ndarray, amp: float, periods=(2.5, 12.0), k: int = 3) -> np.ndarray:
    """Sum of k slow sinusoids with seeded periods/phases, peak amplitude about amp."""
    per = rng.uniform(*periods, size=k)
    ph = rng.uniform(0, 2 * np.pi, size=k)
    w = rng.uniform(0.5, 1.0, size=k)
    w = w / w.sum()
    return amp * (w[:, None] * np.sin(2 * np.pi * tf[None] / per[:, None] + ph[:, None])).sum(0)


def brow_track(rng: np.random.Generator, n_frames: int) -> np.ndarray:
    tf = (np.arange(n_frames) + 0.5) / FPS
    return np.clip(0.2 + _slow(rng, tf, 0.25, (1.5, 6.0), 2), 0, 1).astype(np.float32)


def rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """R = Rz(roll) Ry(yaw) Rx(pitch), angles in radians, OpenCV axes (x right, y down, z forward)."""
    cy, sy, cp, sp, cr, sr = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch), np.cos(roll), np.sin(roll)
    rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_track(rng: np.random.Generator, n_frames: int, t0: np.ndarray, pivot: np.ndarray) -> np.ndarray:
    """[N,4,4] head->camera: small rotations about a neck pivot plus small translations, all slow sinusoids."""
    tf = (np.arange(n_frames) + 0.5) / FPS
    deg = np.pi / 180
    yaw, pitch, roll = _slow(rng, tf, 6 * deg), _slow(rng, tf, 4 * deg), _slow(rng, tf, 3 * deg)
    dt = np.stack([_slow(rng, tf, 0.06), _slow(rng, tf, 0.04), _slow(rng, tf, 0.12)], 1)
    out = np.zeros((n_frames, 4, 4))
    for i in range(n_frames):
        r = rotation(yaw[i], pitch[i], roll[i])
        out[i, :3, :3] = r
        out[i, :3, 3] = t0 + dt[i] + pivot - r @ pivot  # rotate about the pivot, not the head centre
        out[i, 3, 3] = 1.0
    return out.astype(np.float32)
