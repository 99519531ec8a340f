"""The Fréchet distance every distribution metric here shares (FID, FVD and the labelled proxies).

    FD(N(mu1, S1), N(mu2, S2)) = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2))

One implementation, in float64 throughout: the statistics (``feature_statistics``: mean and the
unbiased covariance, as pytorch-fid and StyleGAN-V compute them) and the distance. The matrix
square root is ``scipy.linalg.sqrtm``; when S1 S2 is near singular (few samples for the feature
dimension) sqrtm returns non-finite values and the product is regularised with eps * I on both
covariances, as pytorch-fid does; a non-negligible imaginary part of the root (> 1e-3 on the
diagonal) means the covariances are not valid and is an error, a negligible one is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["FeatureStats", "feature_statistics", "frechet_distance", "frechet_from_features"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FeatureStats:
    """Mean [D] and covariance [D, D] (float64) of N feature vectors."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def feature_statistics(features: np.ndarray) -> FeatureStats:
    """Features [N, D] -> mean and unbiased covariance (rowvar=False), float64. Needs N >= 2."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, D], got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 feature vectors, got {x.shape[0]}: score more videos / frames")
    if not np.isfinite(x).all():
        raise ValueError("features hold non-finite values (NaN / inf): check the inputs and the feature network")
    return FeatureStats(mu=x.mean(axis=0), sigma=np.cov(x, rowvar=False), count=int(x.shape[0]))


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, *, eps: float = 1e-6
) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (see the module docstring)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"statistics do not match: mu {mu1.shape} / {mu2.shape}, sigma {s1.shape} / {s2.shape}")
    diff = mu1 - mu2
    covmean, _ = linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        log.warning("Fréchet distance: S1 S2 is near singular; adding %g to the covariance diagonals", eps)
        offset = np.eye(s1.shape[0]) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.max(np.abs(np.diagonal(covmean).imag))
        if imag > 1e-3:
            raise ValueError(
                f"Fréchet distance: the matrix root has an imaginary component {imag:.3g}; the "
                "covariances are not positive semi-definite (too few samples?)"
            )
        covmean = covmean.real
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * np.trace(covmean))
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def frechet_from_features(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between two feature sets [N_a, D] and [N_b, D]."""
    sa, sb = feature_statistics(a), feature_statistics(b)
    return frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
