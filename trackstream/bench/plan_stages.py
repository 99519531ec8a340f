"""What a training stage holds on a GPU, turned into a ``Plan`` (``bench/plan.py``).

What each stage trains, holds frozen and computes per sample is its record's ``cost``
(``train/stage.py``'s ``Cost``, defined beside each stage's builder: train/teacher/build.py, train/dmd/build.py, ...);
this module counts it: the networks' bytes under the parallel layout (``bench/plan_model.py``), the
activations of the larger update, the rolling KV cache of a causal stage (``cache``), the step's FLOPs.
The tiny-decoder stage has convolutional networks and no DiT tokens: ``bench/plan_tiny_decoder.py``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from trackstream.bench.plan_model import (
    GIB,
    OVERHEAD_GIB,
    WRITE_GBS_PER_NODE,
    NetFacts,
    activation_phases,
    checkpoint_bytes,
    frozen_params,
    gpu_gib,
    gpu_peak_tflops,
    kv_cache_bytes,
    net_facts,
    preemption_lead,
    trained_bytes,
)
from trackstream.models.tracks import latent_frames
from trackstream.train.registry import STAGES
from trackstream.train.stage import Cost, CostInputs, Held

MEASURED = Path(__file__).resolve().parents[2] / "docs" / "bench" / "h200" / "train.json"
TEXT_DIMS = {"umt5": 4096, "minilm": 384}  # the frozen encoders' widths (models/text_encoders.py)


@dataclass
class Plan:
    name: str
    cfg: object
    gpu: str
    gpus: int
    layout: str
    tokens: int
    samples: int
    tokens_per_gpu: float
    facts: NetFacts
    rows: list[dict] = field(default_factory=list)
    total: float = 0.0
    cpu: float = 0.0
    phases: dict = field(default_factory=dict)
    step_s: float | None = None
    checkpoint_bytes: float = 0.0
    write_gbs: float = WRITE_GBS_PER_NODE
    step_flops: float = 0.0
    mfu: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def preemption_lead(self) -> int | None:
        """The --signal lead this job needs (bench/plan_model.py preemption_lead); None without a step time."""
        if self.step_s is None:
            return None
        return preemption_lead(self.step_s, self.checkpoint_bytes, self.gpus, write_gbs=self.write_gbs)

    @property
    def fits(self) -> bool:
        return self.total <= gpu_gib(self.gpu) * GIB

    def as_dict(self) -> dict:
        return {
            "recipe": self.name,
            "stage": self.cfg.stage.name,
            "kind": "computed",
            "gpu": self.gpu,
            "gpu_gib": round(gpu_gib(self.gpu), 2),
            "gpus": self.gpus,
            "layout": self.layout,
            "tokens_per_sample": self.tokens,
            "samples_per_micro_batch": self.samples,
            "tokens_per_gpu": self.tokens_per_gpu,
            "rows": [{**r, "gib": round(r["bytes"] / GIB, 3)} for r in self.rows],
            "total_gib": round(self.total / GIB, 3),
            "fits": self.fits,
            "cpu_offload_gib": round(self.cpu / GIB, 3),
            "peak_phase_gib": {k: round(v / GIB, 3) for k, v in self.phases.items()},
            "step_time_s": self.step_s,
            "checkpoint_gib": round(self.checkpoint_bytes / GIB, 3),
            "preemption_lead_s": self.preemption_lead,
            "step_pflop": self.step_flops / 1e15,
            "mfu_measured_h200": self.mfu,
            "notes": self.notes,
        }


def _measured_mfu(flavor: str) -> tuple[float | None, str]:
    if not MEASURED.is_file():
        return None, ""
    rows = [r for r in json.loads(MEASURED.read_text()) if r.get("mfu")]
    same = [r["mfu"] for r in rows if r["flavor"] == flavor]
    if same:
        return same[0], ""
    return (sum(r["mfu"] for r in rows) / len(rows), "MFU: the mean of the measured flavors") if rows else (None, "")


def _refuse(cfg, gpus: int) -> None:
    """The layouts training itself refuses (one line each), before any size is computed."""
    par, stage = cfg.parallel, cfg.stage.name
    if not (stage in STAGES and STAGES[stage].planned):
        planned = ", ".join(name for name, s in STAGES.items() if s.planned)
        raise ValueError(f"stage={stage}: plans cover the {planned} stages; choose one of them")
    K = par.sequence_parallel
    if par.strategy == "single" and gpus > 1:
        raise ValueError(
            f"--gpus {gpus} with parallel.strategy=single (one process): add parallel=fsdp, or use --gpus 1"
        )
    if gpus % K:
        raise ValueError(
            f"--gpus {gpus} is not a multiple of parallel.sequence_parallel={K} (world = data x K): "
            f"choose --gpus as a multiple of {K}"
        )
    if par.strategy == "deepspeed" and STAGES[stage].manual_grad_sync:  # as trainer/parallel.py refuses it
        raise ValueError(
            f"parallel.strategy=deepspeed: stage {stage} trains its generator outside its forward, which a "
            "DeepSpeed engine cannot see; use parallel=fsdp, ddp or single"
        )


def _refuse_ema(cfg, cost: Cost) -> None:
    if cfg.parallel.strategy == "deepspeed" and cfg.parallel.zero_stage == 3 and any(t.ema for t in cost.trained):
        raise ValueError(
            "ema.enabled=true is not supported with parallel.zero_stage=3 (partitioned parameters); use fsdp"
        )


def _networks(cfg, st, stage: str, text_dim: int, tokens: int) -> tuple:
    """(trained, full, teacher, critic, teacher flavor) facts: the trained network (the rl stage without
    LoRA), its full-rank twin, the distillation's teacher and critic."""
    lora = (
        cfg.model
        if STAGES[stage].lora
        else dataclasses.replace(cfg.model, lora=dataclasses.replace(cfg.model.lora, rank=0))
    )
    f = net_facts(lora, text_dim, tokens)
    full = net_facts(dataclasses.replace(cfg.model, lora=dataclasses.replace(cfg.model.lora, rank=0)), text_dim, tokens)
    # the teacher of a distillation: stage.teacher_flavor (a 14B over a 1.3B student), else the export's, else model's
    teacher = full
    flavor = getattr(st, "teacher_flavor", None) or _export_flavor(getattr(st, "teacher", None))
    if STAGES[stage].teacher_size and flavor and flavor != cfg.model.flavor:
        other = dataclasses.replace(cfg.model, flavor=flavor, overrides={})
        teacher = net_facts(dataclasses.replace(other, lora=dataclasses.replace(other.lora, rank=0)), text_dim, tokens)
        critic = f if getattr(st, "critic", None) else net_facts(other, text_dim, tokens)  # null: the teacher's copy
        # (a path is taken as the student's size: the 14B recipes' critics are "student" or a 1.3B folder)
    else:
        critic = f
    return f, full, teacher, critic, flavor


