"""The train task's checks before anything is built: a renderer that declares it cannot be trained by DDP
(Renderer.supports_ddp) is refused under a multi-process trainer with one clear line."""

import pytest

from lipspace.renderers.gaussian import GaussianRenderer
from lipspace.renderers.torso_images import TorsoImageComposite
from lipspace.renderers.triplane import TriPlaneRenderer
from lipspace.tasks.train import check_distributed, train
from lipspace.utils.config import compose_train
from lipspace.utils.errors import LipspaceError


def test_declarations():
    assert TriPlaneRenderer.supports_ddp and not GaussianRenderer.supports_ddp
    assert not TorsoImageComposite.supports_ddp


@pytest.mark.parametrize("torso", ["gt", "nerf"])
def test_a_gaussian_run_under_ddp_is_refused_before_anything_is_built(torso, tiny_dataset, tmp_path):
    run = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={tiny_dataset}", "renderer=gaussian", f"torso={torso}",
                         "trainer=ddp", "trainer.devices=2", "logger=csv"], run)
    with pytest.raises(LipspaceError, match="cannot be trained by 2 DDP processes"):
        train(cfg, run)
    assert not (run / "prepare.json").exists() and not (run / "checkpoints").exists()
    check_distributed(cfg, 1)  # one process: fine
    check_distributed(compose_train(["renderer=triplane"], tmp_path / "r2"), 2)  # fixed-size parameters: fine
