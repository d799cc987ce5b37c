"""TorsoImageComposite (torso=nerf under the Gaussian renderer): the torso image is the ray compositor's torso along
the same pixels' rays, the head is drawn over it, AD-NeRF's stages train what they should, the torso NeRF learns the
torso under a fixed head, and the config picks the compositor by the renderer's batch kind."""

import functools

import pytest
import torch

from lipspace.data.clip import load_clip
from lipspace.data.sampling import frame_cameras, frame_rays
from lipspace.renderers import MLPField, NeRFRenderer
from lipspace.renderers.gaussian import GaussianRenderer
from lipspace.renderers.torso import TorsoComposite
from lipspace.renderers.torso_images import TorsoImageComposite
from lipspace.utils.errors import LipspaceError

SMALL = dict(n_surface=60, n_fill=30, n_mouth=12, deform={"hidden": 16, "n_levels": 4, "log2_table": 10},
             mouth_deform={"hidden": 8, "n_levels": 2, "log2_table": 8})
TORSO = functools.partial(MLPField, hidden=16, n_layers=2, pos_freqs=3, dir_freqs=1, density_activation="softplus")


@pytest.fixture
def clip(tiny_dataset):
    """The tiny clip with a torso: a band of the bottom rows outside the head in one colour, parsing class 9."""
    clip = load_clip(tiny_dataset)
    idx = list(range(clip.n_frames))
    frames, parsing = clip.frames[idx].clone(), torch.as_tensor(clip.parsing[idx]).clone()
    band = torch.zeros_like(parsing, dtype=torch.bool)
    band[:, -6:] = True
    band &= parsing == 0
    frames[band] = torch.tensor([200, 60, 40], dtype=frames.dtype)
    parsing[band] = 9
    clip.frames, clip.parsing = frames, parsing
    return clip


def _composite(clip, **kw):
    torch.manual_seed(0)
    r = TorsoImageComposite(functools.partial(GaussianRenderer, **SMALL), TORSO, cond_dim=3, n_samples=8, **kw)
    r.setup_scene(clip)
    return r


def test_torso_image_is_the_ray_compositors_torso_along_the_same_rays(clip):
    img = _composite(clip).eval()
    ray = TorsoComposite(functools.partial(NeRFRenderer, field=functools.partial(MLPField, hidden=8, n_layers=2),
                                           n_coarse=4, n_fine=0), TORSO, cond_dim=3, n_samples=8).eval()
    ray.setup_scene(clip)
    ray.torso.load_state_dict(img.torso.state_dict())
    cond = torch.randn(1, 3)
    cams, rays = frame_cameras(clip, [3], downscale=2), frame_rays(clip, 3, downscale=2)
    with torch.no_grad():
        mine = img.torso_image(cams["pose"], cams["intrinsics"], cams["hw"], cams["bg"], cond)
        n = rays["rays_o"].shape[0]
        ref = ray.render_torso(rays["rays_o"], rays["rays_d"], cond.expand(n, 3), rays["bg"],
                               rays["pose"].reshape(1, 4, 4).expand(n, 4, 4))
    assert mine["rgb"].shape == (1, *cams["hw"], 3)
    assert torch.allclose(mine["rgb"].reshape(-1, 3), ref["rgb"], atol=1e-5)
    assert torch.allclose(mine["acc"].reshape(-1), ref["acc"], atol=1e-5)
    assert float(ref["acc"].max()) > 0  # the torso's rays do cross its sphere


class ConstTorso(torch.nn.Module):
    """Colour ``rgb`` and density ``sigma`` everywhere (a known torso field)."""

    def __init__(self, cond_dim, rgb=(0.2, 0.9, 0.4), sigma=0.0):
        super().__init__()
        self.rgb, self.sigma = torch.tensor(rgb), sigma

    def forward(self, x, d, c):
        r, s = x.shape[:2]
        return self.rgb.expand(r, s, 3).clone(), torch.full((r, s), float(self.sigma))


