"""Disentangled landmark autoencoder: normalisation invariances and that swapping training splits mouth / eyes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lipspace.conditioners.landmark_ae import MOUTH, LandmarkAE, normalise_landmarks, train_landmark_ae
from lipspace.utils.errors import LipspaceError


def _template() -> np.ndarray:
    t = np.zeros((68, 2))
    a = np.linspace(-1.2, 1.2, 17)
    t[0:17] = np.stack([a, 0.6 + 0.9 * (1 - a ** 2 / 1.44) ** 0.5 * 0 + 1.0 - 0.4 * a ** 2], 1) - [0, 0.6]
    t[17:22] = np.stack([np.linspace(-0.9, -0.2, 5), np.full(5, -0.45)], 1)
    t[22:27] = np.stack([np.linspace(0.2, 0.9, 5), np.full(5, -0.45)], 1)
    t[27:31] = np.stack([np.zeros(4), np.linspace(-0.2, 0.35, 4)], 1)
    t[31:36] = np.stack([np.linspace(-0.25, 0.25, 5), np.full(5, 0.45)], 1)
    for k0, cx in ((36, -0.5), (42, 0.5)):
        ang = np.linspace(0, 2 * np.pi, 7)[:-1]
        t[k0:k0 + 6] = np.stack([cx + 0.2 * np.cos(ang + np.pi), -0.25 + 0.07 * np.sin(ang + np.pi)], 1)
    ang = np.linspace(0, 2 * np.pi, 13)[:-1]
    t[48:60] = np.stack([0.4 * np.cos(ang + np.pi), 0.8 + 0.12 * np.sin(ang + np.pi)], 1)
    ang = np.linspace(0, 2 * np.pi, 9)[:-1]
    t[60:68] = np.stack([0.25 * np.cos(ang + np.pi), 0.8 + 0.05 * np.sin(ang + np.pi)], 1)
    return t


def _clips(n_ids=3, n=300, seed=0):
    """Landmarks of several identities with independent mouth opening and eye openness, random 2-D poses."""
    rng = np.random.default_rng(seed)
    base = _template()
    pools, factors = [], []
    for _ in range(n_ids):
        ident = base + rng.normal(0, 0.04, base.shape)
        mouth = rng.uniform(0, 1, n)
        eye = rng.uniform(0, 1, n)
        pts = np.repeat(ident[None], n, 0)
        lower = [k for k in MOUTH if pts[0, k, 1] > 0.8]
        pts[:, lower, 1] += 0.35 * mouth[:, None]
        pts[:, [k for k in range(48, 68) if k not in lower], 1] -= 0.05 * mouth[:, None]
        for eye0 in (36, 42):
            up = [eye0 + 1, eye0 + 2]
            pts[:, up, 1] += 0.08 * (1 - eye[:, None])  # upper lid closes
        th = rng.uniform(-0.3, 0.3, n)
        sc = rng.uniform(80, 140, n)
        rot = np.stack([np.stack([np.cos(th), -np.sin(th)], -1), np.stack([np.sin(th), np.cos(th)], -1)], 1)
        pix = np.einsum("nij,nkj->nki", rot, pts) * sc[:, None, None] + rng.uniform(100, 300, (n, 1, 2))
        pools.append(pix.astype(np.float32))
        factors.append(np.stack([mouth, eye], 1))
    return pools, factors


def test_normalisation_removes_position_rotation_and_scale():
    pools, _ = _clips(1, 5)
    x = pools[0]
    th = 0.4
    r = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    y = (x @ r.T) * 2.5 + 17.0
    assert torch.allclose(normalise_landmarks(x), normalise_landmarks(y), atol=1e-4)
    n = normalise_landmarks(x)
    assert torch.allclose(n[:, 45] - n[:, 36], torch.tensor([1.0, 0.0]).expand(5, 2), atol=1e-5)
    with pytest.raises(LipspaceError, match=r"\[N, 68, 2\]"):
        normalise_landmarks(np.zeros((3, 478, 2)))


def _opening(x: torch.Tensor) -> np.ndarray:
    """Mouth opening (lower-lip points minus upper-lip points, y) and mean upper-lid height of both eyes."""
    x = x.numpy()
    mouth = x[:, 54:60, 1].mean(1) - x[:, 49:54, 1].mean(1)
    lids = x[:, [37, 38, 43, 44], 1].mean(1) - x[:, [36, 39, 42, 45], 1].mean(1)
    return np.stack([mouth, lids], 1)


def _r2(code: torch.Tensor, y: np.ndarray) -> float:
    """R^2 of a least-squares linear fit of y from code (+ bias)."""
    x = np.c_[code.numpy(), np.ones(len(code))]
    w = np.linalg.lstsq(x, y, rcond=None)[0]
    return float(1 - ((x @ w - y) ** 2).mean() / y.var())


def _trained(encoder: str):
    pools, factors = _clips()
    model, losses = train_landmark_ae(pools, steps=600, batch=128, seed=0, model=LandmarkAE(encoder=encoder))
    return pools, factors, model, losses


@pytest.fixture(scope="module")
def trained():
    return _trained("regions")


def _swap_and_leak(pools, factors, model):
    xi = normalise_landmarks(pools[0][:200])
    xj = normalise_landmarks(pools[1][:200])
    with torch.no_grad():
        mi, ei, ri = model.encode(xi)
        mj, ej, rj = model.encode(xj)
        mouth_swapped = _opening(model.decode(mj, ei, ri))
        eye_swapped = _opening(model.decode(mi, ej, ri))
    fi, fj = factors[0][:200], factors[1][:200]
    leak = {"mouth_from_eye_code": _r2(ei, fi[:, 0]), "eye_from_mouth_code": _r2(mi, fi[:, 1]),
            "mouth_from_mouth_code": _r2(mi, fi[:, 0]), "eye_from_eye_code": _r2(ei, fi[:, 1])}
    return mouth_swapped, eye_swapped, fi, fj, leak


def test_swapping_codes_moves_the_right_region(trained):
    """decode(mouth_j, eye_i, rest_i): the mouth opens like frame j's, the eyes like frame i's (across identities)."""
    pools, factors, model, losses = trained
    assert losses["recon"] < 0.02
    mouth_swapped, eye_swapped, fi, fj, _ = _swap_and_leak(pools, factors, model)
    corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])  # noqa: E731
    assert corr(mouth_swapped[:, 0], fj[:, 0]) > 0.9 and abs(corr(mouth_swapped[:, 0], fi[:, 0])) < 0.3
    assert corr(mouth_swapped[:, 1], -fi[:, 1]) > 0.8  # eyes stay frame i's (lid lower = more closed)
    assert corr(eye_swapped[:, 1], -fj[:, 1]) > 0.8 and corr(eye_swapped[:, 0], fi[:, 0]) > 0.9


def test_region_encoders_leak_no_more_than_chance(trained):
    """Each code predicts its own factor (R^2 ~ 1) and not the other's (R^2 at chance, ~dims / frames)."""
    _, _, _, _, leak = _swap_and_leak(*trained[:3])
    assert leak["mouth_from_mouth_code"] > 0.95 and leak["eye_from_eye_code"] > 0.95
    assert leak["mouth_from_eye_code"] < 0.1 and leak["eye_from_mouth_code"] < 0.2


@pytest.mark.slow
def test_full_encoder_codes_carry_both_regions():
    """The documented limitation of one encoder over all points: the swaps work, yet each code knows both."""
    _, _, _, _, leak = _swap_and_leak(*_trained("full")[:3])
    assert leak["mouth_from_eye_code"] > 0.8 and leak["eye_from_mouth_code"] > 0.8


def test_bad_encoder_name_is_clear():
    with pytest.raises(LipspaceError, match="'regions' or 'full'"):
        LandmarkAE(encoder="both")
