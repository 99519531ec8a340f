"""What a training recipe holds on each GPU: parameter counts of the networks built on ``meta`` (no
weights, no memory) and the byte model of ``trackstream plan`` (``bench/plan.py``).

Every figure here is COMPUTED. The two measured figures it is calibrated on (docs/bench/h200/train.json:
one teacher step on one H200) are read by ``bench/plan.py`` and the tests, never baked in here.

Byte model of one trained network with P parameters, T of them trained (T = P, or the LoRA adapters),
on W processes (world = data ranks x sequence_parallel K):
* single / ddp: fp32 master weights 4P, fp32 gradients 4T (ddp: + 4T of DDP's gradient buckets), AdamW
  8T, EMA 4T; under bf16 autocast the bf16 copies of the trained weights (2T) stay cached from the first
  use to the end of the forward (autocast caches casts of leaves that require grad).
* fsdp (FSDP2 over all W ranks, ``trainer/parallel.py``): 4P/W, 4T/W, 8T/W, 4T/W, plus two gathered
  units in bf16 (the running one and the prefetched one) and one unit's unsharded gradients.
* deepspeed ZeRO (bf16): bf16 module 2P (/W at stage 3), fp32 master + AdamW 12T (/W from stage 1, on
  the CPU with offload), gradients 2T (/W from stage 2); EMA 4T (unsharded: it shadows the raw module).
Activations per GPU scale with the tokens each GPU runs (tokens x samples / K), from the structure of a
``WanBlock`` (``block_bytes_per_token``) and ``ACTIVATION_SCALE``, the one fitted constant.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

GIB = 2**30

# The one constant fitted to measurements: the share of a WanBlock's structurally counted autograd
# tensors (``block_bytes_per_token``) live at once while a block is recomputed and differentiated.
# Fitted to the two teacher steps of docs/bench/h200/train.json (1.3B Fun-Control 832x480x81: 35.31
# GiB; TI2V-5B 1280x704x121: 100.48 GiB); 0.82 puts the plan within 1 % of both (minimax of the two relative errors).
ACTIVATION_SCALE = 0.82
# Memory outside the allocator's peak (what torch.cuda.max_memory_allocated does not see): the CUDA
# context and kernels (~0.5-1 GiB), NCCL communicators and their buffers, allocator fragmentation. A
# stated allowance, not fitted.
OVERHEAD_GIB = 2.5

# GPU kind -> memory in the vendor's decimal GB (the one table of capacities)
GPUS: dict[str, float] = {"h100": 80, "h200": 141, "h800": 80, "b200": 180, "a100-80": 80, "a100-40": 40, "l40s": 48}
B200_PEAK_BF16_TFLOPS = 2250.0  # dense; the other kinds' peaks are bench/train.py's PEAK_BF16_TFLOPS


def gpu_gib(name: str) -> float:
    """A GPU's memory in GiB (the vendor's decimal GB, converted)."""
    return GPUS[name] * 1e9 / GIB


def gpu_peak_tflops(name: str) -> float:
    """Dense bf16 peak of a GPU kind (``a100-80`` and ``a100-40`` are both an A100)."""
    from trackstream.bench.train import PEAK_BF16_TFLOPS

    return PEAK_BF16_TFLOPS.get(name.split("-")[0].upper(), B200_PEAK_BF16_TFLOPS if name == "b200" else 0.0)


@dataclass
class NetFacts:
    """What the byte model needs of one DiT network (counted on a meta-built module)."""

    params: int
    trained: int  # parameters with requires_grad (all, or the LoRA adapters)
    unit: int  # parameters of one WanBlock: the FSDP unit gathered at a time
    dim: int
    ffn: int
    layers: int
    heads: int
    patch: tuple[int, int, int]
    text_tokens: int  # cross-attention context: text_len + CLIP tokens for i2v flavors
    image: bool  # the i2v image branch (a second cross-attention)
    flops_per_sample: float = 0.0  # model FLOPs of one training step on one sample (bench.train.model_flops)
    tokens: int = 0  # tokens of one sample the FLOPs were counted at


_NETS: dict[str, tuple] = {}
_FROZEN: dict[str, int] = {}


def build_counted(model, text_dim: int):
    """The recipe's network built on ``meta`` (LoRA adapters added when model.lora.rank > 0), cached."""
    from trackstream.models.motion_wan import build_motion_wan

    key = repr((dataclasses.asdict(model), text_dim))
    if key not in _NETS:
        net = build_motion_wan(model, text_encoder_dim=text_dim, device="meta")
        if model.lora.enabled:
            from trackstream.models.lora import add_lora

            add_lora(net, model.lora)
        _NETS[key] = net
    return _NETS[key]


