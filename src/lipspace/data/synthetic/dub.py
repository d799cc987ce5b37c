"""A "dub" for the synthetic head: new speech in another voice (another pitch, another phone sequence), with no
frames. It plays the role the dubbed foreign-language tracks play on real clips: audio the model never heard, in a
voice it was not trained on, scored by the lip-sync columns only (there is no ground truth to compare against)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from lipspace.data.schema import SAMPLE_RATE
from lipspace.data.synthetic import params as pm
from lipspace.data.synthetic.speech import synthesize
from lipspace.utils.errors import LipspaceError

DUB_VERSION = "1"


def synthesize_dub(seconds: float = 4.0, f0: float = 220.0, seed: int = 7) -> np.ndarray:
    """``seconds`` of speech at base pitch ``f0`` Hz from its own random phone sequence (float32, 16 kHz mono).
    Same source-filter synthesiser as the training clip, so the mouth shapes behind the audio are those the
    model learned; the voice (pitch) and the words differ."""
    if seconds <= 0 or not 50.0 <= f0 <= 400.0:
        raise LipspaceError(f"synthetic dub: seconds > 0 and 50 <= f0 <= 400 Hz required (got seconds={seconds}, "
                            f"f0={f0}).")
    rng = [np.random.default_rng([seed, 900, s]) for s in range(2)]
    segs = pm.phone_sequence(rng[0], seconds)
    ctrl = pm.articulation(segs, seconds, f0, rng[0])
    return synthesize(ctrl, int(round(seconds * SAMPLE_RATE)), rng[1]).astype(np.float32)


def dub_wav(out_dir, seconds: float = 4.0, f0: float = 220.0, seed: int = 7) -> Path:
    """``out_dir/dub_synthetic_f<f0>_s<seed>.wav`` (written once, reused while its parameters match)."""
    import soundfile as sf

    out_dir = Path(out_dir)
    path = out_dir / f"dub_synthetic_f{int(f0)}_s{seed}.wav"
    stamp = path.with_suffix(".json")
    params = {"version": DUB_VERSION, "seconds": float(seconds), "f0": float(f0), "seed": int(seed)}
    if path.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == params:
        return path
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.wav")
    sf.write(tmp, synthesize_dub(seconds, f0, seed), SAMPLE_RATE, subtype="PCM_16")
    tmp.replace(path)
    stamp.write_text(json.dumps(params))
    return path
