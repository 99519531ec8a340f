"""Every metric against a case whose answer is known by construction (a wrong formula fails here):
the Fréchet distance against the closed form for Gaussians, ObjMC on hand-built trajectories, DAI on
hand-built images, EPE under a known shift, PSNR / SSIM against independent implementations."""

import numpy as np
import pytest
from scipy import linalg, ndimage

from trackstream.eval.drag_metrics import dai, entity_point, nearest_track, objmc
from trackstream.eval.frechet import feature_statistics, frechet_distance, frechet_from_features
from trackstream.eval.metrics import epe, frozen_epe, motion_epe, video_psnr, video_ssim


def test_frechet_distance_matches_the_closed_form_for_gaussians():
    rng = np.random.default_rng(0)
    # diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(s1) - sqrt(s2))^2
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    s1, s2 = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(s1) - np.sqrt(s2)) ** 2)
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-10)
    # full covariances that commute (same eigenvectors): the same formula in the eigenbasis
    q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    c1, c2 = q @ np.diag(s1) @ q.T, q @ np.diag(s2) @ q.T
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(expected, rel=1e-8)
    # a general pair against the definition with an independent matrix root
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    c1, c2 = a @ a.T + np.eye(4), b @ b.T + np.eye(4)
    root = linalg.sqrtm(linalg.sqrtm(c1) @ c2 @ linalg.sqrtm(c1)).real  # tr of this = tr((c1 c2)^1/2)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(c1 + c2 - 2 * root)
    assert frechet_distance(mu1, c1, mu2, c2) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_is_zero_for_identical_sets_and_symmetric():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(200, 8)), rng.normal(loc=0.3, size=(150, 8))
    assert frechet_from_features(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_from_features(x, y) == pytest.approx(frechet_from_features(y, x), rel=1e-9)
    assert frechet_from_features(x, y) > 0.5  # the 0.3 shift on 8 dims: |d mu|^2 ~ 0.72
    st = feature_statistics(x)
    assert st.mu.dtype == np.float64 and st.sigma.shape == (8, 8) and st.count == 200
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(x[:1])


def test_objmc_on_hand_built_trajectories():
    gt = np.array([[[0, 0], [10, 0], [20, 0]]], np.float64)  # one entity, 3 frames
    pred = gt + np.array([[[0, 0], [3, 4], [0, 0]]])  # off by 5 px at frame 1
    assert objmc([pred], [gt]) == pytest.approx(5 / 3)  # frame 0 counts: (0 + 5 + 0) / 3
    # a flat mean over all videos' entries (not a mean of per-video means)
    gt2 = np.zeros((2, 3, 2))
    pred2 = gt2 + np.array([1.0, 0])
    assert objmc([pred, pred2], [gt, gt2]) == pytest.approx((5 + 6) / 9)
    # dict form: only keys in both; positions rounded to integer pixels first
    assert objmc([{"1": [[0.4, 0], [3.6, 0]], "9": [[0, 0], [0, 0]]}], [{"1": [[0, 0], [3, 0]]}]) == pytest.approx(0.5)


def test_entity_point_is_the_centre_of_the_largest_inscribed_circle():
    mask = np.zeros((40, 60), bool)
    mask[5:35, 10:20] = True  # a thin bar ...
    mask[10:31, 30:51] = True  # ... and a 21 x 21 square: its centre is farthest from the border
    assert entity_point(mask) == (40, 20)
    tracks = np.array([[[0, 0], [39, 21], [10, 10]]], np.float64)  # [T=1, N=3, 2]
    assert nearest_track(tracks, entity_point(mask)) == 1


def test_dai_on_hand_built_images():
    orig = np.zeros((20, 20, 3))
    orig[4:7, 4:7] = 1.0  # a white 3x3 patch at (5, 5)
    moved = np.zeros_like(orig)
    moved[9:12, 14:17] = 1.0  # moved to (15, 10)
    assert dai(moved, orig, [[5, 5]], [[15, 10]], gamma=1) == 0.0  # arrived exactly
    assert dai(orig, orig, [[5, 5]], [[15, 10]], gamma=1) == pytest.approx(27 / 9)  # 9 px x 3 ch, all wrong
    # two points, one perfect and one fully wrong: 1/N (paper) vs GoodDrag's code 1/N^2
    h, t = [[5, 5], [5, 5]], [[15, 10], [2, 15]]
    assert dai(moved, orig, h, t, gamma=1) == pytest.approx(3.0 / 2)
    assert dai(moved, orig, h, t, gamma=1, per_point="reference") == pytest.approx(3.0 / 4)
    assert dai((moved * 255).astype(np.uint8), (orig * 255).astype(np.uint8), [[5, 5]], [[15, 10]]) == 0.0
    with pytest.raises(ValueError, match="leaves the 20x20 image"):
        dai(moved, orig, [[5, 5]], [[19, 10]], gamma=1)


def test_epe_under_a_known_shift_counts_visible_points_only():
    gt = np.random.default_rng(2).uniform(0, 50, (6, 10, 2))
    vis = np.ones((6, 10), bool)
    vis[3:, :4] = False
    shifted = gt + np.array([3.0, 4.0])
    assert epe(shifted, gt, vis) == pytest.approx(5.0)
    bad = shifted.copy()
    bad[3:, :4] += 100  # errors where the input is invisible do not count
    assert epe(bad, gt, vis) == pytest.approx(5.0)
    assert np.isnan(epe(gt, gt, np.zeros_like(vis)))


def test_psnr_and_ssim_against_independent_implementations():
    rng = np.random.default_rng(3)
    gt = rng.integers(0, 256, (3, 24, 24, 3)).astype(np.uint8)
    gt = ndimage.uniform_filter(gt.astype(float), size=(1, 3, 3, 1)).astype(np.uint8)  # some structure
    pred = np.clip(gt.astype(int) + rng.integers(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    mse = np.mean((pred[1:].astype(float) - gt[1:].astype(float)) ** 2)
    assert video_psnr(pred, gt) == pytest.approx(10 * np.log10(255**2 / mse))
    # SSIM with scipy's Gaussian filter (same window: sigma 1.5, truncate 3.5) on the valid region
    r = int(3.5 * 1.5 + 0.5)
    vals = []
    for t in range(1, 3):
        for c in range(3):
            x, y = pred[t, :, :, c].astype(float), gt[t, :, :, c].astype(float)
            f = lambda a: ndimage.gaussian_filter(a, 1.5, truncate=3.5, mode="constant")[r:-r, r:-r]  # noqa: E731
            mx, my = f(x), f(y)
            vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
            c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
            vals.append((((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())
    assert video_ssim(pred, gt) == pytest.approx(float(np.mean(vals)), rel=1e-6)
    assert video_ssim(gt, gt) == pytest.approx(1.0)


def _textured_video(shift_per_frame, *, frames=9, size=64, seed=0):
    rng = np.random.default_rng(seed)
    tex = ndimage.gaussian_filter(rng.uniform(0, 255, (3 * size, 3 * size, 3)), (2, 2, 0))
    tex = (tex - tex.min()) / np.ptp(tex) * 255
    out = []
    for t in range(frames):
        dx, dy = np.round(np.asarray(shift_per_frame) * t).astype(int)
        out.append(tex[size - dy : 2 * size - dy, size - dx : 2 * size - dx])  # content moves by (+dx, +dy)
    return np.stack(out).astype(np.uint8)


def test_motion_epe_protocol_coherent_vs_incoherent_video_and_occlusion():
    from trackstream.data.trackers import build_tracker

    tracker = build_tracker("lk_plain")
    g = np.stack(np.meshgrid(np.arange(16, 49, 8.0), np.arange(16, 49, 8.0)), -1).reshape(-1, 2)  # [25, 2]
    tracks = np.stack([g + [1.0 * t, 0.5 * t] for t in range(9)])  # the content's true motion
    vis = np.ones(tracks.shape[:2], bool)
    video = _textured_video((1.0, 0.5))
    good, per_frame, _ = motion_epe(video, tracks, vis, tracker)
    assert good < 1.0 and per_frame[0] == pytest.approx(0.0, abs=1e-4) and per_frame.shape == (9,)
    # incoherent video (fresh noise every frame): a tracker cannot follow it and the protocol must not
    # reward that; its EPE is that of a prediction that does not move (the error the motion makes)
    noise = np.stack([_textured_video((0, 0), frames=1, seed=s)[0] for s in range(9)])
    bad, _, _ = motion_epe(noise, tracks, vis, tracker)
    frozen, _, _ = frozen_epe(tracks, vis)
    assert frozen == pytest.approx(epe(np.repeat(tracks[:1], 9, axis=0), tracks, vis))
    assert bad > 5 * good and bad > 0.5 * frozen
    # the input hides a point for frames 3..5 (not scored) and shows it again (scored again); a track
    # first visible at frame 2 is queried there
    vis2 = vis.copy()
    vis2[3:6, 0] = False
    vis2[:2, 1] = False
    occl, _, _ = motion_epe(video, tracks, vis2, tracker)
    assert occl < 1.0
