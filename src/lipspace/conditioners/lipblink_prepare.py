"""The lipblink (DFA-NeRF) conditioner's stage-wise pre-training, run by ``LipBlinkConditioner.prepare`` before the
NeRF on the training frames only: (a) the landmark autoencoder on the clip's landmarks plus the optional extra
pools, (b) the audio encoder sync-trained into the lip-code space and its shrink towards the training-mean mouth
code, (c) the blink -> eye-code regressor, (d) the GP-VAE over head pose and blink; and the cache
(``<clip.root>/features/lipblink-<hash>.pt``) that spares retraining with the same data and settings. Each stage
trains the conditioner's own part in place and leaves it frozen; the method and its measured results are in the
docstring of ``lipspace.conditioners.lipblink``.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from lipspace.av.sync import sync_loss, sync_prob
from lipspace.conditioners.gpvae import fit_gpvae
from lipspace.conditioners.landmark_ae import single_thread, train_landmark_ae
from lipspace.conditioners.lipblink import LipBlinkConditioner, fold_mouth, poses_to_y
from lipspace.conditioners.stage import learned_check, load_stage, save_stage, stage_key
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)
PREPARED = ("ae", "audio_enc", "blink_to_eye", "gpvae", "y_mean", "y_std", "a_mean", "a_std", "mouth_mean",
            "mouth_shrink", "prepared")


def load_pool(path) -> np.ndarray:
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "tracks.npz"
    if not p.is_file():
        raise LipspaceError(f"{path}: landmark pool not found; conditioner.pools lists dataset directories or "
                            f".npy/.npz files holding lmk68 [N, 68, 2]")
    arr = np.load(p)
    arr = arr["lmk68"] if hasattr(arr, "files") else arr
    if arr.ndim != 3 or arr.shape[1:] != (68, 2):
        raise LipspaceError(f"{p}: landmark pool must be [N, 68, 2], got {arr.shape}")
    return arr.astype(np.float32)


def cache_key(cond: LipBlinkConditioner, clip, idx: np.ndarray, pools: list[np.ndarray]) -> str:
    return stage_key(cond.settings, np.asarray(idx, np.int64),
                     *(clip.tracks[name][idx] for name in ("lmk68", "blink", "pose", "audio")), *pools)


def prepared_state(cond: LipBlinkConditioner) -> dict:
    return {k: v for k, v in cond.state_dict().items() if k.split(".")[0] in PREPARED}


def prepare(cond: LipBlinkConditioner, clip, train_idx) -> None:
    """Train (or load from the cache) every pre-trained part of ``cond`` on the frames ``train_idx`` of ``clip``."""
    idx = np.asarray(train_idx, np.int64)
    if "audio" not in clip.tracks:
        raise LipspaceError("conditioner 'lipblink'.prepare: the clip has no 'audio' windows; attach them first "
                            "(build_system does: datamodule.attach_audio(conditioner.audio_inputs, ...))")
    if len(idx) < 2 * cond.settings["sync_min_shift"] + 4:
        raise LipspaceError(f"conditioner 'lipblink': {len(idx)} training frames are too few for its audio "
                            f"encoder (negatives >= {cond.settings['sync_min_shift']} frames away); use a longer "
                            f"clip")
    pools = [load_pool(p) for p in cond.pools]
    key = cache_key(cond, clip, idx, pools)
    path = Path(clip.root) / "features" / f"lipblink-{key}.pt"
    if cond.cache and load_cache(cond, path):
        return
    lmk = clip.tracks["lmk68"].astype(np.float32)
    audio = torch.as_tensor(clip.tracks["audio"], dtype=torch.float32)
    with single_thread():  # tiny models: one thread is faster (landmark_ae.single_thread)
        metrics = {"ae": _train_ae(cond, [lmk[idx], *pools])}
        mouth, eye = cond.landmark_codes(torch.from_numpy(lmk))
        metrics["sync"] = _train_sync(cond, audio, mouth, idx)
        metrics["blink_to_eye_mse"] = _train_blink(cond, torch.as_tensor(clip.tracks["blink"], dtype=torch.float32),
                                                   eye, idx)
        metrics["gpvae"] = _train_gpvae(cond, clip, audio, idx)
    cond.prepared.fill_(True)
    cond._freeze()
    cond.prepare_info = {**metrics, "cached": False, "path": str(path)}
    if cond.cache:
        save_stage(path, prepared_state(cond), metrics)
    log.info("lipblink prepared: %s", metrics)


def load_cache(cond: LipBlinkConditioner, path: Path) -> bool:
    """Load a cached preparation; False (retrain, overwrite) when it is absent, unreadable or of other shapes."""
    saved = load_stage(path, prepared_state(cond))
    if saved is None:
        return False
    cond.load_state_dict(saved[0], strict=False)  # strict=False: the projection is not cached
    cond.prepare_info = {**saved[1], "cached": True, "path": str(path)}
    cond._freeze()
    return True


@contextmanager
def _training(part: nn.Module):
    part.requires_grad_(True)
    part.train()
    try:
        yield part
    finally:
        part.requires_grad_(False)
        part.eval()


def _train_ae(cond: LipBlinkConditioner, pools: list[np.ndarray]) -> dict:
    s = cond.settings
    with _training(cond.ae):
        _, losses = train_landmark_ae(pools, steps=s["ae_steps"], batch=s["ae_batch"], seed=cond.seed, model=cond.ae)
    return losses


def _negatives(cond: LipBlinkConditioner, idx: np.ndarray, k: torch.Tensor,
               g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (into idx) of frames at least sync_min_shift frames away from idx[k], and a validity mask."""
    s = cond.settings
    shift = torch.randint(s["sync_min_shift"], s["sync_max_shift"] + 1, k.shape, generator=g)
    shift = shift * (torch.randint(0, 2, k.shape, generator=g) * 2 - 1)
    kk = (k + shift).clamp(0, len(idx) - 1)
    kk = torch.where(kk == k, (k - shift).clamp(0, len(idx) - 1), kk)
    t = torch.as_tensor(idx)
    ok = (t[kk] - t[k]).abs() >= s["sync_min_shift"]
    return kk, ok


