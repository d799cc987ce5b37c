"""The eval task: reconstruction on the held-out tail; on held-out utterances (synthetic data: exact ground truth)
driven by their tracks and by their audio, each against the mean-training-frame baseline; and driven by dubbed
audio in other languages (sync and face metrics, no ground truth). Writes <run>/eval/results.{csv,json} and
videos; ``evaluate_run`` / ``evaluate_sweep`` evaluate with an `evaluation` config node, and the rows go to a study's
results table (``lipspace.reporting.results_table``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lipspace.data.sampling import frame_inputs
from lipspace.utils.errors import LipspaceError
from lipspace.eval.scoring import EvalSettings, Scorer
from lipspace.model.postprocess import check_postprocess
from lipspace.model.sequence_scoring import mean_frame, motion_metrics, score_dub, score_sequence
from lipspace.reporting.results_table import failed_row, record
from lipspace.model.runs import is_run, load_run

log = logging.getLogger(__name__)


def driver_label(conditioner, otherwise: str = "oracle_inputs") -> str:
    """How a held-out sequence drives the model: ``audio`` when every input is computed from its audio (a real
    audio-driven result), ``otherwise`` (``oracle_inputs``) when some come from the sequence's ground-truth tracks
    (e.g. its tracked expressions: an upper bound, not audio -> condition)."""
    return "audio" if conditioner.audio_only() else otherwise


def dub_files(dub_audio) -> list[Path]:
    """Audio files named by ``dub_audio`` (files and/or directories of .wav/.flac), sorted; a missing path is a
    clear error."""
    out: list[Path] = []
    for item in [dub_audio] if isinstance(dub_audio, (str, Path)) else list(dub_audio or []):
        p = Path(item).expanduser()
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in (".wav", ".flac"))
        elif p.is_file():
            out.append(p)
        else:
            raise LipspaceError(f"{p}: dubbed audio not found (evaluation.dub_audio lists wav files or folders of "
                                "them, e.g. ../shared/assets/audio).")
    return out


def local_sync_expert(settings: EvalSettings, dm, cfg, run_dir: Path) -> EvalSettings:
    """``settings`` with ``ave_weights`` set to the run's local sync expert when the local LSE is on and no AVE
    weights are given anywhere (lipspace.av.record.expert_for_metric: the expert trained on THIS run's clip's
    training frames, the same one as the run's ``ave`` features when it has them; recorded in the run).
    Unchanged otherwise; a failed training leaves the columns NaN with a warning, the evaluation goes on."""
    if not settings.lse_local or settings.ave_weights:
        return settings
    from dataclasses import replace

    from lipspace.av.record import expert_for_metric

    try:
        path = expert_for_metric(dm, cfg.get("ave"), run_dir)
    except LipspaceError as e:
        log.warning("eval: no local sync expert could be trained on %s (%s): lse_*_local columns empty",
                    dm.clip.root, e)
        return settings
    return settings if path is None else replace(settings, ave_weights=str(path))


def dataset_label(root) -> str:
    """Short dataset name for tables: ``synthetic`` for generated clips, else the dataset folder's name."""
    name = Path(str(root)).name
    return "synthetic" if name.startswith("synthetic_") else name


def evaluate(run_dir, ckpt: str = "last", videos: bool = True, max_heldout: int | None = None,
             downscale: int = 1, settings: EvalSettings | dict | None = None, dub_audio=(),
             dub_seconds: float | None = 8.0, max_tail_frames: int | None = None,
             oracle: bool = True, postprocess: str = "none") -> pd.DataFrame:
    """Evaluate a run: reconstruction on the held-out tail (its first ``max_tail_frames``, all when None); each
    held-out utterance (synthetic data: exact ground truth) driven by its tracked inputs and by its audio; each
    dubbed audio file in ``dub_audio`` (its first ``dub_seconds``). A conditioner with inputs beyond audio that
    can also be driven by audio alone (``drivable_both_ways``) is scored both ways; ``oracle=False`` skips its
    tracked-inputs rows. ``downscale`` > 1 renders and scores at 1/downscale resolution (ground truth
    area-averaged). ``postprocess`` (none, portrait_sync, inpaint_neck: ``lipspace.model.postprocess``) is applied
    to every render before scoring; portrait_sync pastes ground-truth pixels, so its scores are not comparable with
    the others'. Every row records the run, the resolution, the post-processing and which model
    computed each metric (``metric_provenance``)."""
    postprocess = check_postprocess(postprocess)
    run_dir = Path(run_dir)
    cfg, dm, system, info = load_run(run_dir, ckpt)
    scorer = Scorer(local_sync_expert(EvalSettings.of(settings), dm, cfg, run_dir))
    clip, split = dm.clip, dm.split
    fps = float(clip.meta["fps"])
    dubs = dub_files(dub_audio)
    out_dir = run_dir / "eval"
    baseline = mean_frame(clip, split.train)
    results = []
    torch.manual_seed(int(cfg.seed))
    cond = system.conditioner
    by_audio_too = cond.drivable_both_ways()
    tail = split.test[:max_tail_frames]  # max_tail_frames=0 skips the tail
    if len(tail):
        log.info("eval: reconstruction on %d held-out tail frames", len(tail))
        inputs = frame_inputs(clip, tail, dm.inputs)
        if oracle or not by_audio_too:
            row = score_sequence(scorer, system, clip, tail, inputs, tail, baseline,
                                 video_path=out_dir / "test_tail.mp4" if videos else None,
                                 strip_path=out_dir / "test_tail_strip.png" if videos else None,
                                 audio_offset_s=tail[0] / fps, downscale=downscale, postprocess=postprocess)
            results.append({"eval_set": "test_tail", "driver": driver_label(cond, "tracked_inputs"), **row})
        if by_audio_too:  # the tail driven by its audio alone (real clips: the audio-driven score with ground truth)
            with cond.driving_by_audio():
                row = score_sequence(scorer, system, clip, tail, inputs, tail, baseline,
                                     video_path=out_dir / "test_tail_audio.mp4" if videos else None,
                                     strip_path=out_dir / "test_tail_audio_strip.png" if videos else None,
                                     audio_offset_s=tail[0] / fps, downscale=downscale, postprocess=postprocess)
            results.append({"eval_set": "test_tail", "driver": "audio", **row})
    for name in clip.meta.get("heldout", [])[:max_heldout]:
        held = clip.load_sibling(clip.root / "heldout" / name)
        log.info("eval: held-out utterance %s (%d frames, driven by its ground-truth tracks)", name, held.n_frames)
        inputs = frame_inputs(held, np.arange(held.n_frames), dm.inputs)
        if oracle or not by_audio_too:
            row = score_sequence(scorer, system, held, range(held.n_frames), inputs, None, baseline,
                                 video_path=out_dir / f"heldout_{name}.mp4" if videos else None,
                                 strip_path=out_dir / f"heldout_{name}_strip.png" if videos else None,
                                 downscale=downscale, postprocess=postprocess)
            results.append({"eval_set": f"heldout/{name}", "driver": driver_label(cond), **row})
        if by_audio_too:
            # the same utterance driven by its audio alone: audio -> expression regressor + smoothing
            with cond.driving_by_audio():
                row = score_sequence(scorer, system, held, range(held.n_frames), inputs, None, baseline,
                                     video_path=out_dir / f"heldout_{name}_audio.mp4" if videos else None,
                                     strip_path=out_dir / f"heldout_{name}_audio_strip.png" if videos else None,
                                     downscale=downscale, postprocess=postprocess)
                row.update(cond.drive_metrics(inputs))  # e.g. expression's expr_mse
            results.append({"eval_set": f"heldout/{name}", "driver": "audio", **row})
        if cond.generates_motion:  # generated head motion / blinks: on the audio row
            results[-1].update(motion_metrics(cond, held, int(cfg.seed)))
    if dubs and not cond.can_drive_by_audio():
        log.warning("eval: conditioner '%s' cannot be driven by audio alone: dubbed audio skipped", cond.name)
        dubs = []
    for wav in dubs:
        log.info("eval: dubbed audio %s (first %s s)", wav.name, dub_seconds)
        row = score_dub(scorer, system, dm, wav, int(cfg.seed), downscale, dub_seconds,
                        out_dir / f"dub_{wav.stem}.mp4" if videos else None, postprocess=postprocess)
        results.append({"eval_set": f"dub/{wav.stem}", "driver": "audio", **row})
    if not results:
        raise LipspaceError(f"{clip.root}: nothing to evaluate (no held-out tail: data.test_fraction=0, and no "
                            "held-out utterances). Set data.test_fraction > 0.")
    h, w = clip.hw
    info["eval_resolution"] = f"{w // downscale}x{h // downscale}"
    info["postprocess"] = postprocess  # portrait_sync pastes source pixels: not comparable with none
    info["dataset_name"] = dataset_label(info.get("dataset", clip.root))
    info["head_pose"] = clip.head_pose_source  # stabilized (Head-Sync Stabilizer) / fitted / exact (synthetic)
    info["train_seconds"] = len(split.train) / fps
    info["status"] = "ok"
    if scorer.s.lse_local:  # the expert that scores the lip sync is the run's own audio encoder: optimistic
        from lipspace.av.record import scorer_is_encoder

        info["lse_local_is_encoder"] = scorer_is_encoder(run_dir, scorer.s.ave_weights)
    provenance = json.dumps(scorer.provenance)
    df = pd.DataFrame([{**info, **r, "metric_provenance": provenance} for r in results])
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "results.json").write_text(df.to_json(orient="records", indent=2))
    return df


