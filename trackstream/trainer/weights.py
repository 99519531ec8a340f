"""Weights in and out of training: initialise a (possibly sharded) MotionWan from a release or an
exported network, and export a trained one for inference (``models.motion_wan.load_network`` reads it)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from trackstream.models.formats.checkpoint import SUBKEY_SEP, split_subkey
from trackstream.models.motion_wan import (
    Conventions,
    ModelConfig,
    MotionWan,
    is_network_folder,
    read_init,
    save_network,
)

# a network.json written before a model field existed reads as that field's default
MODEL_DEFAULTS = {
    "track_splat": ModelConfig.track_splat,
    "track_convention": ModelConfig.track_convention,
    "track_bias": ModelConfig.track_bias,
}

__all__ = ["initialise", "load_checked", "load_student", "load_frozen", "full_state_dict", "export_network"]

_log = logging.getLogger(__name__)


def initialise(
    net: MotionWan, *, init_from: str | None, sharded: bool = False, is_main: bool = True, adapter: str | None = None
) -> None:
    """Materialised (``to_empty``) or fresh network -> random init, then the starting weights.

    ``init_from``: an exported network folder (``export_network``; DiT + track head + text
    projection) or an official/diffusers Wan checkpoint (DiT only, possibly with fewer input
    channels, grown with zeros), or ``PATH::entry`` for one network of a training ``.pt`` that
    holds several (Self-Forcing / CausVid / LongLive: ``generator_ema``, ``generator``;
    ``models.formats.checkpoint.split_subkey``). Under FSDP (``sharded``) rank 0 reads the file and DCP
    broadcasts each shard to its owner, so no other rank loads the full checkpoint. ``adapter``: a PEFT LoRA
    folder trained on ``init_from``, merged into its weights as they are read (``model.adapter``). A network
    with LoRA adapters of its own (``model.lora``) gets PEFT's initial adapters (B = 0) and the weights
    under its base layers.
    """
    net.init_weights()
    lora = getattr(net, "lora_config", None)  # adapters injected before sharding (trainer.parallel.prepare_network)
    if lora is not None:
        _reset_lora(net)
    if init_from is None:
        return
    path, subkey = split_subkey(init_from)
    if subkey is not None and (Path(path) / "network.json").is_file():
        raise ValueError(
            f"model.init_from={init_from!r}: {path} is an exported network folder, which holds one network; "
            f"drop {SUBKEY_SEP}{subkey}"
        )
    sd = read_init(path, net.required_in_dim, subkey=subkey) if (is_main or not sharded) else {}
    if sd and adapter:
        from trackstream.models.lora import merge_adapter

        merged = merge_adapter(sd, adapter, field="model.adapter")
        changed = sum(1 for k, v in merged.items() if k in sd and v is not sd[k] and not torch.equal(v, sd[k]))
        _log.info("model.adapter=%s merged into model.init_from=%s: %d weight tensors changed", adapter, path, changed)
        sd = merged
    if sd and lora is not None:  # the base weights go under the adapted layers' base_layer
        sd = _to_lora_keys(sd, net)
    if sharded:
        import torch.distributed as dist
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        # rank 0 checks the file against the network (DTensors keep their global shapes) and every rank hears
        # its verdict: one line naming the field on all ranks, not a shape error deep in the broadcast
        verdict = [_mismatch(net, sd, field="model.init_from", spec=init_from) if is_main else None]
        if dist.is_initialized():
            dist.broadcast_object_list(verdict, src=0)
        if verdict[0]:
            raise ValueError(verdict[0])
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(net, sd, options=opts)
        return
    load_checked(net, sd, field="model.init_from", spec=init_from)


def _reset_lora(net) -> None:
    """PEFT's initial adapters (A Kaiming-uniform, B zero) after ``init_weights`` re-drew every Linear."""
    from peft.tuners.lora import LoraLayer

    for m in net.modules():
        if isinstance(m, LoraLayer):
            m.reset_lora_parameters("default", True)


def _to_lora_keys(sd: dict, net) -> dict:
    """A plain network's keys -> a LoRA network's (``<m>.weight`` -> ``<m>.base_layer.weight`` where adapted)."""
    own = set(net.state_dict())
    out = {}
    for k, v in sd.items():
        stem, _, leaf = k.rpartition(".")
        based = f"{stem}.base_layer.{leaf}"
        out[based if k not in own and based in own else k] = v
    return out


