"""Worker side of the shard pipeline: one input file -> one sample, one shard -> one tar + report.

Design: every check that can reject a file raises `Skip(reason)` with a `kind: detail` reason;
anything unexpected is caught at the file level and recorded as `error: ...`, so a shard always
completes. Components (tracker, text encoder, latent encoder) are built once per worker process
from their specs. Before each file the worker writes the file's path to `.progress/<shard>.current`
so the parent can name the culprit if a decoder crashes the process (see trackstream/data/prepare_shards.py).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

import numpy as np
import torch

from trackstream.data.prepare_cuts import frame_histograms, histogram_distance
from trackstream.data.shards import encode_sample, make_key, write_shard_atomic
from trackstream.data.tracker_base import grid_queries
from trackstream.data.trackers import build_tracker, check_tracker_name
from trackstream.data.video_io import (
    VideoDecodeError,
    decode_video,
    encode_mp4,
    frames_to_tensor,
    probe_video,
    resample_indices,
    resize_center_crop,
)

_STATE: dict[str, Any] = {}


class Skip(Exception):
    """A file that cannot become a sample; the message is the recorded reason."""


def build_component(spec, kind: str):
    """dict with `_target_` -> hydra.utils.instantiate; tracker dict -> build_tracker; object -> itself."""
    if spec is None:
        return None
    if isinstance(spec, dict):
        spec = dict(spec)
        if "_target_" in spec:
            import hydra.utils

            return hydra.utils.instantiate(spec)
        if kind == "tracker":
            return build_tracker(**spec)
        raise ValueError(f"prepare {kind} spec needs a `_target_` (got keys {sorted(spec)})")
    return spec


# keys of a component spec that name local files (tracker checkpoint, encoder weights)
_PATH_KEYS = ("checkpoint", "path")


def check_component(spec, kind: str) -> None:
    """Fail up front (one-line ValueError naming the component and the fix) when a component the workers
    will build cannot be: its package is not installed or a file it names is missing. Built inside each
    worker, such a component failed on every video, each recorded as a skip: exit 0, nothing written."""
    import importlib.util

    if not isinstance(spec, dict):
        return  # None, or an object built by the caller
    name = spec.get("_target_") or spec.get("name", "lk")
    if kind == "tracker" and "_target_" not in spec:
        check_tracker_name(str(name), "tracker.name")
    if kind == "tracker" and "_target_" not in spec and str(name).startswith("cotracker3"):
        from trackstream.data.cotracker3_tracker import cotracker_install_hint

        if importlib.util.find_spec("cotracker") is None:  # prepare is a Hydra command: its overrides
            raise ValueError(f"tracker={name}: {cotracker_install_hint('tracker.checkpoint=<path>', 'tracker=lk')}")
    elif "_target_" in spec:
        module = str(spec["_target_"]).rpartition(".")[0]
        try:
            found = bool(module) and importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ValueError(f"{kind}._target_={spec['_target_']!r}: module {module!r} is not installed or misspelled")
    for key in _PATH_KEYS:
        path = spec.get(key)
        if isinstance(path, str) and path and not os.path.exists(path):
            raise ValueError(
                f"{kind}.{key}={path!r} ({name}) does not exist; download it and give its local path"
                + (
                    " (scaled_offline.pth / scaled_online.pth: huggingface.co/facebook/cotracker3)"
                    if "cotracker" in str(name)
                    else ""
                )
            )


def init_worker(cfg, specs: dict, in_pool: bool = True, tick=None) -> None:
    """Process initializer: keep the config, build components lazily on first use."""
    if in_pool and cfg.start_method != "fork":
        # One worker process per core: torch's intra-op pool would oversubscribe the machine.
        # Thread pools are left alone in forked children (and OpenCV's always): reconfiguring a
        # pool inherited through fork can deadlock.
        torch.set_num_threads(1)
    _STATE.clear()
    # tick: tick() once per video done, tick(text) for what the worker is doing now (the parent's progress bar:
    # a callable, or a queue from the pool)
    if tick is not None and hasattr(tick, "put"):  # the pool's queue: 1 per video, or the status text
        queue = tick

        def tick(text: str | None = None) -> None:
            queue.put(1 if text is None else text)

    _STATE.update(cfg=cfg, specs=specs, built={}, tick=tick)


def _component(kind: str):
    built = _STATE["built"]
    if kind not in built:
        built[kind] = build_component(_STATE["specs"].get(kind), kind)
    return built[kind]


def caption_of(item, cfg) -> str:
    """The item's caption; a video without one gets ``cfg.missing_caption``'s (``empty``: "", ``filename``: the file
    name without its extension, ``_`` / ``-`` read as spaces) or is skipped (``skip``)."""
    if item.caption:
        return item.caption
    if cfg.missing_caption == "skip":
        raise Skip("missing_caption: no caption in the manifest and no sidecar .txt (missing_caption=skip)")
    if cfg.missing_caption == "filename":
        stem = os.path.splitext(os.path.basename(item.path))[0]
        return " ".join(stem.replace("_", " ").replace("-", " ").split())
    return ""


def _status(text: str) -> None:
    """What this worker is doing now, for the parent's progress bar (a long video decodes and tracks for a while)."""
    if _STATE.get("tick") is not None:
        _STATE["tick"](text)