def net_facts(model, text_dim: int, tokens: int) -> NetFacts:
    from trackstream.bench.train import model_flops
    from trackstream.models.wan import CLIP_TOKENS

    net = build_counted(model, text_dim)
    dit = net.dit
    image = hasattr(dit, "img_emb")
    text_tokens = dit.text_len + (CLIP_TOKENS if image else 0)
    return NetFacts(
        params=sum(p.numel() for p in net.parameters()),
        trained=sum(p.numel() for p in net.parameters() if p.requires_grad),
        unit=sum(p.numel() for p in dit.blocks[0].parameters()),
        dim=dit.dim,
        ffn=dit.ffn_dim,
        layers=dit.num_layers,
        heads=dit.num_heads,
        patch=tuple(dit.patch_size),
        text_tokens=text_tokens,
        image=image,
        flops_per_sample=model_flops(net, tokens=tokens, text_tokens=text_tokens, batch=1),
        tokens=tokens,
    )


def frozen_params(kind: str, name: str, options: dict | None = None) -> int:
    """Parameters of a frozen network built on meta: ``text`` encoder, ``codec``, CLIP ``image`` encoder
    (ViT-H/14, the i2v flavors' image tokens) or the aesthetic reward's CLIP ViT-L/14 (``aesthetic``)."""
    key = repr((kind, name, sorted((options or {}).items())))
    if key in _FROZEN:
        return _FROZEN[key]
    with torch.device("meta"):
        if kind == "text" and name.lower().startswith("umt5"):
            from transformers import UMT5Config, UMT5EncoderModel

            from trackstream.models.text_encoders import UMT5_XXL_CONFIG

            m = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
        elif kind == "text":  # all-MiniLM-L6-v2
            from transformers import BertConfig, BertModel

            m = BertModel(
                BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
            )
        elif kind == "codec":
            from trackstream.models.codecs import build_codec

            m = build_codec(name, **(options or {}))
        elif kind == "image":
            from transformers import CLIPVisionConfig, CLIPVisionModel

            from trackstream.models.clip_image import VIT_H14_CONFIG

            m = CLIPVisionModel(CLIPVisionConfig(**VIT_H14_CONFIG))
        else:
            from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

            from trackstream.models.aesthetic import VIT_L14_CONFIG

            m = CLIPVisionModelWithProjection(CLIPVisionConfig(**VIT_L14_CONFIG))
    _FROZEN[key] = sum(p.numel() for p in m.parameters())
    return _FROZEN[key]


def block_bytes_per_token(dim: int, ffn: int, *, image: bool, half: bool) -> float:
    """Bytes per token of the tensors autograd keeps for one WanBlock's backward. Counted from
    ``models/wan_layers.py``: fp32 (residual stream, the two non-affine LayerNorms and their modulation, RMSNorm
    of q/k in both attentions, RoPE in fp32, the gates) = 22 x dim elements; compute-dtype (the normed
    inputs of q/k/v, cross-attention and FFN, q/k/v after RoPE, the attention outputs, the projections
    before the gates) = 14 x dim (12 without the i2v image branch) + 2 x ffn (the FFN's hidden before
    and after its GELU). Compute dtype: bf16 under autocast / FSDP's policy, else fp32."""
    c = 2 if half else 4
    return 4 * 22 * dim + c * ((14 if image else 12) * dim + 2 * ffn)


# Preemption: the --signal lead a job needs is the step in flight, the checkpoint write and the agreement /
# requeue around them. The write rate is an assumption (a shared parallel file system that each node writes
# to at >= 1 GB/s), not a measurement: ``trackstream plan --write-gbs`` states yours.
WRITE_GBS_PER_NODE = 1.0
PREEMPT_MARGIN_S = 30.0  # signal delivery, the ranks' agreement, scontrol requeue
GPUS_PER_NODE = 8


def checkpoint_bytes(nets: list[Trained]) -> float:
    """Bytes of one checkpoint over the whole job (trainer/checkpoint.py): each trained network's full fp32
    state dict, its AdamW moments (8 B per trained parameter) and its EMA (4 B)."""
    return sum(4 * n.params + 8 * n.trained + (4 * n.trained if n.ema else 0) for n in nets)