def evaluate_run(run_dir, ev) -> pd.DataFrame:
    """:func:`evaluate` with the options of an `evaluation` config node ``ev``."""
    df = evaluate(run_dir, ckpt=ev.get("ckpt", "last"), videos=bool(ev.get("videos", True)),
                  max_heldout=ev.get("max_heldout"), downscale=int(ev.get("downscale", 1)),
                  settings=ev.get("metrics"), dub_audio=list(ev.get("dub_audio") or []),
                  dub_seconds=ev.get("dub_seconds"), max_tail_frames=ev.get("max_tail_frames"),
                  oracle=bool(ev.get("oracle", True)), postprocess=ev.get("postprocess", "none"))
    df.insert(0, "run_dir", str(Path(run_dir)))
    log_to_wandb(run_dir, df)
    return df


def log_to_wandb(run_dir, df: pd.DataFrame) -> None:
    """When the run logged to W&B (logger.wandb in its config), add the eval summary (eval/<metric>), the results
    table and the media to that run; prints the `wandb sync` command of an offline run."""
    from omegaconf import OmegaConf

    cfg_path = Path(run_dir) / "config.yaml"
    if not cfg_path.is_file() or not (OmegaConf.load(cfg_path).get("logger") or {}).get("wandb"):
        return
    from lipspace.reporting.wandb_eval import log_eval

    info_path = Path(run_dir) / "run.json"
    info = json.loads(info_path.read_text()) if info_path.is_file() else {}
    cmd = log_eval(run_dir, df, {**info, "train_seconds": float(df["train_seconds"].iloc[0])})
    if cmd:
        print(f"W&B eval logged offline; upload with: {cmd}")