def _check_source(item, cfg):
    """Probe the file and apply the source filters; returns its VideoInfo. Raises Skip(reason)."""
    if not os.path.isfile(item.path):
        raise Skip("missing_file")
    if os.path.getsize(item.path) == 0:
        raise Skip("empty_file")
    try:
        info = probe_video(item.path)
    except VideoDecodeError as e:
        raise Skip(f"decode_error: {e}") from None
    if not (math.isfinite(info.fps) and 0 < info.fps <= cfg.max_source_fps):
        raise Skip(f"bad_fps: {info.fps}")
    if info.fps < cfg.min_source_fps:
        raise Skip(f"low_fps: {info.fps:.3f} < min_source_fps={cfg.min_source_fps}")
    if info.height < cfg.min_source_height or info.width < cfg.min_source_width:
        raise Skip(
            f"low_resolution: {info.width}x{info.height} < min_source_width x min_source_height = "
            f"{cfg.min_source_width}x{cfg.min_source_height}"
        )
    aspect = info.width / max(info.height, 1)
    if not cfg.min_aspect <= aspect <= cfg.max_aspect:
        raise Skip(
            f"aspect_ratio: {info.width}x{info.height} ({aspect:.3f}) outside min_aspect..max_aspect = "
            f"[{cfg.min_aspect}, {cfg.max_aspect}]"
        )
    available = len(resample_indices(info.num_frames, info.fps, cfg.fps))
    if available < cfg.num_frames:
        raise Skip(f"too_short: {available} frames at {cfg.fps} fps < num_frames={cfg.num_frames}")
    return info


