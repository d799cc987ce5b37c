"""DFA-NeRF's space (Yao et al. 2022): a disentangled lip code and eye code from 68 landmarks, an audio encoder
sync-trained into the lip-code space, and a GP-VAE that generates head poses and blinks for new audio.

c_t = [mouth code m_t (``mouth_dim``), eye code e_t (``eye_dim``)] from the landmark autoencoder
(``lipspace.conditioners.landmark_ae``) of frame t's ``lmk68``. Everything but the optional projection is trained
*before* the NeRF, in :meth:`LipBlinkConditioner.prepare`, on the training frames only:

(a) the landmark AE (region encoders + swap losses) on this clip's landmarks plus optional extra pools
    (``pools``: dataset directories or ``.npy`` / ``.npz`` arrays [N, 68, 2] of other identities);
(b) the audio encoder: AudioNet over the frame's audio window -> ReLU -> a non-negative embedding of width
    2 * mouth_dim, compared with the mouth embedding u(m) = [relu(m), relu(-m)] (non-negative and lossless:
    m = u[:M] - u[M:]). Loss: Wav2Lip's BCE on the cosine (``lipspace.av.sync.sync_loss``) with label 1 for the
    frame's own mouth and 0 for a mouth >= ``sync_min_shift`` frames away, plus ``sync_l2`` * ||a - u(m)||^2,
    which pulls the audio embedding onto the mouth code so that the NeRF can read it in place of m;
    Its output is then shrunk towards the training-mean mouth code by one factor fitted on the first half of the
    validation block (the last 10 % of the training frames); the second half checks it against the mean code
    (``prepare_info["sync"]["check_mouth_code"]``) and the pair accuracy against chance (``check_sync``). On real
    clips the unshrunk code lost to the mean on the held-out tail (obama: MSE 0.045 vs 0.040) with a pair
    accuracy of 0.74: right in direction, ~4x too large; shrunk (factor 0.26 / 0.22), the tail MSE is 0.69 /
    0.87 of the mean's on obama / anchor (2026-12-05);
(c) a blink -> eye-code regressor (small MLP, MSE) that turns generated blinks into eye codes;
(d) the GP-VAE (``lipspace.conditioners.gpvae``) over y = [head rotation vector (3), translation (3), blink (1)],
    z-scored per channel with training-frame statistics, conditioned on the per-frame mean of the audio window
    (z-scored per band), on random training subsequences of ``gp_seq`` consecutive frames.

Freezing: the trained parts are frozen for NeRF training by ``requires_grad = False`` and kept in eval mode by
:meth:`train` (the landmark AE's BatchNorm must not update its statistics on 4-frame NeRF batches). They stay
parameters / buffers of this module, so Lightning checkpoints carry them; the cache only spares retraining.
Cache: ``<clip.root>/features/lipblink-<hash>.pt``, keyed by a hash of the settings, the training indices and the
tracks / audio windows they read; same data and settings -> loaded, not retrained (``prepare_info["cached"]``).

Driving by audio (``driving_by_audio()``): ``prepare_sequence`` replaces m by the audio encoder's output (unfolded
from u-space) and e by the eye code of GP-VAE-generated blinks (seed ``seed``); :meth:`generate_motion` also
returns the generated head poses, which ``render`` uses in place of pose playback; ``evaluate`` scores them
against each held-out utterance's tracks (``lipspace.eval.motion``), while its images stay rendered at the
ground-truth poses so that they can be compared pixel by pixel.

Measured on the synthetic clip (20 s, 450 training frames, default settings, 3 training seeds; prepare 35-45 s on
one of 2 shared CPU cores, up to 195 s when the machine is heavily loaded):
- leakage: the eye code explains none of the mouth opening on the held-out tail (R^2 -0.05 to -0.01 of a linear
  fit made on the training frames; largest |correlation| of an eye-code channel with the opening 0.08-0.12, the
  data's own opening/blink correlation -0.07) and the mouth code none of the blink (R^2 < 0); each code explains
  its own factor (R^2 >= 0.999). Region encoders make this so; DFA-NeRF's single encoder leaks fully
  (landmark_ae docstring).
- sync: on the 46 held-out tail frames with a valid negative, the audio embedding is closer to its own frame's
  mouth embedding than to one >= 5 frames away in 83-96% of pairs (cosine 0.86-0.95 aligned, 0.37-0.43 shifted).
- motion on the 2 held-out utterances (4 s each, 5 generation seeds per training): D-Rot 2.2-2.8 deg, D-Pos
  0.47-0.52 cm; holding the first pose still gives 2.9 deg, 0.57 cm (a generator of plausible, not of the true,
  motion barely beats it). Blinks: 0.33-0.45/s on the utterances and 0.28-0.35/s over 20 s of audio, against
  0.25/s in the data: too many blinks, by 10-80%.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from lipspace.av.sync import sync_loss, sync_prob
from lipspace.conditioners.audio_net import AudioNet
from lipspace.conditioners.base import Conditioner
from lipspace.conditioners.gpvae import PoseBlinkGPVAE, fit_gpvae
from lipspace.conditioners.landmark_ae import LandmarkAE, normalise_landmarks, single_thread, train_landmark_ae
from lipspace.conditioners.stage import learned_check, load_stage, save_stage, stage_key
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)
CACHE_VERSION = 6  # bump when training code changes what a cached file would hold
PREPARED = ("ae", "audio_enc", "blink_to_eye", "gpvae", "y_mean", "y_std", "a_mean", "a_std", "mouth_mean",
            "mouth_shrink", "prepared")


def unfold_mouth(u: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`fold_mouth`: [.., 2M] non-negative embedding -> [.., M] mouth code."""
    m = u.shape[-1] // 2
    return u[..., :m] - u[..., m:]


