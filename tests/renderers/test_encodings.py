"""PositionalEncoding: output dims and values at a known point."""

import math

import torch

from lipspace.renderers.encodings import PositionalEncoding


def test_out_dims_match_nerf():
    pos, dirs = PositionalEncoding(3, 10), PositionalEncoding(3, 4)
    assert pos.out_dim == 63 and dirs.out_dim == 27
    assert pos(torch.zeros(5, 7, 3)).shape == (5, 7, 63)
    assert dirs(torch.zeros(4, 3)).shape == (4, 27)
    assert PositionalEncoding(3, 4, include_input=False).out_dim == 24


def test_values_at_known_point():
    x = torch.tensor([[0.5, -1.0, 2.0]])
    enc = PositionalEncoding(3, 3)(x)[0]
    expected = list(x[0])
    for k in range(3):  # NeRF / AD-NeRF layout: [x, sin(f0 x), cos(f0 x), sin(f1 x), ...]
        expected += [math.sin(2**k * v) for v in x[0].tolist()]
        expected += [math.cos(2**k * v) for v in x[0].tolist()]
    torch.testing.assert_close(enc, torch.tensor(expected), atol=1e-6, rtol=0)


def test_zero_input_pattern():
    enc = PositionalEncoding(3, 2)(torch.zeros(1, 3))[0]
    torch.testing.assert_close(enc, torch.tensor([0, 0, 0, 0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1.0]))
