"""ODE pairs: teacher trajectories with joint guidance, kept at the student's step list, in shards.

For each training condition (first frame, tracks, caption) the frozen teacher integrates the
flow ODE from Gaussian noise with joint text-motion guidance (MotionStream eq. 2, 3 NFE per
step) on ``teacher_steps`` Euler steps of the shared grid (``diffusion.schedule.sampling_sigmas``).
The latents are kept where the teacher grid meets the student's K-step list - entries
``j * teacher_steps / K`` (j = 0..K-1) - plus the clean endpoint, so ODE init, DMD and inference
all use the same noise levels (Self-Forcing's student steps are off its teacher's grid; here that cannot
happen: ``student_step_indices`` asserts the grids coincide).

They are stored in shards of ``shard_size`` samples plus an ``index.json`` written last; the folder
format, its lazy reader ``PairSet`` and what each sample holds are ``distill.pair_shards``. Generation is
resumable shard by shard: complete shards are skipped, so a preempted job continues where it stopped.
Within a shard a log line at most every 30 s says how many of its samples are done, and how fast.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

from trackstream.data.progress import DEFAULT_EVERY_S, LineProgress
from trackstream.diffusion.samplers import Condition, GuidanceConfig, SamplerConfig, sample
from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.distill.pair_shards import shard_path, stack_samples, write_index, write_shard
from trackstream.models.precision import DTYPES, dtype_name, precision_name, resolve_dtype
from trackstream.models.tracks import latent_frames, sample_track_ids

__all__ = ["ODEPairsConfig", "student_step_indices", "generate_ode_pairs"]

log = logging.getLogger(__name__)


@dataclass
class ODEPairsConfig:
    num_pairs: int = 256
    teacher_steps: int = 48  # Euler steps of the teacher; a multiple of the student's steps
    batch_size: int = 16  # teacher sampling batch (x3 forwards for joint guidance)
    shard_size: int = 128
    seed: int = 0
    dtype: str = "fp32"  # storage dtype of the trajectories: bf16 | fp16 | fp32 (fp16 halves real-scale shards)
    # the teacher's compute dtype while sampling (its device is the run's: trainer / launcher): auto =
    # bf16 on CUDA, fp32 on the CPU (models.precision); recorded in index.json
    sample_dtype: str = "auto"
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)  # eq. 2: w_t = 3.0, w_m = 1.5

    def __post_init__(self) -> None:
        for name in ("num_pairs", "teacher_steps", "batch_size", "shard_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"ode_pairs.{name}={getattr(self, name)} must be >= 1")
        self.dtype = precision_name(self.dtype, field="ode_pairs.dtype")
        if self.dtype in ("auto", "fp8"):  # stored pairs are read on any device; fp8 is a compute recipe, not storage
            raise ValueError(
                f"ode_pairs.dtype={self.dtype}: the pairs' storage dtype is one of bf16, fp16 or fp32; choose one"
            )
        self.sample_dtype = precision_name(self.sample_dtype, field="ode_pairs.sample_dtype")
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


@dataclass
class _Sampling:
    """What every batch of one ``generate_ode_pairs`` call is sampled with."""

    teacher: torch.nn.Module
    sampler: SamplerConfig
    keep: list[int]
    shift: float
    seed: int
    teacher_steps: int
    dtype: torch.dtype  # storage dtype of the trajectories
    clean_first: bool
    null_text: torch.Tensor
    null_text_lengths: torch.Tensor
    embed_dim: int
    height: int
    width: int
    device: torch.device


def _condition(
    s: _Sampling, batch: dict, ids: torch.Tensor, latent_height: int, image: torch.Tensor | None
) -> Condition:
    from trackstream.models.conditioner import encode_motion

    features = batch.get("image_features")  # [B, 257, 1280] CLIP tokens, or None
    motion = encode_motion(
        batch["tracks"].to(s.device),
        batch["visibility"].to(s.device),
        ids,
        embed_dim=s.embed_dim,
        height=s.height,
        width=s.width,
        latent_height=latent_height,
        splat=getattr(s.teacher, "module", s.teacher).track_splat,
        convention=getattr(s.teacher, "module", s.teacher).track_convention,
    )
    return Condition(
        text=batch["text_emb"].to(s.device),
        text_lengths=batch["text_len"].to(s.device),
        null_text=s.null_text,
        null_text_lengths=s.null_text_lengths,
        image=image,
        motion=motion,
        first_latent=batch["image_latent"].to(s.device) if s.clean_first else None,
        image_features=None if features is None else features.to(s.device),
    )


def _sample_batch(s: _Sampling, batch: dict, idx: list[int], parts: dict[str, list]) -> None:
    """Sample the teacher's trajectories for the conditions ``idx`` and append them, per sample, to ``parts``."""
    gens = [torch.Generator().manual_seed(s.seed * 1_000_003 + i) for i in idx]
    id_range = getattr(s.teacher, "module", s.teacher).track_id_range
    ids = torch.cat([sample_track_ids(1, batch["tracks"].shape[2], id_range=id_range, generator=g) for g in gens])
    image = batch["image"].to(s.device) if batch.get("image") is not None else None  # None: t2v / ti2v
    features = batch.get("image_features")  # [B, 257, 1280] CLIP tokens, or None
    first_latent = batch["image_latent"]  # [B, C, 1, h, w]
    frames = latent_frames(batch["tracks"].shape[1])  # latent frames of the clip
    lat_shape = (first_latent.shape[1], frames, *first_latent.shape[3:])  # [C, F, h, w]
    noise = torch.stack([torch.randn(lat_shape, generator=g) for g in gens]).to(s.device)
    cond = _condition(s, batch, ids, lat_shape[-2], image)
    kept: dict[int, torch.Tensor] = {}

    def record(i: int, sigma: torch.Tensor, x: torch.Tensor) -> None:
        if i in s.keep:
            kept[i] = x.detach().clone()

    x0 = sample(s.teacher, noise, cond, cfg=s.sampler, shift=s.shift, callback=record)
    kept[s.teacher_steps] = x0
    traj = torch.stack([kept[i] for i in s.keep], dim=1).to("cpu", s.dtype)  # [B, K+1, C, F, h, w]
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


