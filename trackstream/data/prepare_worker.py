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

from trackstream.data.shards import encode_sample, make_key, write_shard_atomic
from trackstream.data.trackers import build_tracker, check_tracker_name, grid_queries
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
        from trackstream.data.trackers import COTRACKER_INSTALL_HINT

        if importlib.util.find_spec("cotracker") is None:
            raise ValueError(f"tracker={name}: {COTRACKER_INSTALL_HINT.rstrip('.')}")
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
    # tick: called once per video done (the parent's progress bar: a callable, or a queue from the pool)
    if tick is not None and hasattr(tick, "put"):  # the pool's queue: one item per video
        queue = tick

        def tick() -> None:
            queue.put(1)

    _STATE.update(cfg=cfg, specs=specs, built={}, tick=tick)


def _component(kind: str):
    built = _STATE["built"]
    if kind not in built:
        built[kind] = build_component(_STATE["specs"].get(kind), kind)
    return built[kind]


def process_item(item, cfg) -> dict:
    """Decode, filter, crop, track (and encode latents) one file. Raises Skip(reason)."""
    if not item.caption:
        raise Skip("missing_caption: no caption in the manifest and no sidecar .txt")
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
            f"aspect_ratio: {info.width}x{info.height} ({aspect:.3f}) outside [{cfg.min_aspect}, {cfg.max_aspect}]"
        )
    available = len(resample_indices(info.num_frames, info.fps, cfg.fps))
    if available < cfg.num_frames:
        raise Skip(f"too_short: {available} frames at {cfg.fps} fps < num_frames={cfg.num_frames}")
    try:
        frames, _ = decode_video(item.path, fps=cfg.fps, max_frames=cfg.num_frames)
    except VideoDecodeError as e:
        raise Skip(f"decode_error: {e}") from None
    if len(frames) < cfg.num_frames:
        raise Skip(f"too_short: decoded {len(frames)} frames < num_frames={cfg.num_frames}")
    upscale = max(cfg.height / frames.shape[1], cfg.width / frames.shape[2])  # resize_center_crop's cover scale
    frames = resize_center_crop(frames, height=cfg.height, width=cfg.width)
    tracker = _component("tracker")
    tracks, vis = tracker.track(frames, grid_queries(cfg.height, cfg.width, cfg.grid_size))
    tracks, vis = np.asarray(tracks, np.float32), np.asarray(vis, bool)
    if not np.isfinite(tracks).all():
        raise Skip("nan_tracks: tracker returned non-finite coordinates")
    if vis.mean() < cfg.min_visible_fraction:
        raise Skip(f"few_visible_tracks: {vis.mean():.3f} < min_visible_fraction={cfg.min_visible_fraction}")
    out = {"frames": frames, "tracks": tracks, "visibility": vis, "info": info, "tracker": type(tracker).__name__}
    out["upscale"] = round(upscale, 3) if upscale > 1 else 1.0
    encoder = _component("latent_encoder")
    if encoder is not None:
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
        embs = _text_embeddings([it.caption for it, _ in good], cfg)
    except Exception as e:
        reason = f"error: text encoder failed for this shard: {type(e).__name__}: {' '.join(str(e).split())[:300]}"
        skipped += [{"path": it.rel, "reason": reason} for it, _ in good]
        good, embs = [], []
    samples, keys, ids, ups = [], set(), [], []
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
        }
        samples.append(
            encode_sample(
                key,
                tracks=res["tracks"],
                visibility=res["visibility"],
                caption=item.caption,
                meta=meta,
                mp4=encode_mp4(res["frames"], fps=cfg.fps, crf=cfg.crf)
                if cfg.store_video or "latents" not in res
                else None,
                latents=res.get("latents"),
                text_emb=emb,
            )
        )
        ids.append(item.rel)
        if res["upscale"] > 1:
            ups.append(res["upscale"])
    tar_path = os.path.join(cfg.output, name + ".tar")
    if samples:
        write_shard_atomic(tar_path, samples)
    report = {"name": name, "shard": shard_id, "num_samples": len(samples), "samples": ids, "skipped": skipped}
    report.update(upscaled=len(ups), max_upscale=max(ups, default=1.0))
    tmp = os.path.join(cfg.output, name + ".json.tmp")
    with open(tmp, "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(cfg.output, name + ".json"))  # written last: marks the shard finished
    os.remove(marker)
    return report
