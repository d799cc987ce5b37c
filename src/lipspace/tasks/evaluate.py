"""The eval task: reconstruction on the held-out tail and, on synthetic data, the exact error on held-out
utterances, each against the mean-training-frame baseline; writes <run>/eval/results.{csv,json} and videos."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from lipspace.data.clip import Clip
from lipspace.data.sampling import frame_inputs
from lipspace.errors import LipspaceError
from lipspace.eval import metrics as M
from lipspace.eval.video import to_uint8, write_strip, write_video
from lipspace.inference import render_sequence

log = logging.getLogger(__name__)


def load_run(run_dir, ckpt: str = "last"):
    """Rebuild datamodule + system from <run_dir>/config.yaml and load a checkpoint's weights."""
    from lipspace.tasks.train import build_system

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise LipspaceError(f"{cfg_path}: missing, so {run_dir} is not a lipspace training run. "
                            "Pass run_dir=<the output directory printed by lipspace-train>.")
    cfg = OmegaConf.load(cfg_path)
    ckpt_path = run_dir / "checkpoints" / "last.ckpt" if ckpt == "last" else Path(ckpt)
    if not ckpt_path.is_file():
        raise LipspaceError(f"{ckpt_path}: checkpoint not found. Train first (lipspace-train) or pass ckpt=<path>.")
    dm = instantiate(cfg.data)
    dm.load()
    system = build_system(cfg, dm, prepare=False)  # the checkpoint carries what prepare() trained
    state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    system.load_state_dict(state["state_dict"])
    system.eval()
    info = json.loads((run_dir / "run.json").read_text()) if (run_dir / "run.json").is_file() else {}
    info["checkpoint"] = str(ckpt_path)
    info["global_step"] = int(state.get("global_step", -1))
    return cfg, dm, system, info


def driver_label(conditioner) -> str:
    """How a held-out utterance drives the model: ``audio`` when every input is computed from its audio (a real
    audio-driven result), ``oracle_inputs`` when some come from the utterance's ground-truth tracks (e.g. its
    tracked expressions: an upper bound, not audio -> condition)."""
    return "audio" if conditioner.audio_only() else "oracle_inputs"


def expression_error(conditioner, inputs: dict) -> float:
    """Mean squared error between the expressions predicted from the audio (after the conditioner's smoothing)
    and the utterance's tracked expressions."""
    with torch.no_grad():
        pred = conditioner.prepare_sequence(inputs)["expr"]
    return float(((pred - inputs["expr"]) ** 2).mean())


def motion_metrics(conditioner, held: Clip, seed: int) -> dict:
    """Head motion and blinks generated from the utterance's audio, starting from its first ground-truth pose
    (``conditioner.generate_motion``), against its ground-truth tracks: D-Rot (deg), D-Pos (head units, cm) and
    blinks per second of both (definitions: lipspace.eval.motion)."""
    from lipspace.eval.motion import motion_report

    audio = held.track(next(iter(conditioner.audio_inputs)))
    poses, blink = conditioner.generate_motion(audio, held.pose[0], seed)
    return motion_report(poses, held.pose, blink, held.tracks["blink"], held.meta["fps"])


def mean_frame(clip: Clip, idx: np.ndarray) -> torch.Tensor:
    return clip.frames[torch.as_tensor(idx)].float().mean(0) / 255.0


def _score(system, clip: Clip, indices, inputs, frame_idx, baseline: torch.Tensor, video_path=None,
           strip_path=None, audio_offset_s: float = 0.0, downscale: int = 1) -> dict:
    rows, base_rows, gts, preds = [], [], [], []
    if downscale > 1:
        baseline = torch.nn.functional.avg_pool2d(baseline.permute(2, 0, 1)[None], downscale)[0].permute(1, 2, 0)
    for i, pred, target in render_sequence(system.conditioner, system.renderer, clip, inputs, frame_idx,
                                           indices=indices, downscale=downscale):
        lmk = clip.tracks["lmk68"][i]
        rows.append(M.frame_metrics(pred, target, lmk, scale=1.0 / downscale))
        base_rows.append(M.frame_metrics(baseline, target, lmk, scale=1.0 / downscale))
        gts.append(to_uint8(target))
        preds.append(to_uint8(pred))
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out.update({f"baseline_mean_frame_{k}": float(np.mean([r[k] for r in base_rows])) for k in base_rows[0]})
    out["n_frames"] = len(rows)
    if video_path is not None:
        side = np.concatenate([np.stack(gts), np.stack(preds)], axis=2)  # ground truth | render
        write_video(side, video_path, audio_path=clip.audio_path, audio_offset_s=audio_offset_s)
        out["video"] = str(video_path)
    if strip_path is not None:
        pick = np.linspace(0, len(gts) - 1, min(6, len(gts))).round().astype(int)
        write_strip([gts[k] for k in pick], [preds[k] for k in pick], strip_path)
        out["strip"] = str(strip_path)
    return out


