import pytest
import torch


@pytest.fixture(autouse=True)
def _fixed_threads_and_seed():
    torch.manual_seed(1234)
    yield
