"""Where a sample's input tracks start: the placements people give, for training and for evaluation.

A person drags a handful of points, clicks a grid of whatever spacing, or gives none; a tracker's grid
lies wherever its own lattice does. A network that only ever saw its training grid's start points
learns that lattice, not tracks (a 2-px shift or another grid spacing turns a scene to noise). So a
training sample's start points are drawn from a mixture (``Placement``, Hydra ``data.placement``):

* ``random``: ``count`` points uniform over the frame at sub-pixel positions;
* ``grid``: a full grid of random spacing (``spacing``, a share of the shorter side), random offset
  and per-point jitter (``jitter`` spacings), as the demo's grid of any spacing lays it;
* ``cluster``: 1-3 small discs of a few points each, centred on a sprite with ``on_object`` odds (a
  drag of one object);
* ``lattice``: ``count`` points of the world's own ground-truth grid (the fixed lattice, kept in the
  mixture so what a real tracker's grid gives stays known);
* ``none``: no track at all (a stream a person has not touched yet; the text-only input).

Counts are log-uniform in ``count`` (a handful to dense). Exact tracks of any start point come from the
clip's ``scene`` (``data.synthetic.SceneMotion``). A clip without one (a real shard: CoTracker's grid)
keeps its grid and draws a random subset of ``count`` points, or none, as the same mixture's shares say.

The evaluation lays named placements (``EVAL_PLACEMENTS``, ``eval_points``) on one fixed point set per
clip that it scores every video on (``scoring_points``), so placements compare on the same points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from trackstream.data.tracker_base import grid_queries

__all__ = [
    "KINDS",
    "Placement",
    "placement_from",
    "draw_points",
    "place_tracks",
    "max_points",
    "EVAL_PLACEMENTS",
    "demo_grid",
    "eval_points",
    "scoring_points",
    "SCORING_POINTS",
    "SPARSE_POINTS",
]

KINDS = ("random", "grid", "cluster", "lattice", "none")


@dataclass
class Placement:
    """The training mixture of track start points (module docstring): shares of each kind (normalised),
    then each kind's ranges. Sizes are shares of the frame's shorter side, so one mixture fits any
    resolution."""

    random: float = 0.3
    grid: float = 0.3
    cluster: float = 0.15
    lattice: float = 0.15
    none: float = 0.1
    count: tuple[int, int] = (4, 256)  # random / lattice points, log-uniform
    spacing: tuple[float, float] = (0.06, 0.25)  # grid spacing (64 px: 4-16 px; 480 px: 29-120 px)
    jitter: float = 0.25  # a grid point's largest offset, in spacings
    clusters: tuple[int, int] = (1, 3)
    cluster_points: tuple[int, int] = (2, 12)
    cluster_radius: tuple[float, float] = (0.02, 0.08)
    on_object: float = 0.75  # a cluster's odds of being centred on a sprite (when the clip has one)
    # a `none` sample's clip is its first frame held: with no track, the network learns to hold the picture (a
    # stream nobody touched) instead of guessing a motion the captions do not name; the teacher's dropout of
    # tracks for joint guidance (stage.p_drop_tracks) keeps the clip's own motion
    hold_none: bool = False

    def __post_init__(self) -> None:
        shares = [getattr(self, k) for k in KINDS]
        if min(shares) < 0 or sum(shares) <= 0:
            raise ValueError(f"data.placement shares {dict(zip(KINDS, shares))} must be >= 0 with a positive sum")
        for name in ("count", "spacing", "clusters", "cluster_points", "cluster_radius"):
            lo, hi = getattr(self, name)
            setattr(self, name, (type(lo)(lo), type(lo)(hi)))
            if not 0 < lo <= hi:
                raise ValueError(f"data.placement.{name}={[lo, hi]} must be [lo, hi] with 0 < lo <= hi")
        if not isinstance(self.hold_none, bool):
            raise ValueError(f"data.placement.hold_none={self.hold_none!r} must be true or false")
        if not 0 <= self.jitter <= 0.5 or not 0 <= self.on_object <= 1:
            raise ValueError(
                f"data.placement.jitter={self.jitter} must be in [0, 0.5] and on_object={self.on_object} in [0, 1]"
            )

    def shares(self) -> np.ndarray:
        p = np.array([getattr(self, k) for k in KINDS], np.float64)
        return p / p.sum()


def placement_from(value) -> Placement | None:
    """``data.placement`` as given (None, a mapping of ``Placement`` fields or a ``Placement``)."""
    if value is None or isinstance(value, Placement):
        return value
    known = set(Placement.__dataclass_fields__)
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(f"data.placement has unknown fields {unknown}; it takes {sorted(known)}")
    return Placement(**{k: tuple(v) if isinstance(v, (list, tuple)) else v for k, v in dict(value).items()})


def _log_count(rng: np.random.Generator, lo: int, hi: int) -> int:
    return int(np.clip(round(np.exp(rng.uniform(np.log(lo), np.log(hi + 1)) - 0.5)), lo, hi))


def _inside(points: np.ndarray, height: int, width: int) -> np.ndarray:
    x, y = points[:, 0], points[:, 1]
    return points[(x >= 0) & (x <= width - 1) & (y >= 0) & (y <= height - 1)]


def _grid(p: Placement, rng, height: int, width: int) -> np.ndarray:
    step = rng.uniform(*p.spacing) * min(height, width)
    ox, oy = rng.uniform(0, step, size=2) - 0.5
    xs, ys = np.arange(ox, width - 0.5, step), np.arange(oy, height - 0.5, step)
    pts = np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2)
    pts = pts + rng.uniform(-p.jitter, p.jitter, size=pts.shape) * step
    return _inside(pts, height, width)


def _clusters(p: Placement, rng, height: int, width: int, surface) -> np.ndarray:
    short = min(height, width)
    out = []
    for _ in range(int(rng.integers(p.clusters[0], p.clusters[1] + 1))):
        centre = rng.uniform([0, 0], [width - 1, height - 1])
        if surface is not None and rng.random() < p.on_object:
            cand = rng.uniform([0, 0], [width - 1, height - 1], size=(256, 2))
            on = cand[surface(cand) >= 0]
            if len(on):
                centre = on[int(rng.integers(len(on)))]
        n = int(rng.integers(p.cluster_points[0], p.cluster_points[1] + 1))
        r = rng.uniform(*p.cluster_radius) * short * np.sqrt(rng.random(n))
        a = rng.uniform(0, 2 * np.pi, n)
        out.append(centre + np.stack([r * np.cos(a), r * np.sin(a)], 1))
    return _inside(np.concatenate(out), height, width)


def draw_points(
    p: Placement, rng: np.random.Generator, *, height: int, width: int, lattice: np.ndarray, surface=None
) -> tuple[str, np.ndarray | None]:
    """(kind, frame-0 points [N, 2] pixel (x, y)) of one sample. ``lattice`` [M, 2]: the clip's own grid;
    for ``lattice`` the points are its indices instead ([N] int). ``surface``: the clip's
    ``SceneMotion.surface`` (clusters on sprites), or None."""
    kind = KINDS[int(rng.choice(len(KINDS), p=p.shares()))]
    if kind == "none":
        return kind, np.zeros((0, 2), np.float32)
    if kind == "lattice":
        n = min(_log_count(rng, *p.count), len(lattice))
        return kind, np.sort(rng.choice(len(lattice), size=n, replace=False))
    if kind == "random":
        n = _log_count(rng, *p.count)
        return kind, rng.uniform([0, 0], [width - 1, height - 1], size=(n, 2)).astype(np.float32)
    if kind == "grid":
        return kind, _grid(p, rng, height, width).astype(np.float32)
    return kind, _clusters(p, rng, height, width, surface).astype(np.float32)


def place_tracks(sample: dict, p: Placement, rng: np.random.Generator) -> dict:
    """``sample`` with its tracks / visibility replaced by one draw of the mixture: exact tracks of new start
    points from its ``scene``; without one (a real shard), a subset of its own tracks (kinds that need new
    points take ``count`` of them; ``none`` takes none). Tracks never visible are dropped. The kind drawn is
    ``sample["placement"]``."""
    import torch

    tracks, vis = np.asarray(sample["tracks"]), np.asarray(sample["visibility"])
    candidates = np.nonzero(vis.any(axis=0))[0]
    scene = sample.get("scene")
    if scene is None:
        kind = KINDS[int(rng.choice(len(KINDS), p=p.shares()))]
        n = 0 if kind == "none" else min(_log_count(rng, *p.count), len(candidates))
        keep = np.sort(rng.choice(candidates, size=n, replace=False))
        new_tracks, new_vis = tracks[:, keep], vis[:, keep]
    else:
        height, width = scene.height, scene.width
        kind, pts = draw_points(p, rng, height=height, width=width, lattice=tracks[0], surface=scene.surface)
        if kind == "lattice":
            keep = np.intersect1d(pts, candidates)
            new_tracks, new_vis = tracks[:, keep], vis[:, keep]
        else:
            new_tracks, new_vis = scene.tracks(pts)
            seen = new_vis.any(axis=0)
            new_tracks, new_vis = new_tracks[:, seen], new_vis[:, seen]
    out = dict(sample)
    out["tracks"] = torch.from_numpy(np.ascontiguousarray(new_tracks, np.float32))
    out["visibility"] = torch.from_numpy(np.ascontiguousarray(new_vis, bool))
    out["placement"] = kind
    return out


# -- the evaluation's placements -----------------------------------------------------------------

# lattice: the world's ground-truth grid (the input every earlier figure used); shifted: that lattice moved
# by half its spacing (half a token where the grid is one point a token); demo: the live page's default grid
# without its random offset and jitter (``demo_grid``);
# random: dense uniform sub-pixel points; sparse: a few points as a person clicks them; none: no tracks.
EVAL_PLACEMENTS = ("lattice", "shifted", "demo", "random", "sparse", "none")
SPARSE_POINTS = 24
SCORING_POINTS = 64
DEMO_GRID = 8  # points a side of the page's "Grid of points" at its default spacing


def demo_grid(height: int, width: int, per_side: int = DEMO_GRID) -> np.ndarray:
    """Cell centres [per_side**2, 2] (x, y) of a per_side x per_side grid over the frame: the demo page's grid at
    its default spacing (the shorter side / 8) with its random offset and jitter at their middle draw
    (``demo.js``'s ``gridPoints``), i.e. the one fixed grid the page laid before it drew grids as training does."""
    return grid_queries(height, width, per_side)[:, 1:].copy()


def _seeded(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) % 2**63, sum(map(ord, name))])


