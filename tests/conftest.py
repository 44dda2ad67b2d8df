"""Test-suite settings: tiny tensors run fastest on one intra-op thread (no OpenMP hand-offs)."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
