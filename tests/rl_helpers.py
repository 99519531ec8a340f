"""Parts the RL tests share (not a test module): a tiny student export + codec + ODE pair folder laid out
like a run's, and tiny CLIP ViT / aesthetic-head weight files written in the official formats."""

from pathlib import Path

import torch
from distill_helpers import tiny_teacher_run

# a tiny OpenAI-layout ViT: width 64 (one 64-dim head, as OpenAI sets heads = width / 64), 2 blocks, patch 14 at
# 224 px, projection to 768 (the aesthetic head's input)
TINY_CLIP = dict(width=64, layers=2, patch=14, image_size=224, proj=768)


def rl_source(root: Path) -> dict[str, Path]:
    """Laid out as make run's runs are: ``root``/teacher/{export/teacher, codec/codec.pt}, ``root``/dmd/export/student
    (an export of the teacher that streams c3s1w1k3 at shift 3; the run's config.yaml names its teacher, whose
    codec the RL stage then finds), ``root``/ode_init/ode_pairs (``distill_helpers.tiny_teacher_run``'s 4 pairs)."""
    from trackstream.models.motion_wan import Conventions
    from trackstream.models.streaming import CausalConfig, StreamConfig

    streams = StreamConfig(causal=CausalConfig(3, 1, 1, first_chunk_frames=1), steps=3, shift=3.0)
    conventions = Conventions(clean_first_frame=True, streaming=streams)
    student = "dmd/export/student"
    teacher = tiny_teacher_run(root, student=student, pairs="ode_init/ode_pairs", conventions=conventions)
    (root / "dmd/config.yaml").write_text(f"stage:\n  teacher: {teacher}\n")
    pairs = root / "ode_init" / "ode_pairs"
    return {"root": root, "student": root / student, "codec": root / "teacher/codec/codec.pt", "pairs": pairs}


def openai_clip_state_dict(hf_vision) -> dict[str, torch.Tensor]:
    """A ``CLIPVisionModelWithProjection``'s weights under OpenAI's CLIP key names (clip/model.py: conv1,
    class_embedding, positional_embedding, ln_pre, transformer.resblocks.N.{attn.in_proj_weight/bias,
    attn.out_proj, ln_1, mlp.c_fc, mlp.c_proj, ln_2}, ln_post, proj [width, dim]) plus two text-tower keys."""
    sd = {k.removeprefix("vision_model."): v for k, v in hf_vision.state_dict().items() if "position_ids" not in k}
    out = {
        "visual.conv1.weight": sd["embeddings.patch_embedding.weight"],
        "visual.class_embedding": sd["embeddings.class_embedding"],
        "visual.positional_embedding": sd["embeddings.position_embedding.weight"],
        "visual.proj": sd["visual_projection.weight"].t().contiguous(),
        "text_projection": torch.zeros(8, 4),  # the text tower: ignored by the loader
        "token_embedding.weight": torch.zeros(10, 8),
    }
    for ours, theirs in (("pre_layrnorm", "ln_pre"), ("post_layernorm", "ln_post")):
        for kind in ("weight", "bias"):
            out[f"visual.{theirs}.{kind}"] = sd[f"{ours}.{kind}"]
    i = 0
    while f"encoder.layers.{i}.layer_norm1.weight" in sd:
        src, dst = f"encoder.layers.{i}.", f"visual.transformer.resblocks.{i}."
        for kind in ("weight", "bias"):
            qkv = [sd[f"{src}self_attn.{p}_proj.{kind}"] for p in "qkv"]
            out[f"{dst}attn.in_proj_{kind}"] = torch.cat(qkv)
            for ours, theirs in (
                ("self_attn.out_proj", "attn.out_proj"),
                ("layer_norm1", "ln_1"),
                ("layer_norm2", "ln_2"),
                ("mlp.fc1", "mlp.c_fc"),
                ("mlp.fc2", "mlp.c_proj"),
            ):
                out[f"{dst}{theirs}.{kind}"] = sd[f"{src}{ours}.{kind}"]
        i += 1
    return out


def tiny_hf_clip(seed: int = 0):
    """A random tiny ``CLIPVisionModelWithProjection`` (QuickGELU, eps 1e-5, as OpenAI's)."""
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    c = TINY_CLIP
    config = CLIPVisionConfig(
        hidden_size=c["width"],
        intermediate_size=4 * c["width"],
        num_hidden_layers=c["layers"],
        num_attention_heads=c["width"] // 64,
        image_size=c["image_size"],
        patch_size=c["patch"],
        projection_dim=c["proj"],
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )
    return CLIPVisionModelWithProjection(config).eval()


def write_aesthetic_weights(folder: Path, seed: int = 0) -> tuple[Path, Path]:
    """(an OpenAI-format tiny CLIP state dict ``clip.pt``, a head ``head.pth`` with the released key names)."""
    from trackstream.models.aesthetic import AestheticHead

    folder.mkdir(parents=True, exist_ok=True)
    torch.save(openai_clip_state_dict(tiny_hf_clip(seed)), folder / "clip.pt")
    torch.manual_seed(seed + 1)
    torch.save(AestheticHead(TINY_CLIP["proj"]).state_dict(), folder / "head.pth")
    return folder / "clip.pt", folder / "head.pth"
