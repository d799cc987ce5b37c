"""Audio -> expression regressor of the expression space (LipNeRF maps audio to 3DMM expressions): a stage trained
before the NeRF on the clip's own (audio window, tracked expression) pairs, with its own fitting, a held-out
validation block and a check block, whose predictions stay on the training distribution.

- Predicted dims: the expressions that move with speech (``dims="speech"``: jawOpen, mouthClose / Funnel / Pucker /
  LowerDown / UpperUp / Stretch / Roll / Shrug / Press), or all jaw / mouth ones (``"mouth"``), or ``"all"``; the
  rest held at the training mean (the upper face does not follow speech; a motion generator may supply it).
- Output space: the principal components of the training frames' predicted dims that keep ``var_kept`` of their
  variance; the model predicts the component coefficients, each clamped to the training range, so an output is
  always mean + a bounded combination of the training expressions' main modes (never -3.5 for a [0, 1] blendshape,
  as the old auxiliary-loss regressor produced on a real clip).
- Input: the audio window [W, D] standardised per band with training statistics.
- Models: ``ridge`` (default): the window averaged over blocks of 4 feature frames, one linear map fitted in closed
  form, the penalty chosen on the validation block, then refitted on fit + validation frames; ``audionet``:
  AD-NeRF's AudioNet + a linear head, AdamW on mini-batches, loss = MSE of the expression (each mode counts by its
  variance), early stopping on the validation block (``patience`` epochs, best weights kept).
- Held-out data inside the training frames: the last ``val_fraction`` of them (a contiguous block: neighbouring
  frames would leak), its first half to validate (penalty / early stopping), its second half, used for nothing
  else, for the check.
- Proof of learning: the check block's MSE against the training-mean predictor's (:func:`lipspace.conditioners.
  stage.learned_check`), logged and returned; a warning when it does not beat it. (The validation block cannot
  serve: choosing the best epoch on it makes even a regressor of unrelated audio beat the mean there.)

Measured (2026-12-05, 2-core CPU shared with other jobs, 128² prep, mel window 16, 10 % held-out tail, predictions
Savitzky-Golay smoothed as when driving; MSE ratio to the training-mean predictor on the speech dims / jawOpen
correlation on the tail; seeds 0 and 1):
| clip | ridge (speech dims) | ridge (mouth dims) | audionet (speech dims) |
|---|---|---|---|
| obama 20 s | 0.78 / 0.60 (check block 0.86) | 0.84 / 0.59 | 0.72-0.75 / 0.56-0.62 (check 1.13-1.27: NOT learned) |
| anchor 71 s | 0.94 / 0.59 (check 0.86) | 0.95 / 0.54 | 0.90 / 0.61 (check 0.87-0.90) |
| macron 50 s | 0.84 / 0.62 (check 0.96) | 0.86 / 0.62 | 0.84-0.91 / 0.57 (check 0.99-1.01) |
Ridge is deterministic and fits in 0.1-0.3 s; AudioNet takes 1.5-3.5 s and its early stopping on a 1-2 s block
is noisy enough that its check fails on two of three clips. Audio predicts about a third of the jaw opening's
variance (correlation ~0.6) on these clips: the rest (habits, mood, tracking noise) is not in the audio.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from lipspace.conditioners.audio_net import AudioNet
from lipspace.data.schema import ICT_EXPR_NAMES
from lipspace.utils.errors import LipspaceError

DIM_SETS = ("speech", "mouth", "all")
# ICT expressions that move with speech (opening, closure, rounding, stretch, lip roll / shrug / press); smiles,
# dimples, frowns and sideways mouth moves follow mood and the speaker's habits, not the audio
SPEECH_PREFIXES = ("jawOpen", "mouthClose", "mouthFunnel", "mouthPucker", "mouthLowerDown", "mouthUpperUp",
                   "mouthStretch", "mouthRoll", "mouthShrug", "mouthPress")
MODELS = ("ridge", "audionet")
AMPLITUDES = ("mse", "matched")  # predictions as fitted, or each mode's spread matched to the tracked one's


def predicted_dims(dims: str, expr_dim: int) -> list[int]:
    """Indices of the expression dims the regressor predicts."""
    if dims not in DIM_SETS:
        raise LipspaceError(f"conditioner.audio_dims={dims!r}: one of {DIM_SETS}")
    if dims == "all":
        return list(range(expr_dim))
    if expr_dim != len(ICT_EXPR_NAMES):
        raise LipspaceError(f"conditioner.audio_dims={dims} needs the {len(ICT_EXPR_NAMES)} ICT-FaceKit expressions, "
                            f"got {expr_dim} dims; use conditioner.audio_dims=all")
    prefixes = ("jaw", "mouth") if dims == "mouth" else SPEECH_PREFIXES
    return [i for i, n in enumerate(ICT_EXPR_NAMES) if n.startswith(prefixes)]


class PooledLinear(nn.Module):
    """[B, window, feat] -> [B, out]: the window averaged over blocks of ``pool`` frames, flattened, one linear map
    (fitted in closed form by ridge regression)."""

    def __init__(self, feat_dim: int, window: int, out: int, pool: int = 4):
        super().__init__()
        self.pool = max(1, min(pool, window))
        self.blocks = window // self.pool
        self.linear = nn.Linear(self.blocks * feat_dim, out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, : self.blocks * self.pool]
        return x.reshape(len(x), self.blocks, self.pool, -1).mean(2).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.features(x))


class AudioToExpression(nn.Module):
    """[B, window, feat] audio windows -> [B, expr_dim] expressions (see the module docstring)."""

    def __init__(self, feat_dim: int, window: int, expr_dim: int, dims: str = "speech", model: str = "ridge",
                 hidden: int = 64, dropout: float = 0.1):
        super().__init__()
        if model not in MODELS:
            raise LipspaceError(f"conditioner.audio_model={model!r}: one of {MODELS}")
        idx = predicted_dims(dims, expr_dim)
        k = len(idx)
        self.model = model
        if model == "ridge":
            self.net = PooledLinear(feat_dim, window, k)
        else:
            self.net = nn.Sequential(AudioNet(feat_dim, window, hidden), nn.LeakyReLU(0.02), nn.Dropout(dropout),
                                     nn.Linear(hidden, k))
        self.register_buffer("dims", torch.tensor(idx, dtype=torch.long))
        self.register_buffer("a_mean", torch.zeros(feat_dim))
        self.register_buffer("a_std", torch.ones(feat_dim))
        self.register_buffer("expr_mean", torch.zeros(expr_dim))
        self.register_buffer("components", torch.zeros(k, k))  # rows: modes (zero rows beyond those kept)
        self.register_buffer("coef_lo", torch.zeros(k))
        self.register_buffer("coef_hi", torch.zeros(k))
        self.register_buffer("coef_scale", torch.ones(()))
        self.register_buffer("coef_gain", torch.ones(k))  # amplitude="matched": per-mode gain (1: the fit's own)
        self.window, self.feat_dim, self.expr_dim = window, feat_dim, expr_dim

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before coef_gain existed were fitted for MSE: gain 1
        state_dict.setdefault(prefix + "coef_gain", torch.ones_like(self.coef_gain))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def coefficients(self, audio: torch.Tensor) -> torch.Tensor:
        x = (audio.float() - self.a_mean) / self.a_std
        return self.net(x) * self.coef_scale * self.coef_gain

    def expression(self, coef: torch.Tensor) -> torch.Tensor:
        c = torch.maximum(torch.minimum(coef, self.coef_hi), self.coef_lo)
        out = self.expr_mean.expand(len(c), -1).clone()
        out[:, self.dims] = self.expr_mean[self.dims] + c @ self.components
        return out

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        if audio.dim() != 3 or audio.shape[1:] != (self.window, self.feat_dim):
            raise LipspaceError(f"audio -> expression regressor: audio windows must be [F, {self.window}, "
                                f"{self.feat_dim}], got {tuple(audio.shape)}")
        return self.expression(self.coefficients(audio))

    # ---- training ----
    @torch.no_grad()
    def set_statistics(self, audio: np.ndarray, expr: np.ndarray, var_kept: float) -> int:
        """Audio band statistics, the expression mean and the principal modes from the training (fit) frames;
        returns how many modes are kept."""
        self.a_mean.copy_(torch.from_numpy(audio.mean((0, 1))))
        self.a_std.copy_(torch.from_numpy(audio.std((0, 1))).clamp_min(1e-4))
        mean = expr.mean(0)
        self.expr_mean.copy_(torch.from_numpy(mean))
        y = expr[:, self.dims.numpy()] - mean[self.dims.numpy()]
        _, s, vt = np.linalg.svd(y.astype(np.float64), full_matrices=False)
        var = s**2 / max(float(np.sum(s**2)), 1e-12)
        keep = int(min(np.searchsorted(np.cumsum(var), var_kept) + 1, len(var)))
        comp = np.zeros((len(self.dims), len(self.dims)), np.float32)
        comp[:keep] = vt[:keep]
        self.components.copy_(torch.from_numpy(comp))
        coef = y @ comp.T
        self.coef_lo.copy_(torch.from_numpy(coef.min(0)))
        self.coef_hi.copy_(torch.from_numpy(coef.max(0)))
        # the net's outputs are ~unit: scale by the RMS of the kept coefficients
        self.coef_scale.fill_(float(np.sqrt((coef[:, :keep] ** 2).mean())) or 1.0)
        return keep

    def fit(self, audio: np.ndarray, expr: np.ndarray, fit_idx: np.ndarray, val_idx: np.ndarray,
            check_idx: np.ndarray, *,
            var_kept: float = 0.95, epochs: int = 200, patience: int = 15, lr: float = 1e-3,
            weight_decay: float = 1e-3, batch: int = 128, seed: int = 0, amplitude: str = "mse",
            max_gain: float = 10.0) -> dict:
        """Train on ``fit_idx`` with early stopping on ``val_idx``; keeps the best weights. ``check_idx``, used for
        nothing else, gives the unbiased held-out error (the best validation error is biased low by the selection:
        on audio unrelated to the expressions it still beats the mean). Returns metrics in expression units (mean
        over the predicted dims).

        ``amplitude``: "mse" keeps the fit's predictions, which a regularised fit shrinks towards the mean (on macron
        the chosen ridge penalty left the predicted jawOpen with 1/7 of the tracked one's spread, and the NeRF's mouth
        did not move); "matched" then scales each kept mode's predicted coefficient so that its spread over the fit
        and validation frames equals the tracked one's (gain in [1, ``max_gain``]): the same correlation, the
        training amplitude, a higher MSE when the correlation is below 1 (the check reports it)."""
        if len(fit_idx) < 8 or len(val_idx) < 2 or len(check_idx) < 2:
            raise LipspaceError(f"audio -> expression regressor: {len(fit_idx)} fit / {len(val_idx)} validation / "
                                f"{len(check_idx)} check frames are too few; use a longer clip (>= 2 s of training "
                                f"frames)")
        keep = self.set_statistics(audio[fit_idx], expr[fit_idx], var_kept)
        x = torch.from_numpy(np.ascontiguousarray(audio, np.float32))
        target = torch.from_numpy(np.ascontiguousarray(expr, np.float32))
        fit_t, val_t, check_t = (torch.as_tensor(i) for i in (fit_idx, val_idx, check_idx))
        if amplitude not in AMPLITUDES:
            raise LipspaceError(f"conditioner.audio_train.amplitude={amplitude!r}: one of {AMPLITUDES}")
        if self.model == "ridge":
            info = self._fit_ridge(x, target, fit_t, val_t)
        else:
            info = self._fit_sgd(x, target, fit_t, val_t, epochs, patience, lr, weight_decay, batch, seed)
        self.eval()
        self.coef_gain.fill_(1.0)
        if amplitude == "matched":
            info["coef_gain"] = self._match_amplitude(x, target, torch.cat([fit_t, val_t]), max_gain)
        mean_check = float(((target[check_t] - self.expr_mean)[:, self.dims] ** 2).mean())
        return {"model": self.model, "modes_kept": keep, **info, "fit_mse": self.mse(x[fit_t], target[fit_t]),
                "check_mse": self.mse(x[check_t], target[check_t]), "check_mse_mean_predictor": mean_check,
                "n_fit": len(fit_idx), "n_val": len(val_idx), "n_check": len(check_idx)}

    @torch.no_grad()
    def _match_amplitude(self, x, target, rows, max_gain: float) -> list[float]:
        """Per kept mode, the tracked coefficients' spread over ``rows`` / the predicted ones' (in [1, max_gain]) ->
        ``coef_gain``; returned as a list."""
        self.coef_gain.fill_(1.0)
        pred = self.coefficients(x[rows])
        true = (target[rows][:, self.dims] - self.expr_mean[self.dims]) @ self.components.T
        kept = self.components.abs().sum(1) > 0
        gain = (true.std(0) / pred.std(0).clamp_min(1e-8)).clamp(1.0, float(max_gain))
        self.coef_gain.copy_(torch.where(kept, gain, torch.ones_like(gain)))
        return [round(float(v), 3) for v in self.coef_gain[kept]]

    def _coef_targets(self, target: torch.Tensor) -> torch.Tensor:
        return (target[:, self.dims] - self.expr_mean[self.dims]) @ self.components.T / self.coef_scale

    @torch.no_grad()
    def _fit_ridge(self, x, target, fit_t, val_t, lambdas=(1.0, 10.0, 100.0, 1e3, 1e4, 1e5)) -> dict:
        """Closed-form ridge regression of the (scaled) mode coefficients on the pooled, standardised window; the
        penalty chosen on the validation block, then refitted on fit + validation frames."""
        feats = self.net.features((x - self.a_mean) / self.a_std).double()
        feats = torch.cat([feats, torch.ones(len(feats), 1, dtype=feats.dtype)], 1)
        y = self._coef_targets(target).double()
        eye = torch.eye(feats.shape[1], dtype=feats.dtype)
        eye[-1, -1] = 0  # the intercept is not penalised

        def solve(rows, lam):
            a = feats[rows]
            return torch.linalg.solve(a.T @ a + lam * eye, a.T @ y[rows])

        def load(w):
            self.net.linear.weight.copy_(w[:-1].T.float())
            self.net.linear.bias.copy_(w[-1].float())

        val_mse = {}
        for lam in lambdas:
            load(solve(fit_t, lam))
            val_mse[lam] = self.mse(x[val_t], target[val_t])
        best = min(val_mse, key=val_mse.get)
        load(solve(torch.cat([fit_t, val_t]), best))
        return {"ridge_lambda": best, "val_mse": val_mse[best]}

    def _fit_sgd(self, x, target, fit_t, val_t, epochs, patience, lr, weight_decay, batch, seed) -> dict:
        """AdamW on mini-batches, early stopping on the validation block, best weights kept."""
        torch.manual_seed(seed)
        g = torch.Generator().manual_seed(seed)
        for m in self.net.modules():  # a fresh start (a cache miss after a failed load starts from scratch)
            if hasattr(m, "reset_parameters"):
                m.reset_parameters()
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=weight_decay)
        best, best_epoch, best_state, epoch = float("inf"), -1, None, 0
        for epoch in range(epochs):
            self.train()
            perm = fit_t[torch.randperm(len(fit_t), generator=g)]
            for b in range(0, len(perm), batch):
                i = perm[b:b + batch]
                loss = ((self(x[i]) - target[i])[:, self.dims] ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            val = self.mse(x[val_t], target[val_t])
            if val < best:
                best, best_epoch = val, epoch
                best_state = {k: v.detach().clone() for k, v in self.net.state_dict().items()}
            elif epoch - best_epoch >= patience:
                break
        self.net.load_state_dict(best_state)
        return {"epochs": epoch + 1, "best_epoch": best_epoch + 1, "val_mse": best}

    @torch.no_grad()
    def mse(self, audio: torch.Tensor, expr: torch.Tensor) -> float:
        """MSE over the predicted dims, in eval mode (no dropout)."""
        was = self.training
        self.eval()
        err = float(((self(audio) - expr)[:, self.dims] ** 2).mean())
        self.train(was)
        return err