def sync_losses(cond: LipBlinkConditioner, audio: torch.Tensor, mouth: torch.Tensor, mouth_neg: torch.Tensor) -> dict:
    """Contrastive BCE-on-cosine (aligned label 1, shifted label 0) + L2 of the audio embedding to u(m)."""
    emb = cond.audio_enc(audio)
    target = fold_mouth(mouth)
    ones, zeros = torch.ones(len(emb)), torch.zeros(len(mouth_neg))
    bce = sync_loss(emb, target, ones) + sync_loss(emb[: len(mouth_neg)], fold_mouth(mouth_neg), zeros)
    l2 = ((emb - target) ** 2).sum(-1).mean()
    return {"bce": bce, "l2": l2, "loss": bce + cond.settings["sync_l2"] * l2}


@torch.no_grad()
def sync_accuracy(cond: LipBlinkConditioner, audio: torch.Tensor, mouth: torch.Tensor, frames: np.ndarray,
                  seed: int = 1) -> dict:
    """On frames ``frames``: the share of (frame, shifted frame) pairs where the audio embedding is closer
    (cosine) to its own mouth than to the shifted one, and the mean aligned / shifted cosines."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(len(frames))
    kk, ok = _negatives(cond, frames, k, g)
    f = torch.as_tensor(frames)
    emb = cond.audio_enc(audio[f])
    pos = sync_prob(emb, fold_mouth(mouth[f]))
    neg = sync_prob(emb, fold_mouth(mouth[f[kk]]))
    return {"pair_acc": float((pos > neg)[ok].float().mean()), "cos_aligned": float(pos.mean()),
            "cos_shifted": float(neg[ok].mean()),
            "mouth_code_mse": float(((cond.audio_mouth(audio[f]) - mouth[f]) ** 2).mean())}


def _train_sync(cond: LipBlinkConditioner, audio: torch.Tensor, mouth: torch.Tensor, idx: np.ndarray) -> dict:
    s = cond.settings
    torch.manual_seed(cond.seed)
    g = torch.Generator().manual_seed(cond.seed + 1)
    # the last 10% of the training frames validate the encoder (reported, not used to select anything)
    n_val = max(len(idx) // 10, 4)
    fit, val = idx[:-n_val], idx[-n_val:]
    t = torch.as_tensor(fit)
    losses = {}
    with _training(cond.audio_enc):
        opt = torch.optim.Adam(cond.audio_enc.parameters(), lr=1e-3)
        for _ in range(s["sync_steps"]):
            k = torch.randint(0, len(fit), (min(s["sync_batch"], len(fit)),), generator=g)
            kk, ok = _negatives(cond, fit, k, g)
            losses = sync_losses(cond, audio[t[k]], mouth[t[k]], mouth[t[kk[ok]]])
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
    cond.audio_enc.eval()
    # shrink towards the training mean: alpha = <raw - mean, true - mean> / |raw - mean|^2 (clamped to [0, 1])
    # on the first half of the validation block; the second half, used for nothing else, checks the result
    half = len(val) // 2
    tune, check = torch.as_tensor(val[:half]), torch.as_tensor(val[half:])
    cond.mouth_mean.copy_(mouth[torch.as_tensor(fit)].mean(0))
    cond.mouth_shrink.fill_(1.0)
    with torch.no_grad():
        d = cond.audio_mouth(audio[tune]) - cond.mouth_mean
        alpha = float((d * (mouth[tune] - cond.mouth_mean)).sum() / (d * d).sum().clamp_min(1e-12))
    cond.mouth_shrink.fill_(min(max(alpha, 0.0), 1.0))
    acc = sync_accuracy(cond, audio, mouth, val[half:])
    acc["mouth_shrink"] = float(cond.mouth_shrink)
    trivial = float(((cond.mouth_mean - mouth[check]) ** 2).mean())
    on = f"{len(check)} check frames (the last 5 % of the training frames, not used in training)"
    checks = {"check_mouth_code": learned_check("lipblink: audio -> mouth code", acc["mouth_code_mse"], trivial,
                                                "the training-mean mouth code", on),
              "check_sync": learned_check("lipblink: audio/mouth sync (pair accuracy)", acc["pair_acc"], 0.5,
                                          "chance (0.5)", on, higher_is_better=True)}
    return {"train_" + k: v.item() for k, v in losses.items()} | {"val_" + k: v for k, v in acc.items()} | checks


def _train_blink(cond: LipBlinkConditioner, blink: torch.Tensor, eye: torch.Tensor, idx: np.ndarray) -> float:
    torch.manual_seed(cond.seed)
    b, e = blink[idx][:, None], eye[idx]
    loss = torch.zeros(())
    with _training(cond.blink_to_eye):
        opt = torch.optim.Adam(cond.blink_to_eye.parameters(), lr=1e-2)
        for _ in range(cond.settings["blink_steps"]):
            loss = ((cond.blink_to_eye(b) - e) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    return loss.item()


def _train_gpvae(cond: LipBlinkConditioner, clip, audio: torch.Tensor, idx: np.ndarray) -> dict:
    s = cond.settings
    y_all = torch.from_numpy(poses_to_y(clip.tracks["pose"], clip.tracks["blink"]))
    a_all = audio.mean(1)
    cond.y_mean.copy_(y_all[idx].mean(0))
    cond.y_std.copy_(y_all[idx].std(0).clamp_min(1e-4))
    cond.a_mean.copy_(a_all[idx].mean(0))
    cond.a_std.copy_(a_all[idx].std(0).clamp_min(1e-4))
    y_all, a_all = (y_all - cond.y_mean) / cond.y_std, (a_all - cond.a_mean) / cond.a_std
    seq = min(s["gp_seq"], len(idx))
    with _training(cond.gpvae):
        try:
            return fit_gpvae(cond.gpvae, y_all, a_all, idx, seq, s["gp_steps"], s["gp_batch"], cond.seed + 2)
        except LipspaceError as e:
            raise LipspaceError(f"conditioner 'lipblink': {e} (conditioner.gp_seq={s['gp_seq']})") from None
