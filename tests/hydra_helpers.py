"""The training job's config as ``python -m trackstream.train`` composes it, for tests: raw (``compose_job``)
or validated into its dataclasses (``typed``)."""

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from trackstream.train.config import register_configs, validate
from trackstream.train.recipes import CONFIG_DIR
from trackstream.train.train_config import TrainConfig


def compose_job(run_dir: Path, *overrides: str) -> DictConfig:
    """``train`` composed with ``overrides``, the Hydra config set (``paths.output_dir`` resolves through
    it, to ``run_dir``); the schemas and nodes are registered first (as ``train.app`` does on import), Hydra's
    global state is cleared before, and left for the caller to use."""
    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[*overrides, f"hydra.run.dir={run_dir}"], return_hydra_config=True)
    HydraConfig().set_config(cfg)
    with open_dict(cfg):
        cfg.paths.output_dir = str(run_dir)
    return cfg


def typed(run_dir: Path, *overrides: str) -> TrainConfig:
    """``compose_job``'s config validated into a ``TrainConfig``, Hydra's global state cleared."""
    cfg = compose_job(run_dir, *overrides)
    GlobalHydra.instance().clear()
    return validate(cfg)


def stage_job(run_dir: Path, *overrides: str) -> DictConfig:
    """``compose_job``'s config with the settings of the network the stage is given read into it, as the app
    does before it validates (``train.teacher_record.apply_settings``, the line's overrides as Hydra records
    them); Hydra's global state is cleared after."""
    from trackstream.train.app import command_line_keys
    from trackstream.train.teacher_record import apply_settings

    cfg = compose_job(run_dir, *overrides)
    try:
        apply_settings(cfg, command_line_keys())
    finally:
        GlobalHydra.instance().clear()
    return cfg


def instantiate(cfg: DictConfig | TrainConfig) -> dict:
    """Build every component a config describes without data, weights or processes: the network
    on ``meta`` (real shapes and parameter counts), the stage schema, the synthetic world, the
    sampling grid, the optimizer groups and the DeepSpeed JSON. Catches config errors cheaply
    (tests/test_train_configs.py runs it on every experiment)."""
    from trackstream.data.clips import make_world
    from trackstream.data.synthetic import SyntheticWorld
    from trackstream.diffusion.schedule import sampling_sigmas
    from trackstream.models.motion_wan import TEXT_ENCODER_DIMS, build_motion_wan
    from trackstream.trainer.optim import param_groups
    from trackstream.trainer.parallel import deepspeed_config

    typed = validate(cfg) if isinstance(cfg, DictConfig) else cfg
    enc = typed.model.text_encoder.lower()
    if enc not in TEXT_ENCODER_DIMS:
        raise ValueError(f"model.text_encoder={typed.model.text_encoder!r}; known: {sorted(TEXT_ENCODER_DIMS)}")
    net = build_motion_wan(typed.model, text_encoder_dim=TEXT_ENCODER_DIMS[enc], device="meta")
    out = {
        "config": typed,
        "network": net,
        "num_params": sum(p.numel() for p in net.parameters()),
        "param_groups": param_groups(net, typed.optim),
        "sigmas": sampling_sigmas(typed.sampler.steps, shift=typed.schedule.shift),
        "world": make_world(typed.data) if typed.data.source == "synthetic" else None,
    }
    assert out["world"] is None or isinstance(out["world"], SyntheticWorld)
    if typed.parallel.strategy == "deepspeed":
        out["deepspeed"] = deepspeed_config(
            typed.parallel,
            micro_batch=typed.data.batch_size,
            grad_accum=typed.trainer.grad_accum,
            world_size=1,
            clip=typed.optim.clip_grad_norm,
            precision="fp32",
        )
    return out
