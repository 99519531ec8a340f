"""ADSR re-standardisation (per frame and channel, global, x0 against neighbours) and the forward
splat that carries reference features to a drag's target tokens."""

import numpy as np
import torch

from trackstream.stream.drag.adsr import mask_tokens, rectify_x0, restandardize, splat_features
from trackstream.stream.drag.instructions import Rotation2D, Translation


def test_restandardize_matches_the_reference_statistics():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(1, 4, 3, 8, 8, generator=g) * torch.arange(1.0, 5.0).view(1, 4, 1, 1, 1) + 2
    drifted = ref * 3 - 5 + 0.1 * torch.randn(ref.shape, generator=g)
    out = restandardize(drifted, ref, dims=(0, 3, 4))  # per (channel, frame) of [B, C, F, h, w]
    torch.testing.assert_close(out.mean(dim=(0, 3, 4)), ref.mean(dim=(0, 3, 4)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(0, 3, 4)), ref.std(dim=(0, 3, 4)), atol=1e-5, rtol=1e-5)
    glob = restandardize(drifted, ref, None)
    assert abs(float(glob.mean() - ref.mean())) < 1e-5 and abs(float(glob.std() - ref.std())) < 1e-4
    x0 = torch.randn(1, 4, 3, 8, 8, generator=g) * 5 + 3
    nb = [torch.randn(1, 4, 3, 8, 8, generator=g) for _ in range(2)]
    r = rectify_x0(x0, nb)
    pool = torch.cat([*nb, r], dim=2)  # the rectified x0 joins its neighbours' statistics
    assert abs(float(r.mean() - torch.cat([*nb, x0], 2).mean())) < 1e-5
    assert torch.equal(rectify_x0(x0, []), x0) and pool.shape[2] == 9


def test_splat_moves_features_with_the_trajectory():
    token = 4
    mask = np.zeros((32, 32), bool)
    mask[8:16, 8:16] = True  # tokens (2..3, 2..3)
    src = mask_tokens(mask, token)
    assert len(src) == 4
    ref = torch.arange(2 * 8 * 8, dtype=torch.float32).view(2, 8, 8)
    t = Translation(points=np.array([[10.0, 10.0], [18.0, 14.0]]))  # +2 tokens in x, +1 in y
    warped, target = splat_features(ref, src, t.displace(src, 1), token)
    assert target.sum() == 4 and target[3:5, 4:6].all()
    assert torch.equal(warped[:, 3:5, 4:6], ref[:, 2:4, 2:4])
    rot = Rotation2D(center=np.array([15.5, 15.5]), start=np.array([20.0, 15.5]), arms=np.array([[15.5, 20.0]]))
    _, target = splat_features(ref, src, rot.displace(src, 1), token)  # a quarter turn clockwise about the centre
    assert target.sum() == 4 and target[2:4, 4:6].all()  # top-left block -> top-right block (y down)
