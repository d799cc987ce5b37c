"""LPIPS-alex reproduces the published distances on the PerceptualSimilarity reference triple."""

import cv2
import pytest
import torch

from tests.conftest import assets_dir
from lipspace.errors import LipspaceError
from lipspace.eval.lpips import LPIPS, load_lpips

ASSETS = assets_dir()
needs_assets = pytest.mark.skipif(ASSETS is None or not (ASSETS / "models" / "lpips_alex_v0.1.pth").is_file(),
                                  reason="needs ../shared/assets (or LIPSPACE_ASSETS) with models/lpips_alex_v0.1.pth")


def _img(name):
    bgr = cv2.imread(str(ASSETS / "images" / name))
    return torch.from_numpy(bgr[..., ::-1].copy()).float() / 255.0


@needs_assets
def test_published_values_on_the_reference_triple(monkeypatch):
    monkeypatch.setenv("LIPSPACE_ASSETS", str(ASSETS))
    model = load_lpips()
    ref, p0, p1 = _img("lpips_ex_ref.png"), _img("lpips_ex_p0.png"), _img("lpips_ex_p1.png")
    d0, d1 = float(model(ref, p0)), float(model(ref, p1))
    assert round(d0, 3) == 0.722 and round(d1, 3) == 0.138  # published: 0.722 / 0.138
    assert float(model(ref, ref)) == pytest.approx(0.0, abs=1e-6)
    batch = model(torch.stack([ref, ref]).permute(0, 3, 1, 2), torch.stack([p0, p1]).permute(0, 3, 1, 2))
    torch.testing.assert_close(batch, torch.tensor([d0, d1]), rtol=1e-5, atol=1e-6)
    assert "sha256 63219dfd7603" in model.provenance


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("LIPSPACE_ASSETS", str(tmp_path / "none"))
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LipspaceError, match="LPIPS weights not found.*LIPSPACE_ASSETS"):
        load_lpips()
    with pytest.raises(LipspaceError, match="not found"):
        load_lpips(tmp_path / "nope.pth")


def test_bad_layout_and_shapes_are_clear(tmp_path):
    p = tmp_path / "w.pth"
    torch.save({"features.0.weight": torch.zeros(64, 3, 11, 11)}, p)
    with pytest.raises(LipspaceError, match="not the LPIPS-alex layout"):
        load_lpips(p)
    m = LPIPS()
    with pytest.raises(LipspaceError, match="at least 32x32"):
        m(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16))
    with pytest.raises(LipspaceError, match="equal shape"):
        m(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 32))