def preemption_lead(step_s: float, ckpt_bytes: float, gpus: int, *, write_gbs: float = WRITE_GBS_PER_NODE) -> int:
    """Seconds of warning a preempted job needs (rounded up to 30 s, at least 60): the step in flight ends,
    every node writes its share of the checkpoint, the ranks agree and requeue."""
    nodes = -(-gpus // GPUS_PER_NODE)
    need = step_s + ckpt_bytes / (write_gbs * 1e9 * nodes) + PREEMPT_MARGIN_S
    return max(60, 30 * math.ceil(need / 30))


@dataclass
class Trained:
    """One trained network's bytes per GPU (+ the bytes its optimizer keeps on the CPU)."""

    name: str
    params: int
    trained: int
    parameters: float
    gradients: float
    optimizer: float
    ema: float
    weight_copies: float  # bf16 casts cached by autocast through the forward
    cpu: float = 0.0
    notes: list[str] = field(default_factory=list)


def trained_bytes(
    name: str, f: NetFacts, *, strategy: str, zero: int, offload: bool, world: int, half: bool, ema: bool
) -> Trained:
    P, T, unit = f.params, f.trained, f.unit
    t = Trained(name, P, T, 0.0, 0.0, 0.0, 0.0, 0.0)
    if strategy == "fsdp":
        gather = unit * ((2 if half else 4) * 2 + 4)  # 2 gathered units (compute dtype) + one unit's grads
        t.parameters = 4 * P / world + gather
        t.gradients, t.optimizer, t.ema = 4 * T / world, 8 * T / world, (4 * T / world if ema else 0.0)
    elif strategy == "deepspeed":
        pb = 2 if half else 4
        master = (4 if half else 0) + 8
        t.parameters = pb * P / (world if zero == 3 else 1) + (unit * 2 * pb if zero == 3 and world > 1 else 0)
        t.gradients = pb * T / (world if zero >= 2 else 1)
        opt = master * T / (world if zero >= 1 else 1)
        t.optimizer, t.cpu = (0.0, opt) if offload else (opt, 0.0)
        t.ema = 4 * T if ema else 0.0
    else:  # single, ddp
        t.parameters = 4 * P
        t.gradients = 4 * T * (2 if strategy == "ddp" and world > 1 else 1)
        t.optimizer, t.ema = 8 * T, (4 * T if ema else 0.0)
        t.weight_copies = 2 * T if half else 0.0
        if strategy == "ddp" and world > 1:
            t.notes.append("gradients include DDP's gradient buckets (a second copy)")
    return t


def activation_phases(
    f: NetFacts,
    *,
    tokens: float,
    work_tokens: float,
    checkpointing: bool,
    half: bool,
    grads: float,
    accumulating: bool,
    copies: float,
) -> dict[str, float]:
    """Bytes beyond the model state at the three candidate peaks of a step on ``tokens`` tokens per GPU:
    the end of the forward (saved tensors + autocast's weight copies), the start of the backward (saved
    tensors + one block's recompute and backward; the copies are released with autocast unless the
    linears saved them, i.e. without checkpointing) and the end of the backward (all gradients + the
    last block's workspace). Gradients already exist in the first two when micro-batches accumulate.
    ``work_tokens``: the tokens of one differentiated pass (a causal chunk pass runs a chunk's tokens, and
    its block is recomputed on those alone), ``tokens`` all the tokens whose passes are kept for the backward."""
    cb = 2 if half else 4
    per_token = ACTIVATION_SCALE * block_bytes_per_token(f.dim, f.ffn, image=f.image, half=half)
    context = f.layers * 2 * f.text_tokens * f.dim * cb  # cross-attention K/V of every block, outside checkpoints
    head = 12 * f.dim * tokens  # fp32 LayerNorm, modulation and linear input of the head
    saved = (f.layers * 4 * f.dim * tokens if checkpointing else f.layers * per_token * tokens) + context + head
    work = per_token * work_tokens if checkpointing else 0.0
    held = grads if accumulating else 0.0
    return {
        "forward_end": copies + saved + held,
        "backward_start": saved + work + held + (0.0 if checkpointing else copies),
        "backward_end": grads + work,
    }


def kv_cache_bytes(f: NetFacts, causal, *, latents: int, tokens_per_frame: int, samples: int, half: bool) -> int:
    """Self-attention K and V of the rolling cache at its fullest (``models/causal.py``: sink + window chunks,
    un-roped, per layer), in the compute dtype; the cross-attention K/V are counted with the activations."""
    from trackstream.stream.chunks import whole_chunks

    frames = max(causal.cache_start(i) for i in range(max(1, whole_chunks(causal, latents))))
    return 2 * f.layers * samples * frames * tokens_per_frame * f.dim * (2 if half else 4)
