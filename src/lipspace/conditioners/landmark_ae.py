"""DFA-NeRF's disentangled landmark autoencoder: 68 face landmarks -> a mouth code, an eye code and a rest code.

Landmarks are first normalised per frame (centred on the eye-corner midpoint, rotated so the eyes are level,
scaled by the outer-eye-corner distance), which removes head position, in-plane rotation and face size.
The encoder maps them to ``mouth`` (lip shape), ``eye`` (eyelid openness) and ``rest`` codes; the decoder maps
the concatenation back to the 68 points.

Disentanglement by swapping (after DFA-NeRF): for two frames i, j — of the same clip or of different identities
— decode [mouth_j, eye_i, rest_i]. Its non-mouth points and its mouth centre must equal frame i's, and its mouth
shape (mouth points relative to their centroid, in the normalised units) must equal frame j's; symmetrically for
the eye code. What is tested: swapping codes moves the right region (the mouth of a decode(mouth_j, eye_i, rest_i)
opens like frame j's, its eyes like frame i's, across identities).

Measured (tests/conditioners/test_landmark_ae.py, 3 synthetic identities with independent mouth / eye factors,
600 steps; leakage = R^2 of a linear fit of one factor from the OTHER region's code over 200 frames, where chance
is about dims / frames = 0.02 for the 4-d eye code and 0.08 for the 16-d mouth code):

- one encoder over all 68 points (``encoder="full"``, DFA-NeRF's layout): the swaps work (correlations >= 0.95)
  but the leakage is total, R^2 = 1.00 both ways: the swap losses only constrain the decoder, so each code also
  carries the other region's state, which the decoder learns to ignore. Any consumer reading the eye code alone
  (the NeRF!) would then see the mouth through it.
- a cycle term (re-encode the swapped face, demand the codes it was made of; ``cycle_weight``) collapsed the eye
  swap (correlation 0.07) in every trial and is off by default.
- region encoders (``encoder="regions"``, the default): each code reads only its region's points, the leakage falls
  to chance (R^2 0.01 mouth-from-eye-code, 0.07 eye-from-mouth-code) with the swaps intact (>= 0.99). What remains
  is leakage through the data itself: a correlation between the regions in the training landmarks (a smile that
  narrows the eyes) is kept, and jaw-line points that follow the mouth are encoded in ``rest`` (unused by lipblink).

Limitation: the mouth code also carries the identity's own lip shape (the swap target is j's mouth shape, identity
included).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np
import torch
from torch import nn

from lipspace.utils.errors import LipspaceError

MOUTH = list(range(48, 68))
EYES = list(range(36, 48))
OTHER = [k for k in range(68) if k not in MOUTH and k not in EYES]
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 36, 45


def normalise_landmarks(lmk: np.ndarray | torch.Tensor) -> torch.Tensor:
    """[N, 68, 2] pixel landmarks -> [N, 68, 2] centred on the outer-eye-corner midpoint, eyes level, unit
    outer-eye-corner distance."""
    x = lmk.float() if torch.is_tensor(lmk) else torch.as_tensor(np.asarray(lmk), dtype=torch.float32)
    if x.dim() != 3 or x.shape[1:] != (68, 2):
        raise LipspaceError(f"landmarks must be [N, 68, 2] (dlib order), got {tuple(x.shape)}")
    a, b = x[:, RIGHT_EYE_OUTER], x[:, LEFT_EYE_OUTER]
    centre = (a + b) / 2
    d = b - a
    scale = d.norm(dim=-1).clamp_min(1e-6)
    c, s = d[:, 0] / scale, d[:, 1] / scale
    rot = torch.stack([torch.stack([c, s], -1), torch.stack([-s, c], -1)], 1)  # rotates d onto +x
    return torch.einsum("nij,nkj->nki", rot, x - centre[:, None]) / scale[:, None, None]


def _mlp(i: int, h: int, o: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(i, h), nn.LeakyReLU(0.2), nn.Linear(h, h), nn.LeakyReLU(0.2), nn.Linear(h, o))


class LandmarkAE(nn.Module):
    """``encoder="regions"`` (default): three encoders, each reading only its region's points (mouth 48-67, eyes
    36-47, the rest), so a code cannot carry another region's state except through the data's own correlations
    (e.g. a jaw point that follows the mouth lands in ``rest``); ``"full"``: one encoder over all 68 points, as
    in DFA-NeRF, where only the swap losses (which constrain the decoder, not the encoder) separate the codes."""

    def __init__(self, mouth_dim: int = 16, eye_dim: int = 4, rest_dim: int = 16, hidden: int = 256,
                 encoder: str = "regions"):
        super().__init__()
        if encoder not in ("regions", "full"):
            raise LipspaceError(f"landmark AE encoder={encoder!r}: use 'regions' or 'full'")
        self.dims = (mouth_dim, eye_dim, rest_dim)
        self.encoder_kind = encoder
        if encoder == "full":
            self.encoder = _mlp(136, hidden, sum(self.dims))
        else:
            self.encoders = nn.ModuleList([_mlp(2 * len(r), hidden // 2, d)
                                           for r, d in zip((MOUTH, EYES, OTHER), self.dims, strict=True)])
        # standardised codes (no affine): a code cannot shrink to dodge the cycle term by collapsing
        self.code_norm = nn.BatchNorm1d(sum(self.dims), affine=False)
        self.decoder = _mlp(sum(self.dims), hidden, 136)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """normalised [N, 68, 2] -> (mouth [N, m], eye [N, e], rest [N, r])."""
        if self.encoder_kind == "full":
            h = self.encoder(x.reshape(len(x), -1))
        else:
            h = torch.cat([enc(x[:, r].reshape(len(x), -1))
                           for enc, r in zip(self.encoders, (MOUTH, EYES, OTHER), strict=True)], -1)
        return tuple(self.code_norm(h).split(self.dims, -1))

    def decode(self, mouth: torch.Tensor, eye: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.cat([mouth, eye, rest], -1)).view(-1, 68, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(*self.encode(x))


def _local(x: torch.Tensor, idx: list[int]) -> torch.Tensor:
    """Region points relative to the region's centroid (shape without position)."""
    r = x[:, idx]
    return r - r.mean(1, keepdim=True)


