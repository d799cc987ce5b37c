"""Train and evaluate the locally trained audio-visual sync encoder (AVE; NOT the official SyncTalk/LRS2 one).

    python -m lipspace.av.train --train /tmp/prep_anchor outputs/prep/macron@0.08 \
        --eval outputs/prep/obama@0.21 --steps 1500 --out ~/.cache/lipspace/ave_local.pt

A dataset is given as PATH or PATH@DELAY_S: DELAY_S > 0 says its audio is that many seconds late relative to its
video and is corrected when windows are cut (``lipspace.av.data.mel_windows``).

Objective per step: ``batch/2`` aligned and ``batch/2`` shifted (5 <= |s| <= 25 frames) audio/mouth pairs drawn from
the training clips in proportion to their length; loss = SyncNet BCE (:func:`lipspace.av.sync.sync_loss`)
+ ``recon_weight`` x L1 reconstruction of the centre mouth crop (positives only) from the audio embedding and a
reference crop of another frame + ``nce_weight`` x an in-batch contrastive term over the positives
(:func:`lipspace.av.sync.batch_nce_loss`). Augmentation (:func:`make_batch`, :func:`augment_tensors`): crop jitter
inside a margin, left-right mirroring, random similarity transform / gamma / blur of the crops; mel-axis warp,
time and frequency masks and Gaussian noise on the (per-clip standardised, optionally cepstrally smoothed) log-mel.
AdamW with a one-cycle learning-rate schedule; the last step's weights are kept (no early stopping on anything).

Accuracy (:func:`evaluate_sync`) on a clip never seen in training; every usable frame t (its 5-frame window inside
the clip and valid) gives one positive (audio t, mouth t) and one negative (audio t+s, mouth t), s uniform over
5 <= |s| <= 15 with the shifted window also usable; the score is the cosine of the two embeddings:

- ``binary_acc``: fraction of the 2 x frames decisions ``score > threshold`` that are right, the threshold chosen
  (balanced accuracy) on the TRAINING clips under the same protocol; ``binary_acc_oracle``: best threshold on the
  clip itself (an upper bound, for reference).
- ``binary_acc_smooth15`` / ``binary_acc_oracle_smooth15``: the same with every score averaged over the 15 frames
  t-7 ... t+7 at the same shift (SyncNet-style averaging over a 0.6 s segment; thresholds also from training).
- ``binary_acc_rel`` / ``binary_acc_rel_smooth15``: the same with relative scores: each score minus the mean
  score of that mouth window against the audio windows at every shift in [-15, 15] (SyncNet's confidence idea,
  label-free; removes a window's own score level, e.g. a closed mouth that matches everything a little).
- ``rank_acc``: fraction of frames t (t-15 ... t+15 usable) where the aligned score beats every score with
  5 <= |s| <= 15; ``rank_acc_strict`` beats every s != 0 in [-15, 15] (shifts of 1-4 frames overlap the window).
- ``offset``: the shift s in [-15, 15] whose score averaged over the clip is highest (0 = in sync), SyncNet-style.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lipspace.av import data as avd
from lipspace.av.sync import NOT_OFFICIAL, AVEncoder, batch_nce_loss, recon_loss, save, sync_loss
from lipspace.errors import LipspaceError

DEFAULT_OUT = Path("~/.cache/lipspace/ave_local.pt")


def _as_clip(c, config) -> avd.SyncClip:
    if isinstance(c, avd.SyncClip):
        return c
    return avd.load_sync_clip(c, tuple(config["crop_hw"]), lifter=config.get("lifter", 0))


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


@torch.no_grad()
def clip_embeddings(model: AVEncoder, clip: avd.SyncClip, chunk: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(audio [N, d], mouth [N, d]) L2-normalised embeddings of every frame (mouth rows of frames that are not
    window centres are zero)."""
    was = model.training
    model.eval()
    a = torch.cat([model.audio(torch.from_numpy(clip.audio[i:i + chunk])) for i in range(0, clip.n_frames, chunk)])
    v = torch.zeros_like(a)
    cs = clip.centres
    for i in range(0, len(cs), chunk):
        t = cs[i:i + chunk]
        v[t] = model.mouth(torch.from_numpy(np.ascontiguousarray(avd.centre_crop(clip.video(t)))))
    model.train(was)
    return torch.nn.functional.normalize(a, dim=1, eps=1e-8), torch.nn.functional.normalize(v, dim=1, eps=1e-8)


