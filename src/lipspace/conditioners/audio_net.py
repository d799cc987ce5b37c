"""AD-NeRF's audio modules: AudioNet (1-D convolutions over a window of audio features -> a small code) and
AudioAttNet (self-attention smoothing of the codes of neighbouring frames). Layer sizes follow AD-NeRF's
``run_nerf_helpers.py`` (AudioNet: convs 29->32->32->64->64, stride 2, LeakyReLU 0.02, FC 64->64->dim_aud;
AudioAttNet: convs dim_aud->16->8->4->2->1 over the frame axis, then Linear(seq_len, seq_len) + softmax)."""

from __future__ import annotations

import math

import torch
from torch import nn

AD_NERF_CHANNELS = (32, 32, 64, 64)  # one stride-2 conv each: a 16-frame window shrinks to 1


class AudioNet(nn.Module):
    """[B, window, feat_dim] -> [B, dim_aud]. With window 16 it is exactly AD-NeRF's AudioNet; longer windows
    get further stride-2 convs of 64 channels until the time axis is 1 (e.g. 32 mel frames -> 5 convs)."""

    def __init__(self, feat_dim: int, window: int = 16, dim_aud: int = 64):
        super().__init__()
        n_down = max(1, math.ceil(math.log2(window)))
        chans = list(AD_NERF_CHANNELS[:n_down]) + [64] * max(0, n_down - len(AD_NERF_CHANNELS))
        layers, c_in, length = [], feat_dim, window
        for c in chans:
            layers += [nn.Conv1d(c_in, c, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.02, True)]
            c_in, length = c, (length + 1) // 2
        self.encoder_conv = nn.Sequential(*layers)
        self.encoder_fc1 = nn.Sequential(nn.Linear(c_in * length, 64), nn.LeakyReLU(0.02, True),
                                         nn.Linear(64, dim_aud))
        self.window, self.feat_dim, self.dim_aud = window, feat_dim, dim_aud

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.encoder_conv(x.transpose(1, 2))  # [B, C, L]
        return self.encoder_fc1(y.flatten(1))


class AudioAttNet(nn.Module):
    """[B, seq_len, dim_aud] codes of neighbouring frames -> [B, dim_aud] attention-weighted sum (batched form of
    AD-NeRF's per-frame AudioAttNet)."""

    def __init__(self, dim_aud: int = 64, seq_len: int = 8):
        super().__init__()
        chans = (dim_aud, 16, 8, 4, 2, 1)
        layers = []
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.Conv1d(a, b, kernel_size=3, stride=1, padding=1), nn.LeakyReLU(0.02, True)]
        self.attentionConvNet = nn.Sequential(*layers)
        self.attentionNet = nn.Sequential(nn.Linear(seq_len, seq_len, bias=True), nn.Softmax(dim=1))
        self.seq_len, self.dim_aud = seq_len, dim_aud

    def weights(self, x: torch.Tensor) -> torch.Tensor:
        y = self.attentionConvNet(x.transpose(1, 2))  # [B, 1, seq_len]
        return self.attentionNet(y.view(-1, self.seq_len))  # [B, seq_len], rows sum to 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.weights(x)[..., None] * x).sum(1)
