"""DFA-NeRF's space (Yao et al. 2022): a disentangled lip code and eye code from 68 landmarks, an audio encoder
sync-trained into the lip-code space, and a GP-VAE that generates head poses and blinks for new audio.

c_t = [mouth code m_t (``mouth_dim``), eye code e_t (``eye_dim``)] from the landmark autoencoder
(``lipspace.conditioners.landmark_ae``) of frame t's ``lmk68``. Everything but the optional projection is trained
*before* the NeRF, in :meth:`LipBlinkConditioner.prepare` (``lipspace.conditioners.lipblink_prepare``), on the
training frames only:

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

import numpy as np
import torch
from scipy.spatial.transform import Rotation
from torch import nn

from lipspace.conditioners.audio_net import AudioNet
from lipspace.conditioners.base import Conditioner
from lipspace.conditioners.gpvae import PoseBlinkGPVAE
from lipspace.conditioners.landmark_ae import LandmarkAE, normalise_landmarks
from lipspace.utils.errors import LipspaceError

CACHE_VERSION = 6  # bump when training code changes what a cached file would hold (lipblink_prepare)
# What the NeRF's mouth code is during training: the landmark autoencoder's mouth code of the frame (the driving route
# then swaps in the audio encoder's prediction), or DFA-NeRF's own f_c = [f_a, f_e]: the audio encoder's mouth code
# (sync-trained into the same space) in training as in driving, the eye code from the landmarks (generated blinks
# when driven by audio).
NERF_MOUTH = ("landmarks", "audio")


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


class LipBlinkConditioner(Conditioner):
    """See the module docstring. ``raw_dim`` = mouth_dim + eye_dim."""

    name = "lipblink"
    generates_motion = True

    def __init__(self, inputs: dict[str, int] | None = None, audio: dict | None = None, mouth_dim: int = 16,
                 eye_dim: int = 4, rest_dim: int = 16, ae_hidden: int = 256, ae_encoder: str = "regions",
                 ae_steps: int = 800, ae_batch: int = 128, sync_steps: int = 800, sync_batch: int = 128,
                 sync_min_shift: int = 5, sync_max_shift: int = 50, sync_l2: float = 1.0, blink_steps: int = 300,
                 gp: dict | None = None, gp_steps: int = 1200, gp_seq: int = 48, gp_batch: int = 16,
                 pools: list | None = None, seed: int = 0, cache: bool = True, out_dim: int | None = None,
                 nerf_mouth: str = "landmarks"):
        super().__init__(inputs or {"lmk68": 2, "blink": 1, "audio": 80}, out_dim)
        if nerf_mouth not in NERF_MOUTH:
            raise LipspaceError(f"conditioner 'lipblink': nerf_mouth={nerf_mouth!r}; choose one of {NERF_MOUTH}")
        self.nerf_mouth = nerf_mouth
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
        # frames in lipblink_prepare): a sync-trained code is right in direction but over-confident in size
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
        if self.nerf_mouth == "audio":  # DFA-NeRF's f_c = [f_a, f_e]: the mouth part from the audio, in training too
            mouth = self.audio_mouth(inputs["audio"])
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

    # ---- stage-wise training: lipspace.conditioners.lipblink_prepare ----
    def prepare(self, clip, train_idx) -> None:
        """Train the landmark autoencoder, audio encoder, blink -> eye regressor and GP-VAE on the training frames
        (or load them from the cache): ``lipspace.conditioners.lipblink_prepare.prepare``."""
        from lipspace.conditioners.lipblink_prepare import prepare  # deferred: that module builds on this one

        prepare(self, clip, train_idx)
