"""The LightningModule: a built conditioner + renderer, photometric loss + conditioner regulariser, Adam with
exponential decay, validation renders with PSNR / SSIM. Nothing method-specific lives here."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from lipspace.conditioners.base import Conditioner
from lipspace.errors import LipspaceError
from lipspace.inference import render_rays_image


class TalkingHeadSystem(L.LightningModule):
    def __init__(self, conditioner: Conditioner, renderer, optimizer, lr_final: float = 5e-5,
                 decay_steps: int | None = None, coarse_loss_weight: float = 1.0, val_image_dir: str | None = None,
                 train_chunk_rays: int | str | None = "auto"):
        """``train_chunk_rays``: run forward + backward over chunks of that many rays (same gradients as one
        backward over the batch, activations stay cache-sized: faster on CPU), when the renderer supports it;
        "auto" lets the renderer size chunks from its width; null runs one autograd pass over the batch."""
        super().__init__()
        self.conditioner = conditioner
        # the renderer arrives as a Hydra partial so that it can be built at the conditioner's width
        self.renderer = renderer(cond_dim=conditioner.out_dim) if not isinstance(renderer, torch.nn.Module) else renderer
        self.optimizer_factory = optimizer
        self.lr_final, self.decay_steps, self.coarse_loss_weight = lr_final, decay_steps, coarse_loss_weight
        self.val_image_dir = val_image_dir
        self._val_images: list[torch.Tensor] = []
        self.train_chunk_rays = None if train_chunk_rays == "auto" else train_chunk_rays
        self.automatic_optimization = not (train_chunk_rays and hasattr(self.renderer, "forward_backward"))
        if isinstance(train_chunk_rays, str) and train_chunk_rays != "auto":
            raise LipspaceError(f"model.train_chunk_rays={train_chunk_rays!r}: an integer, 'auto' or null.")

    # -- step-dependent behaviour goes through this one hook (warm-ups, coarse-to-fine, loss stages) --
    def on_train_batch_start(self, batch, batch_idx):
        for part in (self.conditioner, self.renderer):
            hook = getattr(part, "update_step", None)
            if hook is not None:
                hook(self.global_step)

    def conditions(self, batch) -> torch.Tensor:
        per_frame = self.conditioner(batch["inputs"], batch["frame_idx"])
        return per_frame[batch["ray_frame"]]

    def training_step(self, batch, batch_idx):
        if not self.automatic_optimization:
            return self._chunked_training_step(batch)
        cond = self.conditions(batch)
        out = self.renderer(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond, batch["bg"])
        target = batch["target"]
        loss = F.mse_loss(out["rgb"], target)
        if "rgb_coarse" in out and self.coarse_loss_weight > 0:
            loss = loss + self.coarse_loss_weight * F.mse_loss(out["rgb_coarse"], target)
        reg = self.conditioner.regularizer(batch["frame_idx"])
        loss = loss + reg
        self._log_train(loss, F.mse_loss(out["rgb"].detach(), target), reg, target.shape[0])
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

        def loss_fn(out, sl):  # the regulariser joins the last chunk, so there is one backward upstream (DDP)
            return photometric(out, sl) + (reg if sl.stop == n else 0.0)

        ddp = self.trainer.strategy.model if self.trainer.world_size > 1 else None
        out = self.renderer.forward_backward(batch["rays_o"], batch["rays_d"], batch["near"], batch["far"], cond,
                                             batch["bg"], loss_fn, self.train_chunk_rays,
                                             no_sync=getattr(ddp, "no_sync", None))
        opt.step()
        sched.step()
        self._log_train(out["loss"], F.mse_loss(out["rgb"], target), reg.detach(), n)
        return out["loss"]

    def _log_train(self, loss, mse, reg, n):
        self.log_dict({"train/loss": loss, "train/mse": mse, "train/reg": reg,
                       "train/psnr": -10.0 * torch.log10(mse.detach().clamp_min(1e-10))},
                      prog_bar=True, batch_size=n, sync_dist=False)

    def validation_step(self, batch, batch_idx):
        cond = self.conditioner(batch["inputs"], batch["frame_idx"])[0]
        pred = render_rays_image(self.renderer, batch, cond)
        target = batch["target"].to(pred)
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
        for logger in self.loggers:
            if hasattr(logger, "log_image"):
                logger.log_image("val/gt_vs_render", [img], step=self.global_step)

    def configure_optimizers(self):
        opt = self.optimizer_factory(params=self.parameters())
        steps = self.decay_steps or max(int(self.trainer.max_steps), 1)
        lr0 = opt.param_groups[0]["lr"]
        ratio = self.lr_final / lr0
        # exponential decay lr0 -> lr_final over `steps`, then held
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: ratio ** (min(s, steps) / steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
