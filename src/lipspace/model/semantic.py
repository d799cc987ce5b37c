"""SSP-NeRF's two semantic parts on the system's side: the implicit parsing branch's cross-entropy (and its metrics),
and the per-class photometric loss that steers semantic-aware ray sampling (``data.sampling=semantic``)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from lipspace.data.schema import PARSING_CLASSES
from lipspace.renderers.base import Outputs, Renderer
from lipspace.utils.errors import LipspaceError


class SemanticBranch:
    """The parsing branch's loss: ``weight`` x cross-entropy of the rendered logits (``semantic``, plus
    ``coarse_weight`` x that of ``semantic_coarse``) against each ray's parsing class, averaged over the batch's rays;
    computed as per-chunk shares so that the fused chunked step gives the gradients of one backward."""

    def __init__(self, weight: float, coarse_weight: float):
        self.weight, self.coarse_weight = float(weight), float(coarse_weight)

    @classmethod
    def build(cls, renderer: Renderer, weight: float, coarse_weight: float) -> SemanticBranch | None:
        """The branch for a built renderer: None when it renders no classes (and ``weight`` is 0); a clear error
        when ``weight`` > 0 and the renderer does not implement the branch or was built without it."""
        name = type(renderer).__name__
        if weight > 0 and not renderer.supports_semantic:
            raise LipspaceError(f"model.semantic_weight={weight}: renderer {name} does not implement the implicit "
                                "parsing branch (supports_semantic is False); use renderer=mlp or renderer=triplane, "
                                "or set model.semantic_weight=0")
        if weight > 0 and renderer.semantic_classes != len(PARSING_CLASSES):
            raise LipspaceError(f"model.semantic_weight={weight}: renderer {name} renders {renderer.semantic_classes} "
                                f"parsing classes; set renderer.field.semantic_classes={len(PARSING_CLASSES)} (the "
                                "PARSING_CLASSES of the dataset schema)")
        if weight < 0:
            raise LipspaceError(f"model.semantic_weight={weight}: must be >= 0")
        return cls(weight, coarse_weight) if renderer.semantic_classes else None

    @staticmethod
    def ray_classes(batch: dict) -> torch.Tensor:
        if "ray_class" not in batch:
            raise LipspaceError("the parsing branch needs the per-ray parsing class (batch['ray_class']) of the data "
                                "module's RayBatches")
        return batch["ray_class"].long()

    def loss(self, out: Outputs, ray_class: torch.Tensor, n: int) -> torch.Tensor:
        """The share of ``out``'s rays (classes ``ray_class``) in the loss of a batch of ``n`` rays."""
        ce = F.cross_entropy(out["semantic"], ray_class, reduction="sum")
        if "semantic_coarse" in out and self.coarse_weight > 0:
            ce = ce + self.coarse_weight * F.cross_entropy(out["semantic_coarse"], ray_class, reduction="sum")
        return self.weight / n * ce

    @staticmethod
    @torch.no_grad()
    def metrics(out: Outputs, ray_class: torch.Tensor) -> dict[str, torch.Tensor]:
        """Cross-entropy and pixel accuracy of the (fine) rendered classes, and the accuracy of always answering the
        batch's most frequent class (the trivial predictor the branch must beat)."""
        logits = out["semantic"].detach()
        majority = torch.bincount(ray_class).max().float() / len(ray_class)
        return {"train/semantic_ce": F.cross_entropy(logits, ray_class),
                "train/semantic_acc": (logits.argmax(-1) == ray_class).float().mean(),
                "train/semantic_acc_majority": majority}


class ClassLossMeter:
    """Per parsing class, the sum of the rays' photometric loss (mean squared error of the rendered colour) and the
    number of rays over one epoch; :meth:`summary` reduces them over the DDP ranks and starts a new epoch."""

    def __init__(self, n_classes: int = len(PARSING_CLASSES)):
        self.n_classes = n_classes
        self.sums = torch.zeros(n_classes, dtype=torch.float64)
        self.counts = torch.zeros(n_classes, dtype=torch.float64)

    @torch.no_grad()
    def update(self, rgb: torch.Tensor, target: torch.Tensor, ray_class: torch.Tensor) -> None:
        per_ray = (rgb.detach() - target).square().mean(-1).double()
        cls = ray_class.long().clamp(0, self.n_classes - 1)  # the schema's classes are 0..K-1
        self.sums += torch.bincount(cls, per_ray, minlength=self.n_classes).cpu()
        self.counts += torch.bincount(cls, minlength=self.n_classes).double().cpu()

    def summary(self, reduce_sum: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean loss per class [K], NaN where no ray fell; share of the rays per class [K]) over the epoch, summed
        over ranks by ``reduce_sum`` (the strategy's all-reduce; identity on one device). Resets the meter."""
        both = reduce_sum(torch.stack([self.sums, self.counts])).cpu()
        self.sums.zero_()
        self.counts.zero_()
        sums, counts = both[0], both[1]
        mean = torch.where(counts > 0, sums / counts.clamp_min(1), torch.full_like(sums, float("nan")))
        return mean, counts / counts.sum().clamp_min(1)

    @staticmethod
    def metrics(mean: torch.Tensor, share: torch.Tensor) -> dict[str, float]:
        """``train/ray_share_<class>`` and ``train/class_mse_<class>`` (classes with rays) of a :meth:`summary`."""
        names = [PARSING_CLASSES[k] for k in range(len(mean))]
        return ({f"train/ray_share_{c}": float(v) for c, v in zip(names, share)}
                | {f"train/class_mse_{c}": float(v) for c, v in zip(names, mean) if v == v})
