"""Benchmark sets as data: what a model is asked to generate and what it is scored against.

A ``Sample`` is one video to generate: the ground-truth frames (uint8 [T, H, W, 3]; frame 0 is the
given first frame), the conditioning tracks [T, N, 2] (x, y) pixels with their visibility [T, N], a
caption and an id (the name of the generated video in a folder of results). Sources:

* ``synthetic``: the embedded world's held-out clips (``data.clips.heldout_clips``: a seed namespace
  no training stream draws), exact ground-truth tracks;
* a shard folder written by ``python -m trackstream.data.prepare`` (its tracker's tracks, its captions);
* a folder of videos: ``<id>.mp4`` + ``<id>.tracks.npy`` [T, N, 2] (+ ``<id>.visibility.npy``
  [T, N], default all visible; + ``<id>.txt`` caption). This is also the layout ``python -m trackstream.eval``
  writes the videos it generates in, and the layout other methods' results are read from;
* ``davis_motionstream``: MotionStream's DAVIS 2017 val protocol (``eval.davis``): the official folder layout,
  frames resized and subsampled, tracks made by the command's tracker on a first-frame grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from trackstream.eval.sample import Sample

__all__ = [
    "BENCHMARKS",
    "CLIP_BENCHMARKS",
    "BenchmarkConfig",
    "load_benchmark",
    "load_benchmark_clips",
    "read_video_folder",
    "write_video_folder",
]


# the sources by name (conf/benchmark/ holds a file per protocol: synthetic, davis_motionstream, movebench)
BENCHMARKS = ("synthetic", "shards", "videos", "davis_motionstream", "movebench")
# the sources whose samples come from clip dicts (``load_benchmark_clips``): new input tracks can be laid on them
# (``eval.placements``: the synthetic world's scene tracks any point; a shard's tracked grid gives subsets)
CLIP_BENCHMARKS = ("synthetic", "shards")


@dataclass
class BenchmarkConfig:
    name: str = "synthetic"  # one of BENCHMARKS
    path: Optional[str] = None  # shards / videos: the folder; davis_motionstream: the DAVIS 2017 root
    num_samples: Optional[int] = 16  # the first N samples (null: all)
    # keep the first frames (null: the source's; synthetic: data.num_frames); davis_motionstream: the model's
    # length, a longer sequence subsampled keeping its first and last frames (eval.davis.select_frames)
    num_frames: Optional[int] = None
    num_tracks: Optional[int] = None  # the first N tracks of each sample (null: all)
    # davis_motionstream only: a sequence shorter than num_frames goes to num_frames - k * frame_step frames (the
    # lengths a streaming student makes; null: kept whole)
    frame_step: Optional[int] = None
    # davis_motionstream / movebench: "model" takes num_frames and frame_step from the evaluated runs' lengths
    # (eval.generate.model_lengths: num_frames the longest they all make up to the given one, frame_step their
    # chunk), so a student is given whole chunks; null keeps num_frames / frame_step as given
    frame_rule: Optional[str] = None
    # davis_motionstream only (null: eval.davis.DEFAULTS, the paper's; conf/benchmark/davis_motionstream.yaml)
    split: Optional[str] = None  # the sequence list, relative to path (ImageSets/2017/val.txt)
    images: Optional[str] = None  # the frames' folder, relative to path (JPEGImages/480p)
    height: Optional[int] = None  # frames resized to height x width (480 x 832)
    width: Optional[int] = None
    grid_size: Optional[int] = None  # grid_size x grid_size first-frame points tracked (50)
    captions: Optional[str] = None  # a JSON {sequence: caption} (null: <path>/captions.json, else the names)
    # movebench only (eval.movebench): single (every clip) | multi (the multi-object clips); en | zh captions
    subset: Optional[str] = None
    language: Optional[str] = None

    def __post_init__(self) -> None:
        if self.name not in BENCHMARKS:
            raise ValueError(
                f"benchmark.name={self.name!r}; choose synthetic, shards (data.prepare output), "
                "videos (a folder of <id>.mp4 + <id>.tracks.npy), davis_motionstream (benchmark=davis_motionstream) "
                "or movebench (benchmark=movebench)"
            )
        folder = {
            "shards": "data.prepare output",
            "videos": "<id>.mp4 + <id>.tracks.npy",
            "davis_motionstream": "the DAVIS 2017 root: JPEGImages/480p/, ImageSets/2017/val.txt",
            "movebench": "the MoveBench folder: en/single_track.txt, en/video/, en/first_frame/, en/track/",
        }.get(self.name, "")
        if self.frame_rule not in (None, "model"):
            raise ValueError(
                f"benchmark.frame_rule={self.frame_rule!r}: model (the lengths the evaluated networks make) or null"
            )
        if self.name != "synthetic" and not self.path:
            raise ValueError(f"benchmark.name={self.name} needs benchmark.path (the folder: {folder})")
        if self.name != "synthetic" and not set("*?[{") & set(str(self.path)) and not Path(self.path).exists():
            # a glob / brace pattern of shards is expanded when read; a plain folder must be there now
            raise ValueError(f"benchmark.path={self.path!r} does not exist; give the benchmark folder ({folder})")
        if self.name == "davis_motionstream":
            from trackstream.eval.davis import check_layout

            check_layout(self)  # the folder's layout, before any model or weights file is loaded


def _trim(s: Sample, cfg: BenchmarkConfig) -> Sample:
    t, n = cfg.num_frames, cfg.num_tracks
    return Sample(s.id, s.frames[:t], s.tracks[:t, :n].astype(np.float32), s.visibility[:t, :n].astype(bool), s.caption)


def _cut_clip(clip: dict, t: Optional[int]) -> dict:
    """``clip``'s first ``t`` frames (None: all), its tracks alike (every track: ``eval.placements`` takes its own
    subsets of them), a synthetic clip's ``scene`` (``data.synthetic.SceneMotion``) too, so the tracks it gives
    new points are as long as the frames."""
    import dataclasses

    out = {
        **clip,
        "frames": clip["frames"][:t],
        "tracks": np.asarray(clip["tracks"])[:t].astype(np.float32),
        "visibility": np.asarray(clip["visibility"])[:t].astype(bool),
    }
    scene = clip.get("scene")
    if scene is not None and t is not None and t < len(scene.offset):
        sprites = [(bitmap, centre[:t], angle[:t]) for bitmap, centre, angle in scene.sprites]
        out["scene"] = dataclasses.replace(scene, offset=scene.offset[:t], sprites=sprites)
    return out


def _clip_sample(clip: dict) -> Sample:
    return Sample(str(clip["meta"]["id"]), clip["frames"], clip["tracks"], clip["visibility"], clip["caption"])


def _synthetic_clips(data_cfg, count: Optional[int]) -> list[dict]:
    import dataclasses

    from trackstream.data.clips import heldout_clips

    if count is not None:
        data_cfg = dataclasses.replace(data_cfg, eval_samples=count)
    # the embedded world's clips even for a run trained on shards (heldout_clips would read its eval_shards)
    data_cfg = dataclasses.replace(data_cfg, source="synthetic", eval_shards=None)
    return list(heldout_clips(data_cfg).clips)


def _shards(path: str, count: Optional[int]) -> list[Sample]:
    return [_clip_sample(c) for c in _shard_clips(path, count)]


def _shard_clips(path: str, count: Optional[int]) -> list[dict]:
    """The shard samples as clip dicts (frames, tracks, visibility, caption, meta: the sample's key as ``id`` and a
    ``seed`` derived from it, which fixes the subsets ``eval.placements`` draws of its tracks)."""
    from trackstream.data.batching import derive_seed
    from trackstream.data.loader import read_tar_shard
    from trackstream.data.shards import decode_sample, list_shards
    from trackstream.data.video_io import tensor_to_frames

    out = []
    for shard in list_shards(path):
        for raw in read_tar_shard(shard.url):
            s = decode_sample(raw)
            if "video" not in s:
                raise ValueError(
                    f"{shard.url}: sample {raw['__key__']} has no video (cached latents only); a "
                    "benchmark needs the ground-truth frames"
                )
            key = raw["__key__"]
            out.append(
                {
                    "frames": tensor_to_frames(s["video"]),
                    "tracks": s["tracks"].numpy(),
                    "visibility": s["visibility"].numpy(),
                    "caption": s["caption"],
                    "meta": {"id": key, "seed": derive_seed("benchmark", key)},
                }
            )
            if count is not None and len(out) == count:
                return out
    return out


def read_video_folder(path: str | Path, *, ids: Optional[list[str]] = None) -> dict[str, np.ndarray]:
    """``<id>.mp4`` files of a folder -> {id: uint8 [T, H, W, 3]} (all, or exactly ``ids``)."""
    from trackstream.data.video_io import decode_video

    path = Path(path)
    if not path.is_dir():
        raise ValueError(f"{path} is not a folder of videos")
    names = ids if ids is not None else sorted(p.stem for p in path.glob("*.mp4"))
    missing = [i for i in names if not (path / f"{i}.mp4").is_file()]
    if missing:
        raise ValueError(
            f"{path} lacks {len(missing)} of the benchmark's videos, e.g. {missing[:3]} "
            "(expected <id>.mp4 for every sample id)"
        )
    return {i: decode_video(str(path / f"{i}.mp4"))[0] for i in names}


def write_video_folder(
    path: str | Path, videos: dict[str, np.ndarray], samples: Optional[list[Sample]] = None, *, fps: int = 16
) -> Path:
    """Write ``<id>.mp4`` (+ the samples' tracks / visibility / caption): the benchmark folder layout."""
    from trackstream.data.video_io import write_mp4

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    for i, v in videos.items():
        write_mp4(str(path / f"{i}.mp4"), v, fps=fps)
    for s in samples or []:
        np.save(path / f"{s.id}.tracks.npy", s.tracks.astype(np.float32))
        np.save(path / f"{s.id}.visibility.npy", s.visibility.astype(bool))
        (path / f"{s.id}.txt").write_text(s.caption)
    return path


def _videos(path: str, count: Optional[int]) -> list[Sample]:
    folder = Path(path)
    ids = sorted(p.name[: -len(".tracks.npy")] for p in folder.glob("*.tracks.npy"))
    if not ids:
        raise ValueError(f"{folder} holds no <id>.tracks.npy: a video benchmark folder needs tracks per video")
    ids = ids[:count] if count is not None else ids
    frames = read_video_folder(folder, ids=ids)
    out = []
    for i in ids:
        tracks = np.load(folder / f"{i}.tracks.npy")
        vis_path = folder / f"{i}.visibility.npy"
        vis = np.load(vis_path) if vis_path.is_file() else np.ones(tracks.shape[:2], bool)
        cap = folder / f"{i}.txt"
        out.append(Sample(i, frames[i], tracks, vis, cap.read_text().strip() if cap.is_file() else ""))
    return out


def load_benchmark_clips(cfg: BenchmarkConfig, *, data_cfg=None) -> tuple[list[Sample], list[dict]]:
    """The samples of a ``CLIP_BENCHMARKS`` source and, one per sample, the clip dict it was made from (frames,
    tracks, visibility, caption, ``meta`` with ``id`` and ``seed``; the synthetic world's clips with their
    ``scene``), cut to the sample's frames but keeping every track (``benchmark.num_tracks`` cuts the samples'):
    what ``eval.placements`` lays new input tracks on. The samples are ``load_benchmark``'s, from the same clips
    (rendered or read once)."""
    if cfg.name not in CLIP_BENCHMARKS:
        raise ValueError(f"benchmark {cfg.name!r} has no clips; those with clips: {list(CLIP_BENCHMARKS)}")
    if cfg.name == "synthetic":
        if data_cfg is None:
            raise ValueError("the synthetic benchmark needs the world's data config (data.*)")
        clips = _synthetic_clips(data_cfg, cfg.num_samples)
    else:
        clips = _shard_clips(cfg.path, cfg.num_samples)
    _check([_clip_sample(c) for c in clips], cfg)
    clips = [_cut_clip(c, cfg.num_frames) for c in clips]
    return [_trim(_clip_sample(c), cfg) for c in clips], clips


def _check(samples: list[Sample], cfg: BenchmarkConfig) -> None:
    if not samples:
        raise ValueError(f"benchmark {cfg.name!r} ({cfg.path}) has no samples")
    for s in samples:
        if s.tracks.shape[0] != s.frames.shape[0]:
            raise ValueError(f"sample {s.id}: {s.frames.shape[0]} frames but tracks for {s.tracks.shape[0]}")


def load_benchmark(cfg: BenchmarkConfig, *, data_cfg=None, tracker=None, tracker_name: str = "") -> list[Sample]:
    """The samples of a benchmark (``data_cfg``: the world of the synthetic benchmark, a DataConfig; ``tracker``:
    a data.trackers tracker, for the sources that make their tracks, davis_motionstream)."""
    if cfg.name in CLIP_BENCHMARKS:
        return load_benchmark_clips(cfg, data_cfg=data_cfg)[0]
    if cfg.name == "davis_motionstream":
        from trackstream.eval.davis import davis_samples

        samples = [Sample(*fields) for fields in davis_samples(cfg, tracker, tracker_name=tracker_name)]
    elif cfg.name == "movebench":
        from trackstream.eval.movebench import load_movebench

        samples = load_movebench(
            cfg.path,
            subset=cfg.subset or "single",
            language=cfg.language or "en",
            num_samples=cfg.num_samples,
            num_frames=cfg.num_frames,
            num_tracks=cfg.num_tracks,
        )
    else:
        samples = _videos(cfg.path, cfg.num_samples)
    _check(samples, cfg)
    return [_trim(s, cfg) for s in samples]
