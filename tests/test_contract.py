"""The contract every conditioning space and every renderer keeps, for each pair: it trains a few steps through the
system, evaluates on the held-out tail and a held-out utterance, and, where the space can be driven by audio alone,
is scored driven by its audio. A new conditioner or renderer joins these lists and must pass."""

import numpy as np
import pytest

from tiny_sizes import TINY_LIPBLINK_CONDITIONER

PRESETS = {"lipnerf": [], "adnerf": [], "dfanerf": TINY_LIPBLINK_CONDITIONER, "synctalk": [], "sspnerf": []}
SPACES = ["lipnerf", "adnerf", "dfanerf", "synctalk"]  # one preset per conditioning space (sspnerf: deepspeech again)
RENDERERS = ["mlp", "triplane", "gaussian"]
TINY = ["debug=fast", "logger=csv", "trainer.enable_progress_bar=false", "ave.steps=12", "ave.batch=8", "ave.width=4",
        "ave.crop_hw=[16,32]"]


# torso options other than torso=gt checked on some preset x renderer pairs (the presets' own: adnerf, dfanerf,
# synctalk nerf, on a ray renderer and on the Gaussian one; sspnerf deform, a ray-renderer option with its parsing
# branch and dynamic sampling)
TORSO = {"nerf": [("adnerf", "triplane"), ("adnerf", "gaussian")],
         "deform": [("sspnerf", "triplane"), ("sspnerf", "mlp")]}


@pytest.mark.parametrize("renderer", RENDERERS)
@pytest.mark.parametrize("preset", SPACES)
def test_every_space_trains_and_evaluates_on_every_renderer(preset, renderer, tiny_dataset, tmp_path, monkeypatch):
    # every space over the same ground-truth torso, whatever its preset's own option
    df = _train_and_evaluate(preset, renderer, ["torso=gt"], tiny_dataset, tmp_path, monkeypatch)
    assert (df.torso == "gt").all()
    _check_audio_driven(df, preset)


@pytest.mark.parametrize(("torso", "preset", "renderer"), [(t, p, r) for t, pairs in TORSO.items() for p, r in pairs])
def test_torso_options_train_and_evaluate(torso, preset, renderer, tiny_dataset, tmp_path, monkeypatch):
    df = _train_and_evaluate(preset, renderer, [f"torso={torso}"], tiny_dataset, tmp_path, monkeypatch)
    assert (df.torso == torso).all()
    _check_audio_driven(df, preset)


def _train_and_evaluate(preset, renderer, extra, tiny_dataset, tmp_path, monkeypatch):
    from lipspace.utils.config import choices_from_overrides, compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))  # the synctalk space trains its own AVE
    run = tmp_path / "run"
    overrides = ["data=dir", f"data.root={tiny_dataset}", f"experiment={preset}", f"renderer={renderer}", *TINY,
                 *PRESETS[preset], *extra]
    cfg = compose_train(overrides, run)
    metrics = train(cfg, run, choices_from_overrides(overrides))
    assert metrics["global_step"] == cfg.trainer.max_steps
    df = evaluate(run, videos=False, settings={"lpips": False, "face": False, "lse": False, "lse_local": False})
    assert set(df.eval_set) == {"test_tail", "heldout/utt_00"}
    assert np.isfinite(df.psnr).all() and (df.psnr > 0).all()
    assert (df.renderer == renderer).all() and (df.experiment == preset).all()
    return df


def _check_audio_driven(df, preset):
    # every preset's space can be driven by a new audio track: each eval set has an audio-driven row
    for eval_set in ("test_tail", "heldout/utt_00"):
        assert "audio" in set(df[df.eval_set == eval_set].driver), (preset, eval_set, list(df.driver))
