"""SyncTalk's LPIPS refinement stage: logged once the stage starts, skipped with a warning without weights."""

import csv
import warnings

import pytest

from lipspace.utils.config import compose_train
from lipspace.utils.errors import LipspaceError
from tests.conftest import assets_dir, make_tiny_dataset

ASSETS = assets_dir()
ARGS = ["renderer=triplane", "trainer.max_steps=4", "data.steps_per_epoch=4", "data.rays_per_batch=64",
        "renderer.n_samples=8", "data.patch_size=32", "model.lpips_weight=1.0", "model.lpips_start_fraction=0.5",
        "logger=csv", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "trainer.check_val_every_n_epoch=100"]


def _train(tmp_path, *extra):
    from lipspace.tasks.train import train

    ds = make_tiny_dataset(tmp_path / "ds", n=8, hw=40)
    out = tmp_path / "run"
    cfg = compose_train(["data=dir", f"data.root={ds}", *ARGS, *extra], out)
    train(cfg, out)
    rows = list(csv.DictReader(open(out / "csv" / "metrics.csv")))
    return [(int(r["step"]), float(r["train/lpips"])) for r in rows if r.get("train/lpips")]


@pytest.mark.skipif(ASSETS is None or not (ASSETS / "models" / "lpips_alex_v0.1.pth").is_file(),
                    reason="needs LPIPS weights (models/lpips_alex_v0.1.pth under LIPSPACE_ASSETS)")
def test_lpips_joins_at_the_stage_start(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    logged = _train(tmp_path)
    assert logged and min(s for s, _ in logged) >= 2 and all(v >= 0 for _, v in logged)


def test_without_weights_the_stage_is_skipped_with_a_warning(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSPACE_ASSETS", str(tmp_path / "none"))
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        logged = _train(tmp_path)
    assert not logged
    assert any("LPIPS refinement stage skipped" in str(w.message) for w in caught)


def test_chunked_mlp_training_refuses_the_patch_loss(tmp_path):
    from hydra.utils import instantiate

    from lipspace.model.build import build_system

    ds = make_tiny_dataset(tmp_path / "ds", n=8, hw=40)
    cfg = compose_train(["data=dir", f"data.root={ds}", "model.lpips_weight=1.0"], tmp_path / "run")
    dm = instantiate(cfg.data)
    dm.load()
    with pytest.raises(LipspaceError, match="train_chunk_rays=null"):
        build_system(cfg, dm)
