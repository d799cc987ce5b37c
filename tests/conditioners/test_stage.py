import numpy as np
import torch

from lipspace.conditioners.stage import learned_check, load_stage, save_stage, stage_key


def test_stage_key_depends_on_settings_and_every_array():
    a, b = np.arange(6, dtype=np.float32), np.ones((2, 3), np.float32)
    k = stage_key({"x": 1}, a, b)
    assert k == stage_key({"x": 1}, a.copy(), b.copy()) and len(k) == 16
    assert k != stage_key({"x": 2}, a, b)
    assert k != stage_key({"x": 1}, a, b * 2)
    assert k != stage_key({"x": 1}, a.reshape(2, 3), b)  # same bytes, other shape


def test_save_load_round_trip_and_unusable_files_are_misses(tmp_path):
    state = {"w": torch.arange(4.0), "flag": torch.tensor(True)}
    path = tmp_path / "f" / "stage.pt"
    save_stage(path, state, {"m": 1.0})
    got = load_stage(path, state)
    assert got is not None and torch.equal(got[0]["w"], state["w"]) and got[1] == {"m": 1.0}
    assert not list(path.parent.glob(".*.tmp"))  # the per-process temporary file is gone
    assert load_stage(path, {"w": torch.zeros(5), "flag": torch.tensor(True)}) is None  # other shapes
    assert load_stage(tmp_path / "absent.pt", state) is None
    path.write_bytes(b"not a torch file")
    assert load_stage(path, state) is None


def test_learned_check_needs_a_real_gain(caplog):
    assert learned_check("r", 0.8, 1.0, "mean", "val")["learned"]
    with caplog.at_level("WARNING"):
        tie = learned_check("r", 0.999, 1.0, "mean", "val")  # a regressor shrunk to the mean
    assert not tie["learned"] and "did NOT beat mean by 2 %" in caplog.text
    assert not learned_check("r", float("nan"), 1.0, "mean", "val")["learned"]
    assert learned_check("acc", 0.7, 0.5, "chance", "val", higher_is_better=True)["learned"]
    assert not learned_check("acc", 0.505, 0.5, "chance", "val", higher_is_better=True)["learned"]