def pair_scores(a: torch.Tensor, v: torch.Tensor, centres: np.ndarray, rng: np.random.Generator,
                min_shift: int = 5, max_shift: int = 15, smooth: int = 1, relative: bool = False
                ) -> tuple[np.ndarray, np.ndarray]:
    """(pos, neg) cosine scores, one of each per frame t: pos = score(audio t, mouth t), neg = score(audio t+s,
    mouth t) with s uniform over ``min_shift <= |s| <= max_shift`` among the shifts keeping every window inside
    the clip. With ``smooth`` = k > 1 each score is averaged over frames t-k//2 ... t+k//2 at the same shift
    (SyncNet-style temporal averaging of a k-frame segment); only frames whose whole segment is usable count.
    With ``relative``, every score(audio u+s, mouth u) has the mean of score(audio u+s', mouth u) over
    s' in [-max_shift, max_shift] subtracted (SyncNet's confidence idea: the mouth window's own score level over
    nearby audio is removed; label-free), and only frames with that whole context usable count."""
    a, v = a.numpy(), v.numpy()
    ok = np.zeros(len(a) + 4 * max_shift + smooth + 2, bool)
    ok[centres] = True
    h = smooth // 2
    off = np.arange(-h, h + 1)
    ctx = np.arange(-max_shift, max_shift + 1)
    base = np.zeros(len(a))
    if relative:
        keep = np.array([t >= max_shift and ok[t + ctx].all() for t in range(len(a))])
        idx = np.flatnonzero(keep)
        base[idx] = np.stack([(a[idx + c] * v[idx]).sum(1) for c in ctx], 1).mean(1)
        ok[:len(a)] &= keep
    ts = np.array([t for t in centres if t - h >= 0 and ok[t + off].all()], np.int64)
    shifts = np.concatenate([np.arange(-max_shift, -min_shift + 1), np.arange(min_shift, max_shift + 1)])
    pos, neg = [], []
    for t in ts:
        u = t + off
        good = [sh for sh in shifts if u[0] + sh >= 0 and ok[u + sh].all()]
        if not good:
            continue
        sh = rng.choice(good)
        pos.append(float(((a[u] * v[u]).sum(1) - base[u]).mean()))
        neg.append(float(((a[u + sh] * v[u]).sum(1) - base[u]).mean()))
    if not pos:
        raise LipspaceError(f"no {smooth}-frame segment with a partner shifted by >= {min_shift} frames: "
                            f"the clip is too short")
    return np.array(pos), np.array(neg)


