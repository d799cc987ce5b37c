"""Figures that put several runs side by side: a labelled video grid (ground truth and each model in one mp4, with
the audio) and a bar chart of a comparison table."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from lipspace.utils.errors import LipspaceError

LABEL_PX = 18  # height of the caption bar above each panel


def label_panel(frames: np.ndarray, text: str) -> np.ndarray:
    """uint8 [T,H,W,3] frames with a black caption bar of ``text`` on top (scaled to fit the panel's width)."""
    import cv2

    t, h, w, _ = frames.shape
    bar = np.zeros((LABEL_PX, w, 3), np.uint8)
    scale = 0.4
    while scale > 0.2 and cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > w - 4:
        scale -= 0.02
    cv2.putText(bar, text, (2, LABEL_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return np.concatenate([np.broadcast_to(bar, (t, LABEL_PX, w, 3)), frames], axis=1)


def grid(panels: list[np.ndarray], labels: list[str]) -> np.ndarray:
    """Panels (uint8 [T_i,H,W,3], same H and W) side by side under their labels, cut to the shortest T."""
    if not panels or len(panels) != len(labels):
        raise LipspaceError(f"video grid: {len(panels)} panels for {len(labels)} labels (need one label each).")
    shapes = {p.shape[1:] for p in panels}
    if len(shapes) != 1:
        raise LipspaceError(f"video grid: panels differ in size {sorted(shapes)}; render them at one resolution.")
    t = min(len(p) for p in panels)
    return np.concatenate([label_panel(p[:t], s) for p, s in zip(panels, labels)], axis=2)


def bar_chart(table: pd.DataFrame, out_path, metrics: dict[str, str], label: str = "space",
              baselines: dict[str, tuple[float, str]] | None = None, title: str = "") -> Path:
    """One bar panel per column of ``metrics`` ({column: axis title}) with one bar per row of ``table`` (named by
    ``label``); ``baselines`` ({column: (value, name)}) draws a dashed reference line (e.g. the still frame). NaN
    bars are left empty and marked 'n/a'; a column that is NaN in every row gets no panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in metrics if c in table.columns and pd.to_numeric(table[c], errors="coerce").notna().any()]
    if not cols:
        raise LipspaceError(f"bar chart: none of {list(metrics)} is a column of the table with a value "
                            f"(columns: {list(table.columns)}).")
    fig, axes = plt.subplots(1, len(cols), figsize=(3.2 * len(cols), 3.4), squeeze=False)
    names = table[label].astype(str).tolist()
    x = np.arange(len(names))
    for ax, col in zip(axes[0], cols):
        vals = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        ax.bar(x, np.nan_to_num(vals), color=[f"C{i}" for i in range(len(names))])
        for i, v in enumerate(vals):
            ax.annotate("n/a" if np.isnan(v) else f"{v:.2f}", (i, 0 if np.isnan(v) else v), ha="center",
                        va="bottom", fontsize=7)
        base, name = (baselines or {}).get(col, (None, ""))
        if base is not None and np.isfinite(base):
            ax.axhline(base, color="k", ls="--", lw=1, label=name)
            ax.legend(fontsize=7, loc="lower right")
        else:
            base = None
        finite = vals[np.isfinite(vals)]
        if col.endswith("psnr") and finite.size:  # PSNR bars: zoom on the range that differs
            lo = min(finite.min(), base if base is not None else finite.min())
            ax.set_ylim(lo - 1.0, finite.max() + 0.8)
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_title(metrics[col], fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
