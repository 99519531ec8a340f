"""Step benchmarks of the causal starts and the tiny decoder (trackstream/bench/distill.py runs them):
``stage=teacher_forcing``, ``stage=consistency`` and ``stage=tiny_decoder``, timed as DMD and ODE init are (one
network, one micro-batch of ``data.batch_size``: ``objective.loss`` under autocast, backward,
``TrainedNetwork.step``).

teacher_forcing / consistency: the student (and consistency's frozen autoregressive teacher) is the recipe's model
with random weights, on the engine by ``train.causal_student.causal_student_network`` (the builders' own), and the
objective is built with the builder's arguments. The batch is what their data yields once encoded
(``Conditioner.encode``): the clip's latents, layout image channels, text embedding, CLIP tokens, tracks; the
per-batch encoding of streamed clips (``data.pool_size: null``: the codec and text encoder in ``prepare_batch``)
is not timed. Consistency's target is the student's EMA (``ema.start_step: 0``), swapped into the student for a
no-grad pass each step (``EMA.swapped``: one more fp32 copy of the weights while it runs) after the teacher's
guided step (its guidance terms batched as one stream), then the student's pass with gradient.

tiny_decoder: the TAEHV codec (random, ``train.tiny_decoder.build.build_taehv``), the decoder and the PatchGAN as the
stage's ``tiny_decoder_networks`` makes them, the frozen full codec (the recipe's, random weights) and LPIPS (random weights
when ``stage.lpips.weight`` > 0: the weight files are not needed for a timing). The raw batch is clips of the
recipe's size (``data.num_frames`` x ``data.height`` x ``data.width``); ``prepare_batch`` (the crop and the full
codec's no-grad encode) is timed once. The decoder's update is timed with the adversarial term on (loop step
``gan.start_step``: the adaptive weight's two extra gradients and the frozen PatchGAN's score), then the
discriminator's on the decoder's reconstruction; a loop step runs both.
"""

from __future__ import annotations

import dataclasses

import torch

from trackstream.bench.distill_setup import (
    describe,
    empty_prompt,
    pair_shapes,
    random_conditions,
    random_network,
    timed,
    updater,
)
from trackstream.diffusion.samplers import guidance_terms
from trackstream.models.streaming import first_chunk_given
from trackstream.train.causal_student import causal_student_network
from trackstream.train.consistency.build import STAGE as CONSISTENCY
from trackstream.train.consistency.build import consistency_objective
from trackstream.train.teacher_forcing.build import STAGE as TEACHER_FORCING
from trackstream.train.teacher_forcing.build import teacher_forcing_objective
from trackstream.train.tiny_decoder.build import STAGE as TINY_DECODER
from trackstream.trainer.dist import Runtime
from trackstream.trainer.parallel import prepare_frozen, unwrap

__all__ = ["STAGE_BENCHES", "bench_teacher_forcing", "bench_consistency", "bench_tiny_decoder"]


def _student(typed, runtime: Runtime, par):
    """The causal student as ``train.causal_student.build_causal_student`` prepares it (random weights)."""
    net, init = random_network(typed, clean_first_frame=first_chunk_given(typed.stage.causal))
    return causal_student_network(typed, runtime, net, parallel=par, init_fn=init), init


def _clips(typed, net, device, seed: int) -> tuple[dict, dict]:
    """Random encoded clips of the recipe's shapes (``train.clean_context.encoded_clips``' output) and the shapes."""
    shape = pair_shapes(typed, net)
    gen = torch.Generator().manual_seed(seed)
    batch = random_conditions(net, typed, shape, device, gen)
    B, F, C, h, w = (shape[k] for k in "BFChw")
    del batch["image_latent"], batch["gid"]  # the pairs' fields; clips carry frame 0 in their latents
    batch["latents"] = torch.randn(B, C, F, h, w, generator=gen).to(device)
    return batch, shape


def bench_teacher_forcing(typed, runtime: Runtime, *, repeats: int, warmup: int, seed: int = 0) -> dict:
    device = runtime.device
    par = dataclasses.replace(typed.parallel, strategy="single")
    torch.manual_seed(seed)
    trained, _ = _student(typed, runtime, par)
    batch, shape = _clips(typed, trained.module, device, seed)
    objective = teacher_forcing_objective(typed, runtime, trained.module, null_text=empty_prompt(shape))
    batch = objective.prepare_batch(batch)
    out = {
        "generator": timed(updater(objective, trained, batch, runtime), device=device, repeats=repeats, warmup=warmup)
    }
    out["loop_step_s"] = out["generator"]["seconds"]
    return {**out, **describe(typed, shape, trained.module)}


