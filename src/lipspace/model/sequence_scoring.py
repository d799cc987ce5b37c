"""Render one sequence with a trained system and score it, for the eval task (``lipspace.tasks.evaluate``): a
held-out tail or utterance with ground truth (per-frame metrics against it and against the mean-training-frame
baseline, sequence metrics, optional side-by-side video and strip), a dubbed audio file without ground truth (sync
and face metrics; bad audio gives a 'not scored' row instead of stopping the evaluation), and the head motion and
blinks a conditioner generates from an utterance's audio against its tracks.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from lipspace.data.clip import Clip
from lipspace.eval import metrics as M
from lipspace.eval.scoring import BATCH_PIXELS, Scorer
from lipspace.eval.video import to_uint8, write_strip, write_video
from lipspace.model.inference import render_sequence
from lipspace.model.playback import frames_from_audio
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)


def motion_metrics(conditioner, held: Clip, seed: int) -> dict:
    """Head motion and blinks generated from the utterance's audio, starting from its first ground-truth pose
    (``conditioner.generate_motion``, where it ``generates_motion``), against its ground-truth tracks: D-Rot (deg),
    D-Pos (head units, cm) and blinks per second of both (definitions: lipspace.eval.motion)."""
    from lipspace.eval.motion import motion_report

    audio = held.track(conditioner.motion_input)
    poses, blink = conditioner.generate_motion(audio, held.pose[0], seed)
    return motion_report(poses, held.pose, blink, held.tracks["blink"], held.meta["fps"])


def mean_frame(clip: Clip, idx: np.ndarray, chunk: int = 64) -> torch.Tensor:
    """Mean of frames ``idx`` [H,W,3] in [0,1], read ``chunk`` frames at a time. The integer sum is exact, so this
    equals ``clip.frames[idx].float().mean(0) / 255`` (a float32 sum of uint8 values is exact below 2^24) bit for
    bit without holding all frames as floats."""
    idx = torch.as_tensor(np.asarray(idx), dtype=torch.long).reshape(-1)
    total = torch.zeros(clip.frames.shape[1:], dtype=torch.int64)
    for s in range(0, len(idx), chunk):
        total += clip.frames[idx[s:s + chunk]].sum(0, dtype=torch.int64)
    return total.float().div_(len(idx)) / 255.0


def _lmk68(clip: Clip, indices, downscale: int) -> np.ndarray | None:
    """Ground-truth iBUG-68 landmarks of frames ``indices`` in pixels of the 1/downscale renders."""
    if "lmk68" not in clip.tracks:
        return None
    return np.asarray(clip.tracks["lmk68"])[np.asarray(list(indices))] / downscale


def score_sequence(scorer: Scorer, system, clip: Clip, indices, inputs, frame_idx, baseline: torch.Tensor,
                   video_path=None, strip_path=None, audio_offset_s: float = 0.0, downscale: int = 1,
                   postprocess: str = "none") -> dict:
    """Render frames ``indices`` of ``clip`` under ``inputs`` (``frame_idx``: trained per-frame state, None for new
    inputs; ``lipspace.model.inference.render_sequence``) and score them against their ground truth: the per-frame
    metrics' means, the same of the mean-frame ``baseline`` (``baseline_mean_frame_*``), ``n_frames`` and the
    scorer's sequence metrics; with ``video_path`` / ``strip_path``, a ground truth | render video / strip.
    ``postprocess`` (``lipspace.model.postprocess``) is applied to the renders before scoring; ``portrait_sync``
    pastes ground-truth pixels into them (scores not comparable with ``none``), the baseline is never touched."""
    rows, base_rows, gts, preds, batch = [], [], [], [], []
    if downscale > 1:
        baseline = torch.nn.functional.avg_pool2d(baseline.permute(2, 0, 1)[None], downscale)[0].permute(1, 2, 0)

    def score_batch():  # per-frame metrics a batch at a time (Scorer.frames: SSIM / LPIPS batched)
        p, t, lmk = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch]), [b[2] for b in batch]
        rows.extend(scorer.frames(p, t, lmk, scale=1.0 / downscale))
        base_rows.extend(M.frame_metrics_batch(baseline.expand_as(t), t, lmk, scale=1.0 / downscale))
        batch.clear()

    for i, pred, target in render_sequence(system.conditioner, system.renderer, clip, inputs, frame_idx,
                                           indices=indices, downscale=downscale, postprocess=postprocess):
        batch.append((pred, target, clip.tracks["lmk68"][i] if "lmk68" in clip.tracks else None))
        gts.append(to_uint8(target))
        preds.append(to_uint8(pred))
        if len(batch) * target.shape[0] * target.shape[1] >= BATCH_PIXELS:
            score_batch()
    if batch:
        score_batch()
    out = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    out.update({f"baseline_mean_frame_{k}": float(np.mean([r[k] for r in base_rows])) for k in base_rows[0]})
    out["n_frames"] = len(rows)
    gts, preds = np.stack(gts), np.stack(preds)
    if video_path is not None:
        side = np.concatenate([gts, preds], axis=2)  # ground truth | render
        write_video(side, video_path, audio_path=clip.audio_path, audio_offset_s=audio_offset_s)
        out["video"] = str(video_path)
    if strip_path is not None:
        pick = np.linspace(0, len(gts) - 1, min(6, len(gts))).round().astype(int)
        write_strip([gts[k] for k in pick], [preds[k] for k in pick], strip_path)
        out["strip"] = str(strip_path)
    idx = tuple(int(i) for i in indices)  # the same ground truth under another driver is analysed once
    out.update(scorer.sequence(preds, gts, _lmk68(clip, indices, downscale), clip.audio_path, audio_offset_s,
                               fps=float(clip.meta["fps"]), gt_key=(str(clip.root), idx, downscale)))
    return out


def no_sync(scorer: Scorer, status: str) -> dict:
    """The lip-sync columns the scorer would fill (official and local LSE), NaN with ``status``."""
    out = {}
    if scorer.s.lse:
        out.update({"lse_d": np.nan, "lse_c": np.nan, "lse_offset": np.nan, "lse_status": status})
    if scorer.s.lse_local:
        out.update({"lse_d_local": np.nan, "lse_c_local": np.nan, "lse_offset_local": np.nan,
                    "lse_local_status": status})
    return out


def score_dub(scorer: Scorer, system, dm, wav: Path, seed: int, downscale: int, seconds: float | None,
              video_path: Path | None, postprocess: str = "none") -> dict:
    """A dubbed / foreign-language audio file drives the model (no ground truth): sync and face metrics of the
    render. Mouth crops of the local sync expert come from the landmarks of the playback frames (the poses the
    render uses; approximate where the conditioner generates its own head motion).

    Bad audio never stops the evaluation: a file that cannot drive the model (not audio, empty, no samples, shorter
    than one video frame) gives a row with ``n_frames`` 0 and ``dub_status`` 'not scored: <file: what is wrong;
    the fix>'; any other file is converted to 16 kHz mono (``lipspace.audio.inputs.load_driving_audio``) and
    scored (``dub_status`` 'ok'), ``dub_note`` saying what was converted or that it is under a second; a silent
    one is scored with its LSE columns NaN and their status saying the audio has no speech. ``postprocess``: as
    ``frames_from_audio`` (portrait_sync pastes into the playback frames; refused, 'not scored', with generated
    head motion)."""
    import dataclasses
    import tempfile

    from lipspace.audio.inputs import load_driving_audio

    fps = float(dm.clip.meta["fps"])
    try:
        dub = load_driving_audio(wav)
        frames, indices, generated = frames_from_audio(system, dm, dub, seed, downscale=downscale,
                                                       max_seconds=seconds, postprocess=postprocess)
    except LipspaceError as e:
        log.warning("eval: dubbed audio %s not scored: %s", wav, e)
        return {"n_frames": 0, "dub_audio": str(wav), "dub_status": f"not scored: {e}", "dub_note": "",
                **no_sync(scorer, "not computed: the dubbed audio could not be used (see dub_status)")}
    scored = dataclasses.replace(dub, audio=dub.audio[:int(round(len(frames) / fps * dub.sample_rate))])
    notes = [*dub.notes, dub.short_note(), scored.speech_status]
    out = {"n_frames": len(frames), "dub_audio": str(wav), "dub_seconds": len(frames) / fps,
           "dub_status": "ok", "dub_note": "; ".join(filter(None, notes)),
           "poses": "generated from the audio" if generated else "played back from the held-out tail"}
    for note in filter(None, notes):
        log.warning("eval: dubbed audio %s: %s", wav.name, note)
    with tempfile.TemporaryDirectory(prefix="lipspace_dub_") as tmp:
        audio = dub.write(Path(tmp) / f"{wav.stem}.wav")  # 16 kHz mono: what the model heard, what is scored
        if video_path is not None:
            write_video(frames, video_path, audio_path=audio)
            out["video"] = str(video_path)
        settings = scorer.s
        if scored.silent:  # face metrics only: a sync score against silence means nothing
            scorer.s = dataclasses.replace(settings, lse=False, lse_local=False)
        try:
            out.update(scorer.sequence(frames, None, _lmk68(dm.clip, indices, downscale), audio, 0.0, fps=fps,
                                       video_path=video_path))
        finally:
            scorer.s = settings
    if scored.silent:
        out.update(no_sync(scorer, f"not computed: {scored.speech_status}"))
    return out