def _peak(nets: list, f: NetFacts, cfg, *, tokens: int, samples: int, chunk: float, half: bool, accum: int):
    """The activation phases of the network whose update peaks highest, and that network."""
    K = cfg.parallel.sequence_parallel
    peak, peak_net = None, nets[0]
    for net in nets:
        ph_ = activation_phases(
            f,
            tokens=tokens * samples / K,
            work_tokens=tokens * samples / K if net.name == "critic" else chunk,  # the critic scores whole clips
            checkpointing=cfg.parallel.activation_checkpointing,
            half=half,
            grads=net.gradients,
            accumulating=accum > 1,
            copies=net.weight_copies,
        )
        if peak is None or max(ph_.values()) > max(peak.values()):
            peak, peak_net = ph_, net
    return peak, peak_net


def _memory_rows(plan: Plan, nets: list, peak_net, held: list, full: NetFacts, *, gpus: int, frozen: bool) -> None:
    """Append the per-GPU rows of the trained networks' state and (``frozen``) the frozen networks."""
    rows = plan.rows
    for what in ("parameters", "gradients", "optimizer", "ema"):
        for net in nets if what != "gradients" else [peak_net]:
            label = {"ema": "EMA", "optimizer": "optimizer (AdamW)"}.get(what, what)
            count = net.trained if what != "parameters" else net.params
            if getattr(net, what) or what != "ema":
                rows.append({"component": f"{label}: {net.name}", "count": count, "bytes": getattr(net, what)})
    if frozen:
        for label, n, b, sharded in held:
            gather = full.unit * 2 * 2 if sharded else 0  # two gathered units in bf16
            rows.append({"component": label, "count": n, "bytes": n * b / (gpus if sharded else 1) + gather})


