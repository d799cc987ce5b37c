"""LipNeRF's space: 3DMM expression coefficients + learned per-frame latent codes; Savitzky-Golay smoothing at inference."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.signal import savgol_filter
from torch import nn

from lipspace.audio.inputs import AudioInput
from lipspace.conditioners.audio_net import AudioNet
from lipspace.conditioners.base import Conditioner
from lipspace.errors import LipspaceError


class ExpressionConditioner(Conditioner):
    """c = [expr, z_t] (optionally projected). ``z_t`` is a learned code per training frame, regularised by
    ``latent_reg * ||z||^2``; frames never trained (held-out tail, new audio) use the mean of trained codes.

    Driving by new audio (LipNeRF maps audio to expressions): with ``audio`` set, an audio -> expression regressor
    (AudioNet over a window of audio features, ``audio_hidden``-wide code, linear to the expression dims) is
    trained alongside the NeRF on the clip's own (audio window, tracked expression) pairs by an auxiliary MSE
    (weight ``audio_reg``; it does not touch the NeRF, whose condition stays the tracked expression). Inside
    ``driving_by_audio()`` a sequence's expressions are predicted from its audio, then Savitzky-Golay smoothed.
    LipNeRF's own route (Wav2Lip re-synthesis + 3DMM refitting) plugs in at the same place: write the refitted
    expressions into the driving dataset's tracks and drive with them (driver ``oracle_inputs``)."""

    name = "expression"

    def __init__(self, n_frames: int, inputs: dict[str, int] | None = None, latent_dim: int = 32,
                 latent_reg: float = 0.01, smooth_window: int = 5, smooth_order: int = 2, out_dim: int | None = None,
                 audio: dict | None = None, audio_reg: float = 1.0, audio_hidden: int = 64):
        super().__init__(inputs or {"expr": 53}, out_dim)
        if set(self.inputs) != ({"expr", "audio"} if audio else {"expr"}):
            raise LipspaceError(f"conditioner 'expression' reads 'expr' (and 'audio' when conditioner.audio is set), "
                                f"got {self.inputs}. Set conditioner.inputs={{expr: <dim>"
                                f"{', audio: <backend width>' if audio else ''}}}.")
        if smooth_window and (smooth_window % 2 == 0 or smooth_window <= smooth_order):
            raise LipspaceError(f"conditioner.smooth_window={smooth_window} must be odd and > smooth_order="
                                f"{smooth_order} (Savitzky-Golay), or 0 to disable smoothing.")
        self.expr_dim = self.inputs["expr"]
        self.latent_dim, self.latent_reg = latent_dim, latent_reg
        self.smooth_window, self.smooth_order = smooth_window, smooth_order
        self.latents = nn.Embedding(n_frames, latent_dim) if latent_dim > 0 else None
        if self.latents is not None:
            nn.init.normal_(self.latents.weight, std=0.01)
        self.register_buffer("seen", torch.zeros(n_frames, dtype=torch.bool))
        self.audio_map = None
        self._aux = None
        if audio:
            spec = AudioInput.of(audio)
            self.audio_inputs = {"audio": spec}
            self.audio_reg = audio_reg
            self.audio_map = nn.Sequential(AudioNet(self.inputs["audio"], spec.window, audio_hidden),
                                           nn.LeakyReLU(0.02), nn.Linear(audio_hidden, self.expr_dim))
        self._build_projection()

    @property
    def raw_dim(self) -> int:
        return self.expr_dim + self.latent_dim

    def mean_latent(self) -> torch.Tensor:
        w = self.latents.weight
        return w[self.seen].mean(0) if self.seen.any() else torch.zeros_like(w[0])

    def _latent(self, frame_idx: torch.Tensor | None, n: int) -> torch.Tensor:
        if self.training and frame_idx is not None:
            self.seen[frame_idx] = True
            return self.latents(frame_idx)
        if frame_idx is not None and bool(self.seen[frame_idx].all()):
            return self.latents(frame_idx)  # reconstruction of a training frame
        return self.mean_latent().expand(n, -1)

    audio_drive_hint = ("it has no audio -> expression regressor; set conditioner.audio (e.g. experiment=lipnerf "
                        "sets it)")

    def can_drive_by_audio(self) -> bool:
        return self.audio_map is not None

    def predict_expr(self, audio: torch.Tensor) -> torch.Tensor:
        return self.audio_map(audio)

    def encode(self, inputs, frame_idx):
        expr = inputs["expr"]
        if self.audio_map is not None and self.training:
            # the regressor learns the clip's own audio -> tracked expression; the NeRF keeps the tracked one
            self._aux = F.mse_loss(self.predict_expr(inputs["audio"]), expr.detach())
        if self.latents is None:
            return expr
        return torch.cat([expr, self._latent(frame_idx, expr.shape[0])], dim=-1)

    def regularizer(self, frame_idx):
        reg = super().regularizer(frame_idx)
        if self.latents is not None and frame_idx is not None:
            z = self.latents(frame_idx)
            reg = reg + self.latent_reg * (z * z).sum(-1).mean()
        if self._aux is not None:
            reg = reg + self.audio_reg * self._aux
            self._aux = None
        return reg

    def prepare_sequence(self, inputs):
        if self._drive_by_audio:
            with torch.no_grad():
                inputs = {**inputs, "expr": self.predict_expr(inputs["audio"]).to(inputs["expr"].dtype)}
        expr = inputs["expr"]
        if not self.smooth_window or expr.shape[0] < self.smooth_window:
            return inputs
        smoothed = savgol_filter(expr.cpu().numpy(), self.smooth_window, self.smooth_order, axis=0)
        return {**inputs, "expr": torch.as_tensor(smoothed, dtype=expr.dtype, device=expr.device)}