def best_threshold(pos: np.ndarray, neg: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy) maximising balanced accuracy of ``score > threshold``."""
    s = np.sort(np.concatenate([pos, neg]))
    cand = np.concatenate([[s[0] - 1e-6], (s[1:] + s[:-1]) / 2, [s[-1] + 1e-6]])
    accs = [((pos > t).mean() + (neg <= t).mean()) / 2 for t in cand]
    k = int(np.argmax(accs))
    return float(cand[k]), float(accs[k])


def evaluate_sync(model: AVEncoder, root, threshold: float | dict | None = None, seed: int = 0, min_shift: int = 5,
                  max_shift: int = 15, smooth: int = 15) -> dict:
    """Sync metrics of ``model`` on one dataset (see the module docstring for definitions). ``threshold``: one
    value (per-window protocol) or {protocol: thr} as returned by :func:`train_thresholds`."""
    clip = _as_clip(root, model.config)
    a, v = clip_embeddings(model, clip)
    rng = np.random.default_rng(seed)
    out = {"clip": clip.name, "n_windows": int(len(clip.centres))}
    thresholds = threshold if isinstance(threshold, dict) else {"window": threshold}
    for name, k, rel in protocols(smooth):
        pos, neg = pair_scores(a, v, clip.centres, np.random.default_rng(seed), min_shift, max_shift, k, rel)
        thr_o, acc_o = best_threshold(pos, neg)
        sfx = PROTOCOL_SUFFIX[name]
        out.update({f"pos_mean{sfx}": float(pos.mean()), f"neg_mean{sfx}": float(neg.mean()),
                    f"n_pairs{sfx}": 2 * len(pos), f"binary_acc_oracle{sfx}": acc_o,
                    f"oracle_threshold{sfx}": thr_o})
        thr = thresholds.get(name)
        if thr is not None:
            out[f"threshold{sfx}"] = float(thr)
            out[f"binary_acc{sfx}"] = float(((pos > thr).sum() + (neg <= thr).sum()) / (len(pos) + len(neg)))
    # offset sweep
    ok = np.zeros(clip.n_frames + 2 * max_shift + 2, bool)
    ok[clip.centres] = True
    shifts = np.arange(-max_shift, max_shift + 1)
    full = np.array([t for t in clip.centres if t - max_shift >= 0 and ok[t + shifts].all()], np.int64)
    if len(full):
        S = np.stack([(a[full + s] * v[full]).sum(1).numpy() for s in shifts], 1)  # [F, 31]
        zero = max_shift
        far = np.abs(shifts) >= min_shift
        nz = shifts != 0
        out["rank_acc"] = float((S[:, zero] > S[:, far].max(1)).mean())
        out["rank_acc_strict"] = float((S[:, zero] > S[:, nz].max(1)).mean())
        out["n_rank_frames"] = int(len(full))
        mean = S.mean(0)
        out["offset"] = int(shifts[int(np.argmax(mean))])
        out["offset_curve"] = [round(float(x), 4) for x in mean]
    return out


PROTOCOL_SUFFIX = {"window": "", "smooth": "_smooth15", "rel": "_rel", "rel_smooth": "_rel_smooth15"}


def protocols(smooth: int = 15) -> list[tuple[str, int, bool]]:
    """(name, frames averaged, relative) of the four scoring protocols of :func:`evaluate_sync`."""
    return [("window", 1, False), ("smooth", smooth, False), ("rel", 1, True), ("rel_smooth", smooth, True)]


def train_thresholds(model: AVEncoder, clips, seed: int = 1, smooth: int = 15) -> tuple[dict, dict]:
    """({protocol: threshold}, {protocol: accuracy}): the score threshold maximising balanced accuracy on the
    (training) clips under each protocol of :func:`protocols`."""
    clips = [_as_clip(c, model.config) for c in clips]
    emb = [clip_embeddings(model, c) for c in clips]
    thrs, accs = {}, {}
    for name, k, rel in protocols(smooth):
        ps, ns = zip(*[pair_scores(a, v, c.centres, np.random.default_rng(seed), 5, 15, k, rel)
                       for c, (a, v) in zip(clips, emb)])
        thrs[name], accs[name] = best_threshold(np.concatenate(ps), np.concatenate(ns))
    return thrs, accs


def train_ave(train_roots, eval_root=None, steps: int = 1500, seed: int = 0, out_path=DEFAULT_OUT,
              batch: int = 64, lr: float = 1e-3, recon_weight: float = 0.5, log_every: int = 100,
              eval_every: int = 0, threads: int | None = 1, dim: int = 256, width: int = 32, crop_hw=avd.CROP_HW,
              extra_eval=(), augment: float = 1.0, weight_decay: float = 1e-2, lifter: int = 0,
              nce_weight: float = 0.0, log=print) -> dict:
    """Train an AVE on ``train_roots`` (dataset dirs), evaluate on ``eval_root`` (held out), save to
    ``out_path`` (None: don't save). Returns metrics: losses, train threshold, held-out accuracies, wall time."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
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
        log(f"[ave] HELD-OUT {ev['clip']}: binary_acc {ev['binary_acc']:.4f} (train threshold {thr:.3f}), "
            f"oracle {ev['binary_acc_oracle']:.4f}, 15-frame-averaged binary_acc "
            f"{ev.get('binary_acc_smooth15', -1):.4f}, relative {ev.get('binary_acc_rel', -1):.4f} / 15-frame "
            f"{ev.get('binary_acc_rel_smooth15', -1):.4f}, rank_acc {ev.get('rank_acc', float('nan')):.4f}, "
            f"rank_acc_strict {ev.get('rank_acc_strict', float('nan')):.4f}, offset {ev.get('offset')}")
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
                "objective": "SyncNet BCE on ReLU-embedding cosine + L1 mouth reconstruction",
                "windows": {"video_frames": avd.VIDEO_FRAMES, "audio_mel_frames": avd.AUDIO_FRAMES,
                            "crop_hw": list(crop_hw), "mel": "lipspace.audio.features mel, per-clip standardised"}}
        p = save(model, out_path, prov, {k: v for k, v in metrics.items() if k != "history"})
        metrics["weights"] = str(p)
        log(f"[ave] weights -> {p}")
    return metrics


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lipspace.av.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--train", nargs="+", required=True,
                    help="training dataset directories, each PATH or PATH@AUDIO_DELAY_S (audio that late vs video)")
    ap.add_argument("--eval", default=None, help="held-out dataset directory (not trained on), PATH[@DELAY_S]")
    ap.add_argument("--also-eval", nargs="*", default=[], help="more unseen clips to report, PATH[@DELAY_S]")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--recon-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--augment", type=float, default=1.0, help="augmentation strength (0: crop jitter/flip only)")
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--nce-weight", type=float, default=0.0, help="weight of the in-batch contrastive term")
    ap.add_argument("--lifter", type=int, default=0, help="cepstral smoothing of the log-mel input (0: off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="checkpoint path ('none': do not save)")
    ap.add_argument("--metrics", default=None, help="write the metrics JSON here")
    args = ap.parse_args(argv)
    try:
        m = train_ave(args.train, args.eval, args.steps, args.seed, None if args.out == "none" else args.out,
                      batch=args.batch, lr=args.lr, recon_weight=args.recon_weight, threads=args.threads,
                      eval_every=args.eval_every, extra_eval=args.also_eval, augment=args.augment,
                      weight_decay=args.weight_decay, dim=args.dim, lifter=args.lifter,
                      nce_weight=args.nce_weight)
    except LipspaceError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.metrics:
        Path(args.metrics).write_text(json.dumps(m, indent=1))
    print(json.dumps({k: v for k, v in m.items() if k != "history"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
