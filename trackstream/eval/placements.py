"""Motion following judged on the placements people give (``data.placements.EVAL_PLACEMENTS``).

A network that learned one lattice of track start points follows that lattice and nothing else: scored on
its own input tracks at the training lattice it looks fine while a shifted grid, the demo's grid, a few
clicked points or no points turn its scene to noise. So here each held-out clip is generated once per named
placement of its input tracks (``lattice``, ``shifted``, ``demo``, ``random``, ``sparse``, ``none``) and
every video of the clip is scored on the SAME fixed point set (``data.placements.scoring_points``: 64
sub-pixel points, exact ground truth from the clip's scene), by the one EPE protocol
(``metrics.track_motion`` through ``ScoreBook``), so placements compare on equal terms. Per placement row:

* ``epe`` and ``epe_over_frozen``: the EPE on the scoring points, and over the frozen first frame's on the
  same points (1 = no better than not moving);
* the quality columns of ``eval.quality`` (no-hold ratio, late brightness gap, late texture ratio);
* ``blockiness_ratio``: ``blockiness`` of the video over the ground truth's: a block mosaic on the token
  grid, or track dots drawn into the picture on it, raise it where texture energy stays in band;
* ``object_kept``: on clips with sprites, the share of each sprite (as the real first frame shows it) still
  found in the video's last frames (``drag_metrics.object_track``), the mean over sprites; the ground
  truth's row is its ceiling (sprites turn, which the translation-only measure charges).

The floors ``ground_truth`` (the tracker on the real clip), ``frozen`` (the first frame held) and, given two
clips or more, ``other_motion`` (the first frame moved as the next clip's tracks move, ``floors.pixel_copy``: a
plausible motion that is not this clip's, what a network that samples motion without being told it may give)
are scored on the same points. Without tracks, and with captions that name no motion, the clip's own motion
cannot be known: ``none`` is judged against ``other_motion`` and ``frozen`` both. Clips without a scene (real shards) keep ``lattice``, ``random`` and ``sparse`` as
subsets of their tracked grid and ``none``, scored on a fixed subset of that grid.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from trackstream.data.placements import EVAL_PLACEMENTS, SCORING_POINTS, SPARSE_POINTS, eval_points, scoring_points
from trackstream.eval.drag_metrics import object_track
from trackstream.eval.floors import pixel_copy
from trackstream.eval.harness import RowScorer
from trackstream.eval.metrics import grey
from trackstream.eval.quality import LATE_FRAMES
from trackstream.eval.sample import Sample
from trackstream.eval.scorebook import input_tracks
from trackstream.eval.tables import markdown_table

__all__ = [
    "GRID_PLACEMENTS",
    "check_placements",
    "placement_tracks",
    "scoring_tracks",
    "blockiness",
    "sprite_masks",
    "PlacementScores",
    "evaluate_placements",
    "placement_table",
]

GRID_PLACEMENTS = ("lattice", "random", "sparse", "none")  # what a clip without a scene can be given
MIN_SPRITE_PIXELS = 24  # a sprite smaller than this at frame 0 is too small to say whether it is kept

# generate(clips, tracks [B, T, N, 2], visibility [B, T, N], seed) -> uint8 videos [T, H, W, 3], one per clip
Generate = Callable[[list[dict], torch.Tensor, torch.Tensor, int], list[np.ndarray]]


def check_placements(names, *, field: str = "eval.placements") -> tuple[str, ...]:
    names = tuple(names)
    bad = [n for n in names if n not in EVAL_PLACEMENTS]
    if bad or not names:
        raise ValueError(f"{field}={list(names)}: choose among {list(EVAL_PLACEMENTS)}")
    return names


def _pad(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    counts = [tr.shape[1] for tr, _ in pairs]
    T = pairs[0][0].shape[0]
    tr = torch.zeros(len(pairs), T, max(counts), 2)
    vi = torch.zeros(len(pairs), T, max(counts), dtype=torch.bool)
    for b, (t, v) in enumerate(pairs):
        tr[b, :, : counts[b]], vi[b, :, : counts[b]] = torch.from_numpy(np.asarray(t)), torch.from_numpy(np.asarray(v))
    return tr, vi, counts


def _grid_subset(clip: dict, n: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """``n`` of the clip's own tracks visible in frame 0, fixed per clip and name."""
    on = np.nonzero(np.asarray(clip["visibility"])[0])[0]
    rng = np.random.default_rng([int(clip["meta"]["seed"]) % 2**63, sum(map(ord, name))])
    keep = np.sort(rng.choice(on, size=min(n, len(on)), replace=False))
    return np.asarray(clip["tracks"])[:, keep], np.asarray(clip["visibility"])[:, keep]


