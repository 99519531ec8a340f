"""Rigid sprite motion for the synthetic world: sprite <-> frame coordinate maps, the smooth key-point
path a sprite follows, and the screen-direction words its captions use.

The synthetic world (``synthetic``) renders with these; the drag scenes place their sprites with
``sprite_matrix`` too.
"""

from __future__ import annotations

import numpy as np

from trackstream.data.sprites import SpriteBitmap

__all__ = ["sprite_matrix", "to_local", "to_frame", "hermite_path", "direction_phrase"]


def sprite_matrix(s: SpriteBitmap, centre: np.ndarray, angle: float) -> np.ndarray:
    """Affine map sprite-canvas coords -> frame coords: p = R(angle) (u - c_s) + centre."""
    c, si = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -si], [si, c]], np.float32)
    shift = centre - rot @ np.array([s.centre, s.centre], np.float32)
    return np.concatenate([rot, shift[:, None]], axis=1).astype(np.float32)


def to_local(s: SpriteBitmap, centre, angle, p: np.ndarray) -> np.ndarray:
    """Frame points ``p`` [N, 2] -> sprite-canvas coords: the inverse of ``sprite_matrix``."""
    c, si = np.cos(angle), np.sin(angle)
    d = p - centre
    return np.stack([c * d[:, 0] + si * d[:, 1], -si * d[:, 0] + c * d[:, 1]], axis=1) + s.centre


def to_frame(s: SpriteBitmap, centre, angle, u: np.ndarray) -> np.ndarray:
    """Sprite-canvas points ``u`` [N, 2] -> frame coords (``sprite_matrix`` applied to points)."""
    c, si = np.cos(angle), np.sin(angle)
    d = u - s.centre
    return np.stack([c * d[:, 0] - si * d[:, 1], si * d[:, 0] + c * d[:, 1]], axis=1) + centre


def hermite_path(keys: np.ndarray, key_t: np.ndarray, t: np.ndarray) -> np.ndarray:
    """C1 cubic Hermite spline through keys [K, 2] at (non-uniform) times key_t, sampled at t.

    Tangents are Catmull-Rom style central differences in pixels per second, scaled by each
    segment's duration, so velocity is continuous across keys with different spacing.
    """
    k = len(keys)
    if k == 1:
        return np.repeat(keys, len(t), axis=0)
    tang = np.empty_like(keys)
    tang[1:-1] = (keys[2:] - keys[:-2]) / (key_t[2:] - key_t[:-2])[:, None]
    tang[0] = (keys[1] - keys[0]) / (key_t[1] - key_t[0])
    tang[-1] = (keys[-1] - keys[-2]) / (key_t[-1] - key_t[-2])
    seg = np.clip(np.searchsorted(key_t, t, side="right") - 1, 0, k - 2)
    dt = (key_t[seg + 1] - key_t[seg])[:, None]
    u = (t[:, None] - key_t[seg][:, None]) / dt
    h00, h10, h01, h11 = 2 * u**3 - 3 * u**2 + 1, u**3 - 2 * u**2 + u, -2 * u**3 + 3 * u**2, u**3 - u**2
    return h00 * keys[seg] + h10 * dt * tang[seg] + h01 * keys[seg + 1] + h11 * dt * tang[seg + 1]


def direction_phrase(v: np.ndarray) -> str:
    """8-way screen direction (y down) of a displacement."""
    ang = np.rad2deg(np.arctan2(-v[1], v[0])) % 360  # counterclockwise from +x, with y pointing up
    names = [
        "to the right",
        "up and to the right",
        "up",
        "up and to the left",
        "to the left",
        "down and to the left",
        "down",
        "down and to the right",
    ]
    return names[int(((ang + 22.5) % 360) // 45)]
