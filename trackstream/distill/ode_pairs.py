"""ODE pairs: teacher trajectories with joint guidance, kept at the student's step list, in shards.

For each training condition (first frame, tracks, caption) the frozen teacher integrates the
flow ODE from Gaussian noise with joint text-motion guidance (MotionStream eq. 2, 3 NFE per
step) on ``teacher_steps`` Euler steps of the shared grid (``diffusion.schedule.sampling_sigmas``).
The latents are kept where the teacher grid meets the student's K-step list - entries
``j * teacher_steps / K`` (j = 0..K-1) - plus the clean endpoint, so ODE init, DMD and inference
all use the same noise levels (Self-Forcing's student steps are off its teacher's grid; here that cannot
happen: ``student_step_indices`` asserts the grids coincide).

Storage (``<dir>/``): ``pairs_00000.safetensors`` ... (read back lazily by ``PairSet``: memory-mapped,
gathered per batch) each the stacked tensors of up to ``shard_size`` samples, the captions and seeds as
JSON in its header's metadata (safetensors + JSON: reading a shard runs no code it carries, unlike a
pickle), written to a temporary name and renamed (atomic), and ``index.json``
(shards, counts, the grid, the guidance, shapes) written last. Generation is resumable shard by
shard: complete shards are skipped, so a preempted job continues where it stopped. Per sample:
  trajectory  [K+1, C, F, h, w]   latents at sigma_0..sigma_{K-1} and the clean x0 (``dtype``; C = 16,
                                  or 48 for Wan 2.2)
  image       [C_img, F, h, w]    the layout's first-frame channels (absent for t2v / ti2v layouts)
  first_frame uint8 [3, H, W]
  image_latent [C, 1, h, w]       the clean first-frame latent (chunk 0 of the student: the sink)
  tracks      [T, N, 2] pixels, visibility [T, N], track_ids [N] (the IDs the teacher saw)
  text_emb    [L, E] (zero-padded), text_len;  caption (list of str), seeds
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from trackstream.diffusion.samplers import Condition, GuidanceConfig, SamplerConfig, sample
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.models.files import one_line
from trackstream.models.precision import dtype_name, resolve_dtype
from trackstream.models.tracks import sample_track_ids
from trackstream.train.dist import UnreadableFile, read_state

__all__ = [
    "ODEPairsConfig",
    "student_step_indices",
    "generate_ode_pairs",
    "load_ode_pairs",
    "PairSet",
    "pairs_complete",
    "write_shard",
    "read_shard",
    "load_shard",
    "convert_pairs",
    "INDEX_NAME",
]

log = logging.getLogger(__name__)
INDEX_NAME = "index.json"
LISTS = ("caption", "seed")  # per-sample values that are not tensors: JSON in the shard's metadata
_REGENERATE = "delete the pair folder and generate it again (complete shards are kept when it is not deleted)"


@dataclass
class ODEPairsConfig:
    num_pairs: int = 256
    teacher_steps: int = 48  # Euler steps of the teacher; a multiple of the student's steps
    batch_size: int = 16  # teacher sampling batch (x3 forwards for joint guidance)
    shard_size: int = 128
    seed: int = 0
    dtype: str = "float32"  # storage dtype of the trajectories (float16 halves real-scale shards)
    # the teacher's compute dtype while sampling (its device is the run's: trainer / launcher): auto =
    # bfloat16 on CUDA, float32 on the CPU; recorded in index.json
    sample_dtype: str = "auto"
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # eq. 2: w_t = 3.0, w_m = 1.5

    def __post_init__(self) -> None:
        for name in ("num_pairs", "teacher_steps", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ode_pairs.{name}={getattr(self, name)} must be >= 1")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"ode_pairs.dtype={self.dtype!r}; choose float32, float16 or bfloat16")
        resolve_dtype(self.sample_dtype, torch.device("cpu"), field="ode_pairs.sample_dtype")  # the name only
        if isinstance(self.guidance, dict):
            self.guidance = GuidanceConfig(**self.guidance)


def student_step_indices(teacher_steps: int, student_steps: int, *, shift: float) -> list[int]:
    """Teacher-grid indices of the student's K noise levels, then the endpoint (index teacher_steps)."""
    if teacher_steps % student_steps:
        raise ValueError(
            f"ode_pairs.teacher_steps={teacher_steps} must be a multiple of the student's "
            f"steps={student_steps}, so the student's noise levels lie on the teacher's grid"
        )
    stride = teacher_steps // student_steps
    idx = [j * stride for j in range(student_steps)] + [teacher_steps]
    teacher, student = sampling_sigmas(teacher_steps, shift=shift), sampling_sigmas(student_steps, shift=shift)
    assert torch.allclose(teacher[idx], student, atol=1e-12), "student grid is not a subset of the teacher grid"
    return idx