def evaluate(run_dir, ckpt: str = "last", videos: bool = True, max_heldout: int | None = None,
             downscale: int = 1) -> pd.DataFrame:
    """Evaluate a run; ``downscale`` > 1 renders and scores at 1/downscale resolution (ground truth
    area-averaged), recorded in every row."""
    run_dir = Path(run_dir)
    cfg, dm, system, info = load_run(run_dir, ckpt)
    clip, split = dm.clip, dm.split
    out_dir = run_dir / "eval"
    baseline = mean_frame(clip, split.train)
    results = []
    torch.manual_seed(int(cfg.seed))
    if len(split.test):
        log.info("eval: reconstruction on %d held-out tail frames", len(split.test))
        inputs = frame_inputs(clip, split.test, dm.inputs)
        row = _score(system, clip, split.test, inputs, split.test, baseline,
                     video_path=out_dir / "test_tail.mp4" if videos else None,
                     strip_path=out_dir / "test_tail_strip.png" if videos else None,
                     audio_offset_s=split.test[0] / clip.meta["fps"], downscale=downscale)
        results.append({"eval_set": "test_tail", "driver": "tracked_inputs", **row})
    for name in clip.meta.get("heldout", [])[:max_heldout]:
        held = clip.load_sibling(clip.root / "heldout" / name)
        log.info("eval: held-out utterance %s (%d frames, driven by its ground-truth expression track)",
                 name, held.n_frames)
        inputs = frame_inputs(held, np.arange(held.n_frames), dm.inputs)
        row = _score(system, held, range(held.n_frames), inputs, None, baseline,
                     video_path=out_dir / f"heldout_{name}.mp4" if videos else None,
                     strip_path=out_dir / f"heldout_{name}_strip.png" if videos else None, downscale=downscale)
        results.append({"eval_set": f"heldout/{name}", "driver": driver_label(system.conditioner), **row})
        if not system.conditioner.audio_only() and system.conditioner.can_drive_by_audio():
            # the same utterance driven by its audio alone: audio -> expression regressor + smoothing
            with system.conditioner.driving_by_audio():
                row = _score(system, held, range(held.n_frames), inputs, None, baseline,
                             video_path=out_dir / f"heldout_{name}_audio.mp4" if videos else None,
                             strip_path=out_dir / f"heldout_{name}_audio_strip.png" if videos else None,
                             downscale=downscale)
                if "expr" in inputs:
                    row["expr_mse"] = expression_error(system.conditioner, inputs)
            results.append({"eval_set": f"heldout/{name}", "driver": "audio", **row})
        if hasattr(system.conditioner, "generate_motion"):  # generated head motion / blinks: on the audio row
            results[-1].update(motion_metrics(system.conditioner, held, int(cfg.seed)))
    if not results:
        raise LipspaceError(f"{clip.root}: nothing to evaluate (no held-out tail: data.test_fraction=0, and no "
                            "held-out utterances). Set data.test_fraction > 0.")
    h, w = clip.hw
    info["eval_resolution"] = f"{w // downscale}x{h // downscale}"
    df = pd.DataFrame([{**info, **r, "metric_provenance": json.dumps(M.PROVENANCE)} for r in results])
    out_dir.mkdir(parents=True, exist_ok=True)
    df.to_csv(out_dir / "results.csv", index=False)
    (out_dir / "results.json").write_text(df.to_json(orient="records", indent=2))
    return df
