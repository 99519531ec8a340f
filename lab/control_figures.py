"""Camera control and motion transfer in the embedded world, scored by the EPE protocol (docs/results.md).

    python lab/control_figures.py --out docs/control        # the shipped student, ~2 minutes on 2 cores

* **Camera**: the first frames of held-out clips of the student's world, taken as what they are (a flat
  picture, so the scene's depth is known exactly: a plane at depth 1), moved along an orbit, a pan and a
  dolly by ``data.camera_tracks`` (the code of ``trackstream camera``). The student streams each path's
  tracks; the EPE protocol (``eval.metrics.track_motion``) re-tracks the video against them. Beside it:
  the same stream without tracks (what the tracks add) and the *ideal render* (the first frame warped by the
  plane's exact homography at each frame: the protocol's own floor on a video that follows the path).
* **Transfer**: held-out clips as sources. Their motion is taken as ``trackstream transfer`` takes it (a
  grid of the first frame tracked by LK, ``stream.transfer.source_tracks``) and streamed over (a) the
  clip's own first frame, (b) another clip's first frame. Both are scored against the source clip's own
  ground-truth tracks; beside them the student driven by those ground-truth tracks themselves (what a
  perfect source tracker would give), no tracks, and the source clip itself (the protocol's floor).

* **Prompt switch**: held-out clips streamed with their tracks under their own caption, under the next
  clip's caption, and with the caption switched to the next clip's at chunk 2 (``switch_prompt``): the
  frames before the switch must be identical, and the later frames' mean distance (0-255) to both
  streams says how far the switch moved the stream toward the new prompt.

Writes ``control.json`` (every EPE, per clip and mean; the switch's distances) and ``camera.jpg`` /
``transfer.jpg`` / ``prompt_switch.jpg`` (frames of each video side by side).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from omegaconf import OmegaConf

from trackstream.data.batching import derive_seed
from trackstream.data.camera_tracks import camera_path, camera_tracks
from trackstream.data.clips import DataConfig, make_world
from trackstream.data.trackers import build_tracker
from trackstream.eval.generate import GenerateConfig, generate_videos
from trackstream.eval.harness import Extractors, RowScorer, score_rows
from trackstream.eval.metrics import EPE_TRACKER
from trackstream.eval.sample import Sample
from trackstream.models.tracks import latent_frames
from trackstream.stream.transfer import source_tracks

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "tiny-student"
CODEC = ROOT / "assets" / "tiny-teacher" / "codec.pt"
PATHS = ("orbit", "pan", "dolly")


def ideal_render(first: np.ndarray, tracks: np.ndarray) -> np.ndarray:
    """The first frame [H, W, 3] warped to every frame by the homography its (planar) tracks [T, N, 2] define."""
    H, W = first.shape[:2]
    out = [first]
    for t in range(1, len(tracks)):
        hom, _ = cv2.findHomography(tracks[0].astype(np.float64), tracks[t].astype(np.float64), 0)
        out.append(cv2.warpPerspective(first, hom, (W, H), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return np.stack(out)


@torch.no_grad()
def prompt_switch(student: Path, gen: GenerateConfig, clips: list[dict], switch_chunk: int) -> dict:
    """Each clip streamed three ways with its own tracks: its own caption throughout ("original"), the next
    clip's caption throughout ("target"), and its own caption switched to the next clip's at the start of
    chunk ``switch_chunk`` ("switched", ``StreamingGenerator.switch_prompt``). Returns the videos of clip 0
    and, per clip, the frames before the switch equal or not and the later frames' distance to the others."""
    from trackstream.eval.generate import _setup
    from trackstream.models.tracks import sample_track_ids
    from trackstream.stream.engine import StreamingGenerator

    net, codec, cond = _setup(student, gen)
    engine = StreamingGenerator(net, codec, config=net.conventions.stream_config(str(student)))

    def run(clip, first_caption, later_caption):
        T = clip["frames"].shape[0]
        image = torch.from_numpy(clip["frames"][0]).permute(2, 0, 1)[None].float().div(127.5).sub(1)
        ids = sample_track_ids(1, clip["tracks"].shape[1], generator=torch.Generator().manual_seed(0))
        state = engine.start(image, *cond.text([first_caption]), track_ids=ids, seed=0)
        frames = []
        for i in range(engine.causal.num_chunks(latent_frames(T))):
            if i == switch_chunk and later_caption != first_caption:
                state = engine.switch_prompt(state, *cond.text([later_caption]))
            lo, hi = engine.pixel_range(i)
            tracks = torch.from_numpy(clip["tracks"][lo:hi])[None]
            vis = torch.from_numpy(clip["visibility"][lo:hi])[None]
            out, state = engine.step(state, tracks, vis)
            frames.append(out.frames[0])
        video = torch.cat(frames, 1)[:, :T]  # [3, T, H, W] in [-1, 1]
        return ((video.permute(1, 2, 3, 0).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()

    rows, per = {}, []
    for k, clip in enumerate(clips):
        other = clips[(k + 1) % len(clips)]["caption"]
        own = clip["caption"]
        v = {"original": run(clip, own, own), "switched": run(clip, own, other), "target": run(clip, other, other)}
        lo = engine.pixel_range(switch_chunk)[0]
        late = slice(lo + 12, None)  # a chunk after the switch
        dist = lambda a, b: float(np.abs(a[late].astype(float) - b[late].astype(float)).mean())  # noqa: E731
        per.append(
            {
                "before_switch_identical": bool(np.array_equal(v["original"][:lo], v["switched"][:lo])),
                "switched_to_original": dist(v["switched"], v["original"]),
                "switched_to_target": dist(v["switched"], v["target"]),
                "original_to_target": dist(v["original"], v["target"]),
                "captions": [own, other],
            }
        )
        if k == 0:
            rows = v
    return {"rows": rows, "clips": per, "switch_frame": int(engine.pixel_range(switch_chunk)[0])}


def _strip(rows: dict[str, np.ndarray], times: list[int], scale: int = 2) -> np.ndarray:
    """One row per video, the frames at ``times`` side by side, the row's name on its left."""
    out = []
    for name, video in rows.items():
        tiles = [cv2.resize(video[t], None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for t in times]
        label = np.full((tiles[0].shape[0], 130, 3), 255, np.uint8)
        cv2.putText(label, name, (4, tiles[0].shape[0] // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
        out.append(np.concatenate([label, *tiles], axis=1))
    return np.concatenate(out, axis=0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for control.json, camera.jpg, transfer.jpg")
    ap.add_argument("--clips", type=int, default=4, help="held-out clips per experiment")
    ap.add_argument("--frames", type=int, default=49, help="frames per video (1 + 12k for the shipped chunking)")
    ap.add_argument("--grid", type=int, default=8, help="grid points per side (camera and transfer tracks)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_start = time.time()
    data_cfg = OmegaConf.to_container(OmegaConf.load(STUDENT / "config.yaml"), resolve=True)["data"]
    world = make_world(DataConfig(**{**data_cfg, "num_frames": args.frames}))
    seeds = [
        derive_seed(data_cfg.get("eval_seed", DataConfig.eval_seed), "control", i) for i in range(args.clips)
    ]  # held-out clips
    clips = [world.generate(s) for s in seeds]
    T, H, W = clips[0]["frames"].shape[:3]
    gen = GenerateConfig(codec={"name": "tiny-ae", "checkpoint": str(CODEC)}, device="cpu", dtype="fp32")
    tracker = build_tracker(EPE_TRACKER)
    student = STUDENT / "student"
    report: dict = {"command": " ".join(["python", "lab/control_figures.py", *(argv or sys.argv[1:])]), "camera": {}}

    # -- camera: a flat first frame (depth 1 everywhere) along each path -----------------------------------
    camera_rows = {}
    for kind in PATHS:
        samples, ideal = [], {}
        for i, clip in enumerate(clips):
            tracks, vis = camera_tracks(np.ones((H, W)), camera_path(kind, T, target_depth=1.0), grid_size=args.grid)
            first = clip["frames"][0]
            ideal[f"c{i}"] = ideal_render(first, tracks)
            samples.append(Sample(f"c{i}", ideal[f"c{i}"], tracks, vis, clip["caption"]))
        with_t = generate_videos(student, samples, mode="with_tracks", cfg=gen)
        without = generate_videos(student, samples, mode="without_tracks", cfg=gen)
        rows = {"student": with_t, "no tracks": without, "ideal render": ideal}
        scored = score_rows(rows, samples, metrics=["epe"], tracker=tracker, extractors=Extractors(), progress=False)
        per = {name: scored[name]["per_sample"]["epe"] for name in rows}
        report["camera"][kind] = {name: {"clips": v, "mean": float(np.nanmean(v))} for name, v in per.items()}
        print(kind, {name: round(r["mean"], 2) for name, r in report["camera"][kind].items()}, flush=True)
        if kind == "orbit":
            camera_rows = {f"orbit {name}": v["c0"] for name, v in rows.items()}

    # -- transfer: a held-out clip's motion onto its own and another first frame ----------------------------
    same, other = [], []
    for i, clip in enumerate(clips):
        tracks, vis = source_tracks(clip["frames"], tracker, grid=args.grid, height=H, width=W)
        host = clips[(i + 1) % len(clips)]["frames"]
        same.append(Sample(f"t{i}", clip["frames"], tracks, vis, clip["caption"]))
        # scored against the source's motion: the ground-truth tracks re-tracked on the source are the reference
        other.append(Sample(f"o{i}", np.concatenate([host[:1], clip["frames"][1:]]), tracks, vis, clip["caption"]))
    truth = [Sample(f"g{i}", c["frames"], c["tracks"], c["visibility"], c["caption"]) for i, c in enumerate(clips)]
    videos = {
        "its own tracks": {
            f"t{i}": v for i, v in enumerate(generate_videos(student, truth, mode="with_tracks", cfg=gen).values())
        },
        "onto its own frame": generate_videos(student, same, mode="with_tracks", cfg=gen),
        "onto another frame": generate_videos(student, other, mode="with_tracks", cfg=gen),
        "no tracks": generate_videos(student, same, mode="without_tracks", cfg=gen),
        "source clip": {s.id: s.frames for s in same},
    }
    # each video against its clip's own ground-truth tracks (the world's): what the transferred motion should be
    scorer = RowScorer(tracker, metrics=("epe",))
    for i, clip in enumerate(truth):
        scorer.add(
            clip, {name: vids[(other if name == "onto another frame" else same)[i].id] for name, vids in videos.items()}
        )
    scored = scorer.results()
    report["transfer"] = {
        name: {"clips": r["per_sample"]["epe"], "mean": float(np.nanmean(r["per_sample"]["epe"]))}
        for name, r in scored.items()
    }
    print("transfer", {name: round(r["mean"], 2) for name, r in report["transfer"].items()}, flush=True)

    # -- prompt switch: a held-out clip's caption switched to another's at chunk 2 ----------------------------
    switched = prompt_switch(student, gen, clips, switch_chunk=2)
    report["prompt_switch"] = {"switch_frame": switched["switch_frame"], "clips": switched["clips"]}
    means = {
        k: float(np.mean([c[k] for c in switched["clips"]]))
        for k in ("switched_to_original", "switched_to_target", "original_to_target")
    }
    report["prompt_switch"]["mean"] = means
    print("prompt switch", {k: round(v, 2) for k, v in means.items()}, flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    times = [0, T // 4, T // 2, 3 * T // 4, T - 1]
    cv2.imwrite(
        str(args.out / "prompt_switch.jpg"),
        _strip(switched["rows"], times)[:, :, ::-1],
        [cv2.IMWRITE_JPEG_QUALITY, 90],
    )
    cv2.imwrite(str(args.out / "camera.jpg"), _strip(camera_rows, times)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    first_clip = {name: vids["o0" if name == "onto another frame" else "t0"] for name, vids in videos.items()}
    cv2.imwrite(str(args.out / "transfer.jpg"), _strip(first_clip, times)[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    report.update(
        clips=args.clips,
        frames=T,
        size=[H, W],
        grid=args.grid,
        tracker=EPE_TRACKER,
        seconds=round(time.time() - t_start),
    )
    (args.out / "control.json").write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