def _sample_shard(
    s: _Sampling,
    conditions: Callable[[list[int]], dict],
    idx_all: list[int],
    batch_size: int,
    *,
    name: str,
    every_s: float = DEFAULT_EVERY_S,
) -> dict[str, list]:
    """The samples ``idx_all``, batch by batch. A shard of a real teacher takes minutes: a log line at most every
    ``every_s`` seconds (samples done, time, rate) shows it is moving; the "wrote" line ends it."""
    parts: dict[str, list] = {}
    done = LineProgress(total=len(idx_all), desc=f"ODE pairs: {name}", unit="sample", write=log.info, every_s=every_s)
    for b0 in range(0, len(idx_all), batch_size):
        idx = idx_all[b0 : b0 + batch_size]
        _sample_batch(s, conditions(idx), idx, parts)
        done.update(len(idx))
    return parts


def _write_pairs_index(
    out_dir: Path, shards: list[dict], cfg: ODEPairsConfig, s: _Sampling, student_steps: int, sample_dtype: torch.dtype
) -> None:
    missing = [sh["file"] for sh in shards if not (out_dir / sh["file"]).is_file()]
    assert not missing, f"shards {missing} were not written"
    sig = sampling_sigmas(student_steps, shift=s.shift)
    index = {
        "shards": shards,
        "num_pairs": cfg.num_pairs,
        "student_steps": student_steps,
        "shift": s.shift,
        "sigmas": [float(v) for v in sig],
        "teacher_steps": cfg.teacher_steps,
        "teacher_indices": s.keep,
        "guidance": asdict(cfg.guidance),
        "dtype": cfg.dtype,
        "clean_first_frame": s.clean_first,
        "sample_dtype": dtype_name(sample_dtype),
        "device": torch.device(s.device).type,
    }
    write_index(out_dir, index)


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
    writer: bool = True,
) -> Path:
    """Write ``cfg.num_pairs`` pairs to ``out_dir`` (resumable); returns ``out_dir``.

    With ``world_size`` > 1 every rank calls this: rank r writes the shards s with s % world_size == r
    (each shard is a pure function of its indices, so the split changes no byte), then all meet at
    ``barrier()`` and rank 0 writes the index that marks the folder complete. Under sequence parallelism
    ``rank`` / ``world_size`` are the data rank and data world: the K ranks of a group sample each shard together
    (the teacher on token slices) and only its ``writer`` writes it.

    ``conditions(indices)`` returns a batch for those condition indices: ``image`` [B, C_img, F,
    h, w] (or None), ``image_latent`` [B, C, 1, h, w], ``first_frame`` uint8 [B, 3, H, W], ``tracks``
    [B, T, N, 2], ``visibility`` [B, T, N],
    ``text_emb`` [B, L, E], ``text_len`` [B], ``caption`` (list), ``seeds`` (list of int).
    Random numbers (noise, track IDs) are keyed by the sample index, so a resumed shard is
    bit-identical to an uninterrupted one.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    keep = student_step_indices(cfg.teacher_steps, student_steps, shift=shift)
    # the teacher samples in sample_dtype (cast as load_export casts an export: matmul weights only)
    sample_dtype = resolve_dtype(cfg.sample_dtype, torch.device(device), field="ode_pairs.sample_dtype")
    if sample_dtype != torch.float32:
        getattr(teacher, "module", teacher).dit.cast_for_inference(sample_dtype)
    s = _Sampling(
        teacher=teacher,
        sampler=SamplerConfig(steps=cfg.teacher_steps, solver="euler", guidance=cfg.guidance),
        keep=keep,
        shift=shift,
        seed=cfg.seed,
        teacher_steps=cfg.teacher_steps,
        dtype=DTYPES[cfg.dtype],
        # A teacher trained with latent frame 0 given clean (network.json conventions) is sampled so.
        clean_first=teacher.conventions.clean_first_frame,
        null_text=null_text,
        null_text_lengths=null_text_lengths,
        embed_dim=embed_dim,
        height=height,
        width=width,
        device=device,
    )
    teacher.eval()
    shards = []
    for k, start in enumerate(range(0, cfg.num_pairs, cfg.shard_size)):
        idx_all = list(range(start, min(cfg.num_pairs, start + cfg.shard_size)))
        path = shard_path(out_dir, k)
        shards.append({"file": path.name, "num_samples": len(idx_all)})
        if k % world_size != rank:
            continue  # another rank's shard
        if path.is_file():
            log.info("ODE pairs: shard %s exists, skipped", path.name)
            continue
        parts = _sample_shard(s, conditions, idx_all, cfg.batch_size, name=path.name)
        if writer:
            write_shard(stack_samples(parts), path)
            log.info("ODE pairs: wrote %s (%d samples)", path.name, len(idx_all))
    barrier()
    if rank != 0 or not writer:
        return out_dir
    _write_pairs_index(out_dir, shards, cfg, s, student_steps, sample_dtype)
    return out_dir
