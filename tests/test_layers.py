"""The package floors: models, diffusion -> data -> stream -> eval -> train -> distill -> pipeline.

The checker is the workspace's (``../shared/tools/check_layers.py``, beside the checkout in CI); it
counts every import, lazy ones and "module:attr" strings included, and every import circle."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT.parent / "shared" / "tools" / "check_layers.py"


@pytest.mark.skipif(not CHECKER.is_file(), reason=f"{CHECKER} is not beside this checkout")
def test_imports_only_go_down_the_floors():
    r = subprocess.run([sys.executable, str(CHECKER), str(ROOT)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "layers ok" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]


def test_every_top_level_package_is_on_a_floor():
    floors = {"models", "diffusion", "data", "stream", "eval", "train", "distill", "pipeline"}
    packages = {p.parent.name for p in ROOT.glob("*/__init__.py")}
    assert packages - floors == set(), f"packages without a floor: {sorted(packages - floors)}"
