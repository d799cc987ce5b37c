"""The hooks evaluation and rendering call on every conditioner: defaults of the base class."""

import pytest
import torch

from lipspace.audio.inputs import AudioInput
from lipspace.conditioners.base import Conditioner
from lipspace.utils.errors import LipspaceError


class _Tracks(Conditioner):
    name = "tracks"

    @property
    def raw_dim(self):
        return sum(self.inputs.values())

    def encode(self, inputs, frame_idx):
        return torch.cat([inputs[k] for k in self.inputs], -1)


def _audio(inputs):
    c = _Tracks(inputs)
    c.audio_inputs = {"audio": AudioInput.of({"backend": "mel", "window": 4})}
    return c


def test_defaults_declare_no_extras():
    c = _Tracks({"expr": 3})
    assert not c.generates_motion and c.drive_metrics({"expr": torch.zeros(2, 3)}) == {}
    assert not c.audio_only() and not c.can_drive_by_audio() and not c.drivable_both_ways()
    with pytest.raises(LipspaceError, match="does not generate head motion"):
        c.generate_motion(torch.zeros(2, 4, 80))
    with pytest.raises(LipspaceError, match="cannot be driven by audio alone"):
        with c.driving_by_audio():
            pass


def test_audio_only_drive_inputs_and_motion_input():
    c = _audio({"audio": 80})
    assert c.audio_only() and c.can_drive_by_audio() and not c.drivable_both_ways()
    assert c.motion_input == "audio"
    a = torch.ones(5, 4, 80)
    assert c.inputs_from_audio({"audio": a}, 5) == {"audio": a}


def test_inputs_predicted_from_audio_get_placeholders():
    c = _audio({"audio": 80, "expr": 3})
    inputs = c.inputs_from_audio({"audio": torch.ones(5, 4, 80)}, 5)
    assert set(inputs) == {"audio", "expr"} and torch.equal(inputs["expr"], torch.zeros(5, 3))


class _Listener(_Tracks):
    """A conditioner whose 'audio' input is computed from the audio (declared through add_audio_input)."""

    name = "listener"

    def __init__(self, inputs, audio):
        super().__init__(inputs)
        self.add_audio_input("audio", audio)


@pytest.mark.parametrize("backend, kwargs, width", [("mel", {}, 80), ("mel", {"n_mels": 40}, 40),
                                                     ("mfcc", {}, 39), ("mfcc", {"deltas": False}, 13)])
def test_audio_width_auto_is_the_backends(backend, kwargs, width):
    c = _Listener({"audio": "auto"}, {"backend": backend, "window": 4, "backend_kwargs": kwargs})
    assert c.inputs == {"audio": width} and c.audio_inputs["audio"].backend == backend
    c.check_declared()
    # an explicit width is kept as given (the data side checks it against the backend: one line at start-up)
    assert _Listener({"audio": 12}, {"backend": backend}).inputs == {"audio": 12}


def test_audio_width_auto_of_ave_without_and_with_a_checkpoint(tmp_path, monkeypatch):
    from lipspace.av.sync import AVEncoder, save

    monkeypatch.setenv("LIPSPACE_AVE_WEIGHTS", str(tmp_path / "none.pt"))
    spec = {"backend": "ave", "window": 1}
    assert _Listener({"audio": "auto"}, spec).inputs["audio"] == 256  # what the automatic stage trains
    torch.manual_seed(0)
    path = save(AVEncoder(dim=32, width=4), tmp_path / "ave.pt", {"weights": "random init for lipspace tests"})
    spec["backend_kwargs"] = {"weights": str(path)}
    assert _Listener({"audio": "auto"}, spec).inputs["audio"] == 32  # the checkpoint's width


def test_auto_width_only_for_audio_inputs_and_widths_are_integers():
    c = _Tracks({"expr": "auto"})
    with pytest.raises(LipspaceError, match=r"inputs \['expr'\] declare width 'auto'.*conditioner.inputs.expr"):
        c.check_declared()
    with pytest.raises(LipspaceError, match=r"conditioner.inputs.expr='wide': a width must be an integer"):
        _Tracks({"expr": "wide"})
    with pytest.raises(LipspaceError, match=r"audio input 'speech' is not among its inputs \['audio'\]"):
        _Tracks({"audio": "auto"}).add_audio_input("speech", {"backend": "mel"})
