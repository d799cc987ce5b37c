from lipspace.reporting.loggers import resolve_wandb_mode, run_tags, wandb_logger


def test_offline_without_api_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    assert resolve_wandb_mode(None) == "offline"


def test_online_with_key_unless_forced(monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode(None) == "online"
    assert resolve_wandb_mode("offline") == "offline"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert resolve_wandb_mode(None) == "disabled"


def test_offline_logger_writes_locally_fast(monkeypatch, tmp_path):
    import time

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    (tmp_path / "run.json").write_text('{"conditioner": "expression", "renderer": "mlp", "clip_seconds": null}')
    t = time.perf_counter()
    lg = wandb_logger("lipspace-test", "g", ["t"], str(tmp_path))
    lg.log_metrics({"x": 1.0}, step=0)
    assert list(lg.experiment.tags) == ["t", "cond:expression", "renderer:mlp", "clip:full"]  # from run.json
    from lipspace.reporting.loggers import finish_wandb

    cmd = finish_wandb()
    assert time.perf_counter() - t < 30
    assert cmd is not None and cmd.startswith("wandb sync")
    assert list((tmp_path / "wandb").glob("offline-run-*"))


INFO = {"conditioner": "expression", "renderer": "mlp", "experiment": None, "budget": "tiny", "seed": 0,
        "dataset": "/data/synth_a/", "clip_seconds": 5.0, "study": "clip_length", "max_steps": 10}


def test_run_tags_from_run_info():
    assert run_tags(INFO) == ["cond:expression", "renderer:mlp", "budget:tiny", "data:synth_a", "clip:5s", "seed:0"]
    assert "clip:2.5s" in run_tags({**INFO, "clip_seconds": 2.5})
    assert "clip:full" in run_tags({**INFO, "clip_seconds": None})
    assert "exp:clip_5s" in run_tags({**INFO, "experiment": "clip_5s"})
    assert [t for t in run_tags({**INFO, "budget": None}) if t.startswith("budget:")] == []


def test_run_tags_keep_user_tags_first_without_duplicates():
    tags = run_tags(INFO, extra=["mine", "cond:expression", "x" * 80])
    assert tags[:3] == ["mine", "cond:expression", "x" * 64] and tags.count("cond:expression") == 1
    assert all(len(t) <= 64 for t in tags)
