"""Bad dubbed / driving audio never crashes an evaluation: silence, under a second, 48 kHz, stereo, a text file named
.wav, an empty file. Alone (``render``, ``lipspace-render``): one clear line naming the file, what is wrong and the
fix, or a render from the normalised audio. Among several dubs (``evaluate``): one row each, whose ``dub_status`` says
why it was not scored and whose ``dub_note`` says what was converted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from lipspace.utils.errors import LipspaceError

SR = 16000
# a tiny renderer (16 samples per ray, 3x32 MLP): each of the dozen ~1 s renders below takes a second, not a minute
FAST = ["debug=fast", "logger=csv", "renderer.n_coarse=8", "renderer.n_fine=8", "renderer.field.hidden=32",
        "renderer.field.n_layers=3", "renderer.field.skips=[]"]


def _speechy(seconds: float, sr: int = SR, seed: int = 0) -> np.ndarray:
    """Noise whose loudness changes every 40 ms: mel features that move from frame to frame, as speech."""
    rng = np.random.default_rng(seed)
    n = int(round(seconds * sr))
    env = np.repeat(rng.uniform(0.1, 1.0, n // (sr // 25) + 1), sr // 25)[:n]
    return (0.2 * env * rng.normal(size=n)).astype(np.float32)


@pytest.fixture(scope="module")
def bad_dubs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("dubs")
    files = {k: d / f"{k}.wav" for k in ("good", "silence", "short", "tiny", "hz48", "stereo", "text", "empty")}
    sf.write(files["good"], _speechy(1.2), SR)
    sf.write(files["silence"], np.zeros(int(1.1 * SR), np.float32), SR, subtype="PCM_16")
    sf.write(files["short"], _speechy(0.5, seed=1), SR)
    sf.write(files["tiny"], _speechy(0.02, seed=2), SR)  # 20 ms: less than one 25 fps video frame
    sf.write(files["hz48"], _speechy(1.1, 48000, seed=3), 48000)
    sf.write(files["stereo"], np.stack([_speechy(1.1, seed=4), _speechy(1.1, seed=5)], 1), SR)
    files["text"].write_text("this is not audio, just a text file renamed .wav\n" * 20)
    files["empty"].write_bytes(b"")
    return files


@pytest.fixture(scope="module")
def audio_run(tiny_dataset, tmp_path_factory) -> Path:
    """A tiny audio-driven model (AD-NeRF's conditioner on log-mel), trained for a few steps."""
    from lipspace.utils.config import compose_train
    from lipspace.tasks.train import train

    out = tmp_path_factory.mktemp("bad_dub_run") / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST, "conditioner=deepspeech",
                         "conditioner.audio.window=8"], out), out)
    return out


# ---------------------------------------------------------------------------------------------- the audio loader
def test_load_driving_audio_normalises_or_explains(bad_dubs, tmp_path):
    from lipspace.audio.inputs import load_driving_audio

    good = load_driving_audio(bad_dubs["good"])
    assert good.sample_rate == SR and good.notes == [] and not good.silent
    assert good.audio.dtype == np.float32 and good.audio.ndim == 1 and good.seconds == pytest.approx(1.2)
    hz48 = load_driving_audio(bad_dubs["hz48"])
    assert hz48.sample_rate == SR and len(hz48.audio) == int(1.1 * SR)
    assert hz48.notes == ["resampled from 48000 Hz to 16000 Hz"]
    stereo = load_driving_audio(bad_dubs["stereo"])
    assert stereo.notes == ["downmixed from 2 channels to mono"] and len(stereo.audio) == int(1.1 * SR)
    ref = sf.read(bad_dubs["stereo"], dtype="float32")[0].mean(1)
    np.testing.assert_allclose(stereo.audio, ref, atol=1e-6)
    silence = load_driving_audio(bad_dubs["silence"])
    assert silence.silent and "silent" in silence.speech_status and "no speech" in silence.speech_status
    assert not good.silent and good.speech_status == ""
    assert load_driving_audio(bad_dubs["short"]).seconds == pytest.approx(0.5)
    for key, what in (("text", "not an audio file"), ("empty", "empty file (0 bytes)")):
        with pytest.raises(LipspaceError) as e:
            load_driving_audio(bad_dubs[key])
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(f"{bad_dubs[key]}: {what}") and "ffmpeg -i" in msg, msg
    with pytest.raises(LipspaceError, match="no such audio file"):
        load_driving_audio(tmp_path / "missing.wav")


def test_write_driving_wav_is_16k_mono(bad_dubs, tmp_path):
    from lipspace.audio.features import read_audio
    from lipspace.audio.inputs import load_driving_audio

    a = load_driving_audio(bad_dubs["hz48"])
    out = a.write(tmp_path / "norm.wav")
    info = sf.info(out)
    assert info.samplerate == SR and info.channels == 1
    np.testing.assert_allclose(read_audio(out), a.audio, atol=1 / 32768 + 1e-6)


