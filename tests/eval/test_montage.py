"""Side-by-side video grid and comparison bar chart."""

import numpy as np
import pandas as pd
import pytest

from lipspace.utils.errors import LipspaceError
from lipspace.eval.montage import LABEL_PX, bar_chart, grid
from lipspace.eval.video import read_video, write_video


def test_grid_keeps_each_panel_and_cuts_to_the_shortest():
    a = np.full((5, 32, 40, 3), 10, np.uint8)
    b = np.full((4, 32, 40, 3), 200, np.uint8)
    g = grid([a, b], ["ground truth", "a long label that must be shrunk to fit"])
    assert g.shape == (4, 32 + LABEL_PX, 80, 3)
    assert (g[:, LABEL_PX:, :40] == 10).all() and (g[:, LABEL_PX:, 40:] == 200).all()
    assert g[:, :LABEL_PX].max() > 100  # the caption was drawn
    with pytest.raises(LipspaceError, match="differ in size"):
        grid([a, np.zeros((4, 16, 40, 3), np.uint8)], ["x", "y"])
    with pytest.raises(LipspaceError, match="one label each"):
        grid([a], ["x", "y"])


def test_video_round_trip(tmp_path):
    frames = np.broadcast_to(np.linspace(0, 255, 48).astype(np.uint8)[None, None, :, None], (6, 32, 48, 3))
    back = read_video(write_video(np.ascontiguousarray(frames), tmp_path / "v.mp4"))
    assert back.shape == frames.shape
    assert np.abs(back.astype(int) - frames).mean() < 3
    with pytest.raises(LipspaceError, match="missing"):
        read_video(tmp_path / "none.mp4")


def test_bar_chart_writes_a_png_with_nan_bars(tmp_path):
    table = pd.DataFrame({"space": ["a", "b", "still"], "psnr": [30.0, 31.0, 25.0], "lmd": [1.0, np.nan, np.nan],
                          "empty": [np.nan] * 3})
    out = bar_chart(table, tmp_path / "c.png", {"psnr": "PSNR", "lmd": "LMD", "absent": "x", "empty": "y"},
                    baselines={"psnr": (25.0, "still frame")})
    assert out.is_file() and out.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(LipspaceError, match="none of"):
        bar_chart(table, tmp_path / "d.png", {"absent": "x", "empty": "y"})