def bench_consistency(typed, runtime: Runtime, *, repeats: int, warmup: int, seed: int = 0) -> dict:
    st, device = typed.stage, runtime.device
    par = dataclasses.replace(typed.parallel, strategy="single")
    torch.manual_seed(seed)
    trained, init = _student(typed, runtime, par)
    # the frozen autoregressive teacher (a teacher_forcing export: the recipe's network), as load_frozen shards it
    teacher, _ = random_network(typed, clean_first_frame=first_chunk_given(st.causal))
    teacher = prepare_frozen(runtime, teacher, cfg=par, shard=True, init_fn=init)
    batch, shape = _clips(typed, trained.module, device, seed)
    objective = consistency_objective(typed, runtime, trained, teacher, null_text=empty_prompt(shape))
    batch = objective.prepare_batch(batch)
    out = {
        "generator": timed(updater(objective, trained, batch, runtime), device=device, repeats=repeats, warmup=warmup)
    }
    out["loop_step_s"] = out["generator"]["seconds"]
    out["grid_steps"] = st.grid_steps
    out["teacher_terms"] = len(guidance_terms(st.guidance.mode, True)[1])  # the teacher's batch is B x this
    out["ema_target"] = {"decay": typed.ema.decay, "start_step": typed.ema.start_step}
    return {**out, **describe(typed, shape, trained.module)}


def bench_tiny_decoder(typed, runtime: Runtime, *, repeats: int, warmup: int, seed: int = 0) -> dict:
    from trackstream.eval.lpips import LPIPS
    from trackstream.models.codecs import build_codec
    from trackstream.train.tiny_decoder.build import (
        build_taehv,
        check_layout,
        check_pair,
        tiny_decoder_networks,
        tiny_decoder_objective,
    )

    st, device, d = typed.stage, runtime.device, typed.data
    check_layout(typed.parallel.strategy)
    par = dataclasses.replace(typed.parallel, strategy="single")
    torch.manual_seed(seed)
    full = prepare_frozen(runtime, build_codec(typed.codec.name, checkpoint=None, **dict(typed.codec.options)))
    taehv = build_taehv(dataclasses.replace(st, init=None))
    check_pair(st, full, taehv, codec_name=typed.codec.name, data=d)
    decoder, discriminator = tiny_decoder_networks(st, runtime, taehv, parallel=par, steps=typed.trainer.max_steps)
    lpips = prepare_frozen(runtime, LPIPS(st.lpips.net)) if st.lpips.weight else None
    objective = tiny_decoder_objective(typed, runtime, decoder, discriminator, full, lpips)
    gen = torch.Generator().manual_seed(seed)
    raw = {"video": torch.rand(d.batch_size, 3, d.num_frames, d.height, d.width, generator=gen) * 2 - 1}
    prepare = timed(lambda: objective.prepare_batch(raw), device=device, repeats=1, warmup=0)
    batch = objective.prepare_batch(raw)
    gan = st.gan.weight > 0
    out = {
        "decoder": timed(
            updater(objective, decoder, batch, runtime, start_step=st.gan.start_step),
            device=device,
            repeats=repeats,
            warmup=warmup,
        )
    }
    if gan:  # scores the reconstruction the decoder's last update left in the batch
        out["discriminator"] = timed(
            updater(objective, discriminator, batch, runtime, start_step=st.gan.start_step),
            device=device,
            repeats=repeats,
            warmup=warmup,
        )
    out["prepare_batch_s"] = prepare["seconds"]
    out["loop_step_s"] = sum(out[k]["seconds"] for k in ("decoder", "discriminator") if k in out)
    latents = batch["latents"].shape
    return {
        **out,
        "decoder_params": sum(p.numel() for p in unwrap(decoder.module).taehv.decoder.parameters()),
        "discriminator_params": sum(p.numel() for p in unwrap(discriminator.module).parameters()) if gan else 0,
        "full_codec": typed.codec.name,
        "batch": d.batch_size,
        "frames": st.num_frames,
        "crop": st.crop,
        "clip": [d.num_frames, d.height, d.width],
        "latents": list(latents[1:]),
        "lpips": st.lpips.net if lpips is not None else None,
        "gan_adaptive": gan and st.gan.adaptive,
    }


STAGE_BENCHES = {
    TEACHER_FORCING.name: bench_teacher_forcing,
    CONSISTENCY.name: bench_consistency,
    TINY_DECODER.name: bench_tiny_decoder,
}
