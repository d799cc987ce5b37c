"""The four-space comparison demo (lipspace.demo.compare, lipspace.demo.run.run_compare)."""

import json

import numpy as np
import pandas as pd
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.demo.compare import (SPACES, Progress, _finished, check_spaces, reference_rows, run_key, summarise,
                                    train_and_evaluate)


def _results():
    return pd.DataFrame([
        {"eval_set": "heldout/utt_00", "driver": "audio", "psnr": 30.0, "mouth_psnr": 25.0, "lmd": 1.0,
         "lip_open_corr": 0.5, "n_frames": 100, "baseline_mean_frame_psnr": 27.0,
         "baseline_mean_frame_mouth_psnr": 22.0, "lse_c_local": 3.0, "lse_c_local_gt": 6.0,
         "lse_status": "not computed: offline"},
        {"eval_set": "heldout/utt_01", "driver": "audio", "psnr": 32.0, "mouth_psnr": 27.0, "lmd": 2.0,
         "lip_open_corr": 0.7, "n_frames": 100, "baseline_mean_frame_psnr": 27.0,
         "baseline_mean_frame_mouth_psnr": 22.0, "lse_c_local": 5.0, "lse_c_local_gt": 7.0,
         "lse_local_is_encoder": True},
        {"eval_set": "dub/dub_x", "driver": "audio", "n_frames": 100, "lse_c_local": 1.5, "lip_audio_corr": 0.2,
         "psnr": np.nan},
    ])


def test_summarise_averages_heldout_utterances_and_keeps_the_dub_apart():
    row = summarise("expression", "lipnerf", _results(), {"train_wall_s": 12.5})
    assert row["psnr"] == 31.0 and row["mouth_psnr"] == 26.0 and row["lmd"] == 1.5 and row["n_frames"] == 200
    assert row["lse_c_local"] == 4.0 and row["lse_c_local_dub"] == 1.5 and row["lip_audio_corr_dub"] == 0.2
    assert np.isnan(row["lse_c"]) and row["train_s"] == 12.5 and row["lse_status"] == "not computed: offline"
    still, truth = reference_rows([row])
    assert still["psnr"] == 27.0 and still["mouth_psnr"] == 22.0 and truth["lse_c_local"] == 6.5
    assert row["lse_local_is_encoder"] and np.isnan(truth["lse_c"])


def test_run_key_and_reuse_need_the_same_overrides(tmp_path):
    assert run_key([]) == "" and run_key(["seed=1"]) != run_key(["seed=2"])
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    assert _finished(run, ["a"]) is None  # no record
    (run / "demo.json").write_text(json.dumps({"overrides": ["a"], "train_wall_s": 1.0, "eval_wall_s": 2.0}))
    assert _finished(run, ["a"]) is None  # no results
    _results().to_csv(run / "eval" / "results.csv", index=False)
    assert _finished(run, ["a"])["train_wall_s"] == 1.0
    assert _finished(run, ["b"]) is None
    progress = Progress(4)
    df, info = train_and_evaluate("expression", ["a"], run, progress)
    assert progress.i == 2 and len(df) == 3 and info["eval_wall_s"] == 2.0


def test_unknown_space_is_a_clear_error():
    assert check_spaces(["lipblink"]) == ["lipblink"]
    with pytest.raises(LipspaceError, match="unknown conditioning space"):
        check_spaces(["expression", "phonemes"])
    assert set(SPACES) == {"expression", "deepspeech", "lipblink", "blendshape_av"}


@pytest.mark.slow
def test_demo_compares_the_four_spaces_end_to_end_and_reuses_finished_runs(tiny_dataset, tmp_path, capsys):
    """run_compare on the tiny dataset with CPU-second sizes: one row per space + the references, the chart, the
    side-by-side video with the ground truth and four panels, and a second call that trains nothing."""
    from lipspace.eval.montage import LABEL_PX
    from lipspace.eval.video import read_video
    from lipspace.demo.run import run_compare
    from tiny_sizes import TINY_LIPBLINK_CONDITIONER

    common = ["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv", "trainer.max_steps=6",
              "ave.steps=12", "ave.batch=8", "ave.width=4", "ave.crop_hw=[16,32]", "evaluation.metrics.lpips=false",
              "evaluation.dub_seconds=0.4"]
    lipblink = TINY_LIPBLINK_CONDITIONER
    out = tmp_path / "demo"
    res = run_compare(common, output_dir=str(out), per_space={"lipblink": lipblink})
    table = res["table"]
    assert list(table.space) == [*SPACES, "still frame", "ground truth"]
    models = table.iloc[:4]
    assert np.isfinite(models.psnr.astype(float)).all() and np.isfinite(models.train_s.astype(float)).all()
    assert (out / "compare.csv").is_file() and (out / "compare.png").is_file()
    video = read_video(res["runs"]["expression"].parent / "compare_utt_00.mp4")
    h = video.shape[1] - LABEL_PX
    assert video.shape[2] == 5 * h  # ground truth + four square panels
    assert models.set_index("space").loc["blendshape_av", "lse_local_is_encoder"]  # synctalk scored by its encoder
    assert not models.set_index("space").loc["expression", "lse_local_is_encoder"]
    first = capsys.readouterr().out
    assert "train lipnerf" in first and "reusing" not in first
    again = run_compare(common, output_dir=str(out), per_space={"lipblink": lipblink})
    second = capsys.readouterr().out
    assert second.count("reusing the finished run") == 4 and "train lipnerf" not in second
    pd.testing.assert_frame_equal(again["table"], table)