def eval_points(name: str, *, seed: int, height: int, width: int, grid_size: int, num_tracks: int | None) -> np.ndarray:
    """Frame-0 input points [N, 2] of evaluation placement ``name`` for the clip of ``seed`` (fixed per clip).
    ``num_tracks``: how many the dense placements keep (the teacher's ``eval.num_tracks``; None: all the
    lattice has). ``lattice`` is not laid here: it is the clip's own grid subset (``eval.scorebook``)."""
    if name not in EVAL_PLACEMENTS or name == "lattice":
        raise ValueError(f"eval placement {name!r}; choose one of {EVAL_PLACEMENTS[1:]} (lattice: the clip's grid)")
    rng = _seeded(seed, name)
    dense = num_tracks or grid_size * grid_size
    if name == "none":
        return np.zeros((0, 2), np.float32)
    if name == "shifted":
        lat = grid_queries(height, width, grid_size)[:, 1:]
        step = min(height, width) / grid_size
        pts = _inside(lat + step / 2, height, width)
        return pts[np.sort(rng.choice(len(pts), size=min(dense, len(pts)), replace=False))]
    if name == "demo":
        return demo_grid(height, width)
    n = SPARSE_POINTS if name == "sparse" else dense
    return rng.uniform([0, 0], [width - 1, height - 1], size=(n, 2)).astype(np.float32)


def scoring_points(*, seed: int, height: int, width: int, count: int = SCORING_POINTS) -> np.ndarray:
    """The fixed points [count, 2] every video of one clip is scored on, whatever its input placement: uniform
    sub-pixel positions seeded by the clip, kept a little inside the border (a tracker's window there is
    cut)."""
    rng = _seeded(seed, "scoring")
    margin = 2.0
    return rng.uniform([margin, margin], [width - 1 - margin, height - 1 - margin], size=(count, 2)).astype(np.float32)


def max_points(p: Placement, *, height: int, width: int, lattice: int) -> int:
    """The most points one draw can give on a ``height`` x ``width`` frame whose grid has ``lattice`` points:
    the size a fixed-width batch pads to."""
    step = p.spacing[0] * min(height, width)
    grid = (int(width / step) + 2) * (int(height / step) + 2)
    return max(min(p.count[1], lattice), grid, p.clusters[1] * p.cluster_points[1])