def load_checked(net: MotionWan, sd: dict[str, torch.Tensor], *, field: str, spec: str) -> None:
    """``sd`` (every DiT key, optionally the heads) into ``net``, or a one-line error naming ``field``."""
    problem = _mismatch(net, sd, field=field, spec=spec)
    if problem:
        raise ValueError(problem)
    net.load_state_dict(sd, strict=False)


def _mismatch(net: MotionWan, sd: dict[str, torch.Tensor], *, field: str, spec: str) -> str | None:
    """The one-line error when ``sd`` is not the network's (missing DiT keys, unexpected keys, other shapes)."""
    own = net.state_dict()
    missing = sorted(
        k for k in own if k.startswith("dit.") and ".lora_" not in k and k not in sd
    )  # adapters: PEFT init
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or bad:
        return (
            f"{field}={spec!r} does not match the network: missing {missing[:6]}, "
            f"unexpected {unexpected[:6]}, shape mismatches {bad[:6]} (check model.flavor / layout, and "
            "model.overrides for a shrunk network)"
        )
    return None


def load_student(
    spec: str | None, teacher_dir: Path, *, model: ModelConfig | None = None, field: str = "stage.student"
) -> tuple[MotionWan, dict]:
    """A distillation network's starting weights (the student, or a critic) and its network.json "model".

    ``spec``: None (the teacher itself), an exported network folder, or a Wan checkpoint -- e.g. a
    community student, ``PATH::generator_ema`` for Self-Forcing / CausVid / LongLive training files, or a
    release folder such as Wan2.1-Fun-1.3B-Control. A checkpoint's DiT goes into a network with the
    teacher's track head and text projection (which such a file lacks; neither depends on the DiT's width)
    and the teacher's architecture, or ``model.flavor``'s when that differs from the teacher's (a 14B
    teacher distilled into a 1.3B student). Input channels the file lacks (tracks, first frame) are grown
    with zeros, so the network starts out computing exactly what the checkpoint computes on its own channels."""
    from trackstream.models.formats.files import read_torch_file
    from trackstream.models.motion_wan import EXPORT_FIX, build_motion_wan
    from trackstream.models.network import Network

    teacher = Network.open(teacher_dir, "stage.teacher")
    meta = teacher.meta
    own = _student_model(meta["model"], model)
    if not spec:  # the teacher itself; a flavor of another size needs its own starting weights
        if own != meta["model"]:
            _log.warning(
                "%s is not set: the student starts as the teacher, a %s network, and model.flavor=%s is unused "
                "(give %s=<release folder, Wan checkpoint or exported folder> to start a %s network)",
                field,
                meta["model"]["flavor"],
                own["flavor"],
                field,
                own["flavor"],
            )
        return teacher.load(), meta["model"]
    path, subkey = split_subkey(spec)
    if subkey is None and is_network_folder(path) or (Path(path) / "network.json").is_file():
        if subkey is not None:
            raise ValueError(
                f"{field}={spec!r}: {path} is an exported network folder (one network); drop {SUBKEY_SEP}{subkey}"
            )
        student = Network.open(path, field)
        _check_compatible(student.meta["model"], meta["model"], field=field, spec=spec)
        return student.load(), student.meta["model"]
    if own == meta["model"]:
        net = teacher.load()
    else:  # another size: the teacher's heads (no need to read its DiT), this flavor's DiT
        net = build_motion_wan(ModelConfig(**own), text_encoder_dim=int(meta["text_encoder_dim"]), device="cpu")
        net.load_state_dict(read_torch_file(Path(teacher_dir) / "heads.pt", fix=EXPORT_FIX), strict=False)
    sd = read_init(path, net.required_in_dim, subkey=subkey)
    load_checked(net, sd, field=field, spec=spec)
    return net, own


def _student_model(teacher: dict, model: ModelConfig | None) -> dict:
    """The teacher's network.json "model" with ``model``'s DiT (flavor and overrides) when its flavor differs.
    Only the flavor decides: a stage's model.overrides that differ from the teacher's were always ignored."""
    if model is None or model.flavor == teacher["flavor"]:
        return teacher
    return {**teacher, "flavor": model.flavor, "overrides": dict(model.overrides), "init_from": None}