def swap_losses(model: LandmarkAE, xi: torch.Tensor, xj: torch.Tensor, eye_weight: float = 10.0,
                cycle_weight: float = 0.0) -> dict:
    """Reconstruction of both frames plus the two swap terms for pairs (xi, xj) of normalised landmarks.
    Eyelid motion is a few hundredths of the eye-corner distance (lips move ten times more), so the eye shape
    term is weighted by ``eye_weight`` to matter as much as the mouth's."""
    mi, ei, ri = model.encode(xi)
    mj, ej, rj = model.encode(xj)
    mse = lambda a, b: ((a - b) ** 2).mean()  # noqa: E731
    recon = mse(model.decode(mi, ei, ri), xi) + mse(model.decode(mj, ej, rj), xj)
    # mouth from j into i: i's eyes and the rest of i's face stay, the mouth takes j's shape at i's place
    sm = model.decode(mj, ei, ri)
    mouth_swap = mse(sm[:, EYES + OTHER], xi[:, EYES + OTHER]) + mse(_local(sm, MOUTH), _local(xj, MOUTH)) \
        + mse(sm[:, MOUTH].mean(1), xi[:, MOUTH].mean(1))
    # eyes from j into i: i's mouth and rest stay, the eyelids take j's shape
    se = model.decode(mi, ej, ri)
    eye_swap = mse(se[:, MOUTH + OTHER], xi[:, MOUTH + OTHER]) + eye_weight * (
        mse(_local(se, EYES[:6]), _local(xj, EYES[:6])) + mse(_local(se, EYES[6:]), _local(xj, EYES[6:])))
    recon = recon + eye_weight * (mse(_local(model.decode(mi, ei, ri), EYES[:6]), _local(xi, EYES[:6])))
    # Cycle: re-encoding a swapped face must give back the codes it was made of. The swap terms alone let a code
    # carry information the decoder ignores (a mouth code that also knows the eyes); the face with j's eyes must
    # still have i's mouth code, which it cannot if the mouth code follows the eyes. Off by default (it collapsed
    # the eye swap); skipped then, so that swapped faces do not enter the BatchNorm statistics.
    cycle = torch.zeros((), device=xi.device)
    if cycle_weight:
        em_sm, ee_sm, _ = model.encode(sm)
        em_se, ee_se, _ = model.encode(se)
        cycle = mse(ee_sm, ei) + mse(em_sm, mj) + mse(em_se, mi) + mse(ee_se, ej)
    return {"recon": recon, "mouth_swap": mouth_swap, "eye_swap": eye_swap, "cycle": cycle,
            "loss": recon + mouth_swap + eye_swap + cycle_weight * cycle}


@contextmanager
def single_thread():
    """Run tiny-model training on one thread: faster than several, much faster on a loaded machine (measured on 2
    shared cores: 15 ms against 400 ms per landmark-AE step of 256 pairs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def train_landmark_ae(pools: list[np.ndarray], steps: int = 2000, batch: int = 256, lr: float = 1e-3,
                      seed: int = 0, model: LandmarkAE | None = None, log_every: int = 0, eye_weight: float = 10.0,
                      cycle_weight: float = 0.0) -> tuple[LandmarkAE, dict]:
    """Train on a list of per-identity landmark arrays [N_k, 68, 2] (pixels). Half of each batch pairs frames of
    one identity, half pairs frames across identities (when there are several). Returns (model, last losses)."""
    if not pools or any(len(p) == 0 for p in pools):
        raise LipspaceError("train_landmark_ae needs at least one non-empty landmark array")
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    data = [normalise_landmarks(p) for p in pools]
    model = model or LandmarkAE()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sizes = torch.tensor([len(d) for d in data])
    out = {}
    with single_thread():
        for step in range(steps):
            ki = torch.randint(len(data), (batch,), generator=g)
            cross = torch.rand(batch, generator=g) < 0.5
            kj = torch.where(cross, torch.randint(len(data), (batch,), generator=g), ki)
            ii = (torch.rand(batch, generator=g) * sizes[ki]).long()
            jj = (torch.rand(batch, generator=g) * sizes[kj]).long()
            xi = torch.stack([data[k][i] for k, i in zip(ki.tolist(), ii.tolist(), strict=True)])
            xj = torch.stack([data[k][j] for k, j in zip(kj.tolist(), jj.tolist(), strict=True)])
            losses = swap_losses(model, xi, xj, eye_weight, cycle_weight)
            opt.zero_grad()
            losses["loss"].backward()
            opt.step()
            out = {k: v.item() for k, v in losses.items()}
            if log_every and step % log_every == 0:
                print(f"landmark AE step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in out.items()))
    return model.eval(), out
