"""docs/extending.md, done for real: a conditioning space defined in a temporary module, selected by a yaml in a
temporary config folder (``hydra.searchpath``), trains, evaluates and is driven by audio without any file of
lipspace being touched. Also the pieces that make that possible: override checks that know the user's folder,
audio backends named by their module path."""

import sys
import textwrap

import numpy as np
import pytest

from lipspace.utils.errors import LipspaceError

SPACE = '''
import torch
from torch import nn

from lipspace.audio.features import MelBackend
from lipspace.conditioners.base import Conditioner


class HalfMel(MelBackend):
    """A user's audio backend: 40 mel bands (named in the yaml by its module path)."""

    def __init__(self):
        super().__init__(n_mels=40)


class EnergyConditioner(Conditioner):
    """Audio only: the per-band mean of the audio window around each frame, through one linear layer."""

    name = "energy"

    def __init__(self, inputs=None, audio=None, dim: int = 8, out_dim=None):
        super().__init__(inputs or {"audio": "auto"}, out_dim)
        self.add_audio_input("audio", audio or {"backend": "mel", "window": 4})
        self.net = nn.Linear(self.inputs["audio"], dim)
        self.dim = dim
        self._build_projection()

    @property
    def raw_dim(self) -> int:
        return self.dim

    def encode(self, inputs, frame_idx):
        return self.net(inputs["audio"].mean(1))
'''

YAML = '''
_target_: {module}.EnergyConditioner
inputs:
  audio: auto
audio:
  backend: {module}:HalfMel
  window: 4
  context: 1
dim: 8
'''


@pytest.fixture
def user_space(tmp_path, monkeypatch):
    """A module and a config folder of a user's own, outside the package; the module's name is unique per test."""
    module = f"user_space_{tmp_path.name.replace('-', '_')}"
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / f"{module}.py").write_text(textwrap.dedent(SPACE))
    conf = tmp_path / "my_conf" / "conditioner"
    conf.mkdir(parents=True)
    (conf / "energy.yaml").write_text(YAML.format(module=module))
    monkeypatch.syspath_prepend(str(tmp_path / "code"))
    yield module, tmp_path / "my_conf"
    sys.modules.pop(module, None)


def test_a_users_conditioner_trains_evaluates_and_drives_by_audio(user_space, tiny_dataset, tmp_path):
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train
    from lipspace.utils.config import choices_from_overrides, compose_train

    module, conf = user_space
    run = tmp_path / "run"
    overrides = [f"hydra.searchpath=[file://{conf}]", "conditioner=energy", "renderer=triplane", "data=dir",
                 f"data.root={tiny_dataset}", "debug=fast", "logger=csv", "trainer.enable_progress_bar=false"]
    cfg = compose_train(overrides, run)
    assert cfg.conditioner._target_ == f"{module}.EnergyConditioner"
    metrics = train(cfg, run, choices_from_overrides(overrides))
    assert metrics["global_step"] == cfg.trainer.max_steps
    df = evaluate(run, videos=False, settings={"lpips": False, "face": False, "lse": False, "lse_local": False})
    assert set(df.eval_set) == {"test_tail", "heldout/utt_00"}
    assert (df.driver == "audio").all()  # audio-only: every held-out sequence is driven by its audio
    assert np.isfinite(df.psnr).all() and (df.psnr > 0).all()
    assert (df.conditioner == "energy").all()


def test_the_users_audio_backend_sets_the_auto_width(user_space):
    module, _ = user_space
    space = __import__(module)
    c = space.EnergyConditioner(audio={"backend": f"{module}:HalfMel", "window": 4})
    assert c.inputs == {"audio": 40} and c.net.in_features == 40


def test_override_checks_know_the_users_config_folder(user_space):
    from lipspace.utils.config import check_group_overrides, user_config_dirs

    _, conf = user_space
    check_group_overrides([f"hydra.searchpath=[file://{conf}]", "conditioner=energy"])
    check_group_overrides(["--config-dir", str(conf), "conditioner=energy"])
    with pytest.raises(LipspaceError, match=r"unknown conditioner 'energy'.*available: .*expression"):
        check_group_overrides(["conditioner=energy"])
    with pytest.raises(LipspaceError, match=r"unknown conditioner 'energi'.*available: .*energy"):
        check_group_overrides([f"hydra.searchpath=[file://{conf},pkg://elsewhere]", "conditioner=energi"])
    assert user_config_dirs(["-cd", "a", "--config-dir=b", "hydra.searchpath=['file://c',pkg://d]"]) == \
        [conf.__class__(p) for p in ("a", "b", "c")]


def test_backend_paths_that_do_not_resolve_are_one_line():
    from lipspace.audio.features import backend_class

    with pytest.raises(LipspaceError, match=r"audio backend 'nope:X': cannot import nope:X"):
        backend_class("nope:X")
    with pytest.raises(LipspaceError, match=r"lipspace.utils.errors:LipspaceError is not an AudioBackend"):
        backend_class("lipspace.utils.errors:LipspaceError")
    with pytest.raises(LipspaceError, match=r"audio backend 'melx' is unknown.*'package.module:Class'"):
        backend_class("melx")
