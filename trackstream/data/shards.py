"""Webdataset shard format: sample <-> tar members, atomic shard writing, shard listing.

Design:
* One sample = tar members sharing a key (webdataset convention; the key must not contain dots):
  `<key>.mp4` (H.264 video) and/or `<key>.latents.npy`, `<key>.tracks.npy` float32 [T, N, 2],
  `<key>.visibility.npy` bool [T, N], `<key>.txt` caption, `<key>.json` meta, optionally
  `<key>.text_emb.npy` [L, D] (only the valid tokens, so text_len = L).
* Bytes are produced by this module (no webdataset auto-encoder) and tar headers carry a fixed
  mtime/owner, so the same samples always give a byte-identical shard: a re-run of the resumable
  pipeline is checkable by hash.
* A shard is written under `<name>.tmp` and renamed into place (atomic on POSIX): a reader or a
  resumed job never sees a half-written shard under its final name.
* `index.json` in a shard folder lists shards with their sample counts. The loader needs counts
  to plan an exact, resumable epoch without reading the data first; without an index they are
  counted from the tar headers (local files only).
"""

from __future__ import annotations

import glob
import io
import json
import os
import re
import tarfile
from dataclasses import dataclass

import numpy as np
import torch

from trackstream.data.video_io import VideoDecodeError, decode_video, encode_mp4, frames_to_tensor

INDEX_NAME = "index.json"
_KEY_OK = re.compile(r"[^A-Za-z0-9_\-]+")


@dataclass(frozen=True)
class ShardInfo:
    url: str
    num_samples: int


def make_key(text: str) -> str:
    """A webdataset-safe sample key (no dots or slashes) derived from an id or a path."""
    key = _KEY_OK.sub("_", text).strip("_")
    if not key:
        raise ValueError(f"cannot build a sample key from {text!r}")
    return key


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def encode_sample(
    key: str,
    *,
    tracks: np.ndarray,
    visibility: np.ndarray,
    caption: str,
    meta: dict,
    mp4: bytes | None = None,
    latents: np.ndarray | None = None,
    text_emb: np.ndarray | None = None,
) -> dict[str, bytes]:
    """Tar members of one sample as {extension: bytes} plus "__key__"."""
    if mp4 is None and latents is None:
        raise ValueError(f"sample {key!r} needs a video (mp4) or cached latents")
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or visibility.shape != tracks.shape[:2]:
        raise ValueError(
            f"sample {key!r}: tracks must be [T, N, 2] and visibility [T, N], got {tracks.shape}, {visibility.shape}"
        )
    out: dict[str, bytes] = {
        "__key__": make_key(key),
        "tracks.npy": _npy_bytes(tracks.astype(np.float32)),
        "visibility.npy": _npy_bytes(visibility.astype(bool)),
        "txt": caption.encode("utf-8"),
        "json": json.dumps(meta, sort_keys=True).encode("utf-8"),
    }
    if mp4 is not None:
        out["mp4"] = mp4
    if latents is not None:
        out["latents.npy"] = _npy_bytes(latents)
    if text_emb is not None:
        out["text_emb.npy"] = _npy_bytes(text_emb)
    return out


class DamagedSample(ValueError):
    """A shard sample that cannot be decoded or breaks the schema: one line naming the shard and the key."""


def _damaged(raw: dict, what: str) -> DamagedSample:
    where = f"shard {raw.get('__url__', '?')}: sample {raw.get('__key__', '?')}"
    return DamagedSample(
        f"{where}: {what}; re-run `trackstream prepare` on its source (it rewrites the shard) or remove the shard"
    )


def _array(raw: dict, member: str) -> np.ndarray:
    if member not in raw:
        raise _damaged(raw, f"no {member} member (members: {sorted(k for k in raw if not k.startswith('__'))})")
    try:
        return np.load(io.BytesIO(raw[member]), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise _damaged(raw, f"{member} is not a .npy array ({str(err).splitlines()[0] if str(err) else err!r})")


def decode_sample(raw: dict, *, decode_video_frames: bool = True, num_frames: int | None = None) -> dict:
    """Raw tar members (as yielded by webdataset) -> schema sample with torch tensors.

    num_frames keeps only the first frames of video and tracks (latents are left whole: their
    temporal length depends on the VAE, so slice them with the VAE's own rule if needed). A member that
    is missing, unreadable, of the wrong shape or not finite is a ``DamagedSample`` naming the shard and
    the sample: training stops there rather than learn from it silently.
    """
    tracks, vis = _array(raw, "tracks.npy"), _array(raw, "visibility.npy")
    if tracks.ndim != 3 or tracks.shape[-1] != 2 or not np.issubdtype(tracks.dtype, np.floating):
        raise _damaged(raw, f"tracks.npy has shape {tracks.shape} ({tracks.dtype}), expected float [T, N, 2]")
    if not np.isfinite(tracks).all():
        t, n, _ = np.argwhere(~np.isfinite(tracks))[0]
        raise _damaged(raw, f"tracks.npy holds non-finite points (first: frame {t}, track {n})")
    if vis.shape != tracks.shape[:2]:
        raise _damaged(raw, f"visibility.npy has shape {vis.shape}, the tracks need {tracks.shape[:2]}")
    try:
        caption, meta = raw["txt"].decode("utf-8"), json.loads(raw["json"].decode("utf-8"))
    except KeyError as err:
        raise _damaged(raw, f"no {err.args[0]} member") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _damaged(raw, f"its caption or meta is not UTF-8 text / JSON ({err})") from None
    tracks, vis = torch.from_numpy(tracks), torch.from_numpy(vis)
    sample = {
        "tracks": tracks[:num_frames] if num_frames else tracks,
        "visibility": vis[:num_frames] if num_frames else vis,
        "caption": caption,
        "meta": meta,
    }
    if decode_video_frames and "mp4" in raw:
        try:
            frames, _ = decode_video(bytes(raw["mp4"]), max_frames=num_frames)
        except VideoDecodeError as err:
            raise _damaged(raw, f"its mp4 does not decode ({str(err).splitlines()[0]})") from None
        sample["video"] = frames_to_tensor(frames)
        if sample["video"].shape[1] != sample["tracks"].shape[0]:
            raise _damaged(
                raw, f"video has {sample['video'].shape[1]} frames but tracks have {sample['tracks'].shape[0]}"
            )
    if "latents.npy" in raw:
        sample["latents"] = torch.from_numpy(_array(raw, "latents.npy"))
    if "text_emb.npy" in raw:
        emb = torch.from_numpy(_array(raw, "text_emb.npy"))
        sample["text_emb"], sample["text_len"] = emb, emb.shape[0]
    return sample


def write_shard_atomic(path: str, samples: list[dict[str, bytes]]) -> None:
    """Write encoded samples to `path` via `path.tmp` + rename; deterministic bytes."""
    import webdataset as wds

    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        # Fixed mtime/owner make the tar a pure function of the samples.
        writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="trackstream", group="trackstream")
        for sample in samples:
            writer.write(sample)
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def count_samples(path: str) -> int:
    """Number of distinct sample keys in a local tar (reads headers only)."""
    keys, last = 0, None
    with tarfile.open(path, mode="r:") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = os.path.basename(member.name)
            key = os.path.join(os.path.dirname(member.name), base.split(".", 1)[0])
            if key != last:
                keys, last = keys + 1, key
    return keys