def _shard_path(directory: Path, i: int) -> Path:
    return directory / f"pairs_{i:05d}.safetensors"


def pairs_complete(directory: Path) -> bool:
    return (Path(directory) / INDEX_NAME).is_file()


@torch.no_grad()
def generate_ode_pairs(
    teacher: torch.nn.Module,
    *,
    conditions: Callable[[list[int]], dict],
    cfg: ODEPairsConfig,
    student_steps: int,
    shift: float,
    null_text: torch.Tensor,
    null_text_lengths: torch.Tensor,
    embed_dim: int,
    height: int,
    width: int,
    out_dir: Path,
    device: torch.device,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] = lambda: None,
) -> Path:
    """Write ``cfg.num_pairs`` pairs to ``out_dir`` (resumable); returns ``out_dir``.

    With ``world_size`` > 1 every rank calls this: rank r writes the shards s with s % world_size == r
    (each shard is a pure function of its indices, so the split changes no byte), then all meet at
    ``barrier()`` and rank 0 writes the index that marks the folder complete.

    ``conditions(indices)`` returns a batch for those condition indices: ``image`` [B, C_img, F,
    h, w] (or None), ``image_latent`` [B, C, 1, h, w], ``first_frame`` uint8 [B, 3, H, W], ``tracks``
    [B, T, N, 2], ``visibility`` [B, T, N],
    ``text_emb`` [B, L, E], ``text_len`` [B], ``caption`` (list), ``seeds`` (list of int).
    Random numbers (noise, track IDs) are keyed by the sample index, so a resumed shard is
    bit-identical to an uninterrupted one.
    """
    from trackstream.models.conditioner import encode_motion

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = student_step_indices(cfg.teacher_steps, student_steps, shift=shift)
    sampler = SamplerConfig(steps=cfg.teacher_steps, solver="euler", guidance=cfg.guidance)
    dtype = getattr(torch, cfg.dtype)
    # the teacher samples in sample_dtype (cast as load_export casts an export: matmul weights only)
    sample_dtype = resolve_dtype(cfg.sample_dtype, torch.device(device), field="ode_pairs.sample_dtype")
    if sample_dtype != torch.float32:
        getattr(teacher, "module", teacher).dit.cast_for_inference(sample_dtype)
    # A teacher trained with latent frame 0 given clean (network.json conventions) is sampled so.
    clean_first = teacher.conventions.clean_first_frame
    teacher.eval()
    shards = []
    for s, start in enumerate(range(0, cfg.num_pairs, cfg.shard_size)):
        idx_all = list(range(start, min(cfg.num_pairs, start + cfg.shard_size)))
        path = _shard_path(out_dir, s)
        shards.append({"file": path.name, "num_samples": len(idx_all)})
        if s % world_size != rank:
            continue  # another rank's shard
        if path.is_file():
            log.info("ODE pairs: shard %s exists, skipped", path.name)
            continue
        parts: dict[str, list] = {}
        for b0 in range(0, len(idx_all), cfg.batch_size):
            idx = idx_all[b0 : b0 + cfg.batch_size]
            batch = conditions(idx)
            gens = [torch.Generator().manual_seed(cfg.seed * 1_000_003 + i) for i in idx]
            ids = torch.cat([sample_track_ids(1, batch["tracks"].shape[2], generator=g) for g in gens])
            image = batch["image"].to(device) if batch.get("image") is not None else None  # None: t2v / ti2v
            features = batch.get("image_features")  # [B, 257, 1280] CLIP tokens, or None
            first_latent = batch["image_latent"]  # [B, C, 1, h, w]
            frames = 1 + (batch["tracks"].shape[1] - 1) // 4  # latent frames of the clip
            lat_shape = (first_latent.shape[1], frames, *first_latent.shape[3:])  # [C, F, h, w]
            noise = torch.stack([torch.randn(lat_shape, generator=g) for g in gens]).to(device)
            motion = encode_motion(
                batch["tracks"].to(device),
                batch["visibility"].to(device),
                ids,
                embed_dim=embed_dim,
                height=height,
                width=width,
                latent_height=lat_shape[-2],
            )
            cond = Condition(
                text=batch["text_emb"].to(device),
                text_lengths=batch["text_len"].to(device),
                null_text=null_text,
                null_text_lengths=null_text_lengths,
                image=image,
                motion=motion,
                first_latent=batch["image_latent"].to(device) if clean_first else None,
                image_features=None if features is None else features.to(device),
            )
            kept: dict[int, torch.Tensor] = {}

            def record(i: int, sigma: torch.Tensor, x: torch.Tensor) -> None:
                if i in keep:
                    kept[i] = x.detach().clone()

            x0 = sample(teacher, noise, cond, cfg=sampler, shift=shift, callback=record)
            kept[cfg.teacher_steps] = x0
            traj = torch.stack([kept[i] for i in keep], dim=1).to("cpu", dtype)  # [B, K+1, C, F, h, w]
            L = int(batch["text_len"].max())
            if image is not None:
                parts.setdefault("image", []).extend(image.cpu().unbind(0))
            for key, value in (
                ("trajectory", traj),
                ("image_latent", batch["image_latent"].cpu()),
                ("first_frame", batch["first_frame"]),
                ("tracks", batch["tracks"]),
                ("visibility", batch["visibility"]),
                ("track_ids", ids),
                ("text_emb", batch["text_emb"][:, :L].cpu()),
                ("text_len", batch["text_len"].cpu()),
            ):
                parts.setdefault(key, []).extend(value.unbind(0))
            if features is not None:
                parts.setdefault("image_features", []).extend(features.cpu().unbind(0))
            parts.setdefault("caption", []).extend(batch["caption"])
            parts.setdefault("seed", []).extend(int(v) for v in batch["seeds"])
        write_shard(_stack(parts), path)
        log.info("ODE pairs: wrote %s (%d samples)", path.name, len(idx_all))
    barrier()
    if rank != 0:
        return out_dir
    missing = [sh["file"] for sh in shards if not (out_dir / sh["file"]).is_file()]
    assert not missing, f"shards {missing} were not written"
    sig = sampling_sigmas(student_steps, shift=shift)
    index = {
        "shards": shards,
        "num_pairs": cfg.num_pairs,
        "student_steps": student_steps,
        "shift": shift,
        "sigmas": [float(v) for v in sig],
        "teacher_steps": cfg.teacher_steps,
        "teacher_indices": keep,
        "guidance": asdict(cfg.guidance),
        "dtype": cfg.dtype,
        "clean_first_frame": clean_first,
        "sample_dtype": dtype_name(sample_dtype),
        "device": torch.device(device).type,
    }
    tmp = out_dir / (INDEX_NAME + ".tmp")
    tmp.write_text(json.dumps(index, indent=2))
    os.replace(tmp, out_dir / INDEX_NAME)
    return out_dir


