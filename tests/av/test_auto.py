"""The local sync expert trains itself (lipspace.av.auto): on the training frames only, cached by data + settings +
code, proven on the held-out tail against chance; recorded in the run (lipspace.av.record), used by the ave backend,
the evaluation's local LSE columns (with lse_local_seen), and by experiment=synctalk without any weights."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lipspace.av import auto, record
from lipspace.utils.errors import LipspaceError

# a few seconds on the tiny fixture: small crops and channels (dim stays 256: experiment=synctalk's input width)
TINY = dict(steps=12, batch=8, width=4, crop_hw=(16, 32), dim=256)


@pytest.fixture(autouse=True)
def _no_weights_anywhere(tmp_path, monkeypatch):
    """No AVE checkpoint anywhere: the project cache and $HOME in tmp, $LIPSPACE_AVE_WEIGHTS unset."""
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LIPSPACE_AVE_WEIGHTS", raising=False)
    torch.set_num_threads(1)


def _datamodule(root, **kw):
    from lipspace.data.datamodule import TalkingHeadDataModule

    return TalkingHeadDataModule(str(root), **kw).load()


@pytest.fixture
def tiny_copy(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root, ignore=shutil.ignore_patterns("features"))
    return root


def test_default_weights_path_honours_the_project_cache(tmp_path, monkeypatch):
    from lipspace.av.backend import ave_weights_path, default_ave_weights

    assert default_ave_weights() == tmp_path / "cache" / "ave_local.pt"
    assert ave_weights_path() == tmp_path / "cache" / "ave_local.pt"
    monkeypatch.setenv("LIPSPACE_AVE_WEIGHTS", str(tmp_path / "env.pt"))
    assert ave_weights_path() == tmp_path / "env.pt" and ave_weights_path("x.pt") == Path("x.pt")
    monkeypatch.delenv("LIPSPACE_CACHE")
    assert default_ave_weights() == tmp_path / "home" / ".cache" / "lipspace" / "ave_local.pt"


def test_sources_are_the_training_frames_never_the_tail(tiny_copy, tiny_dataset, tmp_path):
    dm = _datamodule(tiny_copy, test_fraction=0.25)  # 20 frames: 15 training, 5 held out
    train, tail = auto.training_sources(dm.clip, dm.split)
    assert [(s.start, s.stop) for s in train] == [(0, 15)] and (tail.start, tail.stop) == (15, 20)
    assert train[0].root == tiny_copy.resolve()
    short = _datamodule(tiny_copy, test_fraction=0.25, clip_seconds=0.4)  # the first 10 frames only
    assert [(s.start, s.stop) for s in auto.training_sources(short.clip, short.split)[0]] == [(0, 10)]
    pool = tiny_dataset / "heldout" / "utt_00"
    train, _ = auto.training_sources(dm.clip, dm.split, [f"{pool}@0.04"])
    assert (train[1].root, train[1].start, train[1].stop, train[1].audio_delay_s) == (pool.resolve(), 0, 8, 0.04)
    with pytest.raises(LipspaceError, match="own dataset"):
        auto.training_sources(dm.clip, dm.split, [str(tiny_copy)])
    with pytest.raises(LipspaceError, match="not a dataset directory"):
        auto.training_sources(dm.clip, dm.split, [str(tmp_path)])
    with pytest.raises(LipspaceError, match="unknown"):
        auto.AutoSettings.of({"step": 3})


def test_cache_reused_then_invalidated_by_training_frames_not_by_the_tail(tiny_copy, monkeypatch):
    calls = []
    real = auto.train_expert
    monkeypatch.setattr(auto, "train_expert", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    settings = auto.AutoSettings.of(TINY)
    dm = _datamodule(tiny_copy, test_fraction=0.25)
    first = auto.ensure_expert(*auto.training_sources(dm.clip, dm.split), settings)
    assert first["trained"] and len(calls) == 1 and Path(first["path"]).is_file()
    assert Path(first["path"]).parent == Path(os.environ["LIPSPACE_CACHE"]) / "ave_auto"
    again = auto.ensure_expert(*auto.training_sources(dm.clip, dm.split), settings)
    assert not again["trained"] and len(calls) == 1  # reused: no retraining
    assert (again["path"], again["sha256"]) == (first["path"], first["sha256"])

    # the checkpoint says what it saw and how it did on the tail
    from lipspace.av.sync import load

    model = load(first["path"])
    assert model.provenance["train_frames"] == [{"root": str(tiny_copy.resolve()), "start": 0, "stop": 15,
                                                 "audio_delay_s": 0.0}]
    assert model.provenance["eval_frames"]["start"] == 15 and "NOT the official" in model.provenance["weights"]
    assert model.metrics["stage_seconds"] > 0 and "heldout_status" in model.metrics

    # a held-out frame rewritten: not training data, same key
    from lipspace.data.schema import frame_name

    tail_frame = tiny_copy / "frames" / frame_name(17)
    tail_frame.write_bytes(tail_frame.read_bytes())
    os.utime(tail_frame, ns=(1, 1))
    assert auto.ensure_expert(*auto.training_sources(dm.clip, dm.split), settings)["path"] == first["path"]
    assert len(calls) == 1
    # a training frame rewritten: new key, trained again
    train_frame = tiny_copy / "frames" / frame_name(3)
    os.utime(train_frame, ns=(1, 1))
    changed = auto.ensure_expert(*auto.training_sources(dm.clip, dm.split), settings)
    assert changed["trained"] and changed["path"] != first["path"] and len(calls) == 2
    # fewer training frames (clip_seconds), other settings: new keys
    short = _datamodule(tiny_copy, test_fraction=0.25, clip_seconds=0.4)
    assert auto.stage_key(auto.training_sources(short.clip, short.split)[0], settings) != changed["key"]
    assert auto.stage_key(auto.training_sources(dm.clip, dm.split)[0],
                          auto.AutoSettings.of({**TINY, "seed": 1})) != changed["key"]


def test_seen_by_reads_the_recorded_frame_ranges(tmp_path):
    root = tmp_path / "clip"
    prov = {"train_frames": [{"root": str(root), "start": 0, "stop": 100, "audio_delay_s": 0.0}]}
    wav = root / "audio.wav"
    assert record.seen_by(prov, wav, 0.0, 50) is True
    assert record.seen_by(prov, wav, 3.96, 50) is True  # frames 99..148 overlap
    assert record.seen_by(prov, wav, 4.0, 50) is False  # the tail from frame 100
    assert record.seen_by(prov, root / "heldout" / "utt_00" / "audio.wav", 0.0, 50) is False
    assert record.seen_by(prov, tmp_path / "dub_de.wav", 0.0, 50) is False
    assert record.seen_by({"train_clips": [f"{root}@0.2"]}, wav, 60.0, 10) is True  # CLI checkpoints: whole clips
    assert record.seen_by({"weights": "something"}, wav, 0.0, 10) is None


def test_record_is_checked(tmp_path):
    p = tmp_path / "w.pt"
    p.write_bytes(b"abc")
    from lipspace.utils.assets import file_sha256

    record.write_record(tmp_path / "run", "audio", {"path": str(p), "sha256": file_sha256(p), "source": "auto"})
    rec = record.read_record(tmp_path / "run")["audio"]
    assert record.checked(rec, "run") == p
    p.write_bytes(b"abcd")
    with pytest.raises(LipspaceError, match="replaced"):
        record.checked(rec, "run")
    p.unlink()
    with pytest.raises(LipspaceError, match="is gone"):
        record.checked(rec, "run")


def test_scorer_is_encoder_only_when_the_metric_expert_drives_the_run(tmp_path, monkeypatch):
    monkeypatch.delenv("LIPSPACE_AVE_WEIGHTS", raising=False)
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))  # no default checkpoint
    enc, other = tmp_path / "enc.pt", tmp_path / "other.pt"
    run = tmp_path / "run"
    record.write_record(run, "lse_local", {"path": str(other), "sha256": "x", "source": "auto"})
    assert not record.scorer_is_encoder(run, other)  # scored by an expert that does not drive the run
    record.write_record(run, "audio", {"path": str(enc), "sha256": "y", "source": "auto"})
    assert record.scorer_is_encoder(run, enc) and not record.scorer_is_encoder(run, other)
    assert not record.scorer_is_encoder(run, None)  # nothing given: no expert named


def test_expert_beats_chance_on_the_heldout_tail_of_a_real_clip(caplog):
    """Real clip (the anchor's first 20 s, 128²): trained on its first 15 s only (120 steps, ~16 CPU s), the expert
    separates aligned from shifted audio on the last 5 s above chance (the binomial check of the stage) and says so
    in the log. Measured: 0.70 over 242 decisions (p ~ 1e-10); the 60 s budget of conf/ave/auto.yaml gives more."""
    from tests.conftest import prepared_real_clip

    root = prepared_real_clip("anchor", 20, 128)
    dm = _datamodule(root, test_fraction=0.25)
    train, tail = auto.training_sources(dm.clip, dm.split)
    assert train[0].stop <= tail.start
    settings = auto.AutoSettings.of({"steps": 120})
    with caplog.at_level(logging.INFO, logger="lipspace.av.auto"):
        rec = auto.ensure_expert(train, tail, settings)
    assert rec["trained"] and rec["heldout_status"] == "ok"
    ch = rec["chance"]
    assert ch["n_decisions"] >= 200 and ch["chance"] == 0.5
    assert rec["learned"] and ch["beats_chance"] and ch["accuracy"] > 0.55, rec["verdict"]
    assert "above chance" in caplog.text and "held-out binary accuracy" in caplog.text


def test_a_learner_that_does_not_beat_chance_is_a_warning(tiny_copy, caplog):
    """The tiny clip's 5-frame tail cannot show anything: the stage warns instead of staying silent."""
    dm = _datamodule(tiny_copy, test_fraction=0.25)
    with caplog.at_level(logging.INFO, logger="lipspace.av.auto"):
        rec = auto.ensure_expert(*auto.training_sources(dm.clip, dm.split), auto.AutoSettings.of(TINY))
    assert not rec["learned"] and rec["heldout_status"].startswith("not evaluated")
    warn = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert warn and "DOES NOT BEAT CHANCE" in warn[0].getMessage()


def test_synctalk_without_any_weights_trains_its_expert_and_evaluates_with_it(tiny_dataset, tmp_path):
    """experiment=synctalk with no AVE weights anywhere: the stage trains one on the training frames, the run
    records it, training runs, and the evaluation featurises the held-out utterance with the same checkpoint and
    scores lse_*_local with it (lse_local_seen False: the utterance was not trained on)."""
    from lipspace.utils.assets import file_sha256
    from lipspace.utils.config import compose_train
    from lipspace.tasks.evaluate import evaluate
    from lipspace.tasks.train import train

    out = tmp_path / "run"
    overrides = ["data=dir", f"data.root={tiny_dataset}", "debug=fast", "logger=csv", "experiment=synctalk",
                 "renderer=mlp", "ave.steps=12", "ave.batch=8", "ave.width=4", "ave.crop_hw=[16,32]"]
    metrics = train(compose_train(overrides, out), out)
    assert metrics["global_step"] == 6
    rec = json.loads((out / record.RECORD).read_text())["audio"]
    assert rec["source"] == "auto" and rec["sha256"] == file_sha256(rec["path"])
    assert Path(rec["path"]).parent == tmp_path / "cache" / "ave_auto"
    meta = [json.loads(p.read_text()) for p in (tiny_dataset / "features").glob("ave-*.json")]
    assert rec["sha256"] in {m["weights_sha256"] for m in meta}  # the training clip's features

    df = evaluate(out, videos=False, settings={"lpips": False, "face": False, "lse": False})
    held = df[df.eval_set == "heldout/utt_00"].iloc[0]
    held_meta = [json.loads(p.read_text())
                 for p in (tiny_dataset / "heldout" / "utt_00" / "features").glob("ave-*.json")]
    assert rec["sha256"] in {m["weights_sha256"] for m in held_meta}  # same checkpoint for held-out audio
    assert np.isfinite(held.lse_d_local) and held.lse_local_seen == False  # noqa: E712
    assert rec["sha256"] in held.lse_local_model and "frames [0, " in held.lse_local_model
    assert json.loads((out / record.RECORD).read_text()).keys() == {"audio"}  # the metric reused the run's expert
