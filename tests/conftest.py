"""Suite-wide fixtures."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for every test: the tests run many tiny tensor ops, where a second thread only
    spins (measured on the 2-core CI machine under load: an 8-image ODE likelihood 0.15 s with one thread,
    4.6 s with two; a 2-D mixture score 0.9 ms vs 80 ms). Restored afterwards. Subprocess tests set
    OMP_NUM_THREADS=1 themselves."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