def placement_tracks(
    clips: list[dict], name: str, *, grid_size: int, num_tracks: int | None
) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Input tracks of placement ``name`` for each clip, padded: [B, T, N, 2], [B, T, N], counts. ``lattice`` is
    the clip's grid subset every earlier figure used (``scorebook.input_tracks``); the others are laid by
    ``data.placements.eval_points`` and tracked exactly by the clip's scene."""
    if name == "lattice":
        return input_tracks(clips, num_tracks)
    pairs = []
    for clip in clips:
        scene = clip.get("scene")
        T = np.asarray(clip["tracks"]).shape[0]
        if name == "none":
            pairs.append((np.zeros((T, 0, 2), np.float32), np.zeros((T, 0), bool)))
        elif scene is None:
            if name not in GRID_PLACEMENTS:
                raise ValueError(
                    f"placement {name!r} needs exact tracks of new points, which clip {clip['meta'].get('id')} "
                    f"(no synthetic scene) cannot give; its placements: {list(GRID_PLACEMENTS)}"
                )
            pairs.append(_grid_subset(clip, SPARSE_POINTS if name == "sparse" else (num_tracks or 10**9), name))
        else:
            pts = eval_points(
                name,
                seed=clip["meta"]["seed"],
                height=scene.height,
                width=scene.width,
                grid_size=grid_size,
                num_tracks=num_tracks,
            )
            pairs.append(scene.tracks(pts))
    return _pad(pairs)


def scoring_tracks(clip: dict) -> tuple[np.ndarray, np.ndarray]:
    """The points every video of ``clip`` is scored on: tracks [T, M, 2] and visibility [T, M]."""
    scene = clip.get("scene")
    if scene is None:
        return _grid_subset(clip, SCORING_POINTS, "scoring")
    return scene.tracks(scoring_points(seed=clip["meta"]["seed"], height=scene.height, width=scene.width))


def blockiness(video: np.ndarray, token: int, *, first: int = 1) -> float:
    """How much the picture changes across the ``token`` grid's lines against inside its cells: the mean
    absolute grey step between neighbouring pixels that straddle a line over the mean of those that do not,
    both directions, frames ``first``.. (uint8 [T, H, W, 3]), each mean plus one grey level (so a flat
    picture is 1 and flat cells are not a division by zero). About 1 for a natural picture; a mosaic of
    ``token``-px blocks (or marks on every cell) raises it."""
    g = grey(np.asarray(video)[first:])  # [T, H, W]
    steps, across = [], []
    for axis in (1, 2):
        d = np.abs(np.diff(g, axis=axis))  # between pixel i and i + 1 along the axis
        line = (np.arange(d.shape[axis]) + 1) % token == 0
        idx = [slice(None)] * 3
        idx[axis] = line
        across.append(d[tuple(idx)].mean())
        idx[axis] = ~line
        steps.append(d[tuple(idx)].mean())
    return float((np.mean(across) + 1.0) / (np.mean(steps) + 1.0))


