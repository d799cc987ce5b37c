"""Every option of every config group composes and resolves; wrong names and values fail in one clear line."""

import subprocess
import sys
from pathlib import Path

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lipspace.utils.config import CONF_DIR, check_config, compose_train, group_options
from lipspace.utils.errors import LipspaceError

GROUPS = ["data", "conditioner", "renderer", "model", "trainer", "logger", "callbacks", "paths", "budget",
          "experiment", "debug", "local", "evaluation", "ave", "torso"]
NEEDS = {"data=dir": ["data.root=/tmp/some_dataset"]}


def cases():
    for g in GROUPS:
        for opt in group_options(g):
            yield f"{g}={opt}"


@pytest.mark.parametrize("override", list(cases()))
def test_every_group_option_composes_and_resolves(override, tmp_path):
    cfg = compose_train([override, *NEEDS.get(override, [])], tmp_path / "run")
    container = OmegaConf.to_container(cfg, resolve=True)
    assert container["renderer"]["_target_"].startswith("lipspace.renderers.")
    check_config(cfg)
    group, opt = override.split("=")
    if group == "conditioner":
        from lipspace.model.build import build_conditioner

        cond = build_conditioner(cfg, n_frames=10)
        renderer = instantiate(cfg.renderer)(cond_dim=cond.out_dim)
        assert renderer is not None
    if group == "torso":  # the option's renderer (the configured one, wrapped for a modelled torso) builds
        from lipspace.model.build import build_conditioner, build_renderer, torso_option

        renderer = build_renderer(cfg)(cond_dim=build_conditioner(cfg, n_frames=10).out_dim)
        assert torso_option(cfg) == opt and (type(renderer).__name__ == "TorsoComposite") == (opt == "nerf")
        assert (list(cfg.data.gt_background_classes) == [9]) == (opt == "gt")
    if group == "logger":
        loggers = [instantiate(c) for c in (cfg.logger or {}).values()]
        assert all(lg is not None for lg in loggers)
    if group == "callbacks":
        assert all(instantiate(c) is not None for c in cfg.callbacks.values())
    if group == "evaluation":
        from lipspace.eval.scoring import EvalSettings

        EvalSettings.of(cfg.evaluation.metrics)  # unknown keys raise
    if group == "trainer" and opt != "gpu":
        trainer = instantiate(cfg.trainer, logger=False, enable_progress_bar=False)
        assert trainer.max_steps == cfg.trainer.max_steps


def test_all_groups_listed():
    found = {p.name for p in CONF_DIR.iterdir() if p.is_dir() and not p.name.startswith("_")}
    found -= {"hydra", "budget_renderer", "experiment_renderer"}
    assert found == set(GROUPS), "a new config group must be added to this test"


@pytest.mark.parametrize("budget", group_options("budget"))
@pytest.mark.parametrize("renderer", group_options("renderer"))
def test_every_budget_renderer_pair_builds(budget, renderer, tmp_path):
    """budget_renderer/<budget>_<renderer>.yaml holds renderer-specific sizes; every pair must instantiate, and a
    specialisation file must name an existing budget and renderer."""
    cfg = compose_train([f"budget={budget}", f"renderer={renderer}"], tmp_path / "run")
    check_config(cfg)
    assert instantiate(cfg.renderer)(cond_dim=4) is not None
    for f in (CONF_DIR / "budget_renderer").glob("*.yaml"):
        b, _, r = f.stem.partition("_")
        assert b in group_options("budget") and r in group_options("renderer"), f"{f} names no budget/renderer"
    for f in (CONF_DIR / "experiment_renderer").glob("*.yaml"):
        e, _, r = f.stem.partition("_")
        assert e in group_options("experiment") and r in group_options("renderer"), f"{f} names no preset/renderer"


