"""Human-readable results table for the terminal."""

from __future__ import annotations

import pandas as pd

COLUMNS = ["eval_set", "driver", "n_frames", "psnr", "baseline_mean_frame_psnr", "ssim", "baseline_mean_frame_ssim",
           "mouth_psnr", "baseline_mean_frame_mouth_psnr"]


def results_table(df: pd.DataFrame) -> str:
    cols = [c for c in COLUMNS if c in df.columns]
    head = df.iloc[0]
    title = (f"conditioner={head.get('conditioner')} renderer={head.get('renderer')} budget={head.get('budget')} "
             f"seed={head.get('seed')} step={head.get('global_step')} eval_resolution={head.get('eval_resolution')}")
    return title + "\n" + df[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}")
