"""The tracker's own floor on a candidate world: how well the EPE protocol follows the ground truth itself.

    python lab/world_floor.py --out docs/embedded_world/world_floor.json [--samples 32] [--codec NAME=codec.pt ...]

For each candidate world (``WORLDS``: the release world, worlds whose every clip has several sprites, and
mixtures of the release world's camera clips with still-camera objects clips), the held-out clips at 25
frames (``data.clips.heldout_clips``, the evaluation's 128 input tracks per clip, chosen as the teacher
evaluation chooses them) are re-tracked by the one EPE protocol (``metrics.track_motion``, ``lk_plain``):

* ``gt`` / ``frozen``: the ground truth's EPE and the frozen first frame's; their ratio is the floor under
  any model's EPE ratio (a video cannot be followed better than the ground truth is);
* ``until_hidden``: the same over the entries before each point is first hidden (occluded or out of the
  frame): what a tracker that re-finds uncovered points would approach;
* ``by_point``: the ground truth's error split by what a point does (background that leaves the frame,
  background a sprite covers and uncovers, background within 6 px of a moving sprite, sprite, other
  background), as shares of the EPE;
* with ``--codec NAME=codec.pt`` (a codec fitted on that world), the round trip's EPE too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from trackstream.data.clips import DataConfig, heldout_clips
from trackstream.data.trackers import build_tracker
from trackstream.eval.floors import round_trip
from trackstream.eval.metrics import frozen_epe, track_motion

RELEASE = dict(
    camera_pan_prob=1.0,
    pan_speed=[0.3, 0.5],
    num_sprites=[0, 1],
    sprite_size=[0.2, 0.3],
    speed=[0.1, 0.3],
    rotation_speed=30.0,
    texture_scale=2.0,
    caption_motion=False,
)
OBJECTS = dict(camera_pan_prob=0.0, num_sprites=[2, 3], sprite_size=[0.28, 0.4], speed=[0.25, 0.5], rotation_speed=20.0)
WORLDS = {
    "release (pan, 0-1 slow sprite)": RELEASE,
    "every clip: 2-4 sprites, half pan": {
        **RELEASE,
        "camera_pan_prob": 0.5,
        "pan_speed": [0.2, 0.4],
        "num_sprites": [2, 4],
        "sprite_size": [0.28, 0.42],
        "speed": [0.35, 0.7],
        "rotation_speed": 45.0,
        "exit_prob": 0.1,
    },
    "every clip: 1-2 sprites, 3/4 pan": {
        **RELEASE,
        "camera_pan_prob": 0.75,
        "num_sprites": [1, 2],
        "sprite_size": [0.3, 0.4],
        "speed": [0.25, 0.45],
        "rotation_speed": 15.0,
        "exit_prob": 0.0,
    },
    "every clip: 2-3 sprites, still camera": {**RELEASE, **OBJECTS, "exit_prob": 0.0},
    "mixture: 25 % objects clips (tiny_teacher_objects)": {
        **RELEASE,
        "object_clips": 0.25,
        "objects": {**OBJECTS, "exit_prob": 0.0},
    },
    "mixture: 40 % objects clips": {**RELEASE, "object_clips": 0.4, "objects": {**OBJECTS, "exit_prob": 0.0}},
}


def _input_tracks(clip: dict, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The evaluation's input tracks: a fixed random subset (seeded by the clip) of those visible at frame 0."""
    import torch

    tracks, vis = clip["tracks"], clip["visibility"]
    on = np.flatnonzero(vis[0])
    if len(on) > n:
        g = torch.Generator().manual_seed(int(clip["meta"]["seed"]) % 2**62)
        keep = np.sort(on[torch.randperm(len(on), generator=g)[:n].numpy()])
    else:
        keep = on
    return tracks[:, keep], vis[:, keep]