# ---------------------------------------------------------------------------------------- alone: lipspace-render
def test_render_alone_explains_or_normalises(audio_run, bad_dubs, tmp_path):
    import av

    from lipspace.tasks.render import render

    for key, what in (("text", "not an audio file"), ("empty", "empty file (0 bytes)"),
                      ("tiny", "shorter than one video frame")):
        with pytest.raises(LipspaceError) as e:
            render(audio_run, str(bad_dubs[key]), out=str(tmp_path / f"{key}.mp4"))
        msg = str(e.value)
        assert "\n" not in msg and msg.startswith(str(bad_dubs[key])) and what in msg, msg
    for key, seconds in (("hz48", 1.1), ("stereo", 1.1), ("silence", 1.1)):
        video = render(audio_run, str(bad_dubs[key]), out=str(tmp_path / f"{key}.mp4"))
        with av.open(str(video)) as c:
            n = sum(1 for _ in c.decode(video=0))
            has_audio = bool(c.streams.audio)
        assert n == int(seconds * 25) and has_audio, key


def test_render_cli_prints_one_line_for_a_text_file(audio_run, bad_dubs):
    cli = Path(sys.executable).parent / "lipspace-render"
    proc = subprocess.run([str(cli), f"run_dir={audio_run}", f"driver={bad_dubs['text']}"], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("lipspace: error:")]
    assert len(lines) == 1 and str(bad_dubs["text"]) in lines[0] and "not an audio file" in lines[0], \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------------- together: an evaluation sweep
def test_evaluation_with_bad_dubs_gives_a_row_each(audio_run, bad_dubs, tmp_path):
    import torch

    from lipspace.av.sync import AVEncoder, save
    from lipspace.tasks.evaluate import evaluate

    torch.manual_seed(0)  # a random-init local sync expert: real local LSE numbers on the dubs that have speech
    ave = save(AVEncoder(width=4), tmp_path / "ave.pt", {"weights": "random init for lipspace tests"})
    settings = {"lpips": False, "face": False, "lse": True, "lse_local": True, "download": False,
                "ave_weights": str(ave)}
    df = evaluate(audio_run, videos=False, settings=settings, dub_audio=list(bad_dubs.values()), dub_seconds=0.4,
                  max_tail_frames=2)
    dubs = df[df.eval_set.str.startswith("dub/")].set_index("eval_set")
    assert sorted(dubs.index) == sorted(f"dub/{k}" for k in bad_dubs)
    assert {"dub_status", "dub_note"} <= set(dubs.columns)
    status, note = dubs.dub_status.to_dict(), dubs.dub_note.fillna("").to_dict()
    for k in ("good", "silence", "short", "hz48", "stereo"):
        assert status[f"dub/{k}"].startswith("ok"), (k, status[f"dub/{k}"])
        assert dubs.loc[f"dub/{k}", "n_frames"] == 10  # dub_seconds=0.4 at 25 fps
    assert note["dub/hz48"] == "resampled from 48000 Hz to 16000 Hz"
    assert note["dub/stereo"] == "downmixed from 2 channels to mono"
    assert note["dub/good"] == "" and note["dub/short"].startswith("0.50 s: shorter than 1 s")
    for k, what in (("text", "not an audio file"), ("empty", "empty file (0 bytes)"),
                    ("tiny", "shorter than one video frame")):
        s = status[f"dub/{k}"]
        assert s.startswith("not scored: ") and what in s and str(bad_dubs[k]) in s and "\n" not in s, s
        assert dubs.loc[f"dub/{k}", "n_frames"] == 0
        assert all(pd.isna(dubs.loc[f"dub/{k}", c]) for c in ("lse_d", "lse_d_local")), k
    silent = dubs.loc["dub/silence"]
    assert "no speech" in silent.lse_status and "no speech" in silent.lse_local_status
    assert pd.isna(silent.lse_d) and pd.isna(silent.lse_d_local)
    assert "is silent (RMS -inf dBFS" in note["dub/silence"] and "no speech" in note["dub/silence"]
    assert "no speech" not in dubs.loc["dub/good", "lse_status"]  # scored as usual (here: no weights, so NaN)
    good = dubs.loc["dub/good"]
    assert good.lse_local_status.startswith("ok") and np.isfinite(good.lse_d_local)
    assert dubs.loc["dub/hz48", "lse_local_status"].startswith("ok")  # resampled, then scored as any other
    assert (df[~df.eval_set.str.startswith("dub/")].dub_status.isna()).all()  # only dub rows carry it
    saved = pd.read_csv(audio_run / "eval" / "results.csv")
    assert len(saved) == len(df) and saved.dub_status.notna().sum() == len(bad_dubs)
