"""A locally trained audio-visual sync encoder ("AVE"), after SyncTalk's audio-visual encoder.

This is NOT the official SyncTalk encoder (trained on LRS2, not available here): it is trained by
``lipspace.av.train`` on a few local clips, and every checkpoint carries a provenance string saying so.

Architecture (CPU-trainable; 1.6 M + 1.6 M + 1.3 M parameters for audio / mouth / decoder at the defaults):

- :class:`AudioEncoder`: a 0.2 s window of 20 log-mel frames x 80 bands (``lipspace.audio.features`` backend
  ``mel``, 100 frames/s, per-clip and per-band standardised, see ``lipspace.av.data``) -> 2-D conv stack over
  (time, frequency) -> linear -> ReLU -> ``dim`` (256) embedding.
- :class:`MouthEncoder`: 5 stacked grayscale mouth crops (frames t-2..t+2, 48 x 96, standardised per window)
  -> conv stack -> linear -> ReLU -> ``dim`` embedding.
- :func:`sync_loss`: Wav2Lip's SyncNet objective. Both embeddings are non-negative (ReLU), so their cosine
  similarity lies in [0, 1] and is used directly as the probability of "in sync"; BCE against label 1 (aligned)
  / 0 (audio shifted by >= 5 frames). :func:`batch_nce_loss` is an optional in-batch contrastive term (off by
  default: it sped up fitting but did not improve held-out accuracy here).
- :class:`MouthDecoder`: SyncTalk's reconstruction term (its eq. 3 reconstructs the lower face from the audio
  feature and a reference image). Here: a small U-Net reconstructs the centre mouth crop (frame t) from the audio
  embedding of window t and a reference mouth crop of another frame of the same clip; L1 loss. The reference gives
  identity and texture, so the mouth shape has to come from the audio embedding.
- :class:`AVEncoder` bundles the three; :func:`save` / :func:`load` write / read a checkpoint with a provenance
  dict.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lipspace.utils.errors import LipspaceError

FORMAT = "lipspace-ave"
FORMAT_VERSION = 1
NOT_OFFICIAL = "NOT the official SyncTalk/LRS2 audio-visual encoder"


def _block(ci: int, co: int, stride=1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(ci, co, 3, stride, 1, bias=False), nn.BatchNorm2d(co), nn.ReLU(inplace=True))


class AudioEncoder(nn.Module):
    """[B, A, 80] standardised log-mel windows -> [B, dim] non-negative embeddings."""

    def __init__(self, n_mels: int = 80, window: int = 20, dim: int = 256, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(_block(1, w, (1, 2)), _block(w, 2 * w, 2), _block(2 * w, 4 * w, (1, 2)),
                                 _block(4 * w, 8 * w, 2), _block(8 * w, 8 * w, 2))
        with torch.no_grad():
            n = self.net(torch.zeros(1, 1, window, n_mels)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(n, dim), nn.ReLU())
        self.window, self.n_mels = window, n_mels

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        if mel.ndim != 3 or mel.shape[1:] != (self.window, self.n_mels):
            raise LipspaceError(f"AudioEncoder expects [B, {self.window}, {self.n_mels}] mel windows, "
                                f"got {tuple(mel.shape)}")
        return self.head(self.net(mel[:, None].float()))


def standardise(x: torch.Tensor, dims) -> torch.Tensor:
    x = x.float()
    return (x - x.mean(dims, keepdim=True)) / (x.std(dims, keepdim=True) + 1e-3)


class MouthEncoder(nn.Module):
    """[B, 5, H, W] grayscale mouth crops (uint8 or float) -> [B, dim] non-negative embeddings."""

    def __init__(self, frames: int = 5, crop_hw=(48, 96), dim: int = 256, width: int = 32):
        super().__init__()
        w = width
        self.net = nn.Sequential(_block(frames, w, 2), _block(w, 2 * w, 2), _block(2 * w, 4 * w, 2),
                                 _block(4 * w, 8 * w, 2))
        with torch.no_grad():
            n = self.net(torch.zeros(1, frames, *crop_hw)).numel()
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(n, dim), nn.ReLU())
        self.frames, self.crop_hw = frames, tuple(crop_hw)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        if video.ndim != 4 or video.shape[1:] != (self.frames, *self.crop_hw):
            raise LipspaceError(f"MouthEncoder expects [B, {self.frames}, {self.crop_hw[0]}, {self.crop_hw[1]}] "
                                f"mouth crops, got {tuple(video.shape)}")
        return self.head(self.net(standardise(video, (1, 2, 3))))


class MouthDecoder(nn.Module):
    """Reconstruction head: (audio embedding [B, dim], reference crop [B, H, W]) -> mouth crop [B, H, W] in
    per-crop standardised units."""

    def __init__(self, crop_hw=(48, 96), dim: int = 256, width: int = 16):
        super().__init__()
        h, w = crop_hw
        if h % 8 or w % 8:
            raise LipspaceError(f"crop size {crop_hw} must be divisible by 8 for the decoder")
        c = width
        self.e1, self.e2, self.e3 = _block(1, c, 2), _block(c, 2 * c, 2), _block(2 * c, 4 * c, 2)
        self.fc = nn.Linear(dim, 4 * c * (h // 8) * (w // 8))
        self.d3 = _block(8 * c, 4 * c)
        self.d2 = _block(4 * c + 2 * c, 2 * c)
        self.d1 = _block(2 * c + c, c)
        self.out = nn.Conv2d(c, 1, 3, 1, 1)
        self.crop_hw, self.c = tuple(crop_hw), c

    def forward(self, audio_emb: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
        h, w = self.crop_hw
        r = standardise(reference, (1, 2))[:, None]
        s1 = self.e1(r)
        s2 = self.e2(s1)
        s3 = self.e3(s2)
        a = self.fc(audio_emb).view(-1, 4 * self.c, h // 8, w // 8)
        x = self.d3(torch.cat([s3, a], 1))
        x = self.d2(torch.cat([F.interpolate(x, scale_factor=2.0), s2], 1))
        x = self.d1(torch.cat([F.interpolate(x, scale_factor=2.0), s1], 1))
        return self.out(F.interpolate(x, scale_factor=2.0))[:, 0]


def sync_prob(audio_emb: torch.Tensor, mouth_emb: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of non-negative embeddings, in [0, 1]: the 'in sync' probability (Wav2Lip SyncNet)."""
    return F.cosine_similarity(audio_emb, mouth_emb, dim=-1, eps=1e-8)