def make_plan(cfg, *, gpus: int, gpu: str, overrides: list[str], frozen: bool = True) -> Plan:
    from trackstream.models.codec_names import codec_spatial_factor
    from trackstream.models.flavors import flavor_config
    from trackstream.train.app import derive_grad_accum

    par, st, stage = cfg.parallel, cfg.stage, cfg.stage.name
    _refuse(cfg, gpus)
    K = par.sequence_parallel
    data_ranks = gpus // K
    accum = derive_grad_accum(
        global_batch=cfg.trainer.global_batch,
        batch_size=cfg.data.batch_size,
        world_size=data_ranks,
        grad_accum=cfg.trainer.grad_accum,
    )
    half = cfg.trainer.precision in ("auto", "bf16")  # auto = bf16 on a GPU
    record = STAGES[stage]
    if record.cost is None:  # planned without a DiT cost: the tiny decoder's convolutional networks
        return _tiny_decoder_plan(cfg, gpus=gpus, gpu=gpu, overrides=overrides, accum=accum, half=half)
    text_dim = TEXT_DIMS["umt5" if cfg.model.text_encoder.lower().startswith("umt5") else "minilm"]
    base = flavor_config(cfg.model.flavor, **cfg.model.overrides)
    pt, ph, pw = base["patch_size"]
    sf = codec_spatial_factor(cfg.codec.name, dict(cfg.codec.options))
    latents = latent_frames(cfg.data.num_frames)
    tpf = (cfg.data.height // sf // ph) * (cfg.data.width // sf // pw)
    tokens = latents // pt * tpf
    f, full, teacher, critic, flavor = _networks(cfg, st, stage, text_dim, tokens)
    sampling = cfg.eval.enabled and cfg.trainer.sample_every > 0
    inputs = CostInputs(
        ema=bool(cfg.ema.enabled),
        sampling=sampling,
        student_steps=cfg.schedule.student_steps,
        teacher_cost=teacher.flops_per_sample / full.flops_per_sample,
    )
    cost = record.cost(st, inputs)
    _refuse_ema(cfg, cost)
    samples = cfg.data.batch_size * cost.rollouts
    if K > 1:  # the same refusals as the training forward (models/sequence_parallel.py)
        from trackstream.models.sequence_parallel import SequenceShard

        SequenceShard(size=K, rank=0, group=None).check(f.heads, (latents, tpf, 1))
    zero = par.zero_stage if par.strategy == "deepspeed" else 0
    layout = par.strategy + (f" ZeRO-{zero}" + (" + CPU optimizer" if par.offload_optimizer else "") if zero else "")
    layout += f", {gpus} GPU(s) = {data_ranks} data x {K} sequence, grad accum {accum}"
    layout += f", checkpointing {'on' if par.activation_checkpointing else 'off'}, {'bf16' if half else 'fp32'}"
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), cfg.task_name)
    plan = Plan(name, cfg, gpu, gpus, layout, tokens, samples, tokens * samples / K, f)

    kw = dict(strategy=par.strategy, zero=zero, offload=par.offload_optimizer, world=gpus, half=half)
    nets = [trained_bytes(t.name, critic if t.critic else f, ema=t.ema, **kw) for t in cost.trained]
    if not record.lora and cfg.model.lora.enabled:
        plan.notes.append(f"the {stage} stage trains the whole {nets[0].name}: model.lora is not applied to it")

    held = _frozen_networks(cfg, cost.frozen, f, teacher, half=half)
    plan.notes += cost.notes
    if teacher is not full:
        plan.notes.append(f"the teacher is {flavor} ({teacher.params:,} parameters): stage.teacher_flavor")

    # tokens of one differentiated pass: a chunk of the causal rollout (dmd generator, rl), else the clip
    chunk = st.causal.chunk_frames * tpf * samples / K if record.cache == "rollout" else tokens * samples / K
    # the peak: the larger of the networks' updates (one at a time), over the step's phases
    peak, peak_net = _peak(nets, f, cfg, tokens=tokens, samples=samples, chunk=chunk, half=half, accum=accum)
    plan.phases = peak
    rows = plan.rows
    _memory_rows(plan, nets, peak_net, held, full, gpus=gpus, frozen=frozen)
    rows.append(
        {
            "component": f"activations at the peak ({max(peak, key=peak.get).replace('_', ' ')})",
            "bytes": max(peak.values()) - peak_net.gradients,
        }
    )
    if record.cache is not None:
        kv = kv_cache_bytes(f, st.causal, latents=latents, tokens_per_frame=tpf, samples=samples, half=half)
        # under sequence parallelism each rank caches its K-th of the heads (models/causal.py)
        rows.append({"component": f"rolling KV cache ({st.causal.name})", "bytes": kv / K})
    rows.append({"component": "CUDA context + allocator overhead (allowance)", "bytes": OVERHEAD_GIB * GIB})
    plan.total = sum(r["bytes"] for r in rows)
    plan.cpu = sum(n.cpu for n in nets)
    plan.checkpoint_bytes = checkpoint_bytes(nets)
    for n in nets:
        plan.notes += n.notes
    _step_time(plan, cfg, cost, accum * data_ranks)
    return plan


