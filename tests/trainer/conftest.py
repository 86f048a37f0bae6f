"""Fixtures of the trainer / NeuroFMX tests."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (the float64 references and the small models need no more; the
    2-core CI machine runs Ray next to them), restored afterwards."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
