"""The memory plan of ``stage=tiny_decoder`` (``train/tiny_decoder/build.py``), for ``bench/plan_stages.make_plan``.

Trained: the TAEHV codec's decoder (its encoder is held frozen in the same module) and the PatchGAN discriminator,
each with fp32 weights, gradients and AdamW state (``plan_model.trained_bytes``), no EMA. Held frozen: the full
codec (``codec``) and, with ``stage.lpips.weight`` > 0, the LPIPS network. Activations are counted, not fitted:
the networks are run on ``meta`` tensors of one micro-batch of crops (``data.batch_size`` clips of
``stage.num_frames`` x ``stage.crop``^2 pixels) and every leaf module's output is summed, in the compute dtype (the
tensors autograd keeps for the decoder's backward: the decoder, LPIPS on the decoded frames and the
discriminator's score of them). The full codec's no-grad encode of the crops is transient and not counted; no step
time is given (no measured MFU for these convolutional networks).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from trackstream.bench.plan_model import GIB, OVERHEAD_GIB, NetFacts, frozen_params, trained_bytes
from trackstream.models.tracks import latent_frames

__all__ = ["tiny_decoder_plan", "leaf_output_elements"]


def leaf_output_elements(module: nn.Module, *inputs: torch.Tensor, call=None) -> int:
    """Elements of every leaf module's output while ``call(*inputs)`` (default ``module``) runs on meta tensors."""
    total = 0

    def count(_mod, _inp, out) -> None:
        nonlocal total
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if torch.is_tensor(t):
                total += t.numel()

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            (call or module)(*inputs)
    finally:
        for h in handles:
            h.remove()
    return total


def _networks(cfg):
    """(TAEHV codec, discriminator or None, LPIPS or None), built on meta."""
    from trackstream.eval.lpips import LPIPS
    from trackstream.models.codecs import build_codec
    from trackstream.models.patch_discriminator import PatchDiscriminator

    st = cfg.stage
    with torch.device("meta"):
        taehv = build_codec(st.decoder, **dict(st.options))
        disc = PatchDiscriminator(width=st.gan.width, layers=st.gan.layers, norm=st.gan.norm) if st.gan.weight else None
        lpips = LPIPS(st.lpips.net) if st.lpips.weight else None
    return taehv, disc, lpips


def _facts(params: int, trained: int) -> NetFacts:
    # the byte model's DiT fields (width, depth, heads, FSDP unit) do not apply to these conv networks
    return NetFacts(params, trained, params, 0, 0, 0, 0, (1, 1, 1), 0, False)


def tiny_decoder_plan(plan, cfg, *, gpus: int, half: bool) -> None:
    """Fill ``plan`` (a ``plan_stages.Plan``): rows, total, notes."""
    par, st = cfg.parallel, cfg.stage
    taehv, disc, lpips = _networks(cfg)
    B, T, c, sf = cfg.data.batch_size, st.num_frames, st.crop, taehv.spatial_factor
    F = latent_frames(T)
    z = torch.empty(B, taehv.latent_channels, F, c // sf, c // sf, device="meta")
    frames = torch.empty(B * T, 3, c, c, device="meta")
    cb = 2 if half else 4
    kept = leaf_output_elements(taehv.decoder, z, call=taehv.decode)
    if lpips is not None:
        kept += leaf_output_elements(lpips, frames, call=lpips.tap_features)
    if disc is not None:
        kept += leaf_output_elements(disc, frames)
    kw = dict(strategy=par.strategy, zero=0, offload=False, world=gpus, half=half)  # ddp / single (check_layout)
    total = sum(p.numel() for p in taehv.parameters())
    nets = [
        trained_bytes("decoder", _facts(total, sum(p.numel() for p in taehv.decoder.parameters())), ema=False, **kw)
    ]
    if disc is not None:
        n = sum(p.numel() for p in disc.parameters())
        nets.append(trained_bytes("discriminator", _facts(n, n), ema=False, **kw))
    rows = plan.rows
    for what in ("parameters", "gradients", "optimizer"):
        for net in nets:
            label = {"optimizer": "optimizer (AdamW)"}.get(what, what)
            count = net.params if what == "parameters" else net.trained
            rows.append({"component": f"{label}: {net.name}", "count": count, "bytes": getattr(net, what)})
    codec_params = frozen_params("codec", cfg.codec.name, dict(cfg.codec.options))
    rows.append({"component": f"frozen codec ({cfg.codec.name})", "count": codec_params, "bytes": 4 * codec_params})
    if lpips is not None:
        n = sum(p.numel() for p in lpips.parameters())
        rows.append({"component": f"frozen LPIPS ({st.lpips.net})", "count": n, "bytes": 4 * n})
    # the gradient rows above already hold the gradients an accumulating step keeps beside the activations
    rows.append({"component": "activations at the peak (the decoder's backward)", "bytes": kept * cb})
    rows.append({"component": "CUDA context + allocator overhead (allowance)", "bytes": OVERHEAD_GIB * GIB})
    plan.total = sum(r["bytes"] for r in rows)
    plan.cpu = sum(n.cpu for n in nets)
    plan.phases = {"backward_start": kept * cb}
    plan.notes.append(
        f"crops of {T}x{c}x{c} pixels (stage.num_frames x stage.crop^2), {B} per micro-batch; the full codec's "
        "no-grad encode of them is transient and not counted; no step time (no measured MFU for this stage)"
    )
    for n in nets:
        plan.notes += n.notes
