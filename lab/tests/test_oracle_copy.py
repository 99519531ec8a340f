import numpy as np
import pytest
import torch

from lab.oracle_copy import shifted_latents


def test_shifted_latents_quantise_the_pan_to_tokens_and_cells():
    lat = torch.randn(1, 4, 3, 8, 8)
    T, N = 9, 5
    tracks = np.zeros((T, N, 2), np.float32)
    tracks[:, :, 0] = np.arange(T)[:, None] * 3.0 + 10  # 3 px / frame to the right
    tracks[:, :, 1] = 20.0
    vis = np.ones((T, N), bool)
    # latent frame 1 <- pixel frame 2 (6 px); latent frame 2 <- pixel frame 6 (18 px)
    tok = shifted_latents(lat, [tracks], [vis], quantum_px=8, spatial_factor=4)
    assert torch.equal(tok[:, :, 0], lat[:, :, 0])
    assert torch.equal(tok[0, :, 1], torch.roll(lat[0, :, 0], shifts=(0, 2), dims=(1, 2)))  # 6 px -> 1 token
    assert torch.equal(tok[0, :, 2], torch.roll(lat[0, :, 0], shifts=(0, 4), dims=(1, 2)))  # 18 px -> 2 tokens
    cell = shifted_latents(lat, [tracks], [vis], quantum_px=4, spatial_factor=4)
    assert torch.equal(
        cell[0, :, 1], torch.roll(lat[0, :, 0], shifts=(0, 2), dims=(1, 2))
    )  # 6 px -> 2 cells (round half even)
    assert torch.equal(
        cell[0, :, 2], torch.roll(lat[0, :, 0], shifts=(0, 4), dims=(1, 2))
    )  # 18 px -> 4 cells (4.5 -> 4)
    with pytest.raises(ValueError, match="quantum_px"):
        shifted_latents(lat, [tracks], [vis], quantum_px=6, spatial_factor=4)
