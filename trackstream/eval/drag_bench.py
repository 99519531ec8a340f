"""The drag benchmark: DragStream's latent optimisation and native track control on held-out synthetic
drag scenes whose right answer is known (``eval.drag_scenes``).

    trackstream drag-bench --student RUN/dmd/export/student \\
        --scenes 24 --out runs/drag-bench [--rows main|ablations|all] [--settings ours|reference] [--tracker lk] \\
        [--placements lattice,shifted,random,sparse] [--device cuda --dtype bf16]

Protocol, per scene: the stream starts from the scene's first frame with the background pinned (static
points off the editable area, MotionStream's static points; the object itself has no track). An
animation steers the next 2 chunks (6 latent frames, 24 pixel frames); an edit streams one chunk and
re-generates it so its last latent frame shows the drag. Each row is one way to drag (``ROWS``); the
row "no drag (I=0)" is the same stream with nothing optimised and no object tracks. ``--settings`` picks
the DragConfig every row starts from: ours (the defaults) or the public reference code's
(``optimize.SETTINGS``); row names keep "I=4" whatever I is.

``--placements`` (``drag_scenes.PLACEMENTS``): where a drag that uses tracks (native tracks, tracks +
DragStream) lays the object's points: ``lattice``, the token centres inside the mask (the default, and the
only one before: the start points the shipped networks learned), ``shifted`` (half a token off in x and y),
``random`` (as many, uniform at sub-pixel positions, fixed per scene) or ``sparse`` (3 clicks). Each point
follows the drag's intended path (``frame_positions``) as the lattice's do. Each (row, placement) is one row,
named ``"ROW [PLACEMENT]"`` (the lattice keeps the bare row name); rows that lay no points (DragStream's
latent optimisation from the mask, the floors) run once, their point error on the lattice points.

Scores (pixels of the 64x64 frames; lower is better unless marked):
* ObjMC (DragAnything): the object's entity point (centre of the mask's largest inscribed circle)
  tracked from frame 0 through the generated frames with the project's tracker, against its intended
  path; one flat mean over scenes and frames (frame 0 included). The tracker is queried at the
  entity point itself rather than at the nearest of a 100x100 grid (same thing at this size).
* Point error: the same over the row's own points: the placement's, else every object token centre
  (rotations barely move the entity point).
* Object error / object kept (``drag_metrics.object_track``): the object found in each generated frame from
  its appearance (frame 0's pixels inside its mask, matched over the frame), not by a point tracker: the
  distance of the found mask centroid from the centroid's intended path, and the share of the object's
  pixels still showing its colour at the found place (1 = all there, near 0 = gone); means over frames 1..
  and scenes. An object that melts away keeps its ObjMC (a lost LK point is held at its start, as a still
  object's is) but not its object kept.
* DAI (GoodDrag; 1/N, gamma = 1 at 64 px): the 3x3 patch at the object's intended final place in the
  last frame against the patch at its start in the first frame.
* Background PSNR (higher is better): outside the editable area, the dragged video against the
  undragged one of the same scene and seed (what the drag changed where it should not), and
  against the scene's ground truth (the background held still).
* PSNR / SSIM against the scene's ground-truth video (the known right answer), all frames after 0.
* RF: the drag's seconds per generated frame over the undragged row's (reference passes included).

After the rows, the floors (``drag_table.FLOOR_ROWS``): each scene's ground-truth video, and that video through
the codec, scored the same way (the tracker's own ObjMC on the right answer, the codec's PSNR): what a perfect
student would score; and the frozen first frame (the scene's first frame held: an object that never moves,
every drag's upper bound on error). They do not stream (no RF) and write no video.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from trackstream.data.progress import progress_bar
from trackstream.data.trackers import build_tracker
from trackstream.data.video_io import image_tensor, to_uint8, write_mp4
from trackstream.eval.drag_metrics import dai, entity_point, mask_centroid, object_track
from trackstream.eval.drag_scenes import PLACEMENTS, DragScene, make_scenes, scene_points
from trackstream.eval.drag_table import FLOOR_ROWS, aggregate, table
from trackstream.eval.floors import round_trip
from trackstream.eval.metrics import video_psnr, video_ssim
from trackstream.stream.drag.adsr import mask_tokens
from trackstream.stream.drag.editor import DragEditor
from trackstream.stream.drag.instructions import DragInstruction, frame_positions
from trackstream.stream.drag.optimize import SETTINGS, DragConfig
from trackstream.stream.drag.points import pins_for, track_ids_for
from trackstream.stream.options import (
    add_network_args,
    add_precision_args,
    add_tracker_args,
    load_network_args,
    parsed_precision,
    refuse,
    tracker_config,
)

__all__ = [
    "ROWS",
    "ROW_SETS",
    "PlacedEditor",
    "object_tracks",
    "parse_placements",
    "row_name",
    "run_scene",
    "score",
    "floor_video",
    "run_benchmark",
    "main",
]

# name -> (method, DragConfig changes); the first row is the reference for RF and background PSNR
ROWS = {
    "no drag (I=0)": ("latent", {"iterations": 0}),
    "DragStream (I=4)": ("latent", {}),
    "w/o ADSR": ("latent", {"adsr": False}),
    "w/o SFSO-frequency": ("latent", {"sfso_frequency": False}),
    "w/o SFSO-spatial": ("latent", {"sfso_spatial": False}),
    "fixed cut-off 0.4": ("latent", {"switch_cutoff": False}),
    "re-created optimiser (reference code)": ("latent", {"reset_optimizer": True}),
    "self-reference (steered chunk's 1st frame)": ("latent", {"reference": "self"}),
    "latent constancy (truncated passes)": ("latent", {"keep": "latent"}),
    "native tracks": ("tracks", {}),
    "tracks + DragStream (I=4)": ("both", {}),
}
ROW_SETS = {
    "main": ["no drag (I=0)", "DragStream (I=4)", "native tracks", "tracks + DragStream (I=4)"],
    "all": list(ROWS),
}
ROW_SETS["ablations"] = [r for r in ROWS if r not in ROW_SETS["main"][2:]]


def parse_placements(text: str) -> list[str]:
    """``--placements`` ("lattice,shifted"): the names, in order, once each; an unknown or missing name is a
    ``ValueError`` naming the option and the choices."""
    names = list(dict.fromkeys(n.strip() for n in str(text).split(",") if n.strip()))
    bad = [n for n in names if n not in PLACEMENTS]
    if bad or not names:
        raise ValueError(
            f"--placements {text}: {'unknown ' + ', '.join(bad) if bad else 'no placement'}; "
            f"choose from {', '.join(PLACEMENTS)} (comma-separated)"
        )
    return names


def row_name(row: str, placement: str | None) -> str:
    """The result's key of ``row`` under ``placement``: the bare row name for the lattice (and for rows that
    lay no points), so every earlier figure keeps its name; else ``"ROW [PLACEMENT]"``."""
    return row if placement in (None, "lattice") else f"{row} [{placement}]"


def object_tracks(
    instr: DragInstruction, points: np.ndarray, *, height: int, width: int, num_frames: int
) -> tuple[np.ndarray, np.ndarray]:
    """The one dragged object's ``points`` [P, 2] following its trajectory over ``num_frames`` pixel frames
    (frame 0 = the reference), as ``drag_tracks`` moves its token centres: tracks [T, P, 2], visibility [T, P]."""
    if len(instr.trajectories) != 1:
        raise ValueError(f"a placement lays the points of one object; the drag has {len(instr.trajectories)}")
    points = np.asarray(points, np.float64).reshape(-1, 2)
    if len(points):
        tracks = frame_positions(instr, instr.trajectories[0], points, num_frames).astype(np.float32)
    else:
        tracks = np.zeros((num_frames, 0, 2), np.float32)
    vis = (tracks[..., 0] >= 0) & (tracks[..., 0] <= width - 1) & (tracks[..., 1] >= 0) & (tracks[..., 1] <= height - 1)
    return tracks, vis


class PlacedEditor(DragEditor):
    """A ``DragEditor`` whose drags with tracks lay the object's points at ``object_points`` [P, 2] (a
    placement's) instead of its token centres; None (the default): the editor's own points, the lattice."""

    object_points: np.ndarray | None = None

    def _tracks(self, instr: DragInstruction, ref, *, objects: bool) -> tuple[np.ndarray, np.ndarray]:
        if self.object_points is None or not objects:
            return super()._tracks(instr, ref, objects=objects)
        have = self._need_state().cond.track_ids  # the stream's own IDs (its pins'), as the editor reads them
        static, static_vis = super()._tracks(instr, ref, objects=False)  # the pinned background, same frames
        cond = self._need_state().cond
        moved, moved_vis = object_tracks(
            instr, self.object_points, height=cond.height, width=cond.width, num_frames=len(static)
        )
        tracks, vis = np.concatenate([static, moved], axis=1), np.concatenate([static_vis, moved_vis], axis=1)
        ids = track_ids_for(
            have,
            tracks.shape[1],
            seed=self.config.seed,
            device=self.engine.device,
            id_range=self.engine.network.track_id_range,
        )
        self.state = replace(self.state, cond=replace(cond, track_ids=ids))
        return tracks, vis


def run_scene(
    editor: DragEditor,
    scene: DragScene,
    text,
    text_lengths,
    *,
    method: str,
    config: DragConfig,
    seed: int = 0,
    placement: str | None = None,
) -> dict:
    """Stream the scene with the drag; returns the video uint8 [T, H, W, 3] (frame 0 = the scene's first
    frame), the steered chunks' wall time and their frame count, and the object's points [P, 2] (``points``:
    the ``placement``'s, which a drag with tracks lays, a ``PlacedEditor`` needed for any but the lattice;
    None without a placement)."""
    if placement not in (None, "lattice") and not isinstance(editor, PlacedEditor):
        raise TypeError(f"placement={placement!r} needs a PlacedEditor")
    instr = scene.instruction
    H, W = scene.image.shape[:2]
    image = image_tensor(scene.image)
    editor.config = config
    engine = editor.engine
    pins = pins_for(engine, instr, image, seed=config.seed) if config.pin else None
    start_kw = {} if pins is None else dict(zip(("tracks", "visibility"), pins.over(engine, 0)), track_ids=pins.ids)

    def pinned(chunk: int) -> list:  # the pins over this chunk's pixel frames
        return [] if pins is None else list(pins.over(engine, chunk))

    chunks = [editor.start(image, text, text_lengths, seed=seed, **start_kw)]
    points = None if placement is None else scene_points(scene, placement, editor.token)
    if isinstance(editor, PlacedEditor):
        editor.object_points = None if placement in (None, "lattice") else points
    if instr.mode == "edit":
        chunks.append(editor.step(*pinned(1)))  # the chunk the edit re-generates, as streamed
    if method == "latent" and config.iterations == 0:  # the undragged stream of the same chunks
        if instr.mode == "edit":
            steered = [chunks.pop()]
            seconds = steered[0].seconds
        else:
            t0 = time.perf_counter()
            steered = [editor.step(*pinned(editor.state.chunk)) for _ in range(instr.num_chunks)]
            seconds = time.perf_counter() - t0
    else:
        if instr.mode == "edit":
            chunks.pop()
        result = editor.drag(instr, method=method)
        steered, seconds = result.chunks, result.seconds
    video = np.concatenate([to_uint8(o.frames[0]) for o in chunks + steered])
    return {"video": video, "seconds": seconds, "frames": sum(o.frames.shape[2] for o in steered), "points": points}


def score(
    scene: DragScene,
    video: np.ndarray,
    undragged: np.ndarray | None,
    tracker,
    token: int,
    points: np.ndarray | None = None,
) -> dict:
    """Per-scene figures (see the module docstring) and the trajectories for ObjMC; the point error over
    ``points`` [P, 2] (a placement's), by default the object's token centres (None without points)."""
    instr, traj = scene.instruction, scene.instruction.trajectories[0]
    T = len(video)
    ex, ey = entity_point(scene.object_mask)
    own = mask_tokens(scene.object_mask, token) if points is None else np.asarray(points, np.float64).reshape(-1, 2)
    pts = np.concatenate([[[float(ex), float(ey)]], own])  # [1 + P, 2]
    intended = frame_positions(instr, traj, pts, T)  # [T, 1 + P, 2]
    queries = np.concatenate([np.zeros((len(pts), 1)), pts], axis=1).astype(np.float32)
    achieved, _ = tracker.track(video, queries)
    H, W = video.shape[1:3]
    outside = ~np.asarray(instr.editable, bool)
    gt = scene.gt_video[:T]
    end = np.clip(np.rint(intended[-1, 0]), 1, [W - 2, H - 2]).astype(int)
    centre = frame_positions(instr, traj, np.array([mask_centroid(scene.object_mask)]), T)[:, 0]  # [T, 2]
    found, kept = object_track(video, scene.object_mask)
    out = {
        "scene": scene.name,
        "kind": scene.kind,
        "mode": instr.mode,
        "entity_pred": np.asarray(achieved[:, 0]).tolist(),
        "entity_gt": intended[:, 0].tolist(),
        "point_error": float(np.linalg.norm(achieved[:, 1:] - intended[:, 1:], axis=-1).mean()) if len(own) else None,
        "points": len(own),
        "object_pred": found.tolist(),
        "object_error": float(np.linalg.norm(found[1:] - centre[1:], axis=-1).mean()),  # frame 0 is given
        "object_kept": float(kept[1:].mean()),
        "dai": dai(video[-1], video[0], [[ex, ey]], [end], gamma=1),
        "psnr_gt": video_psnr(video, gt),
        "ssim_gt": video_ssim(video, gt),  # frames 1.. (frame 0 is given)
        "bg_psnr_gt": video_psnr(video[:, outside], gt[:, outside]),
    }
    if undragged is not None:
        out["bg_psnr_undragged"] = video_psnr(video[:, outside], undragged[:, outside])
    return out


def run_benchmark(
    engine,
    encode_text,
    scenes: list[DragScene],
    rows: list[str],
    *,
    tracker,
    out: Path | None = None,
    config: DragConfig = DragConfig(),
    seed: int = 0,
    progress: bool = True,
    placements: str | tuple[str, ...] | list[str] = ("lattice",),
) -> dict:
    """Every row on every scene, a row with tracks once per placement (``row_name``); returns {"rows": {name:
    aggregate, with its "row", "placement" (None for a row that lays no points) and mean "points"},
    "scenes": {name: [per scene]}, "placements": [...]}."""
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        raise ValueError(f"unknown rows {unknown}; known: {list(ROWS)}")
    placements = parse_placements(placements if isinstance(placements, str) else ",".join(placements))
    base_row = "no drag (I=0)"
    rows = [base_row] + [r for r in rows if r != base_row]  # the reference row runs first
    runs = [(r, p) for r in rows for p in ((None,) if ROWS[r][0] == "latent" else placements)]
    per_row: dict[str, list] = {row_name(r, p): [] for r, p in [*runs, *((f, None) for f in FLOOR_ROWS)]}
    base_videos, base_time = {}, {}
    editor = PlacedEditor(engine, config)
    texts = {s.caption: encode_text([s.caption]) for s in scenes}
    bar = progress_bar(total=len(runs) * len(scenes), desc="drag bench", disable=not progress)
    for row, placement in runs:
        method, changes = ROWS[row]
        cfg = replace(config, **changes)
        name = row_name(row, placement)
        for scene in scenes:
            text, lens = texts[scene.caption]
            run = run_scene(editor, scene, text, lens, method=method, config=cfg, seed=seed, placement=placement)
            token = editor.token
            s = score(scene, run["video"], base_videos.get(scene.name), tracker, token, points=run["points"])
            s["seconds_per_frame"] = run["seconds"] / run["frames"]
            if row == base_row:
                base_videos[scene.name], base_time[scene.name] = run["video"], s["seconds_per_frame"]
            s["rf"] = s["seconds_per_frame"] / base_time[scene.name]
            s["placement"] = placement
            per_row[name].append(s)
            if out is not None and scene is scenes[0]:
                write_mp4(out / "videos" / f"{_slug(name)}__{scene.name}.mp4", run["video"], fps=8)
            bar.update(1)
    bar.close()
    editor.object_points = None
    device = next(engine.codec.parameters()).device
    for row in FLOOR_ROWS:  # the floors: the right answers, them through the codec, the still first frame
        for scene in scenes:
            video = floor_video(row, scene, len(base_videos[scene.name]), engine.codec, device)
            per_row[row].append(score(scene, video, base_videos[scene.name], tracker, token) | {"placement": None})

    agg = aggregate(per_row, base_row)
    for r, p in [*runs, *((f, None) for f in FLOOR_ROWS)]:
        items = per_row[row_name(r, p)]
        agg[row_name(r, p)] |= {"row": r, "placement": p, "points": float(np.mean([s["points"] for s in items]))}
    return {"rows": agg, "scenes": per_row, "placements": placements}


def floor_video(row: str, scene: DragScene, frames: int, codec, device) -> np.ndarray:
    """uint8 [frames, H, W, 3] of a floor row (``drag_table.FLOOR_ROWS``) for ``scene``."""
    gt = scene.gt_video[:frames]
    if row == "ground truth":
        return gt
    if row == "frozen first frame":
        return np.ascontiguousarray(np.broadcast_to(gt[:1], gt.shape))
    return round_trip(codec, gt[None], device=device)[0]


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name).strip("-").lower()


def _config(settings: list[str], *, preset: str = "ours", **base) -> DragConfig:
    """DragConfig from the named settings ``preset`` (``DragConfig.preset``), then ``base``, then
    ``FIELD=VALUE`` strings (typed by the field's default; ``none`` for None)."""
    from dataclasses import fields

    types = {f.name: type(f.default) for f in fields(DragConfig)}
    for item in settings:
        name, sep, value = item.partition("=")
        if not sep or name not in types:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(types)}")
        if value.lower() == "none":
            base[name] = None
        elif types[name] is bool:
            base[name] = value.lower() in ("1", "true", "yes")
        elif types[name] in (int, float, str):
            base[name] = types[name](value)
        else:  # tuples / optional numbers (layers, fixed_cutoff)
            base[name] = tuple(int(v) for v in value.split(",")) if name == "layers" else float(value)
    return DragConfig.preset(preset, **base)


def main(argv: list[str] | None = None) -> int:
    """The command; a bad file or value (``ValueError``) is its one-line refusal, exit 2, not a traceback."""
    try:
        return _main(argv)
    except ValueError as err:
        refuse(str(err))


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_network_args(ap)
    ap.add_argument("--scenes", type=int, default=24)
    ap.add_argument("--scene-seed", type=int, default=1, help="held out: training clips never use these scenes")
    ap.add_argument("--rows", default="main", help=f"a row set {sorted(ROW_SETS)} or comma-separated row names")
    ap.add_argument(
        "--settings",
        choices=sorted(SETTINGS),
        default="ours",
        help="DragConfig settings for every row: 'ours' (the defaults: optimiser state kept, I=4, features on "
        "the token grid, the image chunk in x0's ADSR pool) or 'reference' (the public DragStream code's: "
        "optimiser re-created every iteration, I=5, features upsampled bilinearly to the latent grid, the "
        "image chunk left out of x0's ADSR pool); --iterations and --set apply on top (default: ours)",
    )
    ap.add_argument(
        "--iterations", type=int, default=None, help="I per coarse-to-fine segment (default: the --settings' 4 or 5)"
    )
    add_tracker_args(ap, default="lk")  # the drag protocol's tracker (ObjMC as published on this benchmark)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="a DragConfig field for every row, e.g. --set step_index=0 --set lr=0.1 (repeatable)",
    )
    ap.add_argument("--kinds", default=None, help="only these scene kinds, comma-separated (e.g. translate)")
    ap.add_argument(
        "--placements",
        default="lattice",
        help=f"where a drag with tracks lays the object's points, comma-separated, one row each: "
        f"{', '.join(PLACEMENTS)} (default: lattice, the token centres)",
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True)
    add_precision_args(ap)  # default CUDA + bf16 when a GPU is present, else CPU + fp32
    return ap