def sprite_masks(clip: dict) -> list[np.ndarray]:
    """Frame-0 masks bool [H, W] of the clip's sprites that show at least ``MIN_SPRITE_PIXELS`` pixels."""
    scene = clip.get("scene")
    if scene is None or not scene.sprites:
        return []
    ys, xs = np.mgrid[0 : scene.height, 0 : scene.width]
    surface = scene.surface(np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)).reshape(ys.shape)
    masks = [surface == k for k in range(len(scene.sprites))]
    return [m for m in masks if m.sum() >= MIN_SPRITE_PIXELS]


class PlacementScores:
    """One book of every row on each clip's scoring points: ``add(row, frames, clip)`` per video (rows
    ``"<model>@<placement>"``), ``add_floors(clip)`` once per clip; ``figures()`` per row."""

    def __init__(self, tracker, *, token: int):
        self.scorer = RowScorer(tracker, metrics=("epe",), frozen_row="frozen")
        self.token = token
        self.block: dict[str, list[float]] = {}
        self.kept: dict[str, list[float]] = {}
        self._targets: dict[int, tuple] = {}  # per clip: scoring tracks, visibility, sprite masks, gt blockiness

    def _clip(self, clip: dict):
        key = id(clip)
        if key not in self._targets:
            gt = np.asarray(clip["frames"])
            tr, vi = scoring_tracks(clip)
            self._targets[key] = (Sample(str(key), gt, tr, vi), sprite_masks(clip), blockiness(gt, self.token))
        return self._targets[key]

    def add(self, row: str, frames: np.ndarray, clip: dict) -> None:
        sample, masks, gt_block = self._clip(clip)
        self.scorer.add(sample, {row: frames})
        self.block.setdefault(row, []).append(blockiness(frames, self.token) / gt_block)
        if masks:  # the object as the real first frame shows it, looked for in the video's frames
            late = slice(max(1, len(frames) - LATE_FRAMES), len(frames))
            shown = np.concatenate([np.asarray(clip["frames"][:1]), frames[1:]])
            kept = [object_track(shown, m)[1][late].mean() for m in masks]
            self.kept.setdefault(row, []).append(float(np.mean(kept)))

    def add_floors(self, clip: dict) -> None:
        sample, masks, _ = self._clip(clip)
        self.add("ground_truth", sample.frames, clip)
        self.scorer.add(sample, {"frozen": np.broadcast_to(sample.frames[:1], sample.frames.shape)})
        self.block.setdefault("frozen", []).append(1.0)
        if masks:
            self.kept.setdefault("frozen", []).append(1.0)  # a held frame keeps every object where it was

    def figures(self) -> dict:
        scored = self.scorer.results()
        frozen = scored["frozen"]["epe"]
        rows = {}
        for row, f in scored.items():
            rows[row] = {
                "epe": f["epe"],
                "epe_over_frozen": f["epe"] / frozen if frozen > 0 else float("nan"),
                **{k: f.get(k, float("nan")) for k in ("no_hold_ratio", "late_brightness_gap", "late_texture_ratio")},
                "blockiness_ratio": float(np.nanmean(self.block[row])) if self.block.get(row) else float("nan"),
                "object_kept": float(np.mean(self.kept[row])) if self.kept.get(row) else float("nan"),
                "clips": len(f["per_sample"]["epe"]),
            }
        return rows