@pytest.mark.parametrize("budget", group_options("budget"))
def test_budget_name_is_the_composed_budget(budget, tmp_path):
    """results rows record budget_name: each budget file names itself, and a study sweep records the budget a run
    composed (clip_length's sweep once pinned budget_name: tiny whatever budget= said)."""
    from hydra import compose, initialize_config_dir

    assert compose_train([f"budget={budget}"], tmp_path).budget_name == budget
    root = Path(__file__).resolve().parents[2]
    for study in ("conditioning_spaces", "clip_length"):
        with initialize_config_dir(str(root / "experiments" / study), version_base="1.3"):
            cfg = compose("sweep_synthetic", overrides=[f"hydra.searchpath=[file://{CONF_DIR}]", f"budget={budget}"])
        assert cfg.budget_name == budget, study


def test_budget_scales_renderer():
    import tempfile

    tiny = compose_train(["experiment=lipnerf", "budget=tiny"], tempfile.mkdtemp())
    paper = compose_train(["experiment=lipnerf", "budget=paper"], tempfile.mkdtemp())
    assert (paper.renderer.n_coarse, paper.renderer.n_fine, paper.data.rays_per_batch) == (64, 128, 2048)
    assert paper.renderer.field.hidden == 128 and paper.renderer.field.n_layers == 8  # LipNeRF's 8x128
    assert tiny.renderer.field.hidden < paper.renderer.field.hidden


def test_tiny_triplane_rates_stay_with_the_triplane(tmp_path):
    """budget_renderer/tiny_triplane.yaml raises the shared model.optimizer.lr for the tri-plane only (its tuned CPU
    rates); an MLP run, and an explicit override, keep theirs."""
    tri = compose_train(["renderer=triplane", "budget=tiny"], tmp_path / "a")
    mlp = compose_train(["renderer=mlp", "budget=tiny"], tmp_path / "b")
    mine = compose_train(["renderer=triplane", "budget=tiny", "model.optimizer.lr=3e-3"], tmp_path / "c")
    assert (tri.model.optimizer.lr, tri.renderer.lr_grid, tri.renderer.n_samples) == (1e-2, 0.1, 32)
    assert tri.renderer.field.compile_encoding == "auto"
    assert (mlp.model.optimizer.lr, mlp.model.lr_final) == (5e-3, 5e-4)
    assert mine.model.optimizer.lr == 3e-3


def test_unknown_experiment_is_one_line(tmp_path):
    with pytest.raises(LipspaceError, match=r"unknown experiment 'lipnref'.*available: .*lipnerf"):
        compose_train(["experiment=lipnref"], tmp_path)


@pytest.mark.parametrize("override,match", [
    ("data.rays_per_batch=0", "data.rays_per_batch=0 must be a positive integer"),
    ("model.optimizer.lr=-1", "model.optimizer.lr=-1"),
    ("data.clip_seconds=-3", "data.clip_seconds=-3"),
    ("renderer.field.hidden=abc", "renderer.field.hidden='abc'"),
    ("evaluation.metrics.download=maybe", r"evaluation.metrics.download='maybe': must be auto .*true .*or false"),
    ("+evaluation.metrics.lpip=false", r"unknown evaluation.metrics key\(s\) lpip; valid keys: lpips, face, "),
])
def test_wrong_values_are_caught(override, match, tmp_path):
    cfg = compose_train([override], tmp_path)
    with pytest.raises(LipspaceError, match=match):
        check_config(cfg)


@pytest.mark.parametrize("value,mode", [("auto", "auto"), ("true", "true"), ("false", "false"), ("yes", "true"),
                                        ("off", "false"), ("AUTO", "auto")])
def test_download_accepts_auto_true_false(value, mode, tmp_path):
    from lipspace.eval.scoring import EvalSettings

    assert EvalSettings.of(compose_train([], tmp_path).evaluation.metrics).download == "auto"  # the default
    cfg = compose_train([f"evaluation.metrics.download={value}"], tmp_path)
    check_config(cfg)
    assert EvalSettings.of(cfg.evaluation.metrics).download == mode
    with pytest.raises(LipspaceError, match="download=None: must be auto"):
        EvalSettings(download=None)


def _cli(*args, timeout=120):
    code = "import sys; from lipspace.cli.train import main; sys.argv = ['lipspace-train', *sys.argv[1:]]; main()"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=timeout)


