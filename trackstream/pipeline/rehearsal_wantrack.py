"""A shrunk WanTrack bundle for rehearsals: FastVideo's file names, keys and config keys, random weights.

    trackstream rehearsal-wantrack --role student --out D/Track-v0
    trackstream rehearsal-wantrack --role teacher --out D/TrackWan-1.3B-I2V-synth-stage2

lays out what a user downloads from H1yori233/Track-v0 (the causal student) or
noctuashap/TrackWan-1.3B-I2V-synth-stage2 (its bidirectional teacher): ``model_index.json``,
``transformer/config.json`` (the Fun-InP diffusers config with ``in_channels`` 52 and ``track_config``) and
the DiT under diffusers ``WanTransformer3DModel`` names with the 52-channel ``patch_embedding``, the
``track_encoder.temporal_conv`` / ``track_encoder.proj`` tensors and the unused ``attn2.norm_added_q``. The
student is written as their exporter does (``transformer/model.safetensors``, ``use_bias`` true, a causal
class name); the teacher as their converter does (``transformer/diffusion_pytorch_model.safetensors``, a
plain ``WanTransformer3DModel`` class name, ``use_bias`` left out of the config as the teacher lineage did);
``--file-name`` and ``--no-bias`` change either. The DiT is shrunk to ``--dim`` / ``--num-layers`` /
``--num-heads`` / ``--ffn-dim``. Beside it, shrunk, in the diffusers layout of the Fun-InP base: ``vae/`` (an
``AutoencoderKLWan`` at base width 2), ``text_encoder/`` (a ``UMT5EncoderModel`` as wide as the DiT's text_dim)
with ``tokenizer/``, ``image_encoder/`` (a ``CLIPVisionModelWithProjection`` at Wan's 1280 width, 2 blocks, 28 px)
with ``image_processor/``, and ``scheduler/``; the student also gets the ``training_config.yaml`` keys of its
causal recipe, with Track-v0's values.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from trackstream.models.flavors import build_wan
from trackstream.models.formats.wan_formats import diffusers_config_json, official_to_diffusers
from trackstream.pipeline.rehearsal_release import RELEASE_CLIP, RELEASE_VAE, SHRINK, TINY_UMT5, tiny_t5_tokenizer

__all__ = ["ROLES", "FILE_NAMES", "write_wantrack_bundle", "main"]

ROLES = {
    # role: (transformer class, weights file, biases by default, use_bias written in the config)
    "student": ("CausalTrackWanTransformer3DModel", "model.safetensors", True, True),
    "teacher": ("WanTransformer3DModel", "diffusion_pytorch_model.safetensors", True, False),
}
FILE_NAMES = ("model.safetensors", "diffusion_pytorch_model.safetensors")
IN_CHANNELS = 52  # noisy 16 | I2V mask 4 | first-frame latent 16 | track map 16


def _track_config(id_dim: int, channels: int, bias: bool, write_bias: bool) -> dict:
    cfg = {
        "id_dim": id_dim,
        "track_channels": channels,
        "vae_spatial_compression": 8,
        "vae_temporal_compression": 4,
        "max_track_id": 100000,
        "zero_init_head": False,
    }
    return {**cfg, "use_bias": bias} if write_bias else cfg


# the keys of Track-v0's training_config.yaml TrackStream reads, with its values (FastVideo's
# examples/train/configs/ablation/wantrack_causal_synth_stage2/sf.yaml, the Self-Forcing stage it was exported from)
TRACK_V0_TRAINING = """\
models:
  student:
    num_frames_per_block: 3
method:
  dmd_denoising_steps: [1000, 750, 500, 250]
  warp_denoising_step: true
training:
  data:
    num_latent_t: 31
    num_height: {height}
    num_width: {width}
    num_frames: 121
pipeline:
  flow_shift: 6
  dit_config:
    local_attn_size: 6
    sink_size: 1
    rope_cache_policy: relativistic
"""
TEACHER_TRAINING = """\
training:
  data:
    num_height: {height}
    num_width: {width}
    num_frames: 121
"""
DEFAULT_SIZE = (480, 832)
CLIP_PROCESSOR = {  # the Fun-InP base's image_processor/preprocessor_config.json (CLIP ViT-H/14 at 224 px)
    "crop_size": {"height": 224, "width": 224},
    "do_center_crop": True,
    "do_convert_rgb": True,
    "do_normalize": True,
    "do_rescale": True,
    "do_resize": True,
    "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor",
    "image_std": [0.26862954, 0.26130258, 0.27577711],
    "resample": 3,
    "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 224},
}


def _model_index(cls: str) -> dict:
    return {
        "_class_name": "WanImageToVideoPipeline",
        "_diffusers_version": "0.33.1",
        "transformer": ["diffusers", cls],
        "vae": ["diffusers", "AutoencoderKLWan"],
        "text_encoder": ["transformers", "UMT5EncoderModel"],
        "tokenizer": ["transformers", "T5TokenizerFast"],
        "image_encoder": ["transformers", "CLIPVisionModelWithProjection"],
        "image_processor": ["transformers", "CLIPImageProcessor"],
        "scheduler": ["diffusers", "UniPCMultistepScheduler"],
    }


def _write_components(root: Path, *, text_dim: int, seed: int) -> None:
    """vae/, text_encoder/ + tokenizer/, image_encoder/ + image_processor/ and scheduler/, shrunk, as the
    libraries that own them save them."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection, UMT5Config, UMT5EncoderModel

    from trackstream.models.text_encoders import UMT5_XXL_CONFIG

    torch.manual_seed(seed + 1)
    AutoencoderKLWan(**RELEASE_VAE.diffusers_kwargs()).save_pretrained(root / "vae")
    t5 = UMT5EncoderModel(UMT5Config(**{**UMT5_XXL_CONFIG, **TINY_UMT5, "d_model": text_dim}))
    t5.save_pretrained(root / "text_encoder")
    tiny_t5_tokenizer().save_pretrained(root / "tokenizer")
    CLIPVisionModelWithProjection(CLIPVisionConfig(**RELEASE_CLIP)).save_pretrained(root / "image_encoder")
    (root / "image_processor").mkdir()
    side = RELEASE_CLIP["image_size"]  # the base's processor at the shrunk tower's pixel size
    processor = {**CLIP_PROCESSOR, "crop_size": {"height": side, "width": side}, "size": {"shortest_edge": side}}
    (root / "image_processor" / "preprocessor_config.json").write_text(json.dumps(processor, indent=2))
    UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0).save_config(
        root / "scheduler"
    )


