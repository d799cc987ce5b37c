"""SSP-NeRF's semantic-aware dynamic ray sampling (``data.sampling=semantic``): each batch frame's rays split among its
parsing classes in proportion to each class's photometric loss of the previous epoch, N_i = L_i / sum_j L_j * N_s."""

from __future__ import annotations

import torch

from lipspace.utils.errors import LipspaceError

SAMPLING_MODES = ("head_fraction", "semantic")
# L_i of N_i = L_i / sum_j L_j * N_s: a class's mean photometric loss per pixel ("mean": small classes with large
# errors, the mouth and eyes, draw most rays) or its total over the frame's pixels, the mean x the class's pixel
# count there ("total": where the frame's error is; what a full-frame loss sums). The paper does not say which.
CLASS_LOSSES = ("mean", "total")


def check_class_loss(class_loss: str) -> None:
    """``data.class_loss`` is one of CLASS_LOSSES (the data module and its ray batches both take it)."""
    if class_loss not in CLASS_LOSSES:
        raise LipspaceError(f"data.class_loss={class_loss!r}: one of {', '.join(CLASS_LOSSES)}")


def class_allocation(weights: torch.Tensor, present: torch.Tensor, n: int, floor: float) -> torch.Tensor:
    """Rays per class [F, K] (int64, each row sums to ``n``, 0 where no class is present) for frames whose classes
    ``present`` [F, K] (bool) can be drawn, from class ``weights`` [K] (the previous epoch's mean loss per class) or
    [F, K] (per frame: e.g. that loss times the class's pixel count in the frame).

    Per frame: shares w_k / sum_j w_j over the present classes only (absent ones renormalised away), mixed with a
    uniform floor so that no present class starves, p_k = f + (1 - f m) w_k / sum_j w_j with m present classes and
    f = min(floor, 1 / m); counts are p_k n rounded by largest remainder. A weight that is not finite (a class no ray
    of the last epoch fell on) counts as the mean of the finite ones; all-zero weights split the rays evenly."""
    weights = weights.to(torch.float64)
    finite = torch.isfinite(weights)
    fill = weights[finite].mean() if finite.any() else torch.tensor(1.0, dtype=torch.float64)
    w = torch.where(finite, weights, fill).clamp_min(0) * present
    m = present.sum(1, keepdim=True)
    total = w.sum(1, keepdim=True)
    share = torch.where(total > 0, w / total.clamp_min(1e-300), present / m.clamp_min(1))
    f = torch.minimum(torch.full_like(total, floor), 1.0 / m.clamp_min(1))
    p = (f * present + (1 - f * m) * share) * (m > 0)
    exact = p * n
    counts = exact.floor().long()
    left = (n - counts.sum(1)) * (m[:, 0] > 0)  # rays still to give per frame (none where nothing is present)
    frac = torch.where(present, exact - counts, torch.full_like(exact, -1.0))
    rank = torch.argsort(torch.argsort(-frac, dim=1, stable=True), dim=1)
    return counts + (rank < left[:, None]).long()


def class_pixel_counts(parsing, n_classes: int, chunk_bytes: int = 1 << 21) -> torch.Tensor:
    """Pixels of each class per frame [N, K] (float64) of ``parsing`` [N, H, W] (a frame store or a tensor), about
    ``chunk_bytes`` at a time."""
    n, h, w = parsing.shape
    chunk = max(1, chunk_bytes // (h * w))
    counts = torch.zeros(n, n_classes, dtype=torch.float64)
    for s in range(0, n, chunk):
        block = torch.as_tensor(parsing[s:s + chunk]).reshape(-1, h * w).long().clamp(0, n_classes - 1)
        rows = torch.arange(len(block))[:, None] * n_classes
        counts[s:s + chunk] = torch.bincount((rows + block).reshape(-1), minlength=len(block) * n_classes).view(
            len(block), n_classes).double()
    return counts


def class_boxes(parsing, n_classes: int, chunk_bytes: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame bounding boxes (x0, y0, x1, y1) [N, K, 4] of every class's pixels and whether the class occurs in
    the frame [N, K], in one pass over ``parsing`` [N, H, W] (a frame store or a tensor), about ``chunk_bytes`` at a
    time; a class absent from a frame gets the whole frame."""
    n, h, w = parsing.shape
    chunk = max(1, chunk_bytes // (h * w))
    boxes = torch.tensor([0, 0, w, h]).repeat(n, n_classes, 1)
    present = torch.zeros(n, n_classes, dtype=torch.bool)
    xr, yr = torch.arange(w), torch.arange(h)
    for s in range(0, n, chunk):
        block = torch.as_tensor(parsing[s:s + chunk])
        for k in range(n_classes):
            m = block == k
            cols, rows = m.any(1), m.any(2)  # [c, W], [c, H]
            has = cols.any(1)
            box = torch.stack([torch.where(cols, xr, w).min(1).values, torch.where(rows, yr, h).min(1).values,
                               torch.where(cols, xr, -1).max(1).values + 1,
                               torch.where(rows, yr, -1).max(1).values + 1], 1)
            boxes[s:s + chunk, k] = torch.where(has[:, None], box, boxes[s:s + chunk, k])
            present[s:s + chunk, k] = has
    return boxes, present


def clip_to_box(boxes: torch.Tensor, present: torch.Tensor, outer) -> tuple[torch.Tensor, torch.Tensor]:
    """Class boxes [F, K, 4] cut to each frame's ``outer`` box ((x0, y0, x1, y1) tensors [F], e.g. where rays hit
    the bounds) -> (boxes as float [F, K, 4], present [F, K] and False where the cut is empty)."""
    outer = torch.stack([o.float() for o in outer], 1)[:, None]  # [F, 1, 4]
    lo = torch.maximum(boxes[..., :2].float(), outer[..., :2])
    hi = torch.minimum(boxes[..., 2:].float(), outer[..., 2:])
    ok = present & (hi > lo).all(-1)
    return torch.where(ok[..., None], torch.cat([lo, hi], -1), outer.expand(-1, lo.shape[1], -1)), ok


def draw_by_class(pix: torch.Tensor, counts: torch.Tensor, boxes: torch.Tensor, accept, draw, g: torch.Generator,
                  w: int) -> torch.Tensor:
    """``pix`` [F, n] (flat pixel indices drawn uniformly, the fallback) with each frame's first counts[f, 0] slots
    replaced by pixels of class 0, the next counts[f, 1] by class 1, ...: ``draw(box tensors, accept(k), n, g, w) ->
    (indices [F, n], ok [F])`` draws them (sampling._draw_rejection) inside ``boxes`` [F, K, 4]; a frame where a class
    finds no accepted pixel keeps the fallback in that class's slots."""
    out = pix.clone()
    start = torch.cumsum(counts, 1) - counts
    slots = torch.arange(pix.shape[1])
    rows = torch.arange(pix.shape[0])[:, None]
    for k in range(counts.shape[1]):
        n = int(counts[:, k].max())
        if n == 0:
            continue
        drawn, ok = draw(boxes[:, k].unbind(1), accept(k), n, g, w)
        take = (slots[None, :n] < counts[:, k:k + 1]) & ok[:, None]
        out[rows.expand(-1, n)[take], (start[:, k:k + 1] + slots[None, :n])[take]] = drawn[take]
    return out
