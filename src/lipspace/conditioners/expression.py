"""LipNeRF's space: 3DMM expression coefficients + learned per-frame latent codes; audio -> expression when driving."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from scipy.signal import savgol_filter
from torch import nn

from lipspace.conditioners.audio_expr import AudioToExpression
from lipspace.conditioners.base import Conditioner
from lipspace.conditioners.stage import learned_check, load_stage, save_stage, stage_key
from lipspace.utils.errors import LipspaceError

log = logging.getLogger(__name__)
CACHE_VERSION = 1  # bump when the regressor's training changes what a cached file holds
MIN_FIT_FRAMES = 8  # fewer training frames than this + the held-out block: fitted on all, not checked
TRAIN_DEFAULTS = {"var_kept": 0.95, "epochs": 200, "patience": 15, "lr": 1e-3, "weight_decay": 1e-3, "batch": 128,
                  "val_fraction": 0.1, "amplitude": "mse", "max_gain": 10.0}


class ExpressionConditioner(Conditioner):
    """c = [expr, z_t] (optionally projected). ``z_t`` is a learned code per training frame, regularised by
    ``latent_reg * ||z||^2``; frames never trained (held-out tail, new audio) use the mean of trained codes.

    Driving by new audio (LipNeRF maps audio to expressions): with ``audio`` set, an audio -> expression regressor
    (:class:`lipspace.conditioners.audio_expr.AudioToExpression`: the speech-driven mouth / jaw dims by default,
    ridge regression by default) is trained in :meth:`prepare`, before the NeRF, on the training frames'
    (audio window, tracked expression) pairs plus the frames of any ``pools`` dataset dirs, with its own fitting,
    validation block and check block (``audio_train``); its check error against the training-mean predictor is
    in ``prepare_info`` (the train task writes ``prepare.json``) and a warning says when it does not beat it. It
    is then frozen; the NeRF's condition stays the tracked expression (plus, with ``cond_jitter`` > 0, Gaussian
    noise of that many times the regressor's per-dim held-out residual on the predicted dims, so the NeRF sees
    inputs as uncertain as the predicted ones). Inside ``driving_by_audio()`` a sequence's expressions are
    predicted from its audio, then Savitzky-Golay smoothed. Cache: ``<clip>/features/expression-audio-<hash>.pt``
    keyed by settings, training indices, tracks and audio.
    LipNeRF's own route (Wav2Lip re-synthesis + 3DMM refitting) plugs in at the same place: write the refitted
    expressions into the driving dataset's tracks and drive with them (driver ``oracle_inputs``)."""

    name = "expression"

    def __init__(self, n_frames: int, inputs: dict[str, int] | None = None, latent_dim: int = 32,
                 latent_reg: float = 0.01, smooth_window: int = 5, smooth_order: int = 2, out_dim: int | None = None,
                 audio: dict | None = None, audio_hidden: int = 64, audio_dims: str = "speech",
                 audio_model: str = "ridge", audio_train: dict | None = None, pools: list | None = None,
                 cond_jitter: float = 0.0, seed: int = 0, cache: bool = True):
        super().__init__(inputs or {"expr": 53}, out_dim)
        if set(self.inputs) != ({"expr", "audio"} if audio else {"expr"}):
            raise LipspaceError(f"conditioner 'expression' reads 'expr' (and 'audio' when conditioner.audio is set), "
                                f"got {self.inputs}. Set conditioner.inputs={{expr: <dim>"
                                f"{', audio: <backend width>' if audio else ''}}}.")
        if smooth_window and (smooth_window % 2 == 0 or smooth_window <= smooth_order):
            raise LipspaceError(f"conditioner.smooth_window={smooth_window} must be odd and > smooth_order="
                                f"{smooth_order} (Savitzky-Golay), or 0 to disable smoothing.")
        unknown = set(audio_train or {}) - set(TRAIN_DEFAULTS)
        if unknown:
            raise LipspaceError(f"conditioner.audio_train: unknown keys {sorted(unknown)}; known: "
                                f"{sorted(TRAIN_DEFAULTS)}")
        self.expr_dim = self.inputs["expr"]
        self.latent_dim, self.latent_reg = latent_dim, latent_reg
        self.smooth_window, self.smooth_order = smooth_window, smooth_order
        self.latents = nn.Embedding(n_frames, latent_dim) if latent_dim > 0 else None
        if self.latents is not None:
            nn.init.normal_(self.latents.weight, std=0.01)
        self.register_buffer("seen", torch.zeros(n_frames, dtype=torch.bool))
        self.audio_expr: AudioToExpression | None = None
        self.train_settings = {**TRAIN_DEFAULTS, **dict(audio_train or {})}
        self.pools, self.cond_jitter, self.seed, self.cache = list(pools or []), float(cond_jitter), seed, cache
        if audio:
            spec = self.add_audio_input("audio", audio)
            # built from its own seed: the NeRF's initialisation does not depend on whether the regressor exists
            state = torch.random.get_rng_state()
            torch.manual_seed(seed)
            self.audio_expr = AudioToExpression(self.inputs["audio"], spec.window, self.expr_dim, audio_dims,
                                                audio_model, audio_hidden)
            torch.random.set_rng_state(state)
            self.audio_expr.requires_grad_(False)
            self.audio_expr.eval()
            self.register_buffer("resid_std", torch.zeros(self.expr_dim))
            self.register_buffer("prepared", torch.tensor(False))
        self._build_projection()

    @classmethod
    def data_kwargs(cls, n_frames: int) -> dict:
        return {"n_frames": n_frames}  # one latent code per frame of the dataset

    @property
    def raw_dim(self) -> int:
        return self.expr_dim + self.latent_dim

    def train(self, mode: bool = True):
        super().train(mode)
        if self.audio_expr is not None:
            self.audio_expr.eval()  # frozen after prepare: no dropout while the NeRF trains
        return self

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
        return self.audio_expr is not None

    def predict_expr(self, audio: torch.Tensor) -> torch.Tensor:
        if not bool(self.prepared):
            raise LipspaceError("conditioner 'expression': its audio -> expression regressor is not trained; "
                                "prepare(clip, train_idx) trains it (build_system calls it) or a checkpoint carries it")
        with torch.no_grad():
            return self.audio_expr(audio.to(self.resid_std.device)).to(audio.device)

    def encode(self, inputs, frame_idx):
        expr = inputs["expr"]
        if self.training and self.cond_jitter > 0 and self.audio_expr is not None:
            expr = expr + self.cond_jitter * self.resid_std * torch.randn_like(expr)
        if self.latents is None:
            return expr
        return torch.cat([expr, self._latent(frame_idx, expr.shape[0])], dim=-1)

    def regularizer(self, frame_idx):
        reg = super().regularizer(frame_idx)
        if self.latents is not None and frame_idx is not None:
            z = self.latents(frame_idx)
            reg = reg + self.latent_reg * (z * z).sum(-1).mean()
        return reg

    def drive_metrics(self, inputs):
        """``expr_mse``: mean squared error between the expressions predicted from the audio (after smoothing)
        and the sequence's tracked expressions."""
        with torch.no_grad():
            pred = self.prepare_sequence(inputs)["expr"]
        return {"expr_mse": float(((pred - inputs["expr"]) ** 2).mean())}

    def prepare_sequence(self, inputs):
        if self._drive_by_audio:
            inputs = {**inputs, "expr": self.predict_expr(inputs["audio"]).to(inputs["expr"].dtype)}
        expr = inputs["expr"]
        if not self.smooth_window or expr.shape[0] < self.smooth_window:
            return inputs
        smoothed = savgol_filter(expr.cpu().numpy(), self.smooth_window, self.smooth_order, axis=0)
        return {**inputs, "expr": torch.as_tensor(smoothed, dtype=expr.dtype, device=expr.device)}

    # ---- stage-wise training of the audio -> expression regressor ----
    def _pool_data(self) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """(audio windows, expressions, root) of every valid frame of each ``pools`` dataset dir."""
        from lipspace.audio.inputs import audio_track
        from lipspace.data.schema import validate_dataset

        out = []
        for root in self.pools:
            meta = validate_dataset(root)
            with np.load(Path(root) / "tracks.npz") as t:
                expr, valid = t["expr"].astype(np.float32), t["valid"].astype(bool)
            if expr.shape[1] != self.expr_dim:
                raise LipspaceError(f"{root}: conditioner.pools dataset has {expr.shape[1]} expression dims, this "
                                    f"clip {self.expr_dim}; pool only datasets fitted with the same face model")
            a = audio_track(root, int(meta["n_frames"]), self.audio_inputs["audio"], self.inputs["audio"],
                            "conditioner 'expression' (pools)")
            out.append((a[valid], expr[valid], str(root)))
        return out

    def prepare(self, clip, train_idx) -> None:
        if self.audio_expr is None:
            return
        if "audio" not in clip.tracks:
            raise LipspaceError("conditioner 'expression'.prepare: the clip has no 'audio' windows; attach them first "
                                "(build_system does: datamodule.attach_audio(conditioner.audio_inputs, ...))")
        idx = np.asarray(train_idx, np.int64)
        audio = np.asarray(clip.tracks["audio"], np.float32)
        expr = np.asarray(clip.tracks["expr"], np.float32)
        pools = self._pool_data()
        s = self.train_settings
        settings = {"version": CACHE_VERSION, "train": s, "seed": self.seed, "window": self.audio_expr.window,
                    "model": repr(self.audio_expr.net), "dims": self.audio_expr.dims.tolist(),
                    "audio": str(self.audio_inputs["audio"]), "pools": [p[2] for p in pools]}
        key = stage_key(settings, idx, audio[idx], expr[idx], *(a for p in pools for a in p[:2]))
        path = Path(clip.root) / "features" / f"expression-audio-{key}.pt"
        mine = self._prepared_state()
        cached = load_stage(path, mine) if self.cache else None
        if cached is not None:
            self.load_state_dict(cached[0], strict=False)
            self.prepare_info = {**cached[1], "cached": True, "path": str(path)}
            log.info("expression: audio -> expression regressor loaded from %s (%s)", path,
                     _summary(self.prepare_info))
            return
        n_held = max(int(round(len(idx) * s["val_fraction"])), 4)
        checkable = len(idx) - n_held >= MIN_FIT_FRAMES
        if checkable:
            fit, val, check = idx[:-n_held], idx[-n_held:-n_held // 2], idx[-(n_held // 2):]
        else:  # a clip too short to hold frames out (clip-length studies go down to fractions of a second)
            fit = val = check = idx
        if pools:  # pooled frames join the fit set; validation stays on this clip's own block
            offset = len(audio)
            audio = np.concatenate([audio, *(p[0] for p in pools)])
            expr = np.concatenate([expr, *(p[1] for p in pools)])
            fit = np.concatenate([fit, np.arange(offset, len(audio))])
        train_kw = {k: v for k, v in s.items() if k != "val_fraction"}
        with torch.enable_grad():
            self.audio_expr.requires_grad_(True)
            metrics = self.audio_expr.fit(audio, expr, fit, val, check, seed=self.seed, **train_kw)
            self.audio_expr.requires_grad_(False)
            self.audio_expr.eval()
            with torch.no_grad():
                held = np.concatenate([val, check])
                pred = self.audio_expr(torch.from_numpy(audio[held]))
                resid = (pred - torch.from_numpy(expr[held])).std(0)
            dims = self.audio_expr.dims
            self.resid_std.zero_()
            self.resid_std[dims] = resid[dims]
        if checkable:
            metrics["check"] = learned_check("expression: audio -> expression regressor", metrics["check_mse"],
                                             metrics["check_mse_mean_predictor"], "the training-mean expression",
                                             f"{len(check)} held-out check frames (the last of the training frames)")
        else:
            why = (f"only {len(idx)} training frames: too few to hold any out (>= {MIN_FIT_FRAMES + 4} needed), "
                   f"fitted on all of them and NOT checked")
            log.warning("expression: audio -> expression regressor %s", why)
            metrics["check"] = {"value": metrics["check_mse"], "trivial": metrics["check_mse_mean_predictor"],
                                "ratio": float("nan"), "learned": False, "on": why,
                                "trivial_predictor": "the training-mean expression"}
        metrics["pools"] = [p[2] for p in pools]
        self.prepared.fill_(True)
        self.prepare_info = {**metrics, "cached": False, "path": str(path)}
        if self.cache:
            save_stage(path, self._prepared_state(), metrics)
        log.info("expression: audio -> expression regressor trained (%s)", _summary(self.prepare_info))

    def _prepared_state(self) -> dict:
        return {k: v for k, v in self.state_dict().items()
                if k.startswith("audio_expr.") or k in ("resid_std", "prepared")}


def _summary(info: dict) -> str:
    c = info["check"]
    how = (f"ridge lambda {info['ridge_lambda']:g}" if info.get("model") == "ridge"
           else f"{info.get('epochs')} epochs, best {info.get('best_epoch')}")
    return (f"check MSE {c['value']:.5f} vs {c['trivial']:.5f} for the mean (ratio {c['ratio']:.3f}, "
            f"{'learned' if c['learned'] else 'NOT learned'}), {info.get('model')}: {how}")
