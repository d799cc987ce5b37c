"""The hooks evaluation and rendering call on every conditioner: defaults of the base class."""

import pytest
import torch

from lipspace.audio.inputs import AudioInput
from lipspace.conditioners.base import Conditioner
from lipspace.errors import LipspaceError


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