def write_wantrack_bundle(
    root: Path,
    *,
    role: str = "student",
    file_name: str | None = None,
    bias: bool | None = None,
    id_dim: int = 64,
    seed: int = 0,
    size: tuple[int, int] | None = None,
    **dit_overrides,
) -> Path:
    """A WanTrack bundle at ``root`` (must not exist) with random weights; ``dit_overrides`` shrink the DiT
    (default: the rehearsals' ``SHRINK``). ``size`` (height, width) shrinks the pixels it records having been
    trained at (default 480 x 832): in ``training_config.yaml``, the file their exports record it in, written
    for a teacher too when the size is not the default."""
    from safetensors.torch import save_file

    if role not in ROLES:
        raise ValueError(f"role={role!r}; choose one of {sorted(ROLES)}")
    cls, default_name, default_bias, write_bias = ROLES[role]
    file_name = file_name or default_name
    if file_name not in FILE_NAMES:
        raise ValueError(f"file_name={file_name!r}; choose one of {FILE_NAMES}")
    bias = default_bias if bias is None else bias
    root = Path(root)
    if root.exists():
        raise ValueError(f"{root} exists: give a new folder")
    torch.manual_seed(seed)
    # the DiT reads umT5's output as is (no projection): the shrunk umT5 is as wide as its text_dim
    dims = {**SHRINK, "text_dim": TINY_UMT5["d_model"], **dit_overrides}
    dit = build_wan("wan2.1-fun-1.3b-inp", device="cpu", **{**dims, "in_dim": IN_CHANNELS})
    with torch.no_grad():  # a released DiT has no zero layers: random scales everywhere, as after training
        for p in dit.parameters():
            if p.ndim > 1:
                p.normal_(0.0, 0.05)
            else:
                p.uniform_(0.5, 1.5)
    sd = official_to_diffusers({k: v.contiguous() for k, v in dit.state_dict().items()})
    for i in range(dit.num_layers):  # their converter writes this unused norm as zeros
        sd[f"blocks.{i}.attn2.norm_added_q.weight"] = torch.zeros(dit.dim)
    ch = 16
    sd["track_encoder.temporal_conv.weight"] = torch.randn(ch, id_dim, 4, 1, 1) * 0.05
    sd["track_encoder.proj.weight"] = torch.randn(ch, ch, 1, 1, 1) * 0.2
    if bias:
        sd["track_encoder.temporal_conv.bias"] = torch.randn(ch) * 0.05
        sd["track_encoder.proj.bias"] = torch.randn(ch) * 0.05
    config = {
        **diffusers_config_json(dit),
        "_class_name": cls,
        "_diffusers_version": "0.33.1",
        "in_channels": IN_CHANNELS,
        "track_config": _track_config(id_dim, ch, bias, write_bias),
    }
    (root / "transformer").mkdir(parents=True)
    save_file(sd, str(root / "transformer" / file_name))
    (root / "transformer" / "config.json").write_text(json.dumps(config, indent=2))
    (root / "model_index.json").write_text(json.dumps(_model_index(cls), indent=2))
    _write_components(root, text_dim=dims["text_dim"], seed=seed)
    height, width = size or DEFAULT_SIZE
    if height % 16 or width % 16 or min(height, width) < 16:
        raise ValueError(f"size {height}x{width}: the VAE's 8x and the DiT's 2x patch need multiples of 16")
    if role == "student":
        (root / "training_config.yaml").write_text(TRACK_V0_TRAINING.format(height=height, width=width))
    elif (height, width) != DEFAULT_SIZE:
        (root / "training_config.yaml").write_text(TEACHER_TRAINING.format(height=height, width=width))
    return root


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="trackstream rehearsal-wantrack", description=__doc__.split("\n\n")[0])
    ap.add_argument("--role", required=True, choices=sorted(ROLES), help="the causal student or its teacher")
    ap.add_argument("--out", required=True, type=Path, help="the bundle folder to write (must not exist)")
    ap.add_argument("--file-name", choices=FILE_NAMES, help="the DiT's file (default: the role's)")
    ap.add_argument("--no-bias", action="store_true", help="track convs without biases")
    for key, value in SHRINK.items():
        ap.add_argument(
            f"--{key.replace('_', '-')}", type=int, default=value, help=f"the DiT's {key} (default {value})"
        )
    ap.add_argument("--height", type=int, default=DEFAULT_SIZE[0], help="pixel height it records (default 480)")
    ap.add_argument("--width", type=int, default=DEFAULT_SIZE[1], help="pixel width it records (default 832)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    dims = {k: getattr(args, k) for k in SHRINK}
    try:
        write_wantrack_bundle(
            args.out,
            role=args.role,
            file_name=args.file_name,
            bias=False if args.no_bias else None,
            seed=args.seed,
            size=(args.height, args.width),
            **dims,
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.out} (WanTrack {args.role}, shrunk, in FastVideo's layout)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
