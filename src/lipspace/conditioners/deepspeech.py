"""AD-NeRF / SSP-NeRF's space: windows of ASR-style audio features through AudioNet, smoothed over neighbouring
frames by AudioAttNet. Any audio backend feeds it (``audio.backend``: deepspeech for the real AD-NeRF feature,
phones for the offline stand-in, mel / mfcc)."""

from __future__ import annotations

import torch

from lipspace.conditioners.audio_net import AudioAttNet, AudioNet
from lipspace.conditioners.base import Conditioner
from lipspace.utils.errors import LipspaceError


class DeepSpeechConditioner(Conditioner):
    """c_t = AudioAttNet(AudioNet(a_{t-4}), ..., AudioNet(a_{t+3})) once the attention has started
    (``att_start_fraction`` of training, AD-NeRF: 300k of 400k iterations), AudioNet(a_t) before."""

    name = "deepspeech"

    def __init__(self, inputs: dict[str, int] | None = None, audio: dict | None = None, dim_aud: int = 64,
                 att_start_fraction: float = 0.75, max_steps: int | None = None, out_dim: int | None = None):
        super().__init__(inputs or {"audio": 80}, out_dim)
        if list(self.inputs) != ["audio"]:
            raise LipspaceError(f"conditioner 'deepspeech' reads exactly one input 'audio' (the feature width), got "
                                f"{self.inputs}. Set conditioner.inputs={{audio: <backend width>}}.")
        spec = self.add_audio_input("audio", audio or {"backend": "mel", "window": 16, "context": 8})
        if spec.context < 1:
            raise LipspaceError("conditioner 'deepspeech': audio.context must be >= 1 (AD-NeRF uses 8)")
        self.window, self.context = spec.window, spec.context
        self.audio_net = AudioNet(self.inputs["audio"], spec.window, dim_aud)
        self.att_net = AudioAttNet(dim_aud, spec.context) if spec.context > 1 else None
        self.dim_aud = dim_aud
        self.att_start_step = int(att_start_fraction * max_steps) if max_steps else 0
        self.register_buffer("att_on", torch.tensor(self.att_net is not None and self.att_start_step == 0))
        # per-band standardisation of the audio features with the training frames' statistics (prepare); identity
        # until then. Raw log-mel sits around -4 (log10 power): through AudioNet at the tri-plane's lr 1e-2 that offset
        # drove the density of the whole field to 0 within 16 steps on the obama clip (a field that never recovered)
        self.register_buffer("a_mean", torch.zeros(self.inputs["audio"]))
        self.register_buffer("a_std", torch.ones(self.inputs["audio"]))
        self._build_projection()

    @property
    def raw_dim(self) -> int:
        return self.dim_aud

    def update_step(self, step: int) -> None:
        if self.att_net is not None and step >= self.att_start_step:
            self.att_on.fill_(True)

    def prepare(self, clip, train_idx) -> None:
        """The per-band mean / std of the training frames' audio windows (held-out frames never used)."""
        a = torch.as_tensor(clip.tracks["audio"][train_idx], dtype=torch.float32)
        a = a.reshape(-1, a.shape[-1])
        self.a_mean.copy_(a.mean(0))
        self.a_std.copy_(a.std(0).clamp_min(1e-4))
        self.prepare_info = {"audio_mean": float(self.a_mean.mean()), "audio_std": float(self.a_std.mean())}

    def encode(self, inputs, frame_idx):
        a = (inputs["audio"] - self.a_mean) / self.a_std
        if self.context == 1:
            if a.dim() != 3:
                raise LipspaceError(f"conditioner 'deepspeech': audio input must be [F, window, dim], got "
                                    f"{tuple(a.shape)}")
            return self.audio_net(a)
        if a.dim() != 4 or a.shape[1] != self.context or a.shape[2] != self.window:
            raise LipspaceError(f"conditioner 'deepspeech': audio input must be [F, {self.context}, {self.window}, "
                                f"dim], got {tuple(a.shape)}; the data module's audio settings differ from the "
                                f"conditioner's")
        f = a.shape[0]
        codes = self.audio_net(a.reshape(f * self.context, self.window, -1)).view(f, self.context, -1)
        if bool(self.att_on):
            return self.att_net(codes)
        return codes[:, self.context // 2]
