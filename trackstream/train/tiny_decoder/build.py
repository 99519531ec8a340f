"""Wiring of ``stage=tiny_decoder`` (MotionStream appendix A): a TAEHV decoder trained on the frozen full codec's
latents (``train.tiny_decoder.objective``), with a PatchGAN discriminator as the second trained network.

Order: seeds (identical random init on every rank), the held-out clips (a missing set fails first), the training
pool, the frozen full codec (the root's ``codec``: from ``codec.checkpoint``, or for the trainable tiny-ae fitted
first in ``<run_dir>/codec``), the TAEHV codec (``stage.decoder`` from ``stage.init``, else random) checked
against it (latent channels, spatial factor), LPIPS (``stage.lpips``), the networks, the objective, the data.
Every ``trainer.sample_every`` steps and at the end the decoder decodes the first ``stage.image_clips`` held-out
clips: ``<run_dir>/reconstructions/<tag>.png`` (rows: truth, decoded; frames 0, middle, last) and ``.mp4`` (truth
| decoded; on W&B as a video) and the PSNR in eval.jsonl / W&B. ``finish`` saves the TAEHV codec in the official
layout to ``<run_dir>/export/taehv.pth`` (encoder as loaded, decoder trained; loads as
``codec=<stage.decoder> codec.checkpoint=<file>``: ``stage.options`` travel beside it as ``taehv.json``) and writes
``<run_dir>/tiny_decoder.json``: the PSNR of the trained decoder and of the full codec's own decoder on the
first ``stage.eval_clips`` held-out clips.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from trackstream.data.batching import derive_seed
from trackstream.data.clips import ClipPool, DataConfig, build_raw_stream, check_heldout, heldout_clips
from trackstream.data.pool_stream import PoolStream
from trackstream.data.video_io import tensor_to_frames, write_mp4
from trackstream.eval.metrics import video_psnr, video_ssim
from trackstream.models.patch_discriminator import PatchDiscriminator
from trackstream.train.codec import obtain_codec
from trackstream.train.plan import StagePlan, trained_network
from trackstream.train.stage import Stage
from trackstream.train.tiny_decoder.objective import DecoderModel, TinyDecoderConfig, TinyDecoderObjective
from trackstream.trainer.dist import Runtime
from trackstream.trainer.loop import Hook, TrainResult
from trackstream.trainer.metrics import MetricLogger
from trackstream.trainer.parallel import ParallelConfig, prepare_frozen, unwrap

if TYPE_CHECKING:
    from trackstream.train.train_config import TrainConfig

__all__ = [
    "STAGE",
    "build_tiny_decoder",
    "build_taehv",
    "check_layout",
    "check_pair",
    "tiny_decoder_networks",
    "export_taehv",
    "EXPORT_FILE",
    "tiny_decoder_objective",
]

log = logging.getLogger(__name__)
EXPORT_FILE = "taehv.pth"


def build_taehv(st: TinyDecoderConfig) -> torch.nn.Module:
    """The TAEHV codec to train: ``stage.decoder``'s layout with ``stage.options``, from ``stage.init`` or random."""
    from trackstream.models.codecs import build_codec

    return build_codec(st.decoder, checkpoint=st.init, **dict(st.options))


def check_pair(
    st: TinyDecoderConfig, full: torch.nn.Module, taehv: torch.nn.Module, *, codec_name: str, data: DataConfig
) -> None:
    """The decoder must read the full codec's latents (``codec=codec_name``) and give back its frame size; crops
    must fit both and ``data``'s clips."""
    if taehv.latent_channels != full.latent_channels:
        raise ValueError(
            f"stage.decoder={st.decoder!r} reads {taehv.latent_channels}-channel latents but codec={codec_name!r} "
            f"makes {full.latent_channels}: taehv-wan2.2 pairs with wan2.2-vae, taehv-wan2.1 with the 16-channel codecs"
        )
    if taehv.spatial_factor != full.spatial_factor:
        raise ValueError(
            f"stage.decoder={st.decoder!r} upsamples {taehv.spatial_factor}x but codec={codec_name!r} is "
            f"{full.spatial_factor}x: set stage.options.spatial_stages (e.g. [true, true, false] for 4x latents)"
        )
    if st.crop % full.spatial_factor or st.crop > min(data.height, data.width):
        raise ValueError(
            f"stage.crop={st.crop} must be a multiple of the codec's spatial factor {full.spatial_factor} and fit "
            f"data.height x data.width = {data.height}x{data.width}"
        )
    if st.num_frames > data.num_frames:
        raise ValueError(f"stage.num_frames={st.num_frames} exceeds data.num_frames={data.num_frames}")


