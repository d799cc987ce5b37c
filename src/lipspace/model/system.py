"""The LightningModule: a built conditioner + renderer, photometric loss + conditioner regulariser (+ the region
attention masking loss when the conditioner declares regions, + the parsing branch's cross-entropy), Adam with
exponential decay, validation renders with PSNR / SSIM. Nothing method-specific lives here."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lipspace.conditioners.base import Conditioner
from lipspace.data.datamodule import TalkingHeadDataModule
from lipspace.model.regions import region_spec, renderer_class
from lipspace.model.semantic import ClassLossMeter, SemanticBranch
from lipspace.renderers.base import Renderer
from lipspace.utils.errors import LipspaceError


DEAD_ACC = 1e-4  # below this opacity on every ray of a batch, the renderer drew nothing


def exponential_decay(ratio: float, start: int, steps: int):
    """The learning-rate factor of a group first trained at step ``start``: 1 until then, ``ratio`` at ``steps``
    (the schedule's end; held after), exponential in between."""
    span = max(steps - start, 1)
    return lambda s: ratio ** (min(max(s - start, 0), span) / span)


class TalkingHeadSystem(L.LightningModule):
    def __init__(self, conditioner: Conditioner, renderer, optimizer, lr_final: float = 5e-5,
                 decay_steps: int | None = None, coarse_loss_weight: float = 1.0, val_image_dir: str | None = None,
                 train_chunk_rays: int | str | None = "auto", region_att_weight: float = 0.0,
                 lpips_weight: float = 0.0, lpips_start_fraction: float = 0.5, lpips_weights: str | None = None,
                 semantic_weight: float = 0.0, conditioner_lr: float | None = None, dead_field_steps: int = 100):
        """``dead_field_steps``: stop training with an error once the renderer has drawn nothing (opacity below
        DEAD_ACC on every ray of the batch) for that many consecutive steps: a density that is 0 everywhere gets no
        gradient and never comes back, so the rest of the run would render only the background (0: no check).

        ``conditioner_lr``: the conditioner's own learning rate (one optimiser group of its parameters, decaying
        with the others by the same factor); None: it trains at the rate of the renderer's last group.

        ``train_chunk_rays``: run forward + backward over chunks of that many rays (same gradients as one
        backward over the batch, activations stay cache-sized: faster on CPU), when the renderer supports it;
        "auto" lets the renderer size chunks from its width; null runs one autograd pass over the batch.

        ``region_att_weight``: SyncTalk's facial-aware masking. A conditioner may declare ``regions``
        (``{name: (slice of c, parsing classes)}``); the renderer then gates those columns per point and renders
        each region's gate magnitude along the ray; the loss adds ``region_att_weight`` x the mean over rays of
        the rendered magnitude of every region whose classes do not include the ray's pixel class (coarse and
        fine passes, the coarse one scaled by ``coarse_loss_weight``).

        ``lpips_weight``: SyncTalk's refinement stage (its eq. 13): from ``lpips_start_fraction`` of
        ``trainer.max_steps`` on, the loss adds lpips_weight x LPIPS-alex(rendered patch, ground-truth patch) on the
        batch's patch (``data.patch_size``). LPIPS loads from ``lpips_weights`` or the asset lookup of
        ``lipspace.eval.lpips``; when no weights are available the stage is skipped with one warning; while it
        runs, ``train/lpips`` is logged.

        ``semantic_weight``: SSP-NeRF's implicit portrait parsing; with a renderer built with parsing classes
        (``renderer.field.semantic_classes``) the loss adds semantic_weight x the cross-entropy of the rendered logits
        against each ray's parsing class (coarse pass at ``coarse_loss_weight``); logs ``train/semantic_ce`` and
        ``train/semantic_acc``. With ``data.sampling=semantic`` the system measures each parsing class's photometric
        loss over every epoch and hands it to the data module (``set_class_weights``) at the epoch's end."""
        super().__init__()
        self.conditioner = conditioner
        regions = region_spec(conditioner)
        # the renderer arrives as a Hydra partial so that it can be built at the conditioner's width
        cls = renderer_class(renderer)
        if regions and not cls.supports_regions:
            raise LipspaceError(f"conditioner '{conditioner.name}' declares regions {sorted(regions)} for region "
                                f"attention, which renderer {cls.__name__} does not implement (supports_regions is "
                                "False); use renderer=mlp, triplane or gaussian")
        if not isinstance(renderer, Renderer):
            extra = {"regions": [(n, sl.start, sl.stop) for n, (sl, _) in regions.items()]} if regions else {}
            renderer = renderer(cond_dim=conditioner.out_dim, **extra)
        elif regions and not renderer.regions:
            raise LipspaceError(f"conditioner '{conditioner.name}' declares regions {sorted(regions)} but the renderer "
                                "was built without them; pass the renderer as a partial (cond_dim, regions unset)")
        self.renderer = renderer
        self.semantic = SemanticBranch.build(renderer, float(semantic_weight), coarse_loss_weight)
        self._class_meter: ClassLossMeter | None = None  # set at the start of training under semantic sampling
        self.region_att_weight = float(region_att_weight)
        if regions:
            order = [name for name, _, _ in self.renderer.regions]  # the renderer's (column-sorted) order
            lut = torch.zeros(len(order), 256, dtype=torch.bool)
            for k, name in enumerate(order):
                lut[k, list(regions[name][1])] = True
            self.register_buffer("region_classes", lut, persistent=False)
        else:
            self.region_classes = None
        self.optimizer_factory = optimizer  # params -> torch Optimizer (conf/model/nerf.yaml: a Hydra partial)
        # the base learning rate (the partial's lr): the renderer's own groups are set from it and every group
        # decays from it to lr_final; None: the optimiser's default
        self.base_lr = optimizer.keywords.get("lr") if isinstance(optimizer, functools.partial) else None
        self.lr_final, self.decay_steps, self.coarse_loss_weight = lr_final, decay_steps, coarse_loss_weight
        if conditioner_lr is not None and not conditioner_lr > 0:
            raise LipspaceError(f"model.conditioner_lr={conditioner_lr}: a positive learning rate, or null (the "
                                "renderer's rate)")
        self.conditioner_lr = conditioner_lr
        self.dead_field_steps = int(dead_field_steps)
        self._dead_steps: dict[str, int] = {}  # '' (the renderer) or a part -> dead steps in a row
        self.val_image_dir = val_image_dir
        self._val_images: list[torch.Tensor] = []
        self.train_chunk_rays = None if train_chunk_rays == "auto" else train_chunk_rays
        self.automatic_optimization = not (train_chunk_rays and self.renderer.supports_fused_backward)
        if isinstance(train_chunk_rays, str) and train_chunk_rays != "auto":
            raise LipspaceError(f"model.train_chunk_rays={train_chunk_rays!r}: an integer, 'auto' or null.")
        self.lpips_weight, self.lpips_start_fraction = float(lpips_weight), float(lpips_start_fraction)
        self.lpips_weights = lpips_weights
        self._lpips: list = []  # [module] once loaded, kept out of the state dict and the optimiser
        self._lpips_missing = False
        if self.lpips_weight > 0 and self.renderer.batch_kind != "rays":
            raise LipspaceError(f"model.lpips_weight > 0 trains on ray patches; renderer {cls.__name__} draws "
                                "whole images (batch_kind='images'): set model.lpips_weight=0")
        if self.lpips_weight > 0 and not self.automatic_optimization:
            raise LipspaceError("model.lpips_weight > 0 needs one autograd pass over the batch (the patch loss does "
                                "not split into ray chunks): set model.train_chunk_rays=null, or use renderer=triplane")

    def lpips_loss(self, out, batch) -> torch.Tensor | None:
        """LPIPS of the batch's patch once the refinement stage has started (None before, or without weights)."""
        if self.lpips_weight <= 0 or self.global_step < self.lpips_start_fraction * self.trainer.max_steps:
            return None
        if "patch" not in batch:
            raise LipspaceError("model.lpips_weight > 0 needs patches in the batches: set data.patch_size (e.g. 32)")
        if not self._lpips and not self._lpips_missing:
            from lipspace.eval.lpips import load_lpips

            try:
                self._lpips.append(load_lpips(self.lpips_weights).to(self.device))
            except LipspaceError as e:
                self._lpips_missing = True
                warnings.warn(f"LPIPS refinement stage skipped: {e}", stacklevel=2)
        if not self._lpips:
            return None
        start, p = (int(v) for v in batch["patch"])
        to_img = lambda x: x[start:start + p * p].reshape(1, p, p, 3).permute(0, 3, 1, 2)  # noqa: E731
        return self._lpips[0](to_img(out["rgb"]), to_img(batch["target"])).mean()

    # -- step-dependent behaviour goes through this one hook (warm-ups, coarse-to-fine, loss stages) --
    def on_train_batch_start(self, batch, batch_idx):
        self.conditioner.update_step(self.global_step)
        self.renderer.on_train_step(self.global_step)

    def region_outside(self, batch) -> torch.Tensor | None:
        """float [R, n_regions]: 1 where the ray's pixel class lies outside the region's classes (None: no regions).
        One row per ray; for an images batch (``ray_class`` [F,h,w]) one per pixel, frame-major (as
        :meth:`region_rows` flattens ``region_att`` [F,h,w,n])."""
        if self.region_classes is None:
            return None
        if "ray_class" not in batch:
            raise LipspaceError("model.region_att_weight > 0 needs the per-ray parsing class (batch['ray_class']) "
                                "from the data module's batches; set model.region_att_weight=0 otherwise")
        return (~self.region_classes[:, batch["ray_class"].long().reshape(-1)].t()).float()

    def region_rows(self, out, key: str = "region_att") -> torch.Tensor:
        """``out[key]`` as rows [R, n_regions]: a ray batch's as it is, an images batch's [F,h,w,n] per pixel."""
        att = out[key]
        return att.reshape(-1, att.shape[-1])

    def _step_outside(self, batch) -> torch.Tensor | None:
        """region_outside for a training step: needed for the loss, else only logged when the batch has classes."""
        if self.region_classes is None or (self.region_att_weight <= 0 and "ray_class" not in batch):
            return None
        return self.region_outside(batch)

    def region_loss(self, out, outside: torch.Tensor, n: int) -> torch.Tensor:
        """The share of ``out``'s rays of region_att_weight * mean_rays(sum_r att_r * outside_r) (fine + coarse)."""
        leak = (self.region_rows(out) * outside).sum()
        if "region_att_coarse" in out and self.coarse_loss_weight > 0:
            leak = leak + self.coarse_loss_weight * (self.region_rows(out, "region_att_coarse") * outside).sum()
        return self.region_att_weight / n * leak

    def _log_regions(self, out, outside, n):
        """Mean rendered gate magnitude on rays outside / inside each region (and over all regions)."""
        with torch.no_grad():
            att, inside = self.region_rows(out).detach(), 1 - outside
            metrics = {"train/region_att_outside": (att * outside).sum() / outside.sum().clamp_min(1),
                       "train/region_att_inside": (att * inside).sum() / inside.sum().clamp_min(1)}
            for k, (name, _, _) in enumerate(self.renderer.regions):
                for where, mask in (("outside", outside[:, k]), ("inside", inside[:, k])):
                    metrics[f"train/region_att_{where}_{name}"] = (att[:, k] * mask).sum() / mask.sum().clamp_min(1)
        self.log_dict(metrics, batch_size=n, sync_dist=False)

    def conditions(self, batch) -> torch.Tensor:
        """The condition rows the renderer takes: one per ray (batch_kind "rays"), one per frame ("images")."""
        per_frame = self.conditioner(batch["inputs"], batch["frame_idx"])
        return per_frame[batch["ray_frame"]] if self.renderer.batch_kind == "rays" else per_frame

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._chunked_training_step(batch)
        cond = self.conditions(batch)
        out = self.renderer.render(batch, cond)
        target = batch["target"]
        loss = F.mse_loss(out["rgb"], target)
        if "rgb_coarse" in out and self.coarse_loss_weight > 0:
            loss = loss + self.coarse_loss_weight * F.mse_loss(out["rgb_coarse"], target)
        reg = self.conditioner.regularizer(batch["frame_idx"])
        loss = loss + reg
        outside = self._step_outside(batch)
        if outside is not None:
            if self.region_att_weight > 0:  # mean over the rows: rays, or an images batch's pixels
                loss = loss + self.region_loss(out, outside, outside.shape[0])
            self._log_regions(out, outside, target.shape[0])
        if self.semantic is not None:
            loss = loss + self.semantic.loss(out, self.semantic.ray_classes(batch), target.shape[0])
        self._per_ray_stats(out, batch)
        lp = self.lpips_loss(out, batch)
        if lp is not None:
            loss = loss + self.lpips_weight * lp
            self.log("train/lpips", lp.detach(), batch_size=target.shape[0])
        self._log_train(loss, F.mse_loss(out["rgb"].detach(), target), reg, target.shape[0])
        self._check_alive(out, cond, batch)
        return loss

    def _chunked_training_step(self, batch):
        """The same loss and gradients as the automatic step, computed chunk by chunk (manual optimisation)."""
        from lipspace.renderers.nerf import mse_chunk_loss

        opt, sched = self.optimizers(), self.lr_schedulers()
        opt.zero_grad(set_to_none=True)
        target, n = batch["target"], batch["target"].shape[0]
        cond = self.conditions(batch)
        reg = self.conditioner.regularizer(batch["frame_idx"])
        photometric = mse_chunk_loss(target, self.coarse_loss_weight)
        outside = self._step_outside(batch)
        classes = None if self.semantic is None else self.semantic.ray_classes(batch)

        def loss_fn(out, sl):  # the regulariser joins the last chunk, so there is one backward upstream (DDP)
            loss = photometric(out, sl) + (reg if sl.stop == n else 0.0)
            if classes is not None:
                loss = loss + self.semantic.loss(out, classes[sl], n)
            if outside is None or self.region_att_weight <= 0:
                return loss
            return loss + self.region_loss(out, outside[sl], n)

        # under DDP (trainer=ddp) the strategy's model is the DistributedDataParallel wrapper: gradients of all but
        # the last chunk accumulate without an all-reduce
        no_sync = self.trainer.strategy.model.no_sync if self.trainer.world_size > 1 else None
        out = self.renderer.forward_backward(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond,
                                             batch["bg"], loss_fn, self.train_chunk_rays, no_sync=no_sync)
        opt.step()
        sched.step()
        if outside is not None:
            self._log_regions(out, outside, n)
        self._per_ray_stats(out, batch)
        self._log_train(out["loss"], F.mse_loss(out["rgb"], target), reg.detach(), n)
        self._check_alive(out, cond, batch)
        return out["loss"]

    def _check_alive(self, out, cond, batch) -> None:
        """Count the steps whose batch the renderer drew nothing of (its ``acc`` < DEAD_ACC on every ray or pixel),
        and for each part it models separately (``Renderer.part_opacity``, e.g. a torso NeRF) the steps that part
        drew nothing over its own pixels; log each part's mean opacity (``train/opacity_<part>``); after
        ``dead_field_steps`` in a row, stop with what happened and what to change."""
        parts = {k: v.detach() for k, v in self.renderer.part_opacity(out, batch).items()}
        if parts:
            self.log_dict({f"train/opacity_{k}": v.mean() for k, v in parts.items() if v.numel()},
                          batch_size=len(out["rgb"]))
        if not self.dead_field_steps:
            return
        if "acc" in out:  # acc: an optional output (Renderer.render)
            self._count_dead("", out["acc"].detach())
        for name, acc in parts.items():
            self._count_dead(name, acc)
        dead = next(((name, steps) for name, steps in self._dead_steps.items() if steps >= self.dead_field_steps),
                    None)
        if dead is not None:
            raise LipspaceError(self._dead_message(*dead, cond))

    def _dead_message(self, name: str, steps: int, cond) -> str:
        """What happened and what to change, for the renderer ('') or one of its parts (``name``) dead ``steps``."""
        again = ("then train again from scratch (ckpt_path=null or a new run directory); model.dead_field_steps=0 "
                 "turns this check off")
        if name:
            return (f"training stopped at step {self.global_step}: for {steps} steps the renderer's {name} part has "
                    f"drawn nothing over its own pixels (opacity < {DEAD_ACC:g} on every one of them): its density is "
                    f"0 there, its gradient vanishes and the rest of the run would show the background in its place. "
                    f"Seen when that part trains at too high a learning rate (the torso NeRF at the head's rate drove "
                    f"its density to 0 in its first 100 steps on a real clip): lower its rate (for {name}: "
                    f"{name}.composite.lr, e.g. 5e-4), {again}")
        code = f"{float(cond.detach().abs().max()):.3g}" if cond.numel() else "none, no condition"
        return (f"training stopped at step {self.global_step}: for {steps} steps the renderer has drawn nothing "
                f"(opacity < {DEAD_ACC:g} on every ray): the field's density is 0 everywhere, no gradient reaches it "
                f"and the rest of the run would render only the background. Seen when the conditioner's code blows up "
                f"at a high learning rate (its largest value is now {code}): set model.conditioner_lr (e.g. 1e-3, the "
                f"rate ER-NeRF gives its audio network) or lower model.optimizer.lr, {again}")

    def _count_dead(self, name: str, acc: torch.Tensor) -> None:
        """One more dead step for ``name`` ('' = the whole renderer) when every ray of ``acc`` is below DEAD_ACC,
        else its count restarts; a batch without rays of that part leaves the count as it is."""
        if acc.numel():
            dead = float(acc.max()) < DEAD_ACC
            self._dead_steps[name] = self._dead_steps.get(name, 0) + 1 if dead else 0

    def _per_ray_stats(self, out, batch) -> None:
        """After a step: the parsing branch's metrics; the per-class photometric loss under semantic sampling."""
        if self.semantic is not None:
            self.log_dict(self.semantic.metrics(out, self.semantic.ray_classes(batch)), batch_size=len(out["rgb"]))
        if self._class_meter is not None:
            self._class_meter.update(out["rgb"], batch["target"], batch["ray_class"])

    def on_train_start(self):
        dm = self.trainer.datamodule
        self._class_meter = ClassLossMeter() if isinstance(dm, TalkingHeadDataModule) and dm.class_weighted else None

    def on_train_epoch_end(self):
        """Semantic sampling: the epoch's mean photometric loss per parsing class, all-reduced over the DDP ranks,
        becomes the class weights of the next epoch's ray batches (SSP-NeRF); logs it and the classes' ray shares."""
        if self._class_meter is None:
            return
        mean, share = self._class_meter.summary(
            lambda t: self.trainer.strategy.reduce(t.to(self.device), reduce_op="sum"))
        self.trainer.datamodule.set_class_weights(mean)
        self.log_dict(ClassLossMeter.metrics(mean, share), sync_dist=False)

    def _log_train(self, loss, mse, reg, n):
        self.log_dict({"train/loss": loss, "train/mse": mse, "train/reg": reg,
                       "train/psnr": -10.0 * torch.log10(mse.detach().clamp_min(1e-10))},
                      prog_bar=True, batch_size=n, sync_dist=False)

    def validation_step(self, batch, batch_idx):
        cond = self.conditioner(batch["inputs"], batch["frame_idx"])[0]
        pred = self.renderer.render_frame(batch, cond)
        target = batch["target"].to(pred).reshape(pred.shape)
        p, t = pred.permute(2, 0, 1)[None], target.permute(2, 0, 1)[None]
        self.log("val/psnr", peak_signal_noise_ratio(p, t, data_range=1.0), batch_size=1, sync_dist=True)
        self.log("val/ssim", structural_similarity_index_measure(p, t, data_range=1.0), batch_size=1, sync_dist=True)
        self._val_images.append(torch.cat([target, pred], dim=1).cpu())

    def on_validation_epoch_end(self):
        if not self._val_images or self.trainer.sanity_checking or not self.trainer.is_global_zero:
            self._val_images.clear()
            return
        grid = torch.cat(self._val_images, dim=0)  # rows: frames; columns: ground truth | render
        self._val_images.clear()
        img = (grid.numpy() * 255).round().astype("uint8")
        if self.val_image_dir:
            import cv2

            path = Path(self.val_image_dir) / f"step_{self.global_step:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), img[:, :, ::-1])
        from lightning.pytorch.loggers import WandbLogger

        for logger in self.loggers:  # W&B shows the image; the csv logger has the png in val_image_dir
            if isinstance(logger, WandbLogger):
                logger.log_image("val/gt_vs_render", [img], step=self.global_step)

    def param_groups(self) -> list[dict]:
        """One group of every parameter, unless the renderer gives some of its own a separate rate
        (``renderer.param_groups(lr)``, e.g. the tri-plane's hash tables at ``lr_grid``): then the conditioner's
        parameters join the renderer's groups. (One group keeps checkpoints of one-group runs resumable.) With
        ``conditioner_lr`` the conditioner's parameters are a last group of their own at that rate."""
        groups = self.renderer.param_groups(self.base_lr) if self.base_lr else []
        if self.conditioner_lr is not None:
            own = list(self.conditioner.parameters())
            rest = groups or [{"params": list(self.renderer.parameters())}]
            return [*rest, {"params": own, "lr": self.conditioner_lr}] if own else rest
        if len(groups) <= 1:
            return [{"params": list(self.parameters())}]
        groups[-1] = {**groups[-1], "params": list(self.conditioner.parameters()) + list(groups[-1]["params"])}
        return groups

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.param_groups())
        self.renderer.bind_optimizer(opt)  # renderers that resize their parameters (densification) keep it
        steps = self.decay_steps or max(int(self.trainer.max_steps), 1)
        lr0 = self.base_lr or opt.param_groups[-1]["lr"]
        ratio = self.lr_final / lr0
        # exponential decay lr0 -> lr_final over `steps`, then held; every group (e.g. hash tables at their own
        # rate) decays by the same factor, a group with a start_step (a later stage's part) over its own steps
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, [exponential_decay(ratio, int(g.get("start_step", 0)), steps) for g in opt.param_groups])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