@pytest.mark.parametrize("downscale", [1, 2, 5])
def test_a_downscaled_torso_composites_over_the_full_resolution_background(clip, downscale):
    cams = frame_cameras(clip, [0, 1])
    h, w = cams["hw"]
    inner = (slice(None), slice(h // 4, 3 * h // 4), slice(w // 4, 3 * w // 4))  # well inside the torso's sphere
    for sigma in (0.0, 1e4):
        r = TorsoImageComposite(functools.partial(GaussianRenderer, **SMALL),
                                functools.partial(ConstTorso, sigma=sigma), cond_dim=3, n_samples=4,
                                image_downscale=downscale).eval()
        r.setup_scene(clip)
        with torch.no_grad():
            out = r.torso_image(cams["pose"], cams["intrinsics"], cams["hw"], cams["bg"], torch.zeros(2, 3))
        assert out["rgb"].shape == cams["bg"].shape  # full resolution, whatever the torso's
        if sigma == 0:  # nothing of the torso: the sharp background itself
            assert torch.allclose(out["rgb"], cams["bg"], atol=1e-6) and float(out["acc"].abs().max()) < 1e-6
        else:  # an opaque torso: its colour wherever its sphere is, the background where it is not (the corners)
            assert torch.allclose(out["rgb"][inner], torch.tensor([0.2, 0.9, 0.4]).expand_as(out["rgb"][inner]))
            if downscale <= 2:  # (at 1/5 of 24 px the corner block's ray already meets the sphere)
                assert torch.allclose(out["rgb"][:, 0, 0], cams["bg"][:, 0, 0], atol=1e-6)
    with pytest.raises(LipspaceError, match="image_downscale"):
        TorsoImageComposite(functools.partial(GaussianRenderer, **SMALL), TORSO, cond_dim=3, image_downscale=0)


def test_the_head_is_drawn_over_the_torso_and_both_train_together(clip):
    r = _composite(clip)
    batch = frame_cameras(clip, [0, 2], downscale=2)
    cond = torch.randn(2, 3)
    r.eval()
    with torch.no_grad():
        out = r.render(batch, cond)
        torso = r.torso_image(batch["pose"], batch["intrinsics"], batch["hw"], batch["bg"], cond)
        head = r.head.render({**batch, "bg": torso["rgb"]}, cond)
    assert torch.allclose(out["rgb"], head["rgb"]) and torch.equal(out["torso_acc"], torso["acc"])
    frame = frame_cameras(clip, [2], downscale=2)
    assert torch.allclose(r.render_frame(frame, cond[1]), out["rgb"][1].clamp(0, 1), atol=1e-6)
    r.train().on_train_step(1)  # head_stage=0: head and torso trained together from the first step
    r.render(batch, cond)["rgb"].square().sum().backward()
    assert r.head.means.grad is not None and all(p.grad is not None for p in r.torso.parameters())


def test_ad_nerf_stages_on_whole_images(clip, monkeypatch):
    r = _composite(clip, head_stage=0.5, total_steps=10)
    batch = frame_cameras(clip, [0, 1], downscale=2)
    cond = torch.zeros(2, 3)
    hooks = []
    monkeypatch.setattr(r.head, "on_train_step", hooks.append)

    def grads(out):
        r.zero_grad(set_to_none=True)
        out["rgb"].square().sum().backward()
        return r.head.means.grad is not None, any(p.grad is not None for p in r.torso.parameters())

    r.train().on_train_step(4)  # head stage: the head alone over the ground-truth torso pixels
    out = r.render(batch, cond)
    gt = (batch["ray_class"] == 9)[..., None]
    assert gt.any()
    ref = r.head.render({**batch, "bg": torch.where(gt, batch["target"], batch["bg"])}, cond)
    assert torch.allclose(out["rgb"], ref["rgb"]) and "torso_acc" not in out
    assert grads(out) == (True, False)
    r.on_train_step(5)  # torso stage: the torso under the fixed head, whose step hook no longer runs
    assert hooks == [4]
    r.perturb = False
    out = r.render(batch, cond)
    r.eval()
    with torch.no_grad():
        ref = r.render(batch, cond)
    r.train()
    assert torch.allclose(out["rgb"], ref["rgb"], atol=1e-5)
    assert grads(out) == (False, True)


def test_the_torso_nerf_learns_the_torso_under_a_fixed_head(clip):
    """Only the torso trains (under a fixed, untrained head): its error on the torso pixels of held-out frames falls
    to under 30 % of the untrained torso's and 10 % of the background's there (the fixed head, untrained, covers part
    of them)."""
    r = _composite(clip, head_stage=0.5, total_steps=2)
    n = clip.n_frames
    train, test = list(range(0, n - 2)), [n - 2, n - 1]
    held_out = frame_cameras(clip, test, downscale=2)
    torso = held_out["ray_class"] == 9
    assert torso.sum() > 10

    def torso_error():
        r.eval()
        with torch.no_grad():
            out = r.render(held_out, torch.zeros(2, 3))
        r.train()
        return float((out["rgb"] - held_out["target"]).square().mean(-1)[torso].mean())

    before = torso_error()
    r.train().on_train_step(1)
    opt = torch.optim.Adam(r.torso.parameters(), lr=1e-2)
    cond = torch.zeros(4, 3)
    for step in range(60):
        batch = frame_cameras(clip, [train[(4 * step + k) % len(train)] for k in range(4)], downscale=2)
        loss = (r.render(batch, cond)["rgb"] - batch["target"]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = torso_error()
    background = float((held_out["bg"] - held_out["target"]).square().mean(-1)[torso].mean())
    assert after < 0.3 * before and after < 0.1 * background, (after, before, background)


def test_the_config_picks_the_compositor_by_batch_kind(tmp_path):
    from lipspace.model.build import build_conditioner, build_renderer
    from lipspace.utils.config import compose_train

    cfg = compose_train(["renderer=gaussian", "torso=nerf"], tmp_path / "run")
    renderer = build_renderer(cfg)(cond_dim=build_conditioner(cfg, n_frames=10).out_dim)
    assert type(renderer) is TorsoImageComposite and type(renderer.head) is GaussianRenderer
    assert renderer.batch_kind == "images" and renderer.image_downscale == 2  # conf/torso/nerf.yaml, images
    cfg = compose_train(["renderer=gaussian", "torso=deform"], tmp_path / "run2")
    with pytest.raises(LipspaceError, match="field"):
        build_renderer(cfg)
    with pytest.raises(LipspaceError, match="batch_kind 'rays'"):
        TorsoImageComposite(functools.partial(NeRFRenderer, field=MLPField), TORSO, cond_dim=3)
