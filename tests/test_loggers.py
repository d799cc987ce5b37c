from lipspace.loggers import resolve_wandb_mode, wandb_logger


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
    t = time.perf_counter()
    lg = wandb_logger("lipspace-test", "g", ["t"], str(tmp_path))
    lg.log_metrics({"x": 1.0}, step=0)
    from lipspace.loggers import finish_wandb

    cmd = finish_wandb()
    assert time.perf_counter() - t < 30
    assert cmd is not None and cmd.startswith("wandb sync")
    assert list((tmp_path / "wandb").glob("offline-run-*"))
