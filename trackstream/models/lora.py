"""LoRA on the Wan DiT through PEFT: inject, merge, save and load adapters in PEFT's folder format.

    model.lora.rank=64                      # any training stage: the trained networks get adapters
    model.lora.targets=[self_attn.q,self_attn.v]   # module-name suffixes (default: every attention and FFN Linear)

``add_lora`` injects PEFT LoRA layers into the named ``nn.Linear`` modules of a network in place
(``peft.inject_adapter_in_model``: the network keeps its own class and call signature, so the one Wan
class, FSDP2 and the streaming path see the same module) and freezes everything else. LongLive trains
its long tuning as rank-256 LoRA on the 1.3B and LongLive 2.0 its DMD stage; here any stage may.

``merge_state_dict`` turns a state dict of such a network into the plain network's (W + (alpha / r) B A,
the base bias): what exports, inference and diffusers see; it works on full (gathered) state dicts, so
FSDP needs no unsharded module. ``save_adapter`` writes PEFT's folder (``adapter_config.json`` +
``adapter_model.safetensors``, keys ``base_model.model.<module>.lora_A.weight``) that
``peft.PeftModel.from_pretrained(network, folder)`` and ``load_adapter`` read back.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch
from torch import nn

__all__ = [
    "LoraConfig",
    "add_lora",
    "merge_state_dict",
    "merge_adapter",
    "save_adapter",
    "load_adapter",
    "lora_parameters",
]

DEFAULT_TARGETS = (
    "self_attn.q",
    "self_attn.k",
    "self_attn.v",
    "self_attn.o",
    "cross_attn.q",
    "cross_attn.k",
    "cross_attn.v",
    "cross_attn.o",
    "ffn.0",
    "ffn.2",
)
_ADAPTER = "default"  # PEFT's adapter name inside the module's keys
_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])\.default\.weight$")


@dataclass
class LoraConfig:
    """``rank`` 0: no adapters (the whole network trains). ``alpha`` None: = rank (scale 1)."""

    rank: int = 0
    alpha: Optional[float] = None
    dropout: float = 0.0
    targets: list = field(default_factory=lambda: list(DEFAULT_TARGETS))  # suffixes of nn.Linear module names
    # modules trained in full beside the adapters (PEFT's modules_to_save): the track head, which a Wan base lacks
    full: list = field(default_factory=lambda: ["track_encoder"])

    def __post_init__(self) -> None:
        if isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 0:
            raise ValueError(f"model.lora.rank={self.rank!r} must be an int >= 0 (0: no LoRA)")
        if self.alpha is not None and not self.alpha > 0:
            raise ValueError(f"model.lora.alpha={self.alpha!r} must be > 0 (or null: the rank)")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"model.lora.dropout={self.dropout!r} must be in [0, 1)")
        self.targets, self.full = list(self.targets), list(self.full)
        if self.rank and not self.targets:
            raise ValueError("model.lora.targets is empty: name the Linear layers to adapt (e.g. [self_attn.q])")

    @property
    def enabled(self) -> bool:
        return self.rank > 0

    @property
    def scale(self) -> float:
        return (self.alpha if self.alpha is not None else self.rank) / self.rank


def _peft_config(cfg: LoraConfig, names: list[str], full: list[str] | None = None):
    from peft import LoraConfig as PeftLoraConfig

    return PeftLoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha if cfg.alpha is not None else cfg.rank,
        lora_dropout=cfg.dropout,
        target_modules=names,
        modules_to_save=list(full) if full else None,
        bias="none",
    )


def _targets(module: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the nn.Linear modules whose name ends with a target (all of them, checked)."""
    names = [n for n, m in module.named_modules() if isinstance(m, nn.Linear)]
    hits = [n for n in names if any(n == t or n.endswith("." + t) for t in cfg.targets)]
    unused = [t for t in cfg.targets if not any(n == t or n.endswith("." + t) for n in names)]
    if unused:
        raise ValueError(
            f"model.lora.targets {unused} name no Linear layer of the network (e.g. {names[:3]}); "
            f"the defaults are {list(DEFAULT_TARGETS)}"
        )
    return hits


def add_lora(module: nn.Module, cfg: LoraConfig) -> int:
    """Inject adapters in place and freeze everything but them and ``cfg.full``; returns the number of
    adapter parameters (r x (in + out) per adapted Linear). B starts at zero: the network computes what
    it did."""
    from peft import inject_adapter_in_model

    assert cfg.enabled
    names = _targets(module, cfg)
    children = {n for n, _ in module.named_modules()}
    unknown = [f for f in cfg.full if f not in children]
    if unknown:
        raise ValueError(f"model.lora.full {unknown} name no module of the network (e.g. {sorted(children)[1:4]})")
    inject_adapter_in_model(_peft_config(cfg, names), module, adapter_name=_ADAPTER)
    for name, p in module.named_parameters():
        p.requires_grad_(".lora_" in name or any(name.startswith(f + ".") for f in cfg.full))
    module.lora_config = cfg  # read by exports (merge) and checkpoints
    return sum(p.numel() for p in lora_parameters(module))


def lora_parameters(module: nn.Module) -> list[nn.Parameter]:
    return [p for n, p in module.named_parameters() if ".lora_" in n]