def _tiny_decoder_plan(cfg, *, gpus: int, gpu: str, overrides: list[str], accum: int, half: bool) -> Plan:
    from trackstream.bench.plan_tiny_decoder import tiny_decoder_plan
    from trackstream.train.tiny_decoder.build import check_layout

    check_layout(cfg.parallel.strategy)  # the layouts the stage refuses (fsdp, deepspeed), in its words
    st = cfg.stage
    layout = f"{cfg.parallel.strategy}, {gpus} GPU(s) = {gpus} data, grad accum {accum}, {'bf16' if half else 'fp32'}"
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("experiment=")), cfg.task_name)
    pixels = st.num_frames * st.crop**2  # a crop's pixels stand in for the tokens of a DiT plan
    facts = NetFacts(0, 0, 0, 0, 0, 0, 0, (1, 1, 1), 0, False)
    plan = Plan(name, cfg, gpu, gpus, layout, pixels, cfg.data.batch_size, pixels * cfg.data.batch_size, facts)
    tiny_decoder_plan(plan, cfg, gpus=gpus, half=half)
    return plan


def _frozen_networks(cfg, frozen: tuple[Held, ...], f: NetFacts, teacher: NetFacts, *, half: bool) -> list[tuple]:
    """The stage's frozen networks on a GPU: (component, parameters, bytes per parameter, sharded under fsdp).
    ``f``: the trained model's facts; ``teacher``: the distillation's teacher's."""
    fsdp = cfg.parallel.strategy == "fsdp"
    umt5 = cfg.model.text_encoder.lower().startswith("umt5")
    encoders = {
        "text": (
            "frozen text encoder",
            lambda: frozen_params("text", cfg.model.text_encoder),
            2 if umt5 and half else 4,
        ),
        "codec": (
            f"frozen codec ({cfg.codec.name})",
            lambda: frozen_params("codec", cfg.codec.name, dict(cfg.codec.options)),
            4,
        ),
        "image": ("frozen CLIP image encoder", lambda: frozen_params("image", "vit-h-14"), 4),
        "aesthetic": ("frozen aesthetic reward (CLIP ViT-L/14)", lambda: frozen_params("aesthetic", "vit-l-14"), 4),
    }
    held: list[tuple] = []
    for h in frozen:
        if h.kind == "image" and cfg.model.image_feature_mode != "clip":
            continue  # the model reads no CLIP image tokens
        if h.kind in ("teacher", "student"):
            n = (teacher if h.kind == "teacher" else f).params
            held.append((h.label, n, 4, h.shardable and fsdp))
        else:
            label, params, width = encoders[h.kind]
            held.append((label + (" (from the first periodic sample)" if h.later else ""), params(), width, False))
    return held


def _export_flavor(folder) -> str | None:
    """The flavor of the network folder the config names, when it names one that exists."""
    from trackstream.models.network import Network

    network = Network.find(folder, "stage.teacher") if folder else None
    return None if network is None else network.model.flavor


def _step_time(plan: Plan, cfg, cost: Cost, replicas: int) -> None:
    """Seconds per optimizer update: model FLOPs / (GPUs x peak x MFU measured on an H200); the work per
    sample is the stage's ``cost.passes`` (teacher-training-step units), over ``replicas`` micro-batches
    (grad accumulation x data ranks) of ``batch_size`` clips x ``cost.rollouts``."""
    mfu, note = _measured_mfu(cfg.model.flavor)
    if mfu is None:
        return
    samples = cfg.data.batch_size * replicas * cost.rollouts
    plan.step_flops = plan.facts.flops_per_sample * cost.passes * samples
    plan.mfu = mfu
    plan.step_s = plan.step_flops / (plan.gpus * gpu_peak_tflops(plan.gpu) * 1e12 * mfu)
    if note:
        plan.notes.append(note)