def test_cli_unknown_experiment_exit_2_one_line():
    proc = _cli("experiment=nope")
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln]
    assert len(lines) == 1 and "unknown experiment 'nope'" in lines[0] and "Traceback" not in proc.stderr


def test_cli_missing_dataset_exit_2_one_line(tmp_path):
    proc = _cli("data=dir", f"data.root={tmp_path / 'nothing'}", "logger=none", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.strip().splitlines() if ln.startswith("lipspace: error")]) == 1


def test_choices_follow_experiment_presets():
    """Result rows are labelled by the conditioner an experiment preset selects, not the root default."""
    from lipspace.utils.config import choices_from_overrides

    got = choices_from_overrides(["experiment=adnerf"])
    assert got["conditioner"] == "deepspeech" and got["experiment"] == "adnerf"
    assert choices_from_overrides(["conditioner=deepspeech", "renderer=mlp"])["conditioner"] == "deepspeech"
    assert choices_from_overrides([])["conditioner"] == "expression"


@pytest.mark.parametrize("renderer", group_options("renderer"))
@pytest.mark.parametrize("experiment", group_options("experiment"))
def test_every_preset_runs_on_every_renderer(experiment, renderer, tmp_path):
    """The conditioning-space sweep crosses presets with renderers: a preset's MLP sizes
    (experiment_renderer/<preset>_mlp.yaml) must not leak into another renderer's constructor."""
    from lipspace.model.build import build_conditioner, build_renderer
    from lipspace.utils.errors import LipspaceError

    if experiment == "sspnerf" and renderer == "gaussian":  # SSP-NeRF's parts work on rays: one clear line
        cfg = compose_train([f"experiment={experiment}", f"renderer={renderer}"], tmp_path / "r")
        with pytest.raises(LipspaceError, match="has no `field`"):
            build_renderer(cfg)
        return
    for budget in group_options("budget"):
        cfg = compose_train([f"experiment={experiment}", f"renderer={renderer}", f"budget={budget}"], tmp_path / "r")
        cond = build_conditioner(cfg, n_frames=10)
        assert instantiate(cfg.renderer)(cond_dim=cond.out_dim) is not None
    if renderer == "mlp":
        paper = compose_train([f"experiment={experiment}", "renderer=mlp", "budget=paper"], tmp_path / "p")
        paper_hidden = {"adnerf": 256, "dfanerf": 256, "lipnerf": 128, "synctalk": 128, "sspnerf": 128}
        assert (paper.renderer.field.hidden, paper.renderer.field.n_layers) == (paper_hidden[experiment], 8)
    else:  # the tri-plane keeps its own MLP sizes whichever preset runs on it
        base = compose_train([f"renderer={renderer}", "budget=paper"], tmp_path / "b")
        paper = compose_train([f"experiment={experiment}", f"renderer={renderer}", "budget=paper"], tmp_path / "p")
        parsing = {"semantic_classes": 10} if experiment == "sspnerf" and renderer == "triplane" else {}
        assert paper.renderer.get("field") == (None if base.renderer.get("field") is None
                                               else {**base.renderer.field, **parsing})


def test_sweep_dirs_resolve_before_hydra_config_is_set():
    """A multirun's sweeper resolves hydra.sweep.dir (-> paths.log_dir -> paths.root_dir) before Hydra's config
    is set: with ${hydra:runtime.cwd} in root_dir every study sweep stopped with "HydraConfig was not set"."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    from lipspace.utils.config import CONF_DIR

    HydraConfig.instance().cfg = None
    root = Path(__file__).resolve().parents[2]
    for study in ("conditioning_spaces", "clip_length"):
        with initialize_config_dir(str(root / "experiments" / study), version_base="1.3"):
            cfg = compose("sweep_synthetic", return_hydra_config=True,
                          overrides=[f"hydra.searchpath=[file://{CONF_DIR}]"])
        assert not HydraConfig.initialized()
        sweep_dir = OmegaConf.select(cfg, "hydra.sweep.dir")
        assert sweep_dir == f"{Path.cwd()}/outputs/studies/{study}_synthetic"