def evaluate_placements(
    models: dict[str, Generate | None],
    clips: list[dict],
    *,
    placements=EVAL_PLACEMENTS,
    grid_size: int,
    num_tracks: int | None,
    tracker,
    token: int,
    batch_size: int = 8,
    seed: int = 0,
    given: dict[str, dict[str, list[np.ndarray]]] | None = None,
    keep: int = 0,
) -> dict:
    """Every model of ``models`` (name -> ``Generate``) on every clip in every placement, scored on the clip's
    scoring points. ``given``: videos already made (model -> placement -> one per clip), not generated again
    (an evaluation's with-tracks videos are ``lattice``'s, its without-tracks ones ``none``'s); a model whose
    ``Generate`` is None has the rows of its given placements only. A clip's
    noise seed is the same in every placement it generates (given videos keep their own). ``token``: pixels per DiT token (the blockiness grid).
    Returns {"models": {model: {placement: row}}, "floors": {row: row}, "placements", "clips",
    "scoring_points", "token_px"}, and with ``keep`` the first ``keep`` clips' videos under "videos" (model ->
    placement -> uint8 [keep, T, H, W, 3]; not JSON)."""
    placements = check_placements(placements)
    given = given or {}
    scores = PlacementScores(tracker, token=token)
    kept: dict[str, dict[str, list[np.ndarray]]] = {m: {} for m in models}
    for i, c in enumerate(clips):
        scores.add_floors(c)
        if len(clips) > 1:  # a plausible motion that is not this clip's: frame 0 moved as the next clip moves
            other = clips[(i + 1) % len(clips)]
            scores.add("other_motion", pixel_copy(c["frames"], other["tracks"], other["visibility"], hold=True), c)
    for start in range(0, len(clips), batch_size):
        batch = clips[start : start + batch_size]
        for name in placements:
            tr, vi, _ = placement_tracks(batch, name, grid_size=grid_size, num_tracks=num_tracks)
            for model, generate in models.items():
                done = given.get(model, {}).get(name)
                if done is None and generate is None:
                    continue
                videos = done[start : start + len(batch)] if done is not None else generate(batch, tr, vi, seed + start)
                for i, (clip, frames) in enumerate(zip(batch, videos)):
                    scores.add(f"{model}@{name}", frames, clip)
                    if start + i < keep:
                        kept[model].setdefault(name, []).append(frames)
    rows = scores.figures()
    videos = {"videos": {m: {p: np.stack(v) for p, v in per.items()} for m, per in kept.items()}} if keep else {}
    return {
        **videos,
        "models": {m: {p: rows[f"{m}@{p}"] for p in placements if f"{m}@{p}" in rows} for m in models},
        "floors": {k: rows[k] for k in ("ground_truth", "frozen", "other_motion") if k in rows},
        "placements": list(placements),
        "clips": len(clips),
        "scoring_points": SCORING_POINTS,
        "token_px": token,
    }


def _cell(v: float, fmt: str = ".2f") -> str:
    return "" if v is None or not np.isfinite(v) else format(v, fmt)


def placement_table(figures: dict) -> str:
    """The placement figures as one markdown table: the floors first, then each model's placements, with each
    placement's EPE ratio also over the model's ``lattice`` row."""
    head = [
        "video",
        "placement",
        "EPE (px)",
        "EPE / frozen",
        "/ lattice",
        "no-hold / frozen",
        "late brightness gap",
        "late texture",
        "blockiness (1 = ground truth)",
        "object kept",
    ]

    def cells(r: dict, rel) -> list:
        return [
            _cell(r["epe"]),
            _cell(r["epe_over_frozen"]),
            rel,
            _cell(r["no_hold_ratio"]),
            _cell(r["late_brightness_gap"], "+.1f"),
            _cell(r["late_texture_ratio"]),
            _cell(r["blockiness_ratio"]),
            _cell(r["object_kept"]),
        ]

    labels = {
        "ground_truth": "*ground-truth video*",
        "frozen": "*frozen first frame*",
        "other_motion": "*another clip's motion*",
    }
    # a floor has neither a placement nor a lattice row of its own: those cells do not apply (None)
    rows = [[labels.get(row, row), None, *cells(r, None)] for row, r in figures["floors"].items()]
    for model, per in figures["models"].items():
        base = per.get("lattice", {}).get("epe_over_frozen")
        for name in [p for p in figures["placements"] if p in per]:
            r = per[name]
            rows.append([model, name, *cells(r, _cell(r["epe_over_frozen"] / base if base else float("nan")))])
    return "\n".join(markdown_table(head, rows))
