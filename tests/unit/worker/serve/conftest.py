"""Serving's unit tests share two cores with other work: one torch thread each."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> None:
    torch.set_num_threads(1)
