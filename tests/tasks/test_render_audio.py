"""Driving a trained model by a new wav: audio conditioners directly, LipNeRF through its regressor."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from lipspace.utils.config import compose_train
from lipspace.utils.errors import LipspaceError
from lipspace.model.playback import pose_playback
from lipspace.tasks.render import render
from lipspace.tasks.train import train

FAST = ["debug=fast", "logger=csv"]


def test_pose_playback_bounces_without_jumps():
    assert pose_playback(np.array([3, 4, 5]), 9).tolist() == [3, 4, 5, 4, 3, 4, 5, 4, 3]
    assert pose_playback(np.array([7]), 3).tolist() == [7, 7, 7]


@pytest.fixture
def new_wav(tmp_path):
    t = np.arange(int(1.3 * 16000)) / 16000
    y = (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32)
    path = tmp_path / "dub.wav"
    sf.write(path, y, 16000, subtype="PCM_16")
    return path


@pytest.mark.parametrize("overrides", [["conditioner=deepspeech", "conditioner.audio.window=8"],
                                       ["experiment=lipnerf", "conditioner.audio.window=8"]])
def test_render_driven_by_a_new_wav(tiny_dataset, tmp_path, new_wav, overrides):
    import av

    out = tmp_path / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST, *overrides], out), out)
    video = render(out, str(new_wav))
    with av.open(str(video)) as c:
        n = sum(1 for _ in c.decode(video=0))
    assert n == int(1.3 * 25) and video.name == "dub.mp4"


def test_expression_only_model_cannot_be_driven_by_audio(tiny_dataset, tmp_path, new_wav):
    out = tmp_path / "run"
    train(compose_train(["data=dir", f"data.root={tiny_dataset}", *FAST], out), out)
    with pytest.raises(LipspaceError, match="cannot be driven by audio alone"):
        render(out, str(new_wav))
    with pytest.raises(LipspaceError, match="no such audio file"):
        render(out, str(tmp_path / "missing.wav"))
