"""LPIPS-alex reproduces the published distances on the PerceptualSimilarity reference triple."""

import cv2
import pytest
import torch

from tests.conftest import assets_dir
from lipspace.utils.errors import LipspaceError
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


def test_download_modes(tmp_path, monkeypatch):
    """download=auto / true / false (lipspace.utils.assets): the two official files from a local HTTP server stand in
    for download.pytorch.org and GitHub; the trunk's sha256 prefix (torchvision's file-name convention) is checked."""
    import lipspace.utils.assets as assets
    import lipspace.eval.lpips as L
    from lipspace.utils.assets import file_sha256
    from local_http import serve_folder

    monkeypatch.setenv("LIPSPACE_ASSETS", str(tmp_path / "none"))
    monkeypatch.setenv("LIPSPACE_CACHE", str(tmp_path / "cache"))
    with pytest.raises(LipspaceError, match="download='maybe': must be auto"):
        load_lpips(download="maybe")
    with pytest.raises(LipspaceError, match=r"not fetched: .*download=auto and \$LIPSPACE_OFFLINE is set"):
        load_lpips()  # tests/conftest.py sets LIPSPACE_OFFLINE: auto never touches the network
    monkeypatch.delenv(assets.OFFLINE_ENV)
    monkeypatch.setattr(assets, "_REACHABILITY", {})
    with pytest.raises(LipspaceError, match="download=false never touches the network"):
        load_lpips(download=False)
    torch.manual_seed(0)
    www = tmp_path / "www"
    www.mkdir()
    ref = LPIPS()
    torch.save({f"features.{i}.{k}": v for i in (0, 3, 6, 8, 10) for k, v in ref.features[i].state_dict().items()},
               www / "trunk.pth")
    torch.save({f"lin{k}.model.1.weight": torch.rand_like(lin.weight) for k, lin in enumerate(ref.lins)},
               www / "heads.pth")
    with serve_folder(www) as srv:
        monkeypatch.setattr(L, "LPIPS_OFFICIAL_URLS", {k: f"{srv.url}/{k}.pth" for k in ("trunk", "heads")})
        with pytest.raises(LipspaceError, match=r"trunk.pth has sha256 .*expected a digest starting 7be5be79"):
            load_lpips(download="true")  # not torchvision's file: refused, nothing kept
        assert not (tmp_path / "cache" / "alexnet-owt-7be5be79.pth").exists()
        monkeypatch.setattr(L, "TRUNK_SHA256_PREFIX", file_sha256(www / "trunk.pth")[:8])
        model = load_lpips()  # auto: the server answers
        assert srv.requested == ["/trunk.pth", "/trunk.pth", "/heads.pth"]
    assert model.provenance == "LPIPS v0.1 alex from alexnet-owt-7be5be79.pth + lpips_v0.1_alex_heads.pth"
    torch.testing.assert_close(model.features[0].weight, ref.features[0].weight)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["alexnet-owt-7be5be79.pth",
                                                                      "lpips_v0.1_alex_heads.pth"]
    assert load_lpips(download=False).provenance == model.provenance  # from the cache now


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
