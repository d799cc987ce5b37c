"""3-D Gaussian splatting (TalkingGaussian style), pure PyTorch with an optional gsplat backend: projection (EWA),
a tile rasteriser (``rasterise``), initialisation from the clip, the two-branch deformation field, densification,
the renderer (``renderer=gaussian``)."""

from lipspace.renderers.gaussian.renderer import GaussianRenderer

__all__ = ["GaussianRenderer"]