def evaluate_sweep(sweep_dir, ev) -> pd.DataFrame:
    """Evaluate every run under ``sweep_dir`` (its subfolders holding config.yaml); a run that failed to train
    (FAILED marker, no checkpoint) or to evaluate becomes a failed row; never stops at one run."""
    sweep_dir = Path(sweep_dir)
    runs = sorted(p for p in sweep_dir.iterdir() if p.is_dir() and is_run(p))
    if not runs:
        raise LipspaceError(f"{sweep_dir}: no runs inside (no subfolder has config.yaml). Pass run_dir=<a training "
                            "run or a sweep directory printed by lipspace-train -m>.")
    frames = []
    for run in runs:
        ckpt = run / "checkpoints" / "last.ckpt"
        if (run / "FAILED").is_file() and not ckpt.is_file():
            df = failed_row(run, (run / "FAILED").read_text().splitlines()[-1], "train")
        elif not ckpt.is_file():
            df = failed_row(run, f"{ckpt} missing: training did not finish (re-run the sweep: it resumes)", "train")
        else:
            try:
                df = evaluate_run(run, ev)
            except Exception as e:  # noqa: BLE001 - a failing run is recorded, the sweep goes on
                log.error("eval of %s failed: %s", run, e)
                df = failed_row(run, e, "eval")
        record(run, ev, df)
        frames.append(df)
    return pd.concat(frames, ignore_index=True)
