"""Procedural textures and sprite bitmaps for the synthetic world (trackstream/data/synthetic.py).

Design: everything is drawn once per video with numpy/cv2 and then only warped per frame, which
keeps generation at a few ms per frame. Every surface carries multi-scale noise: flat colours or
pure stripes would leave Lucas-Kanade/CoTracker with the aperture problem, and the world exists to
measure tracking and motion following, so each point must be locally distinctive. Feature sizes
scale with the frame's shorter side, so the world looks the same at 64 px and at 480 px.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

# Named colours for captions; RGB in [0, 1]. Chosen to be distinguishable after mp4 compression.
PALETTE: dict[str, tuple[float, float, float]] = {
    "red": (0.86, 0.16, 0.16),
    "green": (0.18, 0.68, 0.25),
    "blue": (0.16, 0.32, 0.88),
    "yellow": (0.93, 0.83, 0.16),
    "orange": (0.95, 0.52, 0.12),
    "purple": (0.55, 0.24, 0.75),
    "cyan": (0.16, 0.80, 0.84),
    "pink": (0.95, 0.48, 0.72),
    "white": (0.93, 0.93, 0.93),
    "brown": (0.52, 0.32, 0.16),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
PATTERNS = ("striped", "dotted", "checkered", "speckled")
BACKGROUND_COLOURS = ("green", "blue", "brown", "purple", "orange", "cyan")


def fractal_noise(
    rng: np.random.Generator, height: int, width: int, *, scale: float, finest: float = 2.0
) -> np.ndarray:
    """Sum of cubic-interpolated value-noise octaves, normalised to [0, 1]. float32 [H, W].

    `scale` is the coarsest feature size in pixels; octaves halve it down to ~`finest` px. Octaves get
    equal weight: fine detail as strong as the coarse blobs is what a point tracker locks onto.
    """
    out = np.zeros((height, width), np.float32)
    cell, octaves = max(scale, finest), 0
    while cell >= finest:
        gh, gw = math.ceil(height / cell) + 3, math.ceil(width / cell) + 3
        grid = rng.random((gh, gw), dtype=np.float32)
        up = cv2.resize(grid, (int(gw * cell), int(gh * cell)), interpolation=cv2.INTER_CUBIC)
        out += up[:height, :width]
        cell, octaves = cell / 2.0, octaves + 1
    out /= octaves
    lo, hi = np.percentile(out, 1), np.percentile(out, 99)
    return np.clip((out - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def background_texture(
    rng: np.random.Generator, height: int, width: int, *, colour: str, short_side: int, texture_scale: float = 1.0
) -> np.ndarray:
    """Textured background canvas, float32 [H, W, 3] in [0, 1]: two-tone noise plus blobs.

    ``texture_scale`` multiplies every feature size (noise octaves, finest detail, blob radii):
    1 gives 2-px detail that a point tracker locks onto; larger values give smoother canvases
    whose content a CPU-sized latent model can move (see conf/experiment/tiny_teacher.yaml)."""
    base = np.asarray(PALETTE[colour], np.float32)
    dark, light = base * 0.35, np.clip(base * 0.75 + 0.35, 0, 1)
    k = texture_scale
    n = fractal_noise(rng, height, width, scale=k * short_side / 10, finest=2.0 * k)[..., None]
    img = dark * (1 - n) + light * n
    # Coarse per-channel tint variations break the two-tone look without removing fine texture.
    tint = np.stack(
        [fractal_noise(rng, height, width, scale=k * short_side / 3, finest=2.0 * k) for _ in range(3)], axis=-1
    )
    img = np.clip(img * (0.8 + 0.4 * tint), 0, 1)
    # Sparse blobs give strong corners for the tracker and visual variety.
    num_blobs = max(8, int(height * width / (short_side / 5) ** 2 / 3))
    for _ in range(num_blobs):
        c = (int(rng.integers(0, width)), int(rng.integers(0, height)))
        r = max(1, int(k * rng.uniform(0.015, 0.05) * short_side))
        shade = float(rng.uniform(0.0, 1.0))
        cv2.circle(img, c, r, tuple(float(v) for v in (dark * (1 - shade) + light * shade)), -1, cv2.LINE_AA)
    return img.astype(np.float32)


def _shape_polygon(shape: str, centre: float, radius: float, angle0: float) -> np.ndarray:
    if shape == "square":
        k, r = 4, np.full(4, radius * 0.95)
    elif shape == "diamond":
        k, r, angle0 = 4, np.array([radius, radius * 0.7, radius, radius * 0.7]), 0.0
    elif shape == "triangle":
        k, r = 3, np.full(3, radius)
    elif shape == "hexagon":
        k, r = 6, np.full(6, radius)
    elif shape == "star":
        k, r = 10, np.where(np.arange(10) % 2 == 0, radius, radius * 0.5)
    else:
        raise ValueError(f"unknown polygon shape {shape!r}")
    a = angle0 + 2 * np.pi * np.arange(k) / k
    return np.stack([centre + r * np.cos(a), centre + r * np.sin(a)], axis=1)


@dataclass
class SpriteBitmap:
    """Premultiplied RGBA sprite: rgba float32 [S, S, 4]; the shape's centre is the canvas centre."""

    rgba: np.ndarray
    shape: str
    colour: str
    pattern: str

    @property
    def alpha(self) -> np.ndarray:
        return self.rgba[..., 3]

    @property
    def centre(self) -> float:
        return (self.rgba.shape[0] - 1) / 2.0