def decode_clip(path: str, cfg, available: int) -> tuple[np.ndarray, int, int]:
    """``cfg.num_frames`` consecutive frames of one shot, fitted to height x width (scaled to cover, centre-cropped:
    ``resize_center_crop``). Returns (frames, first frame's index at cfg.fps, cuts passed). Decodes a window at a
    time, only the frames still needed: with ``scene_cuts=split`` a cut restarts the clip after it, within the first
    ``scene_cut_search`` clip lengths; ``drop`` skips a video with a cut in its first clip; ``keep`` does not look."""
    limit = cfg.num_frames if cfg.scene_cuts != "split" else min(available, cfg.num_frames * cfg.scene_cut_search)
    run: list[np.ndarray] = []  # fitted frames since the last cut
    start = pos = cuts = 0
    prev = None
    while len(run) < cfg.num_frames and pos < limit:
        want = min(cfg.num_frames - len(run), limit - pos)
        _status(f"decoding {os.path.basename(path)} frames {pos}-{pos + want - 1}")
        try:
            window, _ = decode_video(path, fps=cfg.fps, start=pos, max_frames=want)
        except VideoDecodeError as e:
            raise Skip(f"decode_error: {e}") from None
        window = resize_center_crop(window, height=cfg.height, width=cfg.width)
        hists = frame_histograms(window) if cfg.scene_cuts != "keep" else None
        for j, frame in enumerate(window):
            if hists is not None and prev is not None and histogram_distance(prev, hists[j]) > cfg.scene_cut_threshold:
                cuts += 1
                if cfg.scene_cuts == "drop":
                    raise Skip(
                        f"scene_cut: a cut at frame {pos + j} (at {cfg.fps} fps) within num_frames (scene_cuts=drop)"
                    )
                run, start = [], pos + j
            run.append(frame)
            prev = hists[j] if hists is not None else None
        pos += len(window)
        if len(window) < want:
            break  # the file holds fewer frames than its index promised
    if len(run) < cfg.num_frames:
        if cuts:
            raise Skip(
                f"scene_cut: {cuts} cut(s) in the first {pos} frames leave no {cfg.num_frames} frames of one shot"
            )
        raise Skip(f"too_short: decoded {pos} frames < num_frames={cfg.num_frames}")
    return np.stack(run), start, cuts


def process_item(item, cfg) -> dict:
    """Decode, filter, crop, track (and encode latents) one file. Raises Skip(reason)."""
    caption = caption_of(item, cfg)
    info = _check_source(item, cfg)
    available = len(resample_indices(info.num_frames, info.fps, cfg.fps))
    frames, start, cuts = decode_clip(item.path, cfg, available)
    upscale = max(cfg.height / info.height, cfg.width / info.width)  # resize_center_crop's cover scale
    tracker = _component("tracker")
    _status(f"tracking {os.path.basename(item.path)}: {cfg.grid_size}x{cfg.grid_size} points, {len(frames)} frames")
    tracks, vis = tracker.track(frames, grid_queries(cfg.height, cfg.width, cfg.grid_size))
    tracks, vis = np.asarray(tracks, np.float32), np.asarray(vis, bool)
    if not np.isfinite(tracks).all():
        raise Skip("nan_tracks: tracker returned non-finite coordinates")
    if vis.mean() < cfg.min_visible_fraction:
        raise Skip(f"few_visible_tracks: {vis.mean():.3f} < min_visible_fraction={cfg.min_visible_fraction}")
    out = {"frames": frames, "tracks": tracks, "visibility": vis, "info": info, "tracker": type(tracker).__name__}
    out.update(caption=caption, start=start, cuts=cuts)
    out["upscale"] = round(upscale, 3) if upscale > 1 else 1.0
    encoder = _component("latent_encoder")
    if encoder is not None:
        _status(f"encoding latents of {os.path.basename(item.path)}")
        with torch.no_grad():
            lat = torch.as_tensor(encoder.encode(frames_to_tensor(frames)[None]))[0]  # [C, F, h, w]
        lat = lat.float().cpu().numpy()
        if not np.isfinite(lat).all():
            raise Skip("nan_latents: latent encoder returned non-finite values")
        out["latents"] = lat.astype(cfg.numpy_cache_dtype)
    return out


def _text_embeddings(captions: list[str], cfg) -> list[np.ndarray | None]:
    encoder = _component("text_encoder")
    if encoder is None:
        return [None] * len(captions)
    out: list[np.ndarray | None] = []
    for i in range(0, len(captions), cfg.text_batch_size):
        with torch.no_grad():
            emb, lengths = encoder.encode(captions[i : i + cfg.text_batch_size])  # [B, L, D], [B]
        emb = torch.as_tensor(emb).float().cpu()
        for j, n in enumerate(torch.as_tensor(lengths).tolist()):
            e = emb[j, : int(n)].numpy()
            out.append(e.astype(cfg.numpy_cache_dtype) if np.isfinite(e).all() else None)
    return out