def tracks_per_clip(info: ShardInfo) -> int | None:
    """N of the shard's first ``<key>.tracks.npy`` [T, N, 2], read from its .npy header alone; None for a shard
    that is not a local file or holds no tracks."""
    if not os.path.isfile(info.url):
        return None
    with tarfile.open(info.url, mode="r:") as tar:
        for member in tar:
            if member.isfile() and member.name.endswith(".tracks.npy"):
                f = tar.extractfile(member)
                fmt = np.lib.format
                header = fmt.read_array_header_1_0 if fmt.read_magic(f) == (1, 0) else fmt.read_array_header_2_0
                return int(header(f)[0][1])
    return None


def write_index(folder: str, shards: list[ShardInfo]) -> None:
    entries = [{"name": os.path.basename(s.url), "num_samples": s.num_samples} for s in shards]
    tmp = os.path.join(folder, INDEX_NAME + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"shards": entries}, f, indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(folder, INDEX_NAME))


def list_shards(source) -> list[ShardInfo]:
    """Resolve a shard source to [ShardInfo] in a stable order.

    source: a folder (its index.json, else its *.tar counted from headers), a glob or brace
    pattern string ("data/shard-{000000..000009}.tar"), or a list of paths / ShardInfo /
    {"url", "num_samples"} dicts. Remote URLs need counts (an index or dicts).
    """
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
        if os.path.isdir(source):
            index = os.path.join(source, INDEX_NAME)
            if os.path.isfile(index):
                with open(index) as f:
                    entries = json.load(f)["shards"]
                return [ShardInfo(os.path.join(source, e["name"]), int(e["num_samples"])) for e in entries]
            paths = sorted(glob.glob(os.path.join(source, "*.tar")))
        else:
            import braceexpand

            paths = sorted(p for pattern in braceexpand.braceexpand(source) for p in (glob.glob(pattern) or [pattern]))
        source = paths
    out = []
    for item in source:
        if isinstance(item, ShardInfo):
            out.append(item)
        elif isinstance(item, dict):
            out.append(ShardInfo(str(item["url"]), int(item["num_samples"])))
        else:
            path = os.fspath(item)
            if not os.path.isfile(path):
                raise ValueError(
                    f"shard {path!r} is not a local file; give its sample count via an index.json or {{'url', 'num_samples'}} entries"
                )
            out.append(ShardInfo(path, count_samples(path)))
    if not out:
        raise ValueError(f"no shards found in {source!r}")
    return out


def write_synthetic_shards(
    world, folder: str, *, num_samples: int, samples_per_shard: int, seed: int = 0, crf: int = 18
) -> list[ShardInfo]:
    """Render `num_samples` synthetic clips (seeds seed, seed+1, ...) into shards + index.json.

    Gives the webdataset loader a CPU-only data source with exact ground-truth tracks.
    """
    os.makedirs(folder, exist_ok=True)
    shards = []
    for start in range(0, num_samples, samples_per_shard):
        samples = []
        for i in range(start, min(start + samples_per_shard, num_samples)):
            clip = world.generate(seed + i)
            samples.append(
                encode_sample(
                    clip["meta"]["id"],
                    tracks=clip["tracks"],
                    visibility=clip["visibility"],
                    caption=clip["caption"],
                    meta=clip["meta"],
                    mp4=encode_mp4(clip["frames"], fps=world.fps, crf=crf),
                )
            )
        path = os.path.join(folder, f"shard-{start // samples_per_shard:06d}.tar")
        write_shard_atomic(path, samples)
        shards.append(ShardInfo(path, len(samples)))
    write_index(folder, shards)
    return shards