def _lpips(st: TinyDecoderConfig, runtime: Runtime):
    if st.lpips.weight == 0:
        return None
    from trackstream.eval.lpips import load_lpips

    for name in ("backbone", "heads"):
        path = getattr(st.lpips, name)
        if not Path(path).is_file():
            raise ValueError(
                f"stage.lpips.{name}={path!r} does not exist: copy the weight file there, or set stage.lpips.weight=0"
            )
    return prepare_frozen(runtime, load_lpips(st.lpips.net, backbone=st.lpips.backbone, heads=st.lpips.heads))


def _data(data: DataConfig, runtime: Runtime, pool: ClipPool | None):
    """The pool's clips (``data.pool_size``) or rendered / shard clips streamed as they come, as the codec fit."""
    if pool is None:
        return build_raw_stream(data, rank=runtime.data_rank, world_size=runtime.data_world_size)
    return PoolStream(
        len(pool),
        batch_size=data.batch_size,
        seed=derive_seed(data.seed, "tiny_decoder"),
        make_batch=lambda idx, gids: {"video": pool.videos(idx)},
        rank=runtime.data_rank,
        world_size=runtime.data_world_size,
    )


class _Reconstructions:
    """The held-out clips' latents (encoded once by the full codec) and their decoding by the trained decoder:
    the first ``stage.image_clips`` shown, the first ``stage.eval_clips`` scored; ``data``: the clips' settings."""

    def __init__(self, st: TinyDecoderConfig, data: DataConfig, runtime: Runtime, full, decoder, run_dir: Path):
        self.st, self.fps, self.runtime, self.full, self.decoder = st, data.fps, runtime, full, decoder
        self.out = run_dir / "reconstructions"
        self.videos = self.latents = torch.empty(0)
        if not runtime.is_main:  # rank 0 decodes alone (the networks are whole on every rank: check_layout)
            return
        clips = heldout_clips(data).head(max(st.image_clips, st.eval_clips))
        self.videos = clips.videos(list(range(len(clips))))  # [n, 3, T, H, W] on the CPU
        with torch.no_grad():
            self.latents = torch.cat([self._encode(v[None]) for v in self.videos])

    def _encode(self, video: torch.Tensor) -> torch.Tensor:
        return self.full.encode(video.to(self.runtime.device)).float().cpu()

    @torch.no_grad()
    def decoded(self, n: int, *, full: bool = False) -> torch.Tensor:
        """The first ``n`` clips through the trained decoder (``full``: the full codec's own decoder), clamped."""
        codec = self.full if full else unwrap(self.decoder).taehv
        out = [codec.decode(z[None].to(self.runtime.device)).float().cpu() for z in self.latents[:n]]
        return torch.cat(out).clamp(-1, 1)

    def scored(self, n: int, *, full: bool = False) -> dict:
        """PSNR / SSIM of the first ``n`` clips decoded, by the evaluation's functions over every frame (a
        reconstruction decodes frame 0 too), and the decoder's seconds per clip on this device."""
        self.decoded(1, full=full)  # warm-up: first-call allocations are not decoding
        t0 = time.perf_counter()
        recon = self.decoded(n, full=full)
        seconds = (time.perf_counter() - t0) / n
        pairs = [(tensor_to_frames(r), tensor_to_frames(t)) for r, t in zip(recon, self.videos[:n])]
        return {
            "psnr": float(np.mean([video_psnr(r, t, first=0) for r, t in pairs])),
            "ssim": float(np.mean([video_ssim(r, t, first=0) for r, t in pairs])),
            "decode_seconds_per_clip": seconds,
        }

    def images(self, step: int, logger: MetricLogger, tag: str) -> float | None:
        """The first ``stage.image_clips`` clips decoded: a PNG strip and an mp4 (W&B); their PSNR (rank 0)."""
        n = min(self.st.image_clips, len(self.videos))
        if n == 0 or not self.runtime.is_main:
            return None
        recon, truth = self.decoded(n), self.videos[:n]
        self.out.mkdir(parents=True, exist_ok=True)
        _write_strip(self.out / f"{tag}.png", truth, recon)
        video = self.out / f"{tag}.mp4"
        side_by_side = np.concatenate([tensor_to_frames(v) for v in (truth[0], recon[0])], axis=2)
        write_mp4(video, side_by_side, fps=self.fps)
        logger.log_video(step, "reconstructions/held_out", video, caption=f"{tag}: truth | decoded")
        pairs = [(tensor_to_frames(r), tensor_to_frames(t)) for r, t in zip(recon, truth)]
        return float(np.mean([video_psnr(r, t, first=0) for r, t in pairs]))  # as the final figures

    def periodic(self, step: int, logger: MetricLogger) -> None:
        value = self.images(step, logger, f"step_{step:08d}")
        if value is not None:  # eval.jsonl and W&B eval/psnr_tiny_decoder
            logger.log_eval(step, {"psnr_tiny_decoder": value})
        self.runtime.barrier()

    def final(self, step: int, logger: MetricLogger) -> dict:
        self.images(step, logger, "final")
        n = min(self.st.eval_clips, len(self.videos))
        figures: dict = {}
        if self.runtime.is_main and n:
            # the full codec's own decoder: the floor the tiny decoder regresses to, and the time it saves
            mine, floor = self.scored(n), self.scored(n, full=True)
            figures = {f"{k}_tiny_decoder": v for k, v in mine.items()} | {
                f"{k}_full_codec": v for k, v in floor.items()
            }
            figures["eval_clips"] = n
            logger.log_eval(step, figures, periodic=False)
        self.runtime.barrier()
        return figures