def sync_loss(audio_emb: torch.Tensor, mouth_emb: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """BCE of the cosine similarity against labels 1 (aligned) / 0 (shifted); cosine clamped to [1e-6, 1-1e-6]."""
    p = sync_prob(audio_emb, mouth_emb).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(p, label.float().to(p.dtype))


def batch_nce_loss(audio_emb: torch.Tensor, mouth_emb: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Auxiliary contrastive term over a batch of ALIGNED pairs (row i: audio i, mouth i): symmetric cross-entropy
    of the cosine matrix / temperature with the diagonal as target, so every other window of the batch is a
    negative (CLIP-style; many more negatives per step than the binary SyncNet term, at no extra encoding)."""
    a = F.normalize(audio_emb, dim=1, eps=1e-8)
    v = F.normalize(mouth_emb, dim=1, eps=1e-8)
    logits = a @ v.t() / temperature
    target = torch.arange(len(a), device=a.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def recon_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L1 between the decoder output and the per-crop standardised target crop."""
    return (pred - standardise(target, (1, 2))).abs().mean()


class AVEncoder(nn.Module):
    """The locally trained audio-visual encoder: audio + mouth encoders and the reconstruction decoder."""

    def __init__(self, dim: int = 256, audio_window: int = 20, n_mels: int = 80, frames: int = 5,
                 crop_hw=(48, 96), width: int = 32, lifter: int = 0):
        super().__init__()
        self.config = dict(dim=dim, audio_window=audio_window, n_mels=n_mels, frames=frames,
                           crop_hw=list(crop_hw), width=width, lifter=lifter)
        self.audio = AudioEncoder(n_mels, audio_window, dim, width)
        self.mouth = MouthEncoder(frames, crop_hw, dim, width)
        self.decoder = MouthDecoder(crop_hw, dim, max(width // 2, 4))
        self.provenance: dict = {}

    def score(self, mel: torch.Tensor, video: torch.Tensor) -> torch.Tensor:
        """[B] in-sync probability (cosine of the two embeddings) of audio windows and mouth windows."""
        return sync_prob(self.audio(mel), self.mouth(video))

    @torch.no_grad()
    def encode_audio_clip(self, log_mel: torch.Tensor | "np.ndarray", n_frames: int) -> torch.Tensor:  # noqa: F821
        """[n_frames, dim] audio features of a whole clip: its log-mel features [T, 80] (backend ``mel``) are
        standardised per clip and windowed around each video frame as in training."""
        import numpy as np

        from lipspace.av.data import mel_windows

        win = mel_windows(np.asarray(log_mel, np.float32), n_frames, self.config["audio_window"],
                          lifter=self.config.get("lifter", 0))
        was = self.training
        self.eval()
        out = torch.cat([self.audio(torch.from_numpy(win[i:i + 256])) for i in range(0, len(win), 256)])
        self.train(was)
        return out


def save(model: AVEncoder, path, provenance: dict, metrics: dict | None = None) -> Path:
    """Write ``{format, version, config, state_dict, provenance, metrics}``; ``provenance['weights']`` must say
    where the weights come from."""
    if "weights" not in provenance:
        raise LipspaceError("AVE checkpoint provenance needs a 'weights' entry saying how they were trained")
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"format": FORMAT, "version": FORMAT_VERSION, "config": model.config,
                "state_dict": model.state_dict(), "provenance": dict(provenance), "metrics": dict(metrics or {})},
               tmp)
    tmp.replace(path)
    return path


def load(path, map_location="cpu") -> AVEncoder:
    """Read a checkpoint written by :func:`save`; the model comes back in eval mode with ``.provenance`` and
    ``.metrics``. A missing, unreadable or foreign file raises LipspaceError."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise LipspaceError(f"{path}: no AVE checkpoint there; train one with `python -m lipspace.av.train "
                            f"--train <dataset> ... --out {path}`")
    try:
        ck = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # pickle / zip errors of many kinds
        raise LipspaceError(f"{path}: not a readable torch checkpoint ({' '.join(str(e).split())[:120]}); "
                            f"retrain it with `python -m lipspace.av.train`") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        what = ck.get("format") if isinstance(ck, dict) else type(ck).__name__
        raise LipspaceError(f"{path}: not a lipspace AVE checkpoint (format {what!r}); "
                            f"retrain it with `python -m lipspace.av.train`")
    if ck.get("version") != FORMAT_VERSION:
        raise LipspaceError(f"{path}: AVE checkpoint version {ck.get('version')}, this lipspace reads "
                            f"{FORMAT_VERSION}; retrain it with `python -m lipspace.av.train`")
    cfg = dict(ck["config"])
    model = AVEncoder(**cfg)
    try:
        model.load_state_dict(ck["state_dict"])
    except RuntimeError as e:
        raise LipspaceError(f"{path}: weights do not match the AVE architecture ({str(e).splitlines()[0][:120]}); "
                            f"retrain it") from None
    model.provenance = dict(ck.get("provenance", {}))
    model.metrics = dict(ck.get("metrics", {}))
    return model.eval()