def _check_compatible(student: dict, teacher: dict, *, field: str, spec: str) -> None:
    """A network of another size is fine; one that reads the conditions differently is not."""
    from trackstream.models.motion_wan import latent_channels

    bad = [
        k
        for k in ("layout", "track_embed_dim", "track_splat", "track_convention", "text_encoder")
        if student.get(k, MODEL_DEFAULTS.get(k)) != teacher.get(k, MODEL_DEFAULTS.get(k))
    ]
    if latent_channels(student["flavor"], student.get("overrides")) != latent_channels(
        teacher["flavor"], teacher.get("overrides")
    ):
        bad.append("latent channels")
    if bad:
        raise ValueError(
            f"{field}={spec!r} differs from the teacher in {', '.join(bad)}: the networks of one distillation "
            "must read the same conditions (export the student from a run of this teacher's layout)"
        )


def load_frozen(directory: Path, runtime, cfg, *, name: str) -> MotionWan:
    """An exported network, frozen and on the device: sharded under ``parallel=fsdp`` (the DMD teacher, the RL
    reference), with its DiT on token slices under sequence parallelism. Sharded over several processes, only
    rank 0 reads the files: the others build on ``meta`` and receive their shards from it, so a node of 8 ranks
    holds one host copy of a 14B teacher (65 GB in fp32), not 8."""
    from trackstream.models.motion_wan import build_motion_wan
    from trackstream.models.network import Network
    from trackstream.trainer.parallel import attach_sequence_parallel, prepare_frozen

    network = Network.open(directory, name)
    if cfg.strategy != "fsdp" or runtime.world_size == 1:
        net = network.load()
        attach_sequence_parallel(net, runtime, name)
        return prepare_frozen(runtime, net, cfg=cfg, shard=True)
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    net = build_motion_wan(network.model, text_encoder_dim=network.text_dim, device="meta")
    net.conventions = network.conventions
    attach_sequence_parallel(net, runtime, name)

    def fill(module: MotionWan) -> None:
        module.init_weights()  # buffers the state dict does not hold
        sd = network.load().state_dict() if runtime.is_main else {}
        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(module, sd, options=opts)

    return prepare_frozen(runtime, net, cfg=cfg, init_fn=fill, shard=True)


def full_state_dict(trained, *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU state dict of a ``TrainedNetwork``, EMA weights substituted when kept.

    Collective under FSDP (every rank must call): the full state dict (CPU-offloaded) lands on rank 0
    only, the other ranks get the keys they hold locally (none), so only rank 0 may write it.
    """
    from trackstream.trainer.trained_network import FSDPNetwork

    if isinstance(trained, FSDPNetwork):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        sd = get_model_state_dict(trained.module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        sd = {k: v.detach().cpu() for k, v in trained.raw.state_dict().items()}
    if use_ema and trained.ema is not None:
        for name, shadow in zip(trained.ema.names, trained.ema.shadow):
            full = shadow.full_tensor() if hasattr(shadow, "full_tensor") else shadow  # collective: every rank
            if name in sd:
                sd[name] = full.detach().cpu().to(sd[name].dtype)
    return sd


def export_network(
    trained,
    directory: Path,
    *,
    model_cfg: dict,
    runtime,
    text_encoder_dim: int,
    use_ema: bool = True,
    conventions: Conventions | dict | None = None,
) -> Path:
    """The trained network (EMA weights when kept) as an exported folder (``models.motion_wan.save_network``:
    official-format DiT, heads, network.json with its ``conventions``). Collective under FSDP."""
    directory = Path(directory)
    sd = full_state_dict(trained, use_ema=use_ema)
    from trackstream.trainer.parallel import unwrap

    lora = getattr(unwrap(trained.raw), "lora_config", None)
    if lora is not None and runtime.is_main:  # the adapters in PEFT's folder, and the merged network
        from dataclasses import asdict

        from trackstream.models.lora import LoraConfig, merge_state_dict, save_adapter

        save_adapter(sd, directory / "adapter", lora)
        sd = merge_state_dict(sd, lora)
        model_cfg = {**model_cfg, "lora": asdict(LoraConfig()), "adapter": None}
    if runtime.is_main:
        save_network(
            sd,
            directory,
            model_cfg=model_cfg,
            text_encoder_dim=text_encoder_dim,
            ema=use_ema and trained.ema is not None,
            conventions=conventions,
        )
    runtime.barrier()
    return directory
