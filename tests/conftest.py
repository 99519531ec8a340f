"""Shared pytest fixtures. Tests run on CPU with tiny configs; determinism via fixed seeds."""

import os

# Must be set before torch starts its OpenMP pool: with active spin-waiting, torch threads
# busy-wait on each other when the 2 cores are shared, making tests 10-50x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
# pytest-xdist (make test runs 2 workers): the cores are shared between the workers
_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // _workers)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