def point_classes(tracks: np.ndarray, vis: np.ndarray, size: int) -> np.ndarray:
    """[N] class per input track: 0 other background, 1 leaves the frame, 2 covered by a sprite, 3 within 6 px
    of a moving sprite at frame 0, 4 on a sprite (its motion departs from the median by > 4 px)."""
    inside = (tracks[..., 0] >= 0) & (tracks[..., 0] <= size - 1) & (tracks[..., 1] >= 0) & (tracks[..., 1] <= size - 1)
    covered = (inside & ~vis).any(0)
    leaves = (~inside).any(0) & ~covered
    disp = tracks[-1] - tracks[0]
    sprite = np.linalg.norm(disp - np.median(disp, axis=0), axis=-1) > 4
    near = np.zeros(len(sprite), bool)
    if sprite.any():
        d = np.linalg.norm(tracks[0][:, None] - tracks[0][sprite][None], axis=-1).min(axis=1)
        near = d < 6
    cls = np.zeros(len(sprite), int)
    cls[leaves], cls[covered], cls[near & ~sprite], cls[sprite] = 1, 2, 3, 4
    return cls


CLASSES = ("other background", "leaves the frame", "covered by a sprite", "near a moving sprite", "sprite")


def floor(world: dict, *, samples: int, codec=None) -> dict:
    data = DataConfig(num_frames=25, eval_samples=samples, world=world)
    clips = heldout_clips(data).clips
    trk = build_tracker("lk_plain")
    rows = {k: [] for k in ("gt", "frozen", "gt_until_hidden", "frozen_until_hidden", "codec")}
    by_point = np.zeros(len(CLASSES))
    entries = 0
    for clip in clips:
        tracks, vis = _input_tracks(clip, 128)
        m = track_motion(clip["frames"], tracks, vis, trk)
        err = np.linalg.norm(m.positions - tracks, axis=-1)
        ferr = np.linalg.norm(tracks[:1] - tracks, axis=-1)
        pre = np.cumsum(~vis, axis=0) == 0
        rows["gt"].append(m.epe)
        rows["frozen"].append(frozen_epe(tracks, vis)[0])
        rows["gt_until_hidden"].append(err[pre].mean())
        rows["frozen_until_hidden"].append(ferr[pre].mean())
        cls = point_classes(tracks, vis, clip["frames"].shape[1])
        for k in range(len(CLASSES)):
            by_point[k] += np.where(vis[:, cls == k], err[:, cls == k], 0).sum() / vis.sum()
        entries += 1
        if codec is not None:
            rows["codec"].append(
                track_motion(round_trip(codec, clip["frames"][None], device="cpu")[0], tracks, vis, trk).epe
            )
    mean = {k: float(np.mean(v)) for k, v in rows.items() if v}
    out = {
        **{k: round(v, 3) for k, v in mean.items()},
        "gt_over_frozen": round(mean["gt"] / mean["frozen"], 3),
        "until_hidden_over_frozen": round(mean["gt_until_hidden"] / mean["frozen_until_hidden"], 3),
        "by_point_px": {c: round(float(v / entries), 3) for c, v in zip(CLASSES, by_point)},
        "objects_clips": sum(c["meta"].get("kind") == "objects" for c in clips),
        "clips": len(clips),
    }
    if "codec" in mean:
        out["codec_over_frozen"] = round(mean["codec"] / mean["frozen"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--samples", type=int, default=32)
    ap.add_argument("--codec", action="append", default=[], help="NAME=codec.pt: a tiny-ae codec fitted on world NAME")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    import torch

    from trackstream.models.codecs import build_codec

    torch.set_num_threads(1)
    codecs = dict(c.split("=", 1) for c in args.codec)
    unknown = sorted(set(codecs) - set(WORLDS))
    if unknown:
        raise SystemExit(f"--codec: unknown worlds {unknown}; known: {list(WORLDS)}")
    result = {}
    for name, world in WORLDS.items():
        codec = build_codec("tiny-ae", checkpoint=codecs[name]).eval() if name in codecs else None
        result[name] = {"world": world, **floor(world, samples=args.samples, codec=codec)}
        r = result[name]
        print(
            f"{name}: ground truth {r['gt']:.2f} / frozen {r['frozen']:.2f} px = {r['gt_over_frozen']:.3f}; "
            f"until hidden {r['until_hidden_over_frozen']:.3f}"
            + (f"; codec round trip {r['codec_over_frozen']:.3f}" if "codec_over_frozen" in r else ""),
            flush=True,
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"samples": args.samples, "frames": 25, "worlds": result}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
