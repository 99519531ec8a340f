"""The training config's schemas registered in Hydra's ConfigStore, and its validation.

The root ``TrainConfig`` is in train/train_config.py; this module registers:
  * ``train_schema``            the root, first in conf/train.yaml's defaults (type-checks YAML);
  * ``stage/<name>_schema``     each stage's typed config (``train.registry.STAGES[name].schema``), first in
                                its conf/stage/<name>.yaml's defaults: the yaml states only what differs from
                                the dataclass;
  * ``NODES``: the settings the stage and model files place with a defaults entry, offered as nodes made from
    the dataclasses that define them, so no YAML file restates a default: ``causal/c3s1w1``
    (``models.streaming.CausalConfig``, MotionStream's chunking, at ``stage.causal`` of the causal stages),
    ``guidance/joint`` (``diffusion.samplers.GuidanceConfig``, at ``stage.guidance`` of DMD and consistency and
    ``stage.ode_pairs.guidance`` of ODE init) and ``lora/disabled`` (``models.lora.LoraConfig``, rank 0, at
    ``model.lora`` of every model file, so any stage takes ``model.lora.rank=64``). A recipe overrides a field
    (``stage.causal.window_chunks=2``) and never copies the node. The eval command's nodes (``sampler/default``,
    ``tracker/<name>``) are its own: ``eval.conf_nodes``.
``stage`` is typed by ``stage.name`` (the stage's record in ``train.registry.STAGES``).
``validate`` converts the composed DictConfig to dataclasses (running every ``__post_init__``)
and checks cross-field rules, raising ``ValueError`` naming the field. Library code only ever
sees the dataclasses, never a DictConfig.
"""

from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from trackstream.diffusion.samplers import GuidanceConfig
from trackstream.models.codec_names import codec_latent_channels, codec_spatial_factor
from trackstream.models.lora import LoraConfig
from trackstream.models.motion_wan import latent_channels
from trackstream.models.streaming import CausalConfig, check_first_chunk, first_chunk_given
from trackstream.models.tracks import latent_frames
from trackstream.stream.chunks import whole_chunks
from trackstream.train.registry import STAGES
from trackstream.train.train_config import TrainConfig

__all__ = ["NODES", "register_configs", "validate", "resolved_container"]

# (group, name) -> the dataclass whose defaults are the node
NODES = {
    ("causal", "c3s1w1"): CausalConfig,
    ("guidance", "joint"): GuidanceConfig,
    ("lora", "disabled"): LoraConfig,
}


# what this process has stored: (group, name) -> the dataclass stored there
_STORED: dict[tuple[str | None, str], type] = {}


def register_configs() -> None:
    """Put the schemas (the train config, each registered stage's, ``NODES``) in Hydra's ConfigStore. Each is stored
    once a process: storing converts its dataclass to a config (about a quarter of a second for all of them), and a
    command that composes many recipes (``trackstream plan``) registers before each."""
    nodes = {(None, "train_schema"): TrainConfig}
    nodes.update(((("stage", f"{name}_schema"), stage.schema) for name, stage in STAGES.items()))
    nodes.update(NODES)
    cs = ConfigStore.instance()
    for (group, name), node in nodes.items():
        if _STORED.get((group, name)) is not node:
            cs.store(group=group, name=name, node=node)
            _STORED[(group, name)] = node


def validate(cfg: DictConfig | TrainConfig) -> TrainConfig:
    """DictConfig -> TrainConfig with every schema's checks and the cross-field rules."""
    if isinstance(cfg, DictConfig):
        if cfg.get("stage") is None or "name" not in cfg.stage:
            raise ValueError("stage is not set: choose one with stage=<name> (e.g. stage=teacher)")
        plain = resolved_container(cfg)
        stage = plain.pop("stage")
        # keys configs recorded before stages were named by ``stage.name`` alone
        earlier = [f"stage.{k}" for k in ("_schema_", "_builder_") if k in stage] + ["stage_builder"] * (
            "stage_builder" in plain
        )
        if earlier:
            raise ValueError(
                f"{', '.join(earlier)}: a config recorded by an earlier TrackStream (stages are named by stage.name "
                "alone now); start a new run directory from today's recipe, or delete those keys"
            )
        if stage["name"] not in STAGES:
            raise ValueError(f"stage.name={stage['name']!r} is no stage; choose stage=<one of {', '.join(STAGES)}>")
        typed = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), plain))
        typed.stage = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(STAGES[stage["name"]].schema), stage))
        cfg = typed
    _cross_checks(cfg)
    return cfg