def _scenes(args, h: int, w: int) -> tuple[list[DragScene], float]:
    """The benchmark's scenes (only ``--kinds``' when given) and the texture scale they were drawn at."""
    from trackstream.stream.demo.session import world_for

    # the scenes' textures at the student's world's scale (its run config), as it was trained on
    texture_scale = world_for(Path(args.student), h, w).texture_scale
    scenes = make_scenes(args.scenes, seed=args.scene_seed, height=h, width=w, texture_scale=texture_scale)
    if args.kinds:
        kinds = {k.strip() for k in args.kinds.split(",")}
        scenes = [s for s in scenes if s.kind in kinds]
        if not scenes:
            raise ValueError(
                f"--kinds {args.kinds}: no such scenes among {args.scenes} (kinds: translate, deform, "
                "rotate2d, rotate3d)"
            )
    return scenes, texture_scale


def _main(argv: list[str] | None = None) -> int:
    ap = _parser()
    args = ap.parse_args(argv)
    placements = parse_placements(args.placements)  # refused before anything loads
    device, dtype = parsed_precision(ap, args)

    from trackstream.stream.engine import StreamingGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = ROW_SETS.get(args.rows) or [r.strip() for r in args.rows.split(",")]
    net, codec, conditioner = load_network_args(args, device, dtype)
    engine = StreamingGenerator(
        net, codec, config=net.conventions.stream_config(args.student), image_features_fn=conditioner.image_features
    )
    scenes, texture_scale = _scenes(args, net.conventions.height, net.conventions.width)
    tracker = build_tracker(**dataclasses.asdict(tracker_config(args)))
    out = Path(args.out)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    result = run_benchmark(
        engine,
        conditioner.text,
        scenes,
        rows,
        tracker=tracker,
        out=out,
        config=_config(
            args.overrides,
            preset=args.settings,
            seed=args.seed,
            **({} if args.iterations is None else {"iterations": args.iterations}),
        ),
        seed=args.seed,
        placements=placements,
    )
    result["config"] = vars(args) | {
        "device": str(device),
        "dtype": str(dtype).removeprefix("torch."),
        "wall_s": round(time.perf_counter() - t0, 1),
        "torch_threads": torch.get_num_threads(),
        "texture_scale": texture_scale,
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "table.md").write_text(table(result))
    print(table(result))
    print(f"wrote {out / 'metrics.json'}, {out / 'table.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
