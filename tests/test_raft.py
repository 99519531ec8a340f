"""RAFT-large (trackstream/models/raft.py) against princeton-vl/RAFT on known inputs.

tests/data/raft_reference_flow.npz was written by running the reference code (princeton-vl/RAFT at
2888e15a51fa41140771d3f498ed8023cff098d1: core/raft.py + extractor/update/corr/utils, fp32 on the CPU,
``InputPadder`` then ``model(im1, im2, iters=12, test_mode=True)``, then ``unpad``) loaded with
``synthetic_state(...)`` below and fed ``reference_images()``. The script is the ``_write_fixture``
docstring recipe; nothing from the reference is imported here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trackstream.models.raft import RAFT, pad_to_8

FIXTURE = Path(__file__).parent / "data" / "raft_reference_flow.npz"
H, W = 124, 132  # not multiples of 8 (pads to 128 x 136): features 16 x 17, coarsest pyramid level 2 x 2


def synthetic_state(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A deterministic RAFT state dict: key i of the sorted names draws from torch.manual_seed(i). Conv weights
    are scaled by 1/sqrt(fan-in) so activations stay O(1) through 12 iterations (a non-trivial flow); batch
    norm stats are sensible (positive variances)."""
    out = {}
    for i, name in enumerate(sorted(shapes)):
        shape = tuple(shapes[name])
        torch.manual_seed(i)
        if name.endswith("num_batches_tracked"):
            out[name] = torch.tensor(0, dtype=torch.long)
        elif name.endswith("running_var"):
            out[name] = 1.0 + 0.1 * torch.rand(shape)
        elif name.endswith("running_mean"):
            out[name] = 0.1 * torch.randn(shape)
        elif len(shape) == 4:  # conv weight
            fan_in = shape[1] * shape[2] * shape[3]
            out[name] = torch.randn(shape) / fan_in**0.5
        elif ".norm" in name and name.endswith("weight") or name.endswith("downsample.1.weight"):
            out[name] = 1.0 + 0.1 * torch.randn(shape)  # batch norm scale
        else:  # biases
            out[name] = 0.05 * torch.randn(shape)
    return out


def reference_images() -> tuple[np.ndarray, np.ndarray]:
    """Two uint8 [H, W, 3] frames: smooth colour patterns, the second shifted by (+3.0, -2.0) px (x, y)."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)

    def frame(dx: float, dy: float) -> np.ndarray:
        u, v = x - dx, y - dy
        r = 128 + 100 * np.sin(u / 7.0) * np.cos(v / 9.0)
        g = 128 + 90 * np.cos((u + v) / 11.0)
        b = 128 + 80 * np.sin(np.hypot(u - 60, v - 50) / 6.0)
        return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)

    return frame(0.0, 0.0), frame(3.0, -2.0)


def _model_state() -> dict[str, torch.Tensor]:
    return synthetic_state({k: tuple(v.shape) for k, v in RAFT().state_dict().items()})


def _as_batch(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float()


@pytest.mark.slow
def test_flow_equals_the_reference_implementation(tmp_path):
    ckpt = tmp_path / "raft-things.pth"
    torch.save({f"module.{k}": v for k, v in _model_state().items()}, ckpt)  # the DataParallel key layout
    model = RAFT.from_checkpoint(ckpt, device="cpu", dtype=torch.float32)
    a, b = reference_images()
    expected = np.load(FIXTURE)
    with torch.no_grad():
        flow = model.flow(_as_batch(a), _as_batch(b))
        pad = pad_to_8(H, W)
        pa, pb = (torch.nn.functional.pad(_as_batch(x), pad, mode="replicate") for x in (a, b))
        low, _ = model(pa, pb)
    assert flow.shape == (1, 2, H, W)
    assert float(np.abs(expected["flow"]).mean()) > 0.1  # the fixture is a non-trivial flow
    np.testing.assert_allclose(low.numpy(), expected["flow_low"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(flow.numpy(), expected["flow"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_unprefixed_keys_load_too(tmp_path):
    ckpt = tmp_path / "plain.pth"
    torch.save(_model_state(), ckpt)
    assert isinstance(RAFT.from_checkpoint(ckpt), RAFT)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape", "garbage"])
def test_a_wrong_checkpoint_is_one_line_naming_the_file(tmp_path, damage):
    state = {f"module.{k}": v for k, v in _model_state().items()}
    ckpt = tmp_path / "wrong.pth"
    if damage == "missing":
        state.pop("module.update_block.gru.convq2.weight")
    elif damage == "unexpected":
        state["module.update_block.extra.weight"] = torch.zeros(1)
    elif damage == "shape":
        state["module.fnet.conv2.weight"] = torch.zeros(128, 128, 1, 1)  # RAFT-small's feature width
    if damage == "garbage":
        ckpt.write_bytes(b"not a checkpoint" * 8)
    else:
        torch.save(state, ckpt)
    with pytest.raises(ValueError) as err:
        RAFT.from_checkpoint(ckpt)
    msg = str(err.value)
    assert "\n" not in msg and str(ckpt) in msg
    if damage == "missing":
        assert "update_block.gru.convq2.weight" in msg
    if damage == "unexpected":
        assert "update_block.extra.weight" in msg