def _write_strip(path: Path, truth: torch.Tensor, recon: torch.Tensor) -> None:
    """Rows truth / decoded per clip, columns frames 0, middle, last."""
    from PIL import Image

    T = truth.shape[2]
    picks = sorted({0, T // 2, T - 1})
    rows = []
    for t_clip, r_clip in zip(truth, recon):
        for clip in (t_clip, r_clip):
            frames = tensor_to_frames(clip[:, picks])  # [k, H, W, 3]
            rows.append(np.concatenate(list(frames), axis=1))
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)


def export_taehv(decoder, path: Path, runtime: Runtime, options: dict | None = None) -> Path:
    """The trained TAEHV codec in the official layout (``encoder.*``, ``decoder.*``), written by rank 0, with its
    config options beside it (``<file>.json``: ``models.codecs.build_codec`` reads them, so the file loads from
    its codec name alone wherever a TAEHV codec is accepted: generate, the demo, the evaluation)."""
    from trackstream.trainer.weights import full_state_dict

    sd = full_state_dict(decoder, use_ema=False)  # the engine's one reader of a trained network's whole weights
    if runtime.is_main:
        path.parent.mkdir(parents=True, exist_ok=True)
        official = {k.removeprefix("taehv."): v.contiguous() for k, v in sd.items() if k.startswith("taehv.")}
        tmp = path.with_suffix(".tmp")
        torch.save(official, tmp)
        tmp.replace(path)
        sidecar = path.with_suffix(".json")
        sidecar.write_text(json.dumps({"taehv_options": dict(options or {})}, indent=1))
    runtime.barrier()
    return path


def tiny_decoder_networks(st: TinyDecoderConfig, runtime: Runtime, taehv, *, parallel: ParallelConfig, steps: int):
    """The decoder around ``taehv`` and (with ``stage.gan.weight`` > 0) the PatchGAN, trained whole (no LoRA)
    in ``parallel``'s layout over the run's ``steps`` (the PatchGAN from ``stage.gan.start_step``)."""
    decoder = trained_network(
        parallel,
        runtime,
        "decoder",
        DecoderModel(taehv),
        optim=st.decoder_optim,
        ema=None,
        total_steps=steps,
        lora=None,
    )
    if st.gan.weight == 0:
        return decoder, None
    disc = PatchDiscriminator(width=st.gan.width, layers=st.gan.layers, norm=st.gan.norm)
    critic_steps = max(1, steps - st.gan.start_step)
    discriminator = trained_network(
        parallel, runtime, "discriminator", disc, optim=st.gan.optim, ema=None, total_steps=critic_steps, lora=None
    )
    return decoder, discriminator


def check_layout(strategy: str) -> None:
    """The stage trains whole, small networks (~10M + ~3M parameters) on every rank: the adaptive weight reads the
    decoder's last layer whole, the discriminator is called outside its wrapper with its weights detached, and
    rank 0 decodes the held-out clips alone; sharded layouts would break all three (``strategy``:
    ``parallel.strategy``)."""
    if strategy in ("fsdp", "deepspeed"):
        raise ValueError(
            f"parallel.strategy={strategy}: stage tiny_decoder keeps its small networks whole on every "
            "rank; use parallel=ddp (or single)"
        )


def tiny_decoder_objective(cfg: "TrainConfig", runtime: Runtime, decoder, discriminator, full, lpips):
    """The stage's objective on its trained decoder and discriminator (None without the GAN) and the frozen full
    codec and LPIPS (None without its weight): the builder's, and the step benchmark's with random weights."""
    return TinyDecoderObjective(
        decoder.module,
        discriminator.module if discriminator else None,
        full,
        lpips,
        cfg=cfg.stage,
        device=runtime.device,
        seed=derive_seed(cfg.trainer.seed, "tiny_decoder", runtime.data_rank) % 2**62,  # crops per rank
    )


def build_tiny_decoder(cfg: "TrainConfig", runtime: Runtime, run_dir: Path) -> StagePlan:
    st: TinyDecoderConfig = cfg.stage
    check_layout(cfg.parallel.strategy)
    torch.manual_seed(cfg.trainer.seed)  # the same global random stream on every rank, whatever loads below
    if cfg.eval.enabled:  # held-out clips are checked first: a missing set fails before anything loads
        check_heldout(cfg.data, disable="eval.enabled=false")
    pool = ClipPool.training(cfg.data) if cfg.data.pool_size else None
    full = obtain_codec(
        runtime,
        run_dir,
        pool,
        codec=cfg.codec,
        data=cfg.data,
        trainer=cfg.trainer,
        parallel=cfg.parallel,
        logger=cfg.logger,
    )
    # the random init of the decoder (without stage.init) and the discriminator from their own seed: the same on
    # every rank, and the same whether or not a codec was fitted first (which draws from the global stream)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.trainer.seed, "tiny_decoder") % 2**62)
        taehv = build_taehv(st)
        check_pair(st, full, taehv, codec_name=cfg.codec.name, data=cfg.data)
        decoder, discriminator = tiny_decoder_networks(
            st, runtime, taehv, parallel=cfg.parallel, steps=cfg.trainer.max_steps
        )
    networks = {"decoder": decoder} | ({"discriminator": discriminator} if discriminator else {})
    lpips = _lpips(st, runtime)
    objective = tiny_decoder_objective(cfg, runtime, decoder, discriminator, full, lpips)
    shown = _Reconstructions(st, cfg.data, runtime, full, decoder.module, run_dir) if cfg.eval.enabled else None
    hooks = [Hook(cfg.trainer.sample_every, shown.periodic)] if shown and cfg.trainer.sample_every > 0 else []

    def finish(result: TrainResult, logger: MetricLogger) -> dict:
        options = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(st.options).items()}
        out = {"export": str(export_taehv(decoder, run_dir / "export" / EXPORT_FILE, runtime, options))}
        if shown is not None:
            figures = shown.final(result.step, logger)
            out.update({k: v for k, v in figures.items() if k.startswith(("psnr_", "ssim_"))})
            if runtime.is_main:
                (run_dir / "tiny_decoder.json").write_text(json.dumps(figures, indent=2) + "\n")
                log.info(
                    "held-out PSNR / SSIM: tiny decoder %s / %s, the full codec's own decoder %s / %s",
                    *(figures.get(f"{m}_{w}") for w in ("tiny_decoder", "full_codec") for m in ("psnr", "ssim")),
                )
        if discriminator is not None:
            out["discriminator_updates"] = discriminator.num_updates
        return out

    frozen = {"full_codec": full} | ({"lpips": lpips} if lpips is not None else {})
    return StagePlan(
        objective=objective,
        networks=networks,
        data=_data(cfg.data, runtime, pool),
        hooks=hooks,
        finish=finish,
        frozen=frozen,
    )


STAGE = Stage(TinyDecoderConfig.name, TinyDecoderConfig, build_tiny_decoder)
