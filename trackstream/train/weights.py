"""Weights in and out of training: initialise a (possibly sharded) MotionWan from a release or an
exported network, and export a trained one for inference (``models.motion_wan.load_network`` reads it)."""

from __future__ import annotations

from pathlib import Path

import torch

from trackstream.models.formats.checkpoint import SUBKEY_SEP, split_subkey
from trackstream.models.motion_wan import Conventions, MotionWan, read_init, save_network

__all__ = ["initialise", "load_checked", "load_student", "full_state_dict", "export_network"]


def initialise(net: MotionWan, *, init_from: str | None, sharded: bool = False, is_main: bool = True) -> None:
    """Materialised (``to_empty``) or fresh network -> random init, then the starting weights.

    ``init_from``: an exported network folder (``export_network``; DiT + track head + text
    projection) or an official/diffusers Wan checkpoint (DiT only, possibly with fewer input
    channels, grown with zeros), or ``PATH::entry`` for one network of a training ``.pt`` that
    holds several (Self-Forcing / CausVid / LongLive: ``generator_ema``, ``generator``;
    ``models.formats.checkpoint.split_subkey``). Under FSDP (``sharded``) rank 0 reads the file and DCP
    broadcasts each shard to its owner, so no other rank loads the full checkpoint.
    """
    net.init_weights()
    if init_from is None:
        return
    path, subkey = split_subkey(init_from)
    if subkey is not None and (Path(path) / "network.json").is_file():
        raise ValueError(
            f"model.init_from={init_from!r}: {path} is an exported network folder, which holds one network; "
            f"drop {SUBKEY_SEP}{subkey}"
        )
    sd = read_init(path, net.required_in_dim, subkey=subkey) if (is_main or not sharded) else {}
    if sharded:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        opts = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True, strict=False)
        set_model_state_dict(net, sd, options=opts)
        return
    load_checked(net, sd, field="model.init_from", spec=init_from)


def load_checked(net: MotionWan, sd: dict[str, torch.Tensor], *, field: str, spec: str) -> None:
    """``sd`` (every DiT key, optionally the heads) into ``net``, or a one-line error naming ``field``."""
    own = net.state_dict()
    missing = sorted(k for k in own if k.startswith("dit.") and k not in sd)
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(sd) & set(own) if sd[k].shape != own[k].shape)
    if missing or unexpected or bad:
        raise ValueError(
            f"{field}={spec!r} does not match the network: missing {missing[:6]}, "
            f"unexpected {unexpected[:6]}, shape mismatches {bad[:6]} (check model.flavor / layout)"
        )
    net.load_state_dict(sd, strict=False)


def load_student(spec: str | None, teacher_dir: Path, *, field: str = "stage.student") -> tuple[MotionWan, Path]:
    """A distillation student's starting network and the export folder its architecture comes from.

    ``spec``: None (the teacher itself), an exported network folder, or a Wan checkpoint -- e.g. a
    community student, ``PATH::generator_ema`` for Self-Forcing / CausVid / LongLive training files. A
    checkpoint's DiT goes into the teacher's network: the track head and text projection (which such a
    file lacks) stay the teacher's, and input channels the file lacks (tracks, first frame) are grown with
    zeros, so the student starts out computing exactly what the checkpoint computes on its own channels."""
    from trackstream.models.motion_wan import load_network

    if not spec:
        return load_network(teacher_dir), Path(teacher_dir)
    path, subkey = split_subkey(spec)
    if (Path(path) / "network.json").is_file():
        if subkey is not None:
            raise ValueError(
                f"{field}={spec!r}: {path} is an exported network folder (one network); drop {SUBKEY_SEP}{subkey}"
            )
        return load_network(path), Path(path)
    net = load_network(teacher_dir)
    sd = read_init(path, net.required_in_dim, subkey=subkey)
    load_checked(net, sd, field=field, spec=spec)
    return net, Path(teacher_dir)


def full_state_dict(trained, *, use_ema: bool = True) -> dict[str, torch.Tensor]:
    """Full (unsharded) CPU state dict of a ``TrainedNetwork``, EMA weights substituted when kept.

    Collective under FSDP (every rank must call): the full state dict (CPU-offloaded) lands on rank 0
    only, the other ranks get the keys they hold locally (none), so only rank 0 may write it.
    """
    from trackstream.train.trained_network import FSDPNetwork

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