def fold_mouth(m: torch.Tensor) -> torch.Tensor:
    """[.., M] mouth code -> [.., 2M] non-negative embedding [relu(m), relu(-m)] (the sync loss needs cos >= 0)."""
    return torch.cat([m.clamp_min(0), (-m).clamp_min(0)], -1)


def poses_to_y(pose: np.ndarray, blink: np.ndarray) -> np.ndarray:
    """[N, 4, 4] head -> camera poses + [N] blink -> [N, 7] (rotation vector, translation, blink)."""
    rv = Rotation.from_matrix(np.asarray(pose, np.float64)[:, :3, :3]).as_rotvec()
    return np.concatenate([rv, np.asarray(pose)[:, :3, 3], np.asarray(blink).reshape(-1, 1)], 1).astype(np.float32)


def y_to_poses(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pose = np.tile(np.eye(4, dtype=np.float32), (len(y), 1, 1))
    pose[:, :3, :3] = Rotation.from_rotvec(np.asarray(y[:, :3], np.float64)).as_matrix()
    pose[:, :3, 3] = y[:, 3:6]
    return pose, np.clip(y[:, 6], 0.0, 1.0).astype(np.float32)


def _load_pool(path) -> np.ndarray:
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


class LipBlinkConditioner(Conditioner):
    """See the module docstring. ``raw_dim`` = mouth_dim + eye_dim."""

    name = "lipblink"
    generates_motion = True

    def __init__(self, inputs: dict[str, int] | None = None, audio: dict | None = None, mouth_dim: int = 16,
                 eye_dim: int = 4, rest_dim: int = 16, ae_hidden: int = 256, ae_encoder: str = "regions",
                 ae_steps: int = 800, ae_batch: int = 128, sync_steps: int = 800, sync_batch: int = 128,
                 sync_min_shift: int = 5, sync_max_shift: int = 50, sync_l2: float = 1.0, blink_steps: int = 300,
                 gp: dict | None = None, gp_steps: int = 1200, gp_seq: int = 48, gp_batch: int = 16,
                 pools: list | None = None, seed: int = 0, cache: bool = True, out_dim: int | None = None):
        super().__init__(inputs or {"lmk68": 2, "blink": 1, "audio": 80}, out_dim)
        if set(self.inputs) != {"lmk68", "blink", "audio"} or self.inputs["lmk68"] != 2 or self.inputs["blink"] != 1:
            raise LipspaceError(f"conditioner 'lipblink' reads lmk68 (dim 2: [N, 68, 2] pixels), blink (dim 1) and "
                                f"audio (the backend width), got {self.inputs}. Set conditioner.inputs="
                                f"{{lmk68: 2, blink: 1, audio: <backend width>}}.")
        spec = self.add_audio_input("audio", audio or {"backend": "mel", "window": 16, "context": 1})
        if spec.context != 1:
            raise LipspaceError(f"conditioner 'lipblink': audio.context must be 1 (one window per frame), got "
                                f"{spec.context}")
        if sync_min_shift < 1 or sync_max_shift <= sync_min_shift:
            raise LipspaceError(f"conditioner 'lipblink': need 1 <= sync_min_shift < sync_max_shift, got "
                                f"{sync_min_shift}, {sync_max_shift}")
        a_dim = self.inputs["audio"]
        self.mouth_dim, self.eye_dim, self.seed = mouth_dim, eye_dim, seed
        self.pools, self.cache = list(pools or []), cache
        # length scale 3 frames (0.12 s, a blink's time scale): at 10 the generated blinks mostly stayed below the
        # closed threshold (one training: 0.04 blinks/s over 2 held-out utterances x 3 seeds, 0.25 in the data)
        gp = {"length_scale": 3.0, **dict(gp or {})}
        self.settings = dict(audio=spec.__dict__, a_dim=a_dim, mouth_dim=mouth_dim, eye_dim=eye_dim,
                             rest_dim=rest_dim, ae_hidden=ae_hidden, ae_encoder=ae_encoder, ae_steps=ae_steps,
                             ae_batch=ae_batch, sync_steps=sync_steps, sync_batch=sync_batch,
                             sync_min_shift=sync_min_shift, sync_max_shift=sync_max_shift, sync_l2=sync_l2,
                             blink_steps=blink_steps, gp=gp, gp_steps=gp_steps, gp_seq=gp_seq, gp_batch=gp_batch,
                             pools=[str(p) for p in self.pools], seed=seed, version=CACHE_VERSION)
        # the pre-trained parts are initialised from `seed` on a forked RNG: reproducible given the settings (what
        # the cache assumes), and the NeRF's initialisation does not depend on whether they exist
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.ae = LandmarkAE(mouth_dim, eye_dim, rest_dim, ae_hidden, ae_encoder)
            self.audio_enc = nn.Sequential(AudioNet(a_dim, spec.window, 2 * mouth_dim), nn.ReLU())
            self.blink_to_eye = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 32), nn.Tanh(),
                                              nn.Linear(32, eye_dim))
            self.gpvae = PoseBlinkGPVAE(y_dim=7, audio_dim=a_dim, **gp)
        for name, n in (("y_mean", 7), ("y_std", 7), ("a_mean", a_dim), ("a_std", a_dim)):
            self.register_buffer(name, torch.zeros(n) if "mean" in name else torch.ones(n))
        # the audio encoder's mouth code is pulled towards the training mean by mouth_shrink (fitted on held-out
        # frames in _train_sync): a sync-trained code is right in direction but over-confident in size
        self.register_buffer("mouth_mean", torch.zeros(mouth_dim))
        self.register_buffer("mouth_shrink", torch.ones(()))
        self.register_buffer("prepared", torch.tensor(False))
        self.prepare_info: dict = {}
        self._freeze()
        self._build_projection()

    # ---- interface ----
    @property
    def raw_dim(self) -> int:
        return self.mouth_dim + self.eye_dim

    def _parts(self) -> list[nn.Module]:
        return [self.ae, self.audio_enc, self.blink_to_eye, self.gpvae]

    def _freeze(self) -> None:
        for part in self._parts():
            part.requires_grad_(False)
            part.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        for part in self._parts():  # frozen parts stay in eval mode (BatchNorm statistics, no dropout)
            part.eval()
        return self

    def check_batch(self, inputs):
        for name in self.inputs:
            if name not in inputs:
                raise LipspaceError(f"conditioner 'lipblink': input '{name}' missing from the batch (got "
                                    f"{sorted(inputs)}); the data module was set up for other inputs.")
        lmk, a = inputs["lmk68"], inputs["audio"]
        driven = "_mouth" in inputs  # codes predicted from the audio: lmk68 / blink are placeholders
        if not driven and (lmk.shape[-1] != 2 or lmk[0].numel() != 136):
            raise LipspaceError(f"conditioner 'lipblink': lmk68 must be [F, 68, 2] pixel landmarks (dlib order), got "
                                f"{tuple(lmk.shape)}")
        if a.dim() != 3 or a.shape[-1] != self.inputs["audio"]:
            raise LipspaceError(f"conditioner 'lipblink': audio must be [F, window, {self.inputs['audio']}], got "
                                f"{tuple(a.shape)}; set conditioner.inputs.audio to the backend width")

    def _require_prepared(self) -> None:
        if not bool(self.prepared):
            raise LipspaceError("conditioner 'lipblink' is not prepared: its landmark autoencoder, audio encoder "
                                "and GP-VAE are trained by prepare(clip, train_idx) (build_system calls it) or "
                                "loaded from a checkpoint")

    @torch.no_grad()
    def landmark_codes(self, lmk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[F, 68, 2] (or [F, 136]) pixel landmarks -> (mouth [F, M], eye [F, E]) codes."""
        mouth, eye, _ = self.ae.encode(normalise_landmarks(lmk.reshape(len(lmk), 68, 2)))
        return mouth, eye

    @torch.no_grad()
    def audio_mouth(self, audio: torch.Tensor) -> torch.Tensor:
        """[F, window, dim] audio windows -> [F, M] mouth codes predicted from the audio (shrunk towards the
        training mean by ``mouth_shrink``)."""
        raw = unfold_mouth(self.audio_enc(audio.float()))
        return self.mouth_mean + self.mouth_shrink * (raw - self.mouth_mean)

    def encode(self, inputs, frame_idx):
        self._require_prepared()
        if "_mouth" in inputs:  # filled by prepare_sequence when driving by audio
            return torch.cat([inputs["_mouth"], inputs["_eye"]], -1)
        mouth, eye = self.landmark_codes(inputs["lmk68"])
        return torch.cat([mouth, eye], -1)

    def can_drive_by_audio(self) -> bool:
        return True

    def prepare_sequence(self, inputs):
        if not self._drive_by_audio:
            return inputs  # oracle: codes from the sequence's own landmark tracks
        self._require_prepared()
        audio, dev = inputs["audio"], self.y_mean.device
        _, blink = self.generate_motion(audio, None, self.seed)
        with torch.no_grad():
            eye = self.blink_to_eye(blink[:, None].to(dev))
        return {**inputs, "blink": blink.to(audio.device), "_mouth": self.audio_mouth(audio.to(dev)).to(audio.device),
                "_eye": eye.to(audio.device)}

    # ---- generation ----
    def frame_audio(self, audio_windows) -> torch.Tensor:
        """[T, window, dim] -> [T, dim] per-frame mean of the window, z-scored per band (the GP-VAE's audio)."""
        a = torch.as_tensor(audio_windows, dtype=torch.float32).to(self.a_mean.device)
        if a.dim() != 3 or a.shape[-1] != self.inputs["audio"]:
            raise LipspaceError(f"conditioner 'lipblink': audio windows must be [T, window, {self.inputs['audio']}], "
                                f"got {tuple(a.shape)}")
        return (a.mean(1) - self.a_mean) / self.a_std

    @torch.no_grad()
    def generate_motion(self, audio_window_feats, y0=None, seed: int = 0, chunk: int | None = None):
        """Head poses [T, 4, 4] (head -> camera) and blinks [T] for audio windows [T, window, dim], starting from
        ``y0``: a [4, 4] pose (blink 0), a raw 7-vector (rotation vector, translation, blink) or None (the mean
        training frame). Seeded. Generated in pieces of ``chunk`` frames (default: the training length
        ``gp_seq``), each starting where the previous one ended: one 500-frame piece (10x the trained length)
        gave 1.5-3x the blink rate of 48-frame pieces in two trainings (0.46 vs 0.32 and 1.15 vs 0.37 blinks/s
        over 20 s of the synthetic clip's audio, 5 seeds; 0.25 in the data)."""
        self._require_prepared()
        chunk = int(chunk or self.settings["gp_seq"])
        a = self.frame_audio(audio_window_feats)
        mean, std = self.y_mean, self.y_std
        if y0 is None:
            y = mean.clone()
        else:
            y0 = np.asarray(y0.cpu() if torch.is_tensor(y0) else y0, np.float32)
            if y0.shape == (4, 4):
                y = torch.from_numpy(poses_to_y(y0[None], np.zeros(1))[0]).to(mean.device)
            elif y0.shape == (7,):
                y = torch.from_numpy(y0).to(mean.device)
            else:
                raise LipspaceError(f"generate_motion: y0 must be a [4, 4] pose or a 7-vector, got {y0.shape}")
        g = torch.Generator().manual_seed(int(seed))
        was = self.gpvae.training
        self.gpvae.eval()
        out = []
        for s in range(0, len(a), chunk):
            z0 = ((y - mean) / std)[None]
            piece = self.gpvae.generate(a[None, s:s + chunk], z0, generator=g)[0] * std + mean
            out.append(piece)
            y = piece[-1]
        self.gpvae.train(was)
        y = torch.cat(out).cpu().numpy() if out else np.zeros((0, 7), np.float32)
        pose, blink = y_to_poses(y)
        return torch.from_numpy(pose), torch.from_numpy(blink)

    # ---- stage-wise training ----
    def _cache_key(self, clip, idx: np.ndarray, pools: list[np.ndarray]) -> str:
        return stage_key(self.settings, np.asarray(idx, np.int64),
                         *(clip.tracks[name][idx] for name in ("lmk68", "blink", "pose", "audio")), *pools)

    def _prepared_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items() if k.split(".")[0] in PREPARED}

    def prepare(self, clip, train_idx) -> None:
        idx = np.asarray(train_idx, np.int64)
        if "audio" not in clip.tracks:
            raise LipspaceError("conditioner 'lipblink'.prepare: the clip has no 'audio' windows; attach them first "
                                "(build_system does: datamodule.attach_audio(conditioner.audio_inputs, ...))")
        if len(idx) < 2 * self.settings["sync_min_shift"] + 4:
            raise LipspaceError(f"conditioner 'lipblink': {len(idx)} training frames are too few for its audio "
                                f"encoder (negatives >= {self.settings['sync_min_shift']} frames away); use a longer "
                                f"clip")
        pools = [_load_pool(p) for p in self.pools]
        key = self._cache_key(clip, idx, pools)
        path = Path(clip.root) / "features" / f"lipblink-{key}.pt"
        if self.cache and self._load_cache(path):
            return
        lmk = clip.tracks["lmk68"].astype(np.float32)
        audio = torch.as_tensor(clip.tracks["audio"], dtype=torch.float32)
        with single_thread():  # tiny models: one thread is faster (landmark_ae.single_thread)
            metrics = {"ae": self._train_ae([lmk[idx], *pools])}
            mouth, eye = self.landmark_codes(torch.from_numpy(lmk))
            metrics["sync"] = self._train_sync(audio, mouth, idx)
            metrics["blink_to_eye_mse"] = self._train_blink(torch.as_tensor(clip.tracks["blink"],
                                                                            dtype=torch.float32), eye, idx)
            metrics["gpvae"] = self._train_gpvae(clip, audio, idx)
        self.prepared.fill_(True)
        self._freeze()
        self.prepare_info = {**metrics, "cached": False, "path": str(path)}
        if self.cache:
            save_stage(path, self._prepared_state(), metrics)
        log.info("lipblink prepared: %s", metrics)

    def _load_cache(self, path: Path) -> bool:
        """Load a cached preparation; False (retrain, overwrite) when it is absent, unreadable or of other shapes."""
        saved = load_stage(path, self._prepared_state())
        if saved is None:
            return False
        self.load_state_dict(saved[0], strict=False)  # strict=False: the projection is not cached
        self.prepare_info = {**saved[1], "cached": True, "path": str(path)}
        self._freeze()
        return True

    @contextmanager
    def _training(self, part: nn.Module):
        part.requires_grad_(True)
        part.train()
        try:
            yield part
        finally:
            part.requires_grad_(False)
            part.eval()

    def _train_ae(self, pools: list[np.ndarray]) -> dict:
        s = self.settings
        with self._training(self.ae):
            _, losses = train_landmark_ae(pools, steps=s["ae_steps"], batch=s["ae_batch"], seed=self.seed,
                                          model=self.ae)
        return losses

    def _negatives(self, idx: np.ndarray, k: torch.Tensor, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Positions (into idx) of frames at least sync_min_shift frames away from idx[k], and a validity mask."""
        s = self.settings
        shift = torch.randint(s["sync_min_shift"], s["sync_max_shift"] + 1, k.shape, generator=g)
        shift = shift * (torch.randint(0, 2, k.shape, generator=g) * 2 - 1)
        kk = (k + shift).clamp(0, len(idx) - 1)
        kk = torch.where(kk == k, (k - shift).clamp(0, len(idx) - 1), kk)
        t = torch.as_tensor(idx)
        ok = (t[kk] - t[k]).abs() >= s["sync_min_shift"]
        return kk, ok

    def sync_losses(self, audio: torch.Tensor, mouth: torch.Tensor, mouth_neg: torch.Tensor) -> dict:
        """Contrastive BCE-on-cosine (aligned label 1, shifted label 0) + L2 of the audio embedding to u(m)."""
        emb = self.audio_enc(audio)
        target = fold_mouth(mouth)
        ones, zeros = torch.ones(len(emb)), torch.zeros(len(mouth_neg))
        bce = sync_loss(emb, target, ones) + sync_loss(emb[: len(mouth_neg)], fold_mouth(mouth_neg), zeros)
        l2 = ((emb - target) ** 2).sum(-1).mean()
        return {"bce": bce, "l2": l2, "loss": bce + self.settings["sync_l2"] * l2}

    @torch.no_grad()
    def sync_accuracy(self, audio: torch.Tensor, mouth: torch.Tensor, frames: np.ndarray, seed: int = 1) -> dict:
        """On frames ``frames``: the share of (frame, shifted frame) pairs where the audio embedding is closer
        (cosine) to its own mouth than to the shifted one, and the mean aligned / shifted cosines."""
        g = torch.Generator().manual_seed(seed)
        k = torch.arange(len(frames))
        kk, ok = self._negatives(frames, k, g)
        f = torch.as_tensor(frames)
        emb = self.audio_enc(audio[f])
        pos = sync_prob(emb, fold_mouth(mouth[f]))
        neg = sync_prob(emb, fold_mouth(mouth[f[kk]]))
        return {"pair_acc": float((pos > neg)[ok].float().mean()), "cos_aligned": float(pos.mean()),
                "cos_shifted": float(neg[ok].mean()),
                "mouth_code_mse": float(((self.audio_mouth(audio[f]) - mouth[f]) ** 2).mean())}

    def _train_sync(self, audio: torch.Tensor, mouth: torch.Tensor, idx: np.ndarray) -> dict:
        s = self.settings
        torch.manual_seed(self.seed)
        g = torch.Generator().manual_seed(self.seed + 1)
        # the last 10% of the training frames validate the encoder (reported, not used to select anything)
        n_val = max(len(idx) // 10, 4)
        fit, val = idx[:-n_val], idx[-n_val:]
        t = torch.as_tensor(fit)
        losses = {}
        with self._training(self.audio_enc):
            opt = torch.optim.Adam(self.audio_enc.parameters(), lr=1e-3)
            for _ in range(s["sync_steps"]):
                k = torch.randint(0, len(fit), (min(s["sync_batch"], len(fit)),), generator=g)
                kk, ok = self._negatives(fit, k, g)
                losses = self.sync_losses(audio[t[k]], mouth[t[k]], mouth[t[kk[ok]]])
                opt.zero_grad()
                losses["loss"].backward()
                opt.step()
        self.audio_enc.eval()
        # shrink towards the training mean: alpha = <raw - mean, true - mean> / |raw - mean|^2 (clamped to [0, 1])
        # on the first half of the validation block; the second half, used for nothing else, checks the result
        half = len(val) // 2
        tune, check = torch.as_tensor(val[:half]), torch.as_tensor(val[half:])
        self.mouth_mean.copy_(mouth[torch.as_tensor(fit)].mean(0))
        self.mouth_shrink.fill_(1.0)
        with torch.no_grad():
            d = self.audio_mouth(audio[tune]) - self.mouth_mean
            alpha = float((d * (mouth[tune] - self.mouth_mean)).sum() / (d * d).sum().clamp_min(1e-12))
        self.mouth_shrink.fill_(min(max(alpha, 0.0), 1.0))
        acc = self.sync_accuracy(audio, mouth, val[half:])
        acc["mouth_shrink"] = float(self.mouth_shrink)
        trivial = float(((self.mouth_mean - mouth[check]) ** 2).mean())
        on = f"{len(check)} check frames (the last 5 % of the training frames, not used in training)"
        checks = {"check_mouth_code": learned_check("lipblink: audio -> mouth code", acc["mouth_code_mse"], trivial,
                                                    "the training-mean mouth code", on),
                  "check_sync": learned_check("lipblink: audio/mouth sync (pair accuracy)", acc["pair_acc"], 0.5,
                                              "chance (0.5)", on, higher_is_better=True)}
        return {"train_" + k: v.item() for k, v in losses.items()} | {"val_" + k: v for k, v in acc.items()} | checks

    def _train_blink(self, blink: torch.Tensor, eye: torch.Tensor, idx: np.ndarray) -> float:
        torch.manual_seed(self.seed)
        b, e = blink[idx][:, None], eye[idx]
        loss = torch.zeros(())
        with self._training(self.blink_to_eye):
            opt = torch.optim.Adam(self.blink_to_eye.parameters(), lr=1e-2)
            for _ in range(self.settings["blink_steps"]):
                loss = ((self.blink_to_eye(b) - e) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        return loss.item()

    def _train_gpvae(self, clip, audio: torch.Tensor, idx: np.ndarray) -> dict:
        s = self.settings
        y_all = torch.from_numpy(poses_to_y(clip.tracks["pose"], clip.tracks["blink"]))
        a_all = audio.mean(1)
        self.y_mean.copy_(y_all[idx].mean(0))
        self.y_std.copy_(y_all[idx].std(0).clamp_min(1e-4))
        self.a_mean.copy_(a_all[idx].mean(0))
        self.a_std.copy_(a_all[idx].std(0).clamp_min(1e-4))
        y_all, a_all = (y_all - self.y_mean) / self.y_std, (a_all - self.a_mean) / self.a_std
        seq = min(s["gp_seq"], len(idx))
        with self._training(self.gpvae):
            try:
                return fit_gpvae(self.gpvae, y_all, a_all, idx, seq, s["gp_steps"], s["gp_batch"], self.seed + 2)
            except LipspaceError as e:
                raise LipspaceError(f"conditioner 'lipblink': {e} (conditioner.gp_seq={s['gp_seq']})") from None
