"""The trainer of the locally trained audio-visual sync encoder (AVE; NOT the official SyncTalk/LRS2 one).

Three ways in: the CLI (``lipspace.av.cli``, also ``python -m lipspace.av.train``) on whole dataset directories,
:func:`train_ave` (the same from Python), and the automatic stage ``lipspace.av.auto`` that trains on a run's
training frames when no checkpoint is given. All three run :func:`fit`.

Objective per step: ``batch/2`` aligned and ``batch/2`` shifted (5 <= |s| <= 25 frames) audio/mouth pairs drawn from
the training clips in proportion to their length; loss = SyncNet BCE (:func:`lipspace.av.sync.sync_loss`)
+ ``recon_weight`` x L1 reconstruction of the centre mouth crop (positives only) from the audio embedding and a
reference crop of another frame + ``nce_weight`` x an in-batch contrastive term over the positives
(:func:`lipspace.av.sync.batch_nce_loss`). Augmentation (:func:`make_batch`, :func:`augment_tensors`): crop jitter
inside a margin, left-right mirroring, random similarity transform / gamma / blur of the crops; mel-axis warp,
time and frequency masks and Gaussian noise on the (per-clip standardised, optionally cepstrally smoothed) log-mel.
AdamW with a one-cycle learning-rate schedule; the last step's weights are kept (no early stopping on anything).

The evaluation protocol (held-out accuracy, thresholds from the training clips) is ``lipspace.av.evaluate``; its
functions are re-exported here for older callers.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import torch

from lipspace.av import data as avd
from lipspace.av.evaluate import (PROTOCOL_SUFFIX, as_clip, best_threshold, clip_embeddings,  # noqa: F401
                                  evaluate_sync, pair_scores, protocols, train_thresholds)
from lipspace.av.sync import NOT_OFFICIAL, AVEncoder, batch_nce_loss, recon_loss, save, sync_loss
from lipspace.utils.errors import LipspaceError

DEFAULT_OUT = object()  # train_ave's out_path default: lipspace.av.backend.default_ave_weights()


def make_batch(clips: list[avd.SyncClip], batch: int, rng: np.random.Generator, min_shift: int = 5,
               max_shift: int = 25, augment: bool = True):
    """(mel [B, 20, 80], video uint8 [B, 5, H, W], label [B], reference [P, H, W], target [P, H, W]) where the
    first P = batch // 2 rows are the positives (reference / target belong to them)."""
    half = batch // 2
    w = np.array([len(c.centres) for c in clips], float)
    counts = rng.multinomial(half, w / w.sum())
    pos_vids, neg_vids, pos_mels, neg_mels = [], [], [], []
    for c, k in zip(clips, counts):
        if k == 0:
            continue
        vt, at, _ = avd.sample_pairs(c.centres, k, k, rng, min_shift, max_shift)
        # reference frame for each positive: another valid frame at least 3 frames away
        cand = np.flatnonzero(c.valid)
        r = rng.choice(cand, k)
        near = np.abs(r - vt[:k]) < 3
        r[near] = (vt[:k][near] + rng.integers(3, max(4, c.n_frames // 2), near.sum())) % c.n_frames
        win = c.video(vt)  # [2k, 5, Hc, Wc]
        ref = c.crops[np.concatenate([r, r])][:, None]  # [2k, 1, Hc, Wc] (negatives' unused)
        both = np.concatenate([win, ref], 1)
        both = avd.jitter_crop(both, rng) if augment else avd.centre_crop(both)
        pos_vids.append(both[:k]), neg_vids.append(both[k:])
        pos_mels.append(c.audio[at[:k]]), neg_mels.append(c.audio[at[k:]])
    pos = np.concatenate(pos_vids)
    vid = np.concatenate([pos, np.concatenate(neg_vids)])
    mel = np.concatenate(pos_mels + neg_mels).copy()
    P = len(pos)
    label = np.concatenate([np.ones(P, np.float32), np.zeros(len(vid) - P, np.float32)])
    if augment:
        flip = rng.random(len(vid)) < 0.5
        vid[flip] = vid[flip][..., ::-1]
        mel += rng.normal(0, 0.1, mel.shape).astype(np.float32)
        for b in np.flatnonzero(rng.random(len(mel)) < 0.5):
            f0 = rng.integers(0, mel.shape[2] - 8)
            mel[b, :, f0:f0 + rng.integers(1, 9)] = 0.0
    vid = np.ascontiguousarray(vid)
    video = torch.from_numpy(vid[:, :5].copy())
    reference = torch.from_numpy(vid[:P, 5].copy())
    target = torch.from_numpy(vid[:P, 2].copy())
    return torch.from_numpy(mel), video, torch.from_numpy(label), reference, target


def augment_tensors(mel: torch.Tensor, video: torch.Tensor, reference: torch.Tensor, target: torch.Tensor,
                    gen: torch.Generator, strength: float = 1.0):
    """Speaker / appearance augmentation of a training batch (the positives' reference and target crops get the
    same geometric and photometric change as their window).

    Mouth crops: random similarity transform (scale 1 +- 0.1, rotation +- 6 deg, shared by a window's frames),
    random gamma (0.7-1.4) and, for half the windows, a 3x3 blur. Audio: mel-axis warp (bands resampled by a
    factor 1 +- 0.1, a crude vocal-tract-length perturbation) and a 0-3 frame time mask."""
    B, F_, H, W = video.shape
    P = len(reference)
    x = torch.cat([video.float() / 255.0, torch.zeros(B, 2, H, W)], 1)
    x[:P, F_] = reference.float() / 255.0
    x[:P, F_ + 1] = target.float() / 255.0
    u = lambda *sh: torch.rand(*sh, generator=gen)  # noqa: E731
    sc = 1 + strength * 0.1 * (2 * u(B) - 1)
    th = strength * torch.deg2rad(6 * (2 * u(B) - 1))
    A = torch.zeros(B, 2, 3)
    A[:, 0, 0], A[:, 0, 1] = torch.cos(th) / sc, -torch.sin(th) / sc * H / W
    A[:, 1, 0], A[:, 1, 1] = torch.sin(th) / sc * W / H, torch.cos(th) / sc
    grid = torch.nn.functional.affine_grid(A, list(x.shape), align_corners=False)
    x = torch.nn.functional.grid_sample(x, grid, padding_mode="border", align_corners=False)
    gamma = torch.exp(strength * (2 * u(B) - 1) * 0.35)[:, None, None, None]
    x = x.clamp(1e-4, 1) ** gamma
    blur = u(B) < 0.5 * strength
    if blur.any():
        x[blur] = torch.nn.functional.avg_pool2d(x[blur], 3, 1, 1, count_include_pad=False)
    video, reference, target = x[:, :F_], x[:P, F_], x[:P, F_ + 1]
    # audio: warp the mel axis, mask a few frames
    Bm, T, D = mel.shape
    alpha = 1 + strength * 0.1 * (2 * u(Bm) - 1)
    pos = (torch.arange(D).float()[None] * alpha[:, None]).clamp(0, D - 1)  # [B, D]
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=D - 1)
    wgt = (pos - lo.float())[:, None, :]
    mel = torch.gather(mel, 2, lo[:, None].expand(Bm, T, D)) * (1 - wgt) + \
        torch.gather(mel, 2, hi[:, None].expand(Bm, T, D)) * wgt
    n_mask = (u(Bm) * 4 * strength).long()
    t0 = (u(Bm) * (T - 3)).long()
    tt = torch.arange(T)[None]
    mel = mel.masked_fill(((tt >= t0[:, None]) & (tt < (t0 + n_mask)[:, None]))[:, :, None], 0.0)
    return mel, video, reference, target


def fit(clips: list[avd.SyncClip], steps: int = 1500, seed: int = 0, batch: int = 64, lr: float = 1e-3,
        recon_weight: float = 0.5, log_every: int = 100, dim: int = 256, width: int = 32, crop_hw=avd.CROP_HW,
        augment: float = 1.0, weight_decay: float = 1e-2, lifter: int = 0, nce_weight: float = 0.0,
        eval_clip: avd.SyncClip | None = None, eval_every: int = 0, log=print) -> tuple[AVEncoder, list[dict]]:
    """Train a fresh AVE on loaded clips (their crops must have been cut at ``crop_hw``, their mel at ``lifter``)
    for ``steps`` steps; returns (model in train mode, loss history every ``log_every`` steps). ``eval_clip``
    with ``eval_every`` logs held-out accuracy meanwhile (information only: nothing is selected on it)."""
    if not clips:
        raise LipspaceError("AVE training needs at least one clip")
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = AVEncoder(dim=dim, crop_hw=crop_hw, width=width, lifter=lifter)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(steps, 1), pct_start=0.05)
    history, run_s, run_r = [], [], []
    model.train()
    t1 = time.time()
    for step in range(1, steps + 1):
        mel, video, label, ref, tgt = make_batch(clips, batch, rng)
        if augment > 0:
            mel, video, ref, tgt = augment_tensors(mel, video, ref, tgt, gen, augment)
        a = model.audio(mel)
        v = model.mouth(video)
        ls = sync_loss(a, v, label)
        lr_ = recon_loss(model.decoder(a[:len(ref)], ref), tgt) if recon_weight > 0 else torch.zeros(())
        loss = ls + recon_weight * lr_
        if nce_weight > 0:
            loss = loss + nce_weight * batch_nce_loss(a[:len(ref)], v[:len(ref)])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_s.append(ls.item()), run_r.append(lr_.item())
        if step % log_every == 0 or step == steps:
            rec = {"step": step, "sync_loss": float(np.mean(run_s)), "recon_loss": float(np.mean(run_r)),
                   "s": round(time.time() - t1, 1)}
            history.append(rec)
            run_s, run_r = [], []
            log(f"[ave] step {step}/{steps} sync {rec['sync_loss']:.4f} recon {rec['recon_loss']:.4f} "
                f"({rec['s']}s)")
        if eval_every and eval_clip is not None and step % eval_every == 0 and step < steps:
            m = evaluate_sync(model, eval_clip, seed=seed)
            log(f"[ave]   held-out {eval_clip.name} (info only): oracle binary {m['binary_acc_oracle']:.3f} "
                f"rank {m.get('rank_acc', float('nan')):.3f}")
    return model, history


def heldout_line(ev: dict, threshold: float) -> str:
    """One log line of :func:`evaluate_sync`'s held-out figures."""
    return (f"binary_acc {ev['binary_acc']:.4f} (train threshold {threshold:.3f}), "
            f"oracle {ev['binary_acc_oracle']:.4f}, 15-frame-averaged binary_acc "
            f"{ev.get('binary_acc_smooth15', -1):.4f}, relative {ev.get('binary_acc_rel', -1):.4f} / 15-frame "
            f"{ev.get('binary_acc_rel_smooth15', -1):.4f}, rank_acc {ev.get('rank_acc', float('nan')):.4f}, "
            f"rank_acc_strict {ev.get('rank_acc_strict', float('nan')):.4f}, offset {ev.get('offset')}")


def train_ave(train_roots, eval_root=None, steps: int = 1500, seed: int = 0, out_path=DEFAULT_OUT,
              batch: int = 64, lr: float = 1e-3, recon_weight: float = 0.5, log_every: int = 100,
              eval_every: int = 0, threads: int | None = 1, dim: int = 256, width: int = 32, crop_hw=avd.CROP_HW,
              extra_eval=(), augment: float = 1.0, weight_decay: float = 1e-2, lifter: int = 0,
              nce_weight: float = 0.0, log=print) -> dict:
    """Train an AVE on ``train_roots`` (whole dataset dirs, PATH[@DELAY_S]), evaluate on ``eval_root`` (held out),
    save to ``out_path`` (None: don't save). Returns metrics: losses, train threshold, held-out accuracies, wall
    time."""
    if threads:
        torch.set_num_threads(threads)
    if out_path is DEFAULT_OUT:
        from lipspace.av.backend import default_ave_weights

        out_path = default_ave_weights()
    t0 = time.time()
    roots = list(train_roots)
    paths = [avd.parse_root(r)[0].expanduser().resolve() for r in roots]
    if not roots:
        raise LipspaceError("train_ave: give at least one training dataset")
    if eval_root is not None and avd.parse_root(eval_root)[0].expanduser().resolve() in paths:
        raise LipspaceError(f"{eval_root}: the evaluation clip is also a training clip; hold it out")
    clips = [avd.load_sync_clip(r, crop_hw, lifter=lifter) for r in roots]
    log("[ave] data: " + ", ".join(f"{c.name} ({len(c.centres)} windows)" for c in clips)
        + f" loaded in {time.time() - t0:.1f}s")
    eval_clip = avd.load_sync_clip(eval_root, crop_hw, lifter=lifter) if eval_root is not None else None
    t1 = time.time()
    model, history = fit(clips, steps, seed, batch, lr, recon_weight, log_every, dim, width, crop_hw, augment,
                         weight_decay, lifter, nce_weight, eval_clip, eval_every, log)
    train_s = time.time() - t1
    thrs, train_accs = train_thresholds(model, clips, seed + 1)
    thr, train_acc = thrs["window"], train_accs["window"]
    metrics = {"train_clips": [str(r) for r in roots], "train_audio_delay_s": [c.audio_delay_s for c in clips],
               "steps": steps, "batch": batch, "seed": seed,
               "train_seconds": round(train_s, 1), "threshold": thr, "train_binary_acc": train_acc,
               "thresholds": thrs, "train_binary_accs": train_accs,
               "history": history}
    if eval_clip is not None:
        ev = evaluate_sync(model, eval_clip, threshold=thrs, seed=seed)
        metrics["heldout"] = {**ev, "root": str(eval_root), "audio_delay_s": eval_clip.audio_delay_s}
        log(f"[ave] HELD-OUT {ev['clip']}: {heldout_line(ev, thr)}")
    for r in extra_eval:  # more unseen clips / alignments, same threshold
        ev = evaluate_sync(model, r, threshold=thrs, seed=seed)
        metrics.setdefault("extra_eval", []).append({**ev, "root": str(r)})
        log(f"[ave] also {ev['clip']}: binary_acc {ev['binary_acc']:.4f}, oracle {ev['binary_acc_oracle']:.4f}, "
            f"rank_acc {ev.get('rank_acc', float('nan')):.4f}, offset {ev.get('offset')}")
    metrics["wall_seconds"] = round(time.time() - t0, 1)
    if out_path is not None:
        names = ", ".join(c.name for c in clips)
        prov = {"weights": f"lipspace AVE trained locally on {names} ({steps} steps, seed {seed}), {NOT_OFFICIAL}",
                "train_clips": [str(r) for r in roots], "eval_clip": str(eval_root) if eval_root else None,
                "train_frames": [{"root": str(p), "start": 0, "stop": c.n_frames, "audio_delay_s": c.audio_delay_s}
                                 for p, c in zip(paths, clips)],
                "objective": "SyncNet BCE on ReLU-embedding cosine + L1 mouth reconstruction",
                "windows": {"video_frames": avd.VIDEO_FRAMES, "audio_mel_frames": avd.AUDIO_FRAMES,
                            "crop_hw": list(crop_hw), "mel": "lipspace.audio.features mel, per-clip standardised"}}
        p = save(model, out_path, prov, {k: v for k, v in metrics.items() if k != "history"})
        metrics["weights"] = str(p)
        log(f"[ave] weights -> {p}")
    return metrics


if __name__ == "__main__":  # `python -m lipspace.av.train ...`: the CLI lives in lipspace.av.cli
    from lipspace.av.cli import main

    sys.exit(main())