def make_sprite(rng: np.random.Generator, *, diameter: float, short_side: int, background: str) -> SpriteBitmap:
    """Random shape, colour (clearly different from the background's) and pattern; alpha
    antialiased by 4x supersampling."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    bg = np.asarray(PALETTE[background])
    # A sprite in the background's colour is camouflaged: unfair for trackers and captions alike.
    colours = [c for c, v in PALETTE.items() if np.linalg.norm(np.asarray(v) - bg) > 0.45]
    colour = colours[int(rng.integers(len(colours)))]
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    size = int(math.ceil(diameter * 1.15)) + 4
    ss = 4
    big = np.zeros((size * ss, size * ss), np.uint8)
    c_big, r_big = (size * ss - 1) / 2.0, diameter * ss / 2.0
    if shape == "circle":
        cv2.circle(big, (int(round(c_big)), int(round(c_big))), int(round(r_big)), 255, -1)
    else:
        poly = _shape_polygon(shape, c_big, r_big, angle0=-np.pi / 2)
        cv2.fillPoly(big, [np.round(poly).astype(np.int32)], 255)
    alpha = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0

    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    period = max(3.0, diameter / rng.uniform(2.5, 4.0))
    if pattern == "striped":
        a = rng.uniform(0, np.pi)
        pat = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(a) + yy * np.sin(a)) / period)
    elif pattern == "checkered":
        pat = ((np.floor(xx / (period / 2)) + np.floor(yy / (period / 2))) % 2).astype(np.float32)
    elif pattern == "dotted":
        d = np.hypot((xx % period) - period / 2, (yy % period) - period / 2)
        pat = (d < period * 0.3).astype(np.float32)
    else:  # speckled: noise alone
        pat = fractal_noise(rng, size, size, scale=max(2.0, diameter / 4))
    noise = fractal_noise(rng, size, size, scale=max(2.0, short_side / 16))
    lum = 0.25 + 0.9 * (0.5 * pat + 0.5 * noise)
    rgb = np.asarray(PALETTE[colour], np.float32) * lum[..., None]
    # A dark rim makes the silhouette (and thus occlusion boundaries) crisp.
    rim = cv2.erode((alpha > 0.5).astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, size // 24))
    rgb = np.where(rim[..., None] > 0, rgb, rgb * 0.3)
    rgba = np.concatenate([rgb * alpha[..., None], alpha[..., None]], axis=-1).astype(np.float32)
    return SpriteBitmap(rgba=rgba, shape=shape, colour=colour, pattern=pattern)


def bilinear(img: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Sample a 2-D float image at float pixel coords (pixel centres at integers); 0 outside."""
    h, w = img.shape
    x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    out = np.zeros(np.broadcast(x, y).shape, np.float32)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            xi, yi = x0 + dx, y0 + dy
            ok = (xi >= 0) & (xi < w) & (yi >= 0) & (yi < h)
            out += np.where(ok, img[np.clip(yi, 0, h - 1), np.clip(xi, 0, w - 1)], 0.0) * wx * wy
    return out