def resolved_container(cfg: DictConfig) -> dict:
    """The job config (without the ``hydra`` node) as plain containers, interpolations resolved."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    return OmegaConf.to_container(OmegaConf.create(plain), resolve=True)


def _cross_checks(cfg: TrainConfig) -> None:
    patch = cfg.model.overrides.get("patch_size", (1, 2, 2))
    sf = codec_spatial_factor(cfg.codec.name, dict(cfg.codec.options))
    for axis, px, p in (("height", cfg.data.height, patch[1]), ("width", cfg.data.width, patch[2])):
        if px % sf or (px // sf) % p:
            raise ValueError(
                f"data.{axis}={px}: must be a multiple of the codec's spatial factor {sf} and give a "
                f"latent size ({px // sf}) divisible by the DiT patch size {p}"
            )
    if cfg.codec.fit.crop > min(cfg.data.height, cfg.data.width) or cfg.codec.fit.num_frames > cfg.data.num_frames:
        raise ValueError(
            f"codec.fit crop {cfg.codec.fit.num_frames}x{cfg.codec.fit.crop}px does not fit data clips of "
            f"{cfg.data.num_frames}x{cfg.data.height}x{cfg.data.width}; lower codec.fit.crop / codec.fit.num_frames"
        )
    want, have = (
        latent_channels(cfg.model.flavor, cfg.model.overrides),
        codec_latent_channels(cfg.codec.name, dict(cfg.codec.options)),
    )
    if want != have:
        raise ValueError(
            f"model.flavor={cfg.model.flavor!r} denoises {want}-channel latents but codec={cfg.codec.name!r} "
            f"makes {have}: pair Wan 2.2 TI2V-5B with codec=wan2.2-vae or "
            "codec=taehv-wan2.2 and the Wan 2.1 flavors with a 16-channel codec"
        )
    sp = cfg.parallel.sequence_parallel
    record = STAGES.get(getattr(cfg.stage, "name", None))
    if sp > 1 and not (record and record.sequence_parallel):
        splits = ", ".join(name for name, s in STAGES.items() if s.sequence_parallel)
        raise ValueError(
            f"parallel.sequence_parallel={sp}: stage {cfg.stage.name!r} has no DiT to split "
            f"(sequence-parallel stages: {splits}): set it to 1"
        )
    if sp > 1 and getattr(cfg.stage, "correspondence_weight", 0) > 0:
        raise ValueError(
            f"parallel.sequence_parallel={sp} cannot probe an attention head: set stage.correspondence_weight=0 "
            "or parallel.sequence_parallel=1"
        )
    causal = getattr(cfg.stage, "causal", None)
    if causal is not None:  # a causal stage: its chunking must tile the clips it trains on
        check_first_chunk(causal, layout=cfg.model.layout, field="stage.causal")
        latents = latent_frames(cfg.data.num_frames)
        if whole_chunks(causal, latents) == 0 or causal.chunk_start(whole_chunks(causal, latents)) != latents:
            fit = "1 + k*C" if first_chunk_given(causal) else "k*C"
            raise ValueError(
                f"data.num_frames={cfg.data.num_frames} = {latents} latent frames do not split into chunks "
                f"of {causal.name} ({fit} latents, C={causal.chunk_frames}): change data.num_frames or "
                "stage.causal.first_chunk_frames (1: chunk 0 is the given first latent; null: chunk 0 "
                "is sampled, the image in the channels)"
            )
    if cfg.model.layout == "ti2v" and not getattr(cfg.stage, "clean_first_frame", True):
        raise ValueError(
            "model.layout=ti2v carries the first frame as clean latent frame 0 (no image channels): "
            "set stage.clean_first_frame=true"
        )
    if cfg.model.track_channels == 0 and cfg.sampler.guidance.mode in ("joint", "motion"):
        raise ValueError(f"sampler.guidance.mode={cfg.sampler.guidance.mode!r} needs tracks but model.track_channels=0")
