"""Source-filter speech synthesis from the articulatory control tracks (glottal pulses + formants, coloured noise).

Formants are a fixed continuous function of articulation (``formants``): F1 rises with jaw opening, F2 falls with
lip rounding and rises with spreading, so the audio around a frame determines the mouth shape in that frame.
"""

from __future__ import annotations

import numpy as np
from scipy.signal import butter, sosfilt

from lipspace.data.schema import SAMPLE_RATE
from lipspace.data.synthetic.params import CONTROL_RATE, NOISE_TYPES

BANDWIDTHS = (80.0, 110.0, 160.0)  # Hz, F1..F3
BLOCK = 64  # samples per formant update (4 ms); filter state carries across blocks
NOISE_BANDS = {"hi": (3800, 7600), "mid": (1400, 3400), "low": (250, 2200), "flat": (900, 7600)}
VOICE_GAIN = 0.12  # fixed gains (no per-clip normalisation: held-out clips share the same loudness scale)
NOISE_GAIN = 0.35
FLOOR = 3e-4  # room-noise floor so silence is quiet but not digital zero


def formants(jaw, rnd, spread, close):
    """F1, F2, F3 in Hz as a function of the articulatory parameters (arrays or scalars)."""
    f1 = (250.0 + 600.0 * jaw) * (1.0 - 0.35 * close)
    f2 = 1500.0 + 650.0 * spread - 800.0 * rnd - 300.0 * jaw
    f3 = 2500.0 + 300.0 * spread - 350.0 * rnd
    return f1, f2, f3


def aperture(jaw, rnd, close):
    """Relative lip aperture 0..~1; radiated loudness of voiced sound follows it."""
    return np.clip((jaw + 0.18 * rnd) * (1.0 - close), 0.0, 1.0)


def _glottal(f0: np.ndarray) -> np.ndarray:
    """Differentiated Rosenberg pulse train at a time-varying pitch f0 (Hz, per sample)."""
    phase = np.cumsum(f0 / SAMPLE_RATE)
    frac = phase - np.floor(phase)
    tp, tn = 0.40, 0.16  # opening / closing fractions of the period
    g = np.where(frac < tp, 0.5 * (1 - np.cos(np.pi * frac / tp)),
                 np.where(frac < tp + tn, np.cos(0.5 * np.pi * (frac - tp) / tn), 0.0))
    return np.diff(g, prepend=0.0) * 10.0


def _resonator_sos(freqs: np.ndarray, bws) -> np.ndarray:
    """[n_formants, 6] second-order sections with unity gain at DC (Klatt resonators)."""
    r = np.exp(-np.pi * np.asarray(bws) / SAMPLE_RATE)
    a1 = -2.0 * r * np.cos(2.0 * np.pi * freqs / SAMPLE_RATE)
    a2 = r * r
    sos = np.zeros((len(freqs), 6))
    sos[:, 0] = 1.0 + a1 + a2
    sos[:, 3], sos[:, 4], sos[:, 5] = 1.0, a1, a2
    return sos


def _formant_filter(x: np.ndarray, f1, f2, f3) -> np.ndarray:
    """Time-varying cascade of three resonators: coefficients per BLOCK, filter state carried across blocks."""
    y = np.empty_like(x)
    zi = np.zeros((3, 2))
    for b, s in enumerate(range(0, len(x), BLOCK)):
        sos = _resonator_sos(np.array([f1[b], f2[b], f3[b]]), BANDWIDTHS)
        y[s:s + BLOCK], zi = sosfilt(sos, x[s:s + BLOCK], zi=zi)
    return y


def synthesize(ctrl: dict[str, np.ndarray], n_samples: int, rng: np.random.Generator) -> np.ndarray:
    """float32 mono audio of n_samples at 16 kHz from control tracks sampled at CONTROL_RATE."""
    tc = np.arange(len(ctrl["jaw"])) / CONTROL_RATE
    ta = np.arange(n_samples) / SAMPLE_RATE

    def up(k):
        return np.interp(ta, tc, ctrl[k])

    jaw, rnd, close = up("jaw"), up("round"), up("close")
    voice = up("voice") * (0.3 + 0.7 * np.sqrt(aperture(jaw, rnd, close)))
    exc = _glottal(up("f0")) * voice + 0.03 * voice * rng.standard_normal(n_samples)  # + breathiness
    # Formants at block centres (from the control tracks directly: cheaper than from the upsampled ones).
    tb = (np.arange(0, n_samples, BLOCK) + BLOCK / 2) / SAMPLE_RATE
    f1, f2, f3 = formants(*(np.interp(tb, tc, ctrl[k]) for k in ("jaw", "round", "spread", "close")))
    out = VOICE_GAIN * _formant_filter(exc, f1, f2, f3)
    for k in NOISE_TYPES:
        env = up("noise_" + k)
        if env.max() <= 0:
            continue
        sos = butter(4, NOISE_BANDS[k], btype="bandpass", fs=SAMPLE_RATE, output="sos")
        out += NOISE_GAIN * env * sosfilt(sos, rng.standard_normal(n_samples))
    out += FLOOR * rng.standard_normal(n_samples)
    return np.clip(out, -1.0, 1.0).astype(np.float32)
