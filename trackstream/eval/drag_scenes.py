"""Synthetic drag scenes with a known right answer: a benchmark for DragStream-style drag editing.

Why: a drag editor's output on real footage can only be judged by proxies (ObjMC on tracked points,
perceptual scores). Here every scene is built from one procedural sprite (trackstream/data/sprites.py) on a
textured background under a static camera, so the intended result of a drag is exact: the sprite's
pixels move as the ``DragInstruction`` says, frame by frame with ``frame_positions`` semantics (pixel
frame p = latent offset p / 4, piecewise linear over the steps; rotations turn on the arc between steps,
see ``drag_scene_frames._intended``), and nothing else changes. An editor's
video can then be compared pixel for pixel with ``gt_video`` and its mask with ``object_mask``.

Scene i of ``make_scenes(count, seed=s)`` draws everything from ``np.random.default_rng(s * 1000 + i)``
(so ``count`` is capped at 1000 to keep seed families disjoint). Kinds cycle with i (translate, deform,
rotate2d, rotate3d) and modes with i // 4 (animate: 2 chunks = 6 steps, 25 pixel frames; edit: 1 step,
13 pixel frames), so any 8 consecutive scenes hold every (kind, mode) pair.

Rendering is the synthetic world's (``SyntheticWorld.generate``): premultiplied "over" of
``cv2.warpAffine(sprite.rgba, matrix)``. Translations and both rotations (the 3D one projected
orthographically) map a flat sprite affinely, so frame p's matrix is the affine through 3 points moved
by ``frame_positions`` composed with the sprite's own ``sprite_matrix``. A deformation is not affine:
its frames are backward-mapped (``drag_scene_frames.invert_field``) and sampled with ``cv2.remap``.

On disk (``write_scene``): ``scene.json`` (name, kind, caption, seed, meta, instruction file name),
``image.png`` (RGB), ``gt.npz`` (gt_video, object_mask) and the instruction. Translations and 2D
rotations use DragStream's own format (``write_dragstream``: ``drag_trajectory.json`` + PNG masks).
Deformations and 3D rotations have no DragStream counterpart; they go to ``drag_instruction.json``:
``{"format": "trackstream-drag/1", "mode", "num_chunks", "prompt", "meta", "movable_area_mask_file",
"trajectories": [{"type": "deformation", "handles": [H][K+1][2], "mask_file"} |
{"type": "rotation3d", "center": [2], "axis": [3], "angles": [K], "mask_file"}]}`` with the same PNG masks.

Where a drag's points lie on the object (``PLACEMENTS``, ``placement_points``): the networks condition on
tracks, and a network that learned one lattice of start points (the token centres) rather than tracks breaks
on any other. ``lattice``: the token centres the mask covers (``adsr.mask_tokens``); ``shifted``: those moved
by half a token in x and y, the ones that leave the mask dropped; ``random``: as many points as the lattice
has, uniform at sub-pixel positions over the mask; ``sparse``: ``SPARSE_CLICKS`` points inside the mask, as a
person clicks an object. The random ones are drawn from the scene's own seed, so a scene's points are fixed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from trackstream.data.sprite_motion import sprite_matrix
from trackstream.data.sprites import BACKGROUND_COLOURS, background_texture, make_sprite
from trackstream.eval.drag_scene_frames import (
    TEMPORAL,
    reachable_mask,
    render_frames,
    warp_sprite,
)
from trackstream.stream.drag.adsr import mask_tokens
from trackstream.stream.drag.geometry import read_mask, resample_path, write_mask
from trackstream.stream.drag.instructions import (
    BLOCK_LENGTH,
    Deformation,
    DragInstruction,
    Rotation2D,
    Rotation3D,
    Translation,
    read_dragstream,
    step_offsets,
    write_dragstream,
)

__all__ = [
    "KINDS",
    "MODES",
    "PLACEMENTS",
    "SPARSE_CLICKS",
    "DragScene",
    "make_scenes",
    "placement_points",
    "read_scene",
    "render_scene",
    "scene_frames",
    "scene_points",
    "write_scene",
]

KINDS = ("translate", "deform", "rotate2d", "rotate3d")
MODES = ("animate", "edit")
MAX_COUNT = 1000  # scene i seeds with seed * 1000 + i: more scenes would collide with the next seed's
PLACEMENTS = ("lattice", "shifted", "random", "sparse")  # where a drag's points lie on the object (module doc)
SPARSE_CLICKS = 3


@dataclass
class DragScene:
    name: str  # "{kind}-{mode}-{index:02d}"
    kind: str  # "translate" | "deform" | "rotate2d" | "rotate3d"
    image: np.ndarray  # uint8 [H, W, 3] RGB: the first frame, which is the drag's reference frame
    caption: str  # appearance only, as SyntheticWorld(caption_motion=False) words it
    instruction: DragInstruction
    object_mask: np.ndarray  # bool [H, W]: sprite alpha > 0.5 in the first frame
    gt_video: np.ndarray  # uint8 [T, H, W, 3]: the first frame, then the sprite moved as intended
    seed: int  # the scene's own rng seed (seed * 1000 + index)


def scene_frames(scene: DragScene) -> int:
    """Pixel frames of ``gt_video``: the reference frame plus 4 per latent frame up to the last step
    (25 for a 2-chunk animation, 13 for an edit, whose one step is the chunk's last latent frame)."""
    return 1 + int(round(TEMPORAL * step_offsets(scene.instruction)[-1]))


def placement_points(mask: np.ndarray, placement: str, token: int, *, seed: int = 0) -> np.ndarray:
    """The points [P, 2] (x, y pixels; pixel i spans i - 0.5 .. i + 0.5) a drag of the object ``mask`` [H, W]
    lays under ``placement`` (``PLACEMENTS``, module doc) on ``token``-px tokens; ``seed`` draws random and sparse."""
    if placement not in PLACEMENTS:
        raise ValueError(f"placement={placement!r}; choose one of {', '.join(PLACEMENTS)}")
    mask = np.asarray(mask, bool)
    lattice = mask_tokens(mask, token)
    if placement == "lattice":
        return lattice
    if placement == "shifted":
        pts = lattice + token / 2
        return pts[_inside(mask, pts)]
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise ValueError("placement_points: the object mask is empty")
    rng = np.random.default_rng([seed, PLACEMENTS.index(placement)])
    if placement == "random":  # uniform over the mask's area: a pixel, then a place inside it
        pick = rng.choice(len(xs), len(lattice), replace=True)
    else:  # sparse: distinct pixels, as clicks land
        pick = rng.choice(len(xs), SPARSE_CLICKS, replace=len(xs) < SPARSE_CLICKS)
    offset = rng.uniform(-0.5, 0.5, (len(pick), 2))
    return np.stack([xs[pick], ys[pick]], axis=1) + offset


def scene_points(scene: DragScene, placement: str, token: int) -> np.ndarray:
    """``placement_points`` on the scene's object, drawn from the scene's own seed (fixed per scene)."""
    return placement_points(scene.object_mask, placement, token, seed=scene.seed)


def _inside(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """[P] bool: every pixel a point touches (the floor and the ceiling of each coordinate) is in ``mask``."""
    H, W = mask.shape
    ok = np.ones(len(pts), bool)
    for fx in (np.floor, np.ceil):
        for fy in (np.floor, np.ceil):
            x, y = fx(pts[:, 0]).astype(int), fy(pts[:, 1]).astype(int)
            inb = (x >= 0) & (x < W) & (y >= 0) & (y < H)
            ok &= inb
            ok[inb] &= mask[y[inb], x[inb]]
    return ok


def _trajectory(kind: str, steps: int, rng: np.random.Generator, radius: float, short: int):
    """The drag for a sprite centred at the origin (shifted onto the real centre later)."""
    frac = np.arange(steps + 1) / steps  # [K + 1] fraction of the full motion at each step
    sign = 1.0 if rng.random() < 0.5 else -1.0
    if kind == "translate":
        length, a = rng.uniform(0.2, 0.34) * short, rng.uniform(0, 2 * math.pi)
        d = np.array([math.cos(a), math.sin(a)])
        control = np.stack([np.zeros(2), length * d])
        if steps > 1 and rng.random() < 0.5:  # gently curved: a bent midpoint, arc length grows by ~2 %
            bend = rng.uniform(-0.15, 0.15) * length * np.array([-d[1], d[0]])
            control = np.stack([control[0], 0.5 * control[1] + bend, control[1]])
        return Translation(points=resample_path(control, steps + 1), control_points=control)
    if kind == "deform":
        # 0.4 r stays inside every shape (a star's and a triangle's inner radius is 0.5 r); the far handle
        # moves outward so the sprite visibly stretches along the axis while the near one pins its back.
        a = rng.uniform(0, 2 * math.pi)
        axis = np.array([math.cos(a), math.sin(a)])
        move = rng.uniform(0.38, 0.78) * radius  # 3-8 px for a 16-20 px sprite at 64 px
        fixed = np.repeat((-0.4 * radius * axis)[None], steps + 1, axis=0)  # [K + 1, 2]
        moving = 0.4 * radius * axis[None] + frac[:, None] * move * axis[None]  # [K + 1, 2]
        return Deformation(handles=np.stack([fixed, moving]))  # [2, K + 1, 2]
    if kind == "rotate2d":
        theta, a, arm = sign * rng.uniform(45, 90), rng.uniform(0, 2 * math.pi), 0.8 * radius
        ang = a + np.radians(theta * frac)  # equal increments; y down, so growing angles turn clockwise
        pts = arm * np.stack([np.cos(ang), np.sin(ang)], axis=1)  # [K + 1, 2]
        return Rotation2D(center=np.zeros(2), start=pts[0], arms=pts[1:])
    if kind == "rotate3d":
        axis = np.array([0.0, 1.0, 0.0]) if rng.random() < 0.5 else np.array([1.0, 0.0, 0.0])
        return Rotation3D(center=np.zeros(2), axis=axis, angles=sign * rng.uniform(40, 70) * frac[1:])
    raise ValueError(f"kind={kind!r}; choose one of {KINDS}")


def _shift(traj, offset: np.ndarray):
    """The same trajectory with every point moved by ``offset`` [2]."""
    if isinstance(traj, Translation):
        control = None if traj.control_points is None else traj.control_points + offset
        return Translation(points=traj.points + offset, control_points=control)
    if isinstance(traj, Deformation):
        return Deformation(handles=traj.handles + offset)
    if isinstance(traj, Rotation2D):
        return Rotation2D(center=traj.center + offset, start=traj.start + offset, arms=traj.arms + offset)
    return Rotation3D(center=traj.center + offset, axis=traj.axis, angles=traj.angles)


def _place(local, radius: float, steps: int, rng: np.random.Generator, kind: str, height: int, width: int):
    """The sprite's centre [2] (one draw from ``rng``) and its reachable offsets [M, 2] from it.

    The centre keeps the whole drag (a disk of the sprite's radius at every step) 2 px from the border:
    positions between steps interpolate linearly, so they stay inside this box."""
    g = np.arange(-math.ceil(radius), math.ceil(radius) + 1, dtype=np.float64)
    disk = np.stack(np.meshgrid(g, g), axis=-1).reshape(-1, 2)  # [(2R + 1)^2, 2] (x, y)
    disk = disk[np.linalg.norm(disk, axis=1) <= radius]
    places = np.concatenate([disk] + [local.displace(disk, k) for k in range(1, steps + 1)])
    lo, hi = 2 - places.min(0), np.array([width - 3, height - 3]) - places.max(0)
    if np.any(lo > hi):
        raise ValueError(
            f"height={height}, width={width}: frame too small for a {2 * radius:.1f} px sprite "
            f"and its {kind} drag with a 2 px margin; use a larger frame or a smaller sprite_size"
        )
    return rng.uniform(lo, hi), places


def render_scene(
    index: int,
    *,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
    texture_scale: float = 4.0,
    sprite_size: tuple[float, float] = (0.25, 0.32),
) -> tuple[DragScene, np.ndarray]:
    """Scene ``index`` of ``make_scenes(seed=seed, ...)`` and its sprite alpha float32 [T, H, W] per frame
    (exact masks of the intended places, for checks that must not infer them from pixel changes)."""
    if not 0 < sprite_size[0] <= sprite_size[1] < 1:
        raise ValueError(f"sprite_size={sprite_size}: need 0 < min <= max < 1 (diameter / shorter side)")
    if texture_scale <= 0:
        raise ValueError(f"texture_scale must be > 0, got {texture_scale}")
    kind, mode = KINDS[index % len(KINDS)], MODES[(index // len(KINDS)) % len(MODES)]
    scene_seed = seed * MAX_COUNT + index
    rng = np.random.default_rng(scene_seed)
    short = min(height, width)
    bg_colour = BACKGROUND_COLOURS[int(rng.integers(len(BACKGROUND_COLOURS)))]
    background = background_texture(rng, height, width, colour=bg_colour, short_side=short, texture_scale=texture_scale)
    diameter = rng.uniform(*sprite_size) * short
    sprite = make_sprite(rng, diameter=diameter, short_side=short, background=bg_colour)
    radius = diameter / 2  # the shape's circumradius: rotations keep the sprite inside it
    angle = rng.uniform(0, 2 * math.pi)
    num_chunks = 2 if mode == "animate" else 1
    steps = BLOCK_LENGTH * num_chunks if mode == "animate" else 1
    local = _trajectory(kind, steps, rng, radius, short)

    centre, places = _place(local, radius, steps, rng, kind, height, width)
    traj = _shift(local, centre)

    m0 = sprite_matrix(sprite, centre.astype(np.float32), angle)  # [2, 3] sprite canvas -> frame
    layer0 = warp_sprite(sprite.rgba, m0, height, width)  # [H, W, 4] premultiplied
    object_mask = layer0[..., 3] > 0.5
    caption = f"A {sprite.pattern} {sprite.colour} {sprite.shape}. A textured {bg_colour} background."
    name = f"{kind}-{mode}-{index:02d}"
    # The editable mask needs the instruction's frame mapping, and the instruction needs a mask:
    # start from the object mask and replace it once the intended places are known.
    instr = DragInstruction(
        mode=mode,
        trajectories=[traj],
        object_masks=[object_mask],
        editable=object_mask.copy(),
        num_chunks=num_chunks,
        prompt=caption,
        meta={"scene": name},
    )
    frames = 1 + int(round(TEMPORAL * step_offsets(instr)[-1]))
    editable = reachable_mask(instr, traj, object_mask, steps, frames)
    gt, alpha = render_frames(instr, traj, sprite.rgba, background, m0, layer0, centre, radius, places, frames)
    # Antialiased rims (alpha ~1e-3) can reach past the dilation where a deformation stretches: every pixel
    # the ground truth changes must be editable, or an editor matching it would break its own mask.
    instr.editable = editable | (alpha.max(axis=0) > 0)
    scene = DragScene(
        name=name,
        kind=kind,
        image=gt[0].copy(),
        caption=caption,
        instruction=instr,
        object_mask=object_mask,
        gt_video=gt,
        seed=scene_seed,
    )
    return scene, alpha


def make_scenes(
    count: int = 24,
    *,
    seed: int = 0,
    height: int = 64,
    width: int = 64,
    texture_scale: float = 4.0,
    sprite_size: tuple[float, float] = (0.25, 0.32),
) -> list[DragScene]:
    """``count`` deterministic scenes; kinds cycle with the index, modes with index // 4 (see module doc)."""
    if not 1 <= count <= MAX_COUNT:
        raise ValueError(f"count must be in [1, {MAX_COUNT}] (scene seeds are seed * {MAX_COUNT} + index), got {count}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return [
        render_scene(i, seed=seed, height=height, width=width, texture_scale=texture_scale, sprite_size=sprite_size)[0]
        for i in range(count)
    ]


def write_scene(scene: DragScene, directory: str | Path) -> Path:
    """Save ``scene`` under ``directory`` (created); layout in the module docstring. Returns the directory."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    instr = scene.instruction
    cv2.imwrite(str(directory / "image.png"), cv2.cvtColor(scene.image, cv2.COLOR_RGB2BGR))
    np.savez_compressed(directory / "gt.npz", gt_video=scene.gt_video, object_mask=scene.object_mask)
    if all(isinstance(t, (Translation, Rotation2D)) for t in instr.trajectories):
        instruction_file = write_dragstream(instr, directory, prefix="drag").name
    else:
        trajs = []
        for i, (t, m) in enumerate(zip(instr.trajectories, instr.object_masks)):
            if isinstance(t, Deformation):
                doc = {"type": "deformation", "handles": np.asarray(t.handles, np.float64).tolist()}
            elif isinstance(t, Rotation3D):
                doc = {
                    "type": "rotation3d",
                    "center": np.asarray(t.center, np.float64).tolist(),
                    "axis": np.asarray(t.axis, np.float64).tolist(),
                    "angles": np.asarray(t.angles, np.float64).tolist(),
                }
            else:
                raise ValueError(
                    f"trajectory {i}: mixing {type(t).__name__} with deformations or 3D rotations "
                    "is not supported by this format"
                )
            write_mask(directory / f"drag_mask_{i}.png", m)
            trajs.append({**doc, "mask_file": f"drag_mask_{i}.png"})
        write_mask(directory / "drag_movable_area.png", instr.editable)
        instruction_file = "drag_instruction.json"
        (directory / instruction_file).write_text(
            json.dumps(
                {
                    "format": "trackstream-drag/1",
                    "mode": instr.mode,
                    "num_chunks": instr.num_chunks,
                    "prompt": instr.prompt,
                    "meta": instr.meta,
                    "movable_area_mask_file": "drag_movable_area.png",
                    "trajectories": trajs,
                },
                indent=2,
            )
        )
    (directory / "scene.json").write_text(
        json.dumps(
            {
                "name": scene.name,
                "kind": scene.kind,
                "caption": scene.caption,
                "seed": scene.seed,
                "instruction_file": instruction_file,
                "meta": instr.meta,
            },
            indent=2,
        )
    )
    return directory


def read_scene(directory: str | Path) -> DragScene:
    """The ``DragScene`` that ``write_scene`` saved under ``directory``."""
    directory = Path(directory)
    if not (directory / "scene.json").is_file():
        raise ValueError(f"directory={directory}: no scene.json; not a scene written by write_scene")
    doc = json.loads((directory / "scene.json").read_text())
    path = directory / doc["instruction_file"]
    if path.name == "drag_trajectory.json":
        instr = read_dragstream(path)
        instr.meta = doc["meta"]  # read_dragstream records its source; restore what was saved
    else:
        spec = json.loads(path.read_text())
        trajs = []
        for t in spec["trajectories"]:
            if t["type"] == "deformation":
                trajs.append(Deformation(handles=np.asarray(t["handles"], np.float64)))
            else:
                trajs.append(
                    Rotation3D(
                        center=np.asarray(t["center"], np.float64),
                        axis=np.asarray(t["axis"], np.float64),
                        angles=np.asarray(t["angles"], np.float64),
                    )
                )
        instr = DragInstruction(
            mode=spec["mode"],
            trajectories=trajs,
            num_chunks=spec["num_chunks"],
            object_masks=[read_mask(directory / t["mask_file"]) for t in spec["trajectories"]],
            editable=read_mask(directory / spec["movable_area_mask_file"]),
            prompt=spec["prompt"],
            meta=spec["meta"],
        )
    image = cv2.imread(str(directory / "image.png"), cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"directory={directory}: image.png could not be read")
    with np.load(directory / "gt.npz") as z:
        gt_video, object_mask = z["gt_video"], z["object_mask"]
    return DragScene(
        name=doc["name"],
        kind=doc["kind"],
        image=cv2.cvtColor(image, cv2.COLOR_BGR2RGB),
        caption=doc["caption"],
        instruction=instr,
        object_mask=object_mask,
        gt_video=gt_video,
        seed=int(doc["seed"]),
    )