def merge_state_dict(sd: dict[str, torch.Tensor], cfg: LoraConfig) -> dict[str, torch.Tensor]:
    """A LoRA network's state dict -> the plain network's: ``<m>.base_layer.weight`` + scale * B @ A becomes
    ``<m>.weight`` (in the base's dtype, summed in float32), ``<m>.base_layer.bias`` becomes ``<m>.bias``."""
    out, pairs = {}, {}
    for k, v in sd.items():
        m = _KEY.match(k)
        if m:
            pairs.setdefault(m["module"], {})[m["ab"]] = v
        elif ".base_layer." in k:
            out[k.replace(".base_layer.", ".")] = v
        else:
            out[k] = v
    for name, ab in pairs.items():
        assert set(ab) == {"A", "B"}, f"{name}: a LoRA pair needs lora_A and lora_B"
        w = out[name + ".weight"]
        delta = ab["B"].float() @ ab["A"].float()  # [out, r] @ [r, in]
        out[name + ".weight"] = (w.float() + cfg.scale * delta).to(w.dtype)
    return out


def save_adapter(sd: dict[str, torch.Tensor], folder: str | Path, cfg: LoraConfig) -> Path:
    """The adapters of a LoRA network's (full) state dict as PEFT's folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tensors, modules = {}, set()
    for k, v in sd.items():
        m = _KEY.match(k)
        if m:
            modules.add(m["module"])
            tensors[f"base_model.model.{m['module']}.lora_{m['ab']}.weight"] = v.detach().cpu().contiguous()
        elif any(k.startswith(f + ".") for f in cfg.full):  # trained in full: PEFT's modules_to_save
            tensors[f"base_model.model.{k}"] = v.detach().cpu().contiguous()
    if not tensors:
        raise ValueError("the state dict holds no LoRA adapters (model.lora.rank=0?)")
    save_file(tensors, str(folder / "adapter_model.safetensors"), metadata={"format": "pt"})
    peft_cfg = _peft_config(cfg, sorted(modules), cfg.full)
    peft_cfg.save_pretrained(str(folder))
    return folder


def load_adapter(module: nn.Module, folder: str | Path, *, merge: bool = True) -> nn.Module:
    """A PEFT adapter folder into ``module`` (a plain network of the adapter's base): merged into the base
    weights (``merge``: the module stays plain), or injected as live adapters (to train on)."""
    if merge:
        module.load_state_dict(merge_adapter(module.state_dict(), folder), strict=True)
        return module
    from peft import inject_adapter_in_model, set_peft_model_state_dict

    cfg, pairs = _read_adapter(folder, "adapter")
    full = pairs.pop("", {})
    module.load_state_dict({**module.state_dict(), **full}, strict=True)
    inject_adapter_in_model(_peft_config(cfg, sorted(pairs)), module, adapter_name=_ADAPTER)
    sd = {f"{name}.lora_{ab}.weight": t for name, p in pairs.items() for ab, t in p.items()}
    result = set_peft_model_state_dict(module, sd, adapter_name=_ADAPTER)
    if getattr(result, "unexpected_keys", None):
        raise ValueError(f"{folder}: adapter keys this network lacks: {list(result.unexpected_keys)[:4]}")
    module.lora_config = cfg
    return module


def _read_adapter(folder: str | Path, field: str) -> tuple[LoraConfig, dict[str, torch.Tensor]]:
    """(config, {module: {"A": [r, in], "B": [out, r]}}) of a PEFT LoRA folder, checked."""
    from peft import LoraConfig as PeftLoraConfig
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "adapter_config.json").is_file() or not (folder / "adapter_model.safetensors").is_file():
        raise ValueError(
            f"{field}={folder}: not a PEFT adapter folder (adapter_config.json + adapter_model.safetensors expected)"
        )
    raw = json.loads((folder / "adapter_config.json").read_text())
    if raw.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"{field}={folder}: a {raw.get('peft_type')} adapter; only LoRA is supported")
    peft_cfg = PeftLoraConfig.from_pretrained(str(folder))
    full = sorted(peft_cfg.modules_to_save or [])
    cfg = LoraConfig(
        rank=int(peft_cfg.r), alpha=float(peft_cfg.lora_alpha), targets=sorted(peft_cfg.target_modules or []), full=full
    )
    pairs: dict = {}
    for k, v in load_file(str(folder / "adapter_model.safetensors")).items():
        m = re.match(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$", k)
        if m is not None:
            pairs.setdefault(m["module"], {})[m["ab"]] = v
            continue
        name = k.removeprefix("base_model.model.").replace(".modules_to_save.default.", ".")
        if not any(name.startswith(f + ".") for f in full):
            raise ValueError(f"{field}={folder}: {k} is neither a LoRA weight nor in modules_to_save {full}")
        pairs.setdefault("", {})[name] = v  # "": whole weights that replace the base's
    return cfg, pairs


def merge_adapter(
    sd: dict[str, torch.Tensor], folder: str | Path, *, field: str = "adapter"
) -> dict[str, torch.Tensor]:
    """A plain network's state dict with a PEFT LoRA folder trained on it merged in (W + scale B A)."""
    cfg, pairs = _read_adapter(folder, field)
    out = dict(sd)
    for key, v in pairs.pop("", {}).items():
        if key not in out or tuple(out[key].shape) != tuple(v.shape):
            raise ValueError(f"{field}={folder}: its {key} does not fit the base (another base?)")
        out[key] = v.to(out[key].dtype)
    for name, ab in pairs.items():
        w = out.get(name + ".weight")
        if w is None or set(ab) != {"A", "B"}:
            raise ValueError(f"{field}={folder}: adapts {name}, which the base weights lack (another base?)")
        if (ab["B"].shape[0], ab["A"].shape[1]) != tuple(w.shape):
            raise ValueError(
                f"{field}={folder}: {name} is {tuple(w.shape)} in the base, not the shape the adapter was trained on (another base?)"
            )
        out[name + ".weight"] = (w.float() + cfg.scale * (ab["B"].float() @ ab["A"].float())).to(w.dtype)
    return out