def run_shard(shard_id: int, items: list, crashed: list[str]) -> dict:
    """Process one shard in this worker; writes the tar (if any sample survives) and the report."""
    cfg = _STATE["cfg"]
    name = cfg.shard_pattern.format(shard_id)
    progress_dir = os.path.join(cfg.output, ".progress")
    os.makedirs(progress_dir, exist_ok=True)
    marker = os.path.join(progress_dir, name + ".current")
    crashed_set = set(crashed)
    good, skipped = [], []
    for item in items:
        with open(marker, "w", errors="surrogateescape") as f:  # a file name need not be valid UTF-8
            f.write(item.path)
        try:
            if item.path in crashed_set:
                raise Skip("crashed: the decoder or tracker crashed the worker process on this file")
            good.append((item, process_item(item, cfg)))
        except Skip as s:
            skipped.append({"path": item.rel, "reason": str(s)})
        except Exception as e:  # the job must survive any single file
            skipped.append({"path": item.rel, "reason": f"error: {type(e).__name__}: {' '.join(str(e).split())[:300]}"})
        if _STATE.get("tick") is not None:
            _STATE["tick"]()
    try:
        embs = _text_embeddings([res["caption"] for _, res in good], cfg)
    except Exception as e:
        reason = f"error: text encoder failed for this shard: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        skipped += [{"path": it.rel, "reason": reason} for it, _ in good]
        good, embs = [], []
    samples, keys, ids, ups = [], set(), [], []
    uncaptioned = split = 0  # samples with missing_caption's caption / taken after a scene cut
    for (item, res), emb in zip(good, embs):
        if _STATE["specs"].get("text_encoder") is not None and emb is None:
            skipped.append({"path": item.rel, "reason": "nan_text_emb: text encoder returned non-finite values"})
            continue
        key = make_key(os.path.splitext(item.rel)[0])
        while key in keys:  # distinct paths can sanitise to the same key
            key += "_"
        keys.add(key)
        info = res["info"]
        meta = {
            "id": item.rel,
            "source": "video",
            "fps": cfg.fps,
            "num_frames": cfg.num_frames,
            "height": cfg.height,
            "width": cfg.width,
            "grid_size": cfg.grid_size,
            "tracker": res["tracker"],
            "source_fps": round(info.fps, 4),
            "source_num_frames": info.num_frames,
            "source_size": [info.height, info.width],
            "upscale": res["upscale"],  # > 1: the source was smaller than height x width
            "start_frame": res["start"],  # at fps: > 0 where the clip starts after a scene cut
            "captioned": bool(item.caption),  # false: the caption is missing_caption's
        }
        samples.append(
            encode_sample(
                key,
                tracks=res["tracks"],
                visibility=res["visibility"],
                caption=res["caption"],
                meta=meta,
                mp4=encode_mp4(res["frames"], fps=cfg.fps, crf=cfg.crf)
                if cfg.store_video or "latents" not in res
                else None,
                latents=res.get("latents"),
                text_emb=emb,
            )
        )
        ids.append(item.rel)
        uncaptioned += not item.caption
        split += res["cuts"] > 0
        if res["upscale"] > 1:
            ups.append(res["upscale"])
    tar_path = os.path.join(cfg.output, name + ".tar")
    if samples:
        write_shard_atomic(tar_path, samples)
    report = {"name": name, "shard": shard_id, "num_samples": len(samples), "samples": ids, "skipped": skipped}
    report.update(upscaled=len(ups), max_upscale=max(ups, default=1.0), uncaptioned=uncaptioned, split_at_cut=split)
    tmp = os.path.join(cfg.output, name + ".json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(cfg.output, name + ".json"))  # written last: marks the shard finished
    os.remove(marker)
    return report
