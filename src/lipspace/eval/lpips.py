"""LPIPS v0.1 with the AlexNet trunk (Zhang et al. 2018), written out because torchvision cannot be installed here.

Recipe (the `lpips` package's, reproduced exactly): images in [0, 1] -> [-1, 1]; ScalingLayer (shift
[-.030, -.088, -.188], scale [.458, .448, .450]); torchvision AlexNet ``features`` tapped after relu1..relu5;
each tap unit-normalised over channels (eps 1e-10); squared difference; 1x1 linear head (no bias) -> 1 channel;
spatial mean; sum over the five layers. Validated by tests/eval/test_lpips.py against the published values on
the reference triple of richzhang/PerceptualSimilarity (0.722 / 0.138).

Weights (``load_lpips``): a path given, else the asset ``lpips_alex_v0.1.pth`` (trunk + heads in one state dict)
from ``$LIPSPACE_ASSETS/models`` or the project cache (``lipspace.utils.assets.resolve_asset``, sha256-checked), else
``from_official_files``: torchvision's ``alexnet-owt-7be5be79.pth`` (hash-prefix checked) and the lpips package's
``weights/v0.1/alex.pth`` from their official URLs.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from lipspace.utils.errors import LipspaceError

ASSET = "lpips_alex_v0.1.pth"
LPIPS_OFFICIAL_URLS = {
    "trunk": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "heads": "https://github.com/richzhang/PerceptualSimilarity/raw/c33f89e9f46522a584cf41d8880eb0afa982708b/"
             "lpips/weights/v0.1/alex.pth",
}
TRUNK_SHA256_PREFIX = "7be5be79"  # torchvision names its files by the first 8 hex digits of their sha256
_CHANNELS = (64, 192, 384, 256, 256)


class LPIPS(nn.Module):
    """d(x, y) for images [B, 3, H, W] in [0, 1] (or [H, W, 3] single images) -> [B] distances."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, 11, 4, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(384, 256, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(256, 256, 3, 1, 1), nn.ReLU(),
        )
        self.taps = (1, 4, 7, 9, 11)  # after each relu
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in _CHANNELS)
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.provenance = "random init (no weights loaded)"
        self.requires_grad_(False)
        self.eval()

    def load_official_state(self, state: dict, provenance: str) -> "LPIPS":
        """Load a state dict with keys features.{0,3,6,8,10}.* and lin{k}.model.1.weight (the asset's layout)."""
        mapped = {}
        for k, v in state.items():
            if k.startswith("features."):
                mapped[k] = v
            elif k.startswith("lin") and k.endswith(".model.1.weight"):
                mapped[f"lins.{int(k[3])}.weight"] = v
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        missing = [m for m in missing if m not in ("shift", "scale")]
        if missing or unexpected or len(mapped) != 15:
            raise LipspaceError(f"LPIPS weights ({provenance}): not the LPIPS-alex layout (missing {missing}, "
                                f"unexpected {unexpected}); expected features.{{0,3,6,8,10}}.weight/bias and "
                                "lin{0..4}.model.1.weight")
        self.provenance = provenance
        return self

    def _taps(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.taps:
                out.append(x)
        return out

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x, y = x.permute(2, 0, 1)[None], y.permute(2, 0, 1)[None]
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise LipspaceError(f"LPIPS needs two images [B, 3, H, W] (or [H, W, 3]) of equal shape, got "
                                f"{tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 32:
            raise LipspaceError(f"LPIPS needs images of at least 32x32 pixels (AlexNet's strides), got "
                                f"{tuple(x.shape[-2:])}")
        fx = self._taps((x.float() * 2 - 1 - self.shift) / self.scale)
        fy = self._taps((y.float() * 2 - 1 - self.shift) / self.scale)
        total = 0.0
        for lin, a, b in zip(self.lins, fx, fy, strict=True):
            a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
            b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((a - b).square()).mean((2, 3))
        return total[:, 0]


def from_official_files(trunk_path, heads_path) -> LPIPS:
    """Build LPIPS from torchvision's alexnet-owt-7be5be79.pth and the lpips package's v0.1/alex.pth."""
    trunk = torch.load(trunk_path, map_location="cpu", weights_only=True)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in trunk.items() if k.startswith("features.")}
    state.update({k: v for k, v in heads.items() if k.startswith("lin")})
    return LPIPS().load_official_state(state, f"LPIPS v0.1 alex from {Path(trunk_path).name} + {Path(heads_path).name}")


def load_lpips(path: str | Path | None = None, download="auto") -> LPIPS:
    """LPIPS with official weights; see the module docstring for the lookup order. ``download``: ``auto`` fetches
    the two official files into the cache when their hosts answer (``lipspace.utils.assets.download_checked``: probed
    once per process, a few seconds at most, never with $LIPSPACE_OFFLINE), ``true`` always tries, ``false`` never
    touches the network. Raises a LipspaceError naming what to provide when no weights are found or fetched."""
    from lipspace.utils.assets import (KNOWN_ASSETS, AssetUnavailable, asset_places, cache_dir, download_checked,
                                 download_mode, file_sha256, resolve_asset)

    mode = download_mode(download)
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise LipspaceError(f"{p}: LPIPS weights not found. Give the path of lpips_alex_v0.1.pth (AlexNet "
                                "features + LPIPS heads in one state dict).")
        state = torch.load(p, map_location="cpu", weights_only=True)
        return LPIPS().load_official_state(state, f"LPIPS v0.1 alex from {p.name} (sha256 {file_sha256(p)[:12]})")
    asset = KNOWN_ASSETS[ASSET]
    try:
        p = resolve_asset(asset.name, asset.sha256, None)
        state = torch.load(p, map_location="cpu", weights_only=True)
        return LPIPS().load_official_state(state, f"LPIPS v0.1 alex ({asset.name}, sha256 {asset.sha256[:12]})")
    except AssetUnavailable:
        combined = f"{ASSET} is not at {' or '.join(map(str, asset_places(ASSET)))}"
    cache = cache_dir()
    trunk, heads = cache / "alexnet-owt-7be5be79.pth", cache / "lpips_v0.1_alex_heads.pth"
    place = (f"put it in {cache} (or put {ASSET}, the two in one state dict, in {cache} or in "
             f"$LIPSPACE_ASSETS/models/)")
    try:
        if not trunk.is_file():
            download_checked(trunk.name, LPIPS_OFFICIAL_URLS["trunk"], trunk, sha256_prefix=TRUNK_SHA256_PREFIX,
                             download=mode, place=place)
        if not heads.is_file():  # no published digest: load_official_state checks the layout
            download_checked(heads.name, LPIPS_OFFICIAL_URLS["heads"], heads, download=mode, place=place)
    except LipspaceError as e:  # not downloaded (why) or a download failing its checksum
        raise LipspaceError(f"LPIPS weights not found ({combined}) and the official files were not fetched: "
                            f"{e}") from None
    return from_official_files(trunk, heads)