def _stack(parts: dict[str, list]) -> dict:
    out = {}
    for key, values in parts.items():
        if key in ("caption", "seed"):
            out[key] = list(values)
        elif key == "text_emb":  # per-sample lengths differ: zero-pad to the longest
            L = max(v.shape[0] for v in values)
            out[key] = torch.stack([torch.nn.functional.pad(v, (0, 0, 0, L - v.shape[0])) for v in values])
        else:
            out[key] = torch.stack(values)
    return out


def write_shard(shard: dict, path: Path) -> None:
    """``shard`` (stacked tensors, plus the ``LISTS`` as lists) -> one safetensors file, atomically."""
    from safetensors.torch import save_file

    tensors = {k: v.contiguous() for k, v in shard.items() if k not in LISTS}
    meta = {k: json.dumps(shard[k]) for k in LISTS if k in shard}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


class _SafeShard:
    """One safetensors shard, memory-mapped: ``shard[key][j]`` reads sample j of ``key`` only."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        try:
            self.handle = safe_open(str(path), framework="pt", device="cpu")
            meta = self.handle.metadata() or {}
            self.lists = {k: json.loads(meta[k]) for k in LISTS if k in meta}
        except Exception as err:  # noqa: BLE001 -- SafetensorError / JSON: name the file, say what to do
            raise UnreadableFile(f"{path} is truncated or not an ODE pair shard ({one_line(err)}); {_REGENERATE}")
        self.keys = tuple(self.handle.keys()) + tuple(self.lists)

    def __iter__(self):
        return iter(self.keys)

    def __getitem__(self, key: str):
        if key in self.lists:
            return self.lists[key]
        return _Rows(self.handle.get_slice(key))


class _Rows:
    def __init__(self, sl):
        self.sl = sl

    def __getitem__(self, j: int) -> torch.Tensor:
        return self.sl[j : j + 1][0]


def read_shard(path: Path, *, allow_pickle: bool = False):
    """A shard as ``{key: rows}``, read lazily. A ``.pt`` shard (written before shards were safetensors)
    is read with ``weights_only=True``, memory-mapped; one that pickles other objects needs the opt-in."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _SafeShard(path)
    return read_state(
        path,
        what="an ODE pair shard",
        fix=f"convert the folder with `python -m trackstream.distill.ode_pairs convert {path.parent}`, or {_REGENERATE}",
        allow_pickle=allow_pickle,
        mmap=True,
    )


