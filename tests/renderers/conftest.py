"""Renderer tests run on one thread: their tiny tensors gain nothing from two, and lose a lot when the
second core is busy (OpenMP barriers wait on a preempted thread)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
