"""DFA-NeRF's pose / blink generator: a Transformer VAE whose latent sequence has a Gaussian-process prior over time
(Cauchy kernel, as in GP-VAE, Fortuin et al. 2020), so a new audio track gets natural head poses and blinks.

Sequences ``y`` [B, T, D] (e.g. head rotation as a rotation vector, translation, blink: D = 7, z-scored per
channel) are encoded together with per-frame audio features ``a`` [B, T, A] into a posterior
q(z_t | y, a) = N(mu_t, diag s_t^2), z_t in R^L. Each latent channel's prior over time is GP(0, k) with
k(t, t') = sigma^2 / (1 + (t - t')^2 / l^2) (t in frames). The decoder reads [z_t, a_t] plus a
beginning-of-pose token (the first frame's y) and reconstructs y. Loss: MSE(y_hat, y) + beta * KL / (T D).
Generation for new audio: z ~ GP prior (Cholesky), decode with the audio and a beginning pose.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError


def cauchy_kernel(t: torch.Tensor, length_scale: float, sigma: float = 1.0) -> torch.Tensor:
    """[T, T] Cauchy kernel sigma^2 / (1 + (t_i - t_j)^2 / l^2)."""
    d = t[:, None] - t[None, :]
    return sigma ** 2 / (1.0 + (d / length_scale) ** 2)


def gp_kl(mu: torch.Tensor, log_var: torch.Tensor, kernel: torch.Tensor, jitter: float = 1e-4) -> torch.Tensor:
    """sum over batch and latent channels of KL( N(mu, diag exp(log_var)) || N(0, K) ), mu/log_var [B, T, L].

    KL = 1/2 [ tr(K^-1 S) + mu^T K^-1 mu - T + log|K| - log|S| ] per channel (S diagonal)."""
    t = kernel.shape[0]
    if mu.shape[1] != t:
        raise LipspaceError(f"gp_kl: sequence length {mu.shape[1]} differs from the kernel's {t}")
    k = kernel + jitter * torch.eye(t, dtype=kernel.dtype, device=kernel.device)
    chol = torch.linalg.cholesky(k)
    k_inv = torch.cholesky_inverse(chol)
    logdet_k = 2.0 * torch.log(torch.diagonal(chol)).sum()
    var = log_var.exp()  # [B, T, L]
    trace = torch.einsum("t,btl->bl", torch.diagonal(k_inv), var)
    quad = torch.einsum("btl,ts,bsl->bl", mu, k_inv, mu)
    kl = 0.5 * (trace + quad - t + logdet_k - log_var.sum(1))
    return kl.sum()


def sample_gp(n: int, t: int, channels: int, length_scale: float, sigma: float = 1.0, jitter: float = 1e-4,
              generator: torch.Generator | None = None) -> torch.Tensor:
    """[n, t, channels] draws from the GP prior (independent channels)."""
    k = cauchy_kernel(torch.arange(t, dtype=torch.float64), length_scale, sigma)
    chol = torch.linalg.cholesky(k + jitter * torch.eye(t, dtype=torch.float64))
    eps = torch.randn(n, channels, t, generator=generator, dtype=torch.float64)
    return torch.einsum("ts,ncs->ntc", chol, eps).float()


class _PositionalEncoding(nn.Module):
    def __init__(self, dim: int, max_len: int = 4096):
        super().__init__()
        pos = torch.arange(max_len)[:, None]
        div = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(pos * div)
        pe[:, 1::2] = torch.cos(pos * div[: dim // 2])
        self.register_buffer("pe", pe)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] > self.pe.shape[0]:
            raise LipspaceError(f"sequence of {x.shape[1]} frames exceeds the positional table "
                                f"({self.pe.shape[0]}); generate in shorter pieces")
        return x + self.pe[: x.shape[1]]


def _transformer(dim: int, layers: int, heads: int) -> nn.TransformerEncoder:
    layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, batch_first=True)
    return nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)


class PoseBlinkGPVAE(nn.Module):
    """Transformer GP-VAE over (pose, blink) sequences conditioned on audio; see the module docstring."""

    def __init__(self, y_dim: int = 7, audio_dim: int = 80, latent_dim: int = 8, model_dim: int = 64,
                 layers: int = 2, heads: int = 4, length_scale: float = 10.0, sigma: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.y_dim, self.audio_dim, self.latent_dim = y_dim, audio_dim, latent_dim
        self.length_scale, self.sigma, self.beta = length_scale, sigma, beta
        self.enc_in = nn.Linear(y_dim + audio_dim, model_dim)
        self.encoder = _transformer(model_dim, layers, heads)
        self.enc_out = nn.Linear(model_dim, 2 * latent_dim)
        self.dec_in = nn.Linear(latent_dim + audio_dim, model_dim)
        self.bop = nn.Linear(y_dim, model_dim)  # beginning-of-pose token
        self.decoder = _transformer(model_dim, layers, heads)
        self.dec_out = nn.Linear(model_dim, y_dim)
        self.pos = _PositionalEncoding(model_dim)

    def _check(self, y: torch.Tensor | None, a: torch.Tensor) -> None:
        if a.dim() != 3 or a.shape[-1] != self.audio_dim:
            raise LipspaceError(f"GP-VAE: audio must be [B, T, {self.audio_dim}], got {tuple(a.shape)}")
        if y is not None and (y.shape[:2] != a.shape[:2] or y.shape[-1] != self.y_dim):
            raise LipspaceError(f"GP-VAE: sequences must be [B, T, {self.y_dim}] matching the audio "
                                f"{tuple(a.shape[:2])}, got {tuple(y.shape)}")

    def encode(self, y: torch.Tensor, a: torch.Tensor):
        h = self.encoder(self.pos(self.enc_in(torch.cat([y, a], -1))))
        mu, log_var = self.enc_out(h).chunk(2, -1)
        return mu, log_var.clamp(-10.0, 5.0)

    def decode(self, z: torch.Tensor, a: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        tokens = torch.cat([self.bop(y0)[:, None], self.dec_in(torch.cat([z, a], -1))], 1)
        h = self.decoder(self.pos(tokens))[:, 1:]
        return self.dec_out(h)

    def kernel(self, t: int, device=None) -> torch.Tensor:
        return cauchy_kernel(torch.arange(t, dtype=torch.float32, device=device), self.length_scale, self.sigma)

    def loss(self, y: torch.Tensor, a: torch.Tensor) -> dict:
        """{"loss", "recon", "kl"} for a batch of sequences (KL per element, so beta does not depend on T)."""
        self._check(y, a)
        mu, log_var = self.encode(y, a)
        z = mu + torch.randn_like(mu) * (0.5 * log_var).exp()
        y_hat = self.decode(z, a, y[:, 0])
        recon = ((y_hat - y) ** 2).mean()
        kl = gp_kl(mu, log_var, self.kernel(y.shape[1], y.device)) / y.numel()
        return {"loss": recon + self.beta * kl, "recon": recon, "kl": kl}

    @torch.no_grad()
    def generate(self, a: torch.Tensor, y0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """[B, T, y_dim] sequences for audio [B, T, A], starting from beginning poses y0 [B, y_dim]."""
        self._check(None, a)
        z = sample_gp(a.shape[0], a.shape[1], self.latent_dim, self.length_scale, self.sigma,
                      generator=generator).to(a)
        return self.decode(z, a, y0)


def consecutive_starts(frames, seq: int) -> list[int]:
    """Start frames of every window of ``seq`` consecutive frames all in the sorted index array ``frames``."""
    return [int(frames[k]) for k in range(len(frames) - seq + 1) if frames[k + seq - 1] - frames[k] == seq - 1]


def fit_gpvae(model: PoseBlinkGPVAE, y: torch.Tensor, a: torch.Tensor, frames, seq: int, steps: int, batch: int,
              seed: int = 0, lr: float = 1e-3) -> dict:
    """Adam on random windows of ``seq`` consecutive frames of ``frames`` (e.g. the training frames) of whole-clip
    sequences y [N, y_dim] and audio a [N, audio_dim]; returns the last {"loss", "recon", "kl"}."""
    starts = consecutive_starts(frames, seq)
    if not starts:
        raise LipspaceError(f"GP-VAE: no run of {seq} consecutive frames to train on; use a shorter sequence length")
    starts = torch.as_tensor(starts)
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    out = {}
    for _ in range(steps):
        rows = starts[torch.randint(0, len(starts), (batch,), generator=g)][:, None] + torch.arange(seq)[None]
        out = model.loss(y[rows], a[rows])
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
    return {k: v.item() for k, v in out.items()}