def load_shard(path: Path) -> dict:
    """A whole shard in memory as written (stacked tensors, caption and seed lists): for inspection and tests."""
    shard = read_shard(path)
    return {k: (shard[k] if k in LISTS else shard.handle.get_tensor(k)) for k in shard}


class PairSet:
    """A complete pair folder read lazily: every shard memory-mapped (safetensors' ``safe_open``), a
    batch gathered sample by sample, so only the pages of the samples drawn are ever read."""

    def __init__(self, directory: str | Path, *, student_steps: int, shift: float, allow_pickle: bool = False):
        directory = Path(directory)
        if not pairs_complete(directory):
            raise ValueError(f"{directory} holds no complete ODE pair set ({INDEX_NAME} missing); generate it first")
        self.index = json.loads((directory / INDEX_NAME).read_text())
        if self.index["student_steps"] != student_steps or abs(self.index["shift"] - shift) > 1e-12:
            raise ValueError(
                f"ODE pairs in {directory} were made for {self.index['student_steps']} steps at shift "
                f"{self.index['shift']}; this run uses {student_steps} steps at shift {shift}: "
                "regenerate them"
            )
        self.directory = directory
        self.shards = [read_shard(directory / s["file"], allow_pickle=allow_pickle) for s in self.index["shards"]]
        self.where = [(k, j) for k, s in enumerate(self.index["shards"]) for j in range(s["num_samples"])]
        self.keys = tuple(self.shards[0])

    def __len__(self) -> int:
        return len(self.where)

    def __contains__(self, key: str) -> bool:
        return key in self.keys

    def batch(self, indices: list[int], keys: tuple[str, ...]) -> dict:
        """Stacked tensors of ``keys`` for these samples (text_emb zero-padded to the batch's longest)."""
        picks = [self.where[i] for i in indices]
        return _stack({key: [self.shards[k][key][j] for k, j in picks] for key in keys})


def convert_pairs(directory: str | Path, *, allow_pickle: bool = False) -> list[str]:
    """Rewrite a folder's ``.pt`` shards as safetensors shards (index.json updated last); returns the
    files converted. The old shards are removed once the index names the new ones."""
    directory = Path(directory)
    index = json.loads((directory / INDEX_NAME).read_text())
    done, old = [], []
    for entry in index["shards"]:
        path = directory / entry["file"]
        if path.suffix == ".safetensors":
            continue
        shard = read_shard(path, allow_pickle=allow_pickle)
        write_shard(
            {k: (list(v) if k in LISTS else torch.as_tensor(v).clone()) for k, v in shard.items()},
            path.with_suffix(".safetensors"),
        )
        entry["file"] = path.with_suffix(".safetensors").name
        done.append(path.name)
        old.append(path)
    if done:
        tmp = directory / (INDEX_NAME + ".tmp")
        tmp.write_text(json.dumps(index, indent=2))
        os.replace(tmp, directory / INDEX_NAME)
        for path in old:
            path.unlink()
    return done


def load_ode_pairs(directory: str | Path, *, student_steps: int, shift: float) -> dict:
    """All samples of a pair folder stacked in memory (for inspection and tests; training reads a
    ``PairSet``), checked against the run's step grid."""
    pairs = PairSet(directory, student_steps=student_steps, shift=shift)
    out = pairs.batch(list(range(len(pairs))), pairs.keys)
    out["index"] = pairs.index
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m trackstream.distill.ode_pairs", description=convert_pairs.__doc__)
    ap.add_argument("command", choices=("convert",))
    ap.add_argument("directory", type=Path, help="an ODE pair folder (with index.json)")
    ap.add_argument("--allow-pickle", action="store_true", help="read shards that pickle objects (trusted files only)")
    args = ap.parse_args(argv)
    try:
        done = convert_pairs(args.directory, allow_pickle=args.allow_pickle)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"converted {len(done)} shard(s) in {args.directory} to safetensors")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
