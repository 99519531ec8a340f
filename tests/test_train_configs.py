"""Every experiment composes, validates and instantiates; bad values fail with the field named."""

import re
from functools import lru_cache
from pathlib import Path

import pytest
from hydra.core.global_hydra import GlobalHydra
from hydra_helpers import compose_job, instantiate

from trackstream.train.config import validate

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))
PARALLEL = sorted(p.stem for p in (ROOT / "conf" / "parallel").glob("*.yaml"))


def _compose(tmp_path, *overrides):
    return compose_job(tmp_path, *overrides)


@lru_cache(maxsize=None)
def _tiny_teacher_base():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return compose_job(Path(tmp), "experiment=tiny_teacher")
        finally:
            GlobalHydra.instance().clear()


def _tiny_teacher(*overrides: str):
    """``experiment=tiny_teacher`` with ``key=value`` overrides of existing fields: the composition (the costly
    part, a third of a second) once per module, each override set on a copy as the command line's would be
    (values read as YAML; a value the schema's type refuses raises here, as Hydra would)."""
    import copy

    import yaml
    from omegaconf import OmegaConf

    cfg = copy.deepcopy(_tiny_teacher_base())
    for override in overrides:
        key, value = override.split("=", 1)
        OmegaConf.update(cfg, key, yaml.safe_load(value), merge=True)
    return cfg


@lru_cache(maxsize=None)
def _built(name: str) -> dict:
    """``instantiate`` of ``experiment=name`` as composed (no other override), once per module: several tests
    read one experiment's built parts (nothing here changes them)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        try:
            return instantiate(compose_job(Path(tmp), f"experiment={name}"))
        finally:
            GlobalHydra.instance().clear()


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def test_experiments_exist():
    assert {"tiny_teacher", "tiny_codec", "teacher_wan1.3b_480p", "teacher_wan1.3b_480p_finetune"} <= set(EXPERIMENTS)


@pytest.mark.slow
@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_validates_and_instantiates(name):
    built = _built(name)
    net, typed = built["network"], built["config"]
    assert typed.task_name == name
    assert all(p.is_meta for p in net.parameters())  # real flavors never allocate here
    assert net.dit.in_dim == net.required_in_dim
    assert built["sigmas"][0] == 1 and built["sigmas"][-1] == 0


@pytest.mark.slow
def test_real_teacher_experiment_has_the_paper_settings():
    typed = _built("teacher_wan1.3b_480p")["config"]
    assert (typed.data.width, typed.data.height, typed.data.num_frames) == (832, 480, 81)
    assert typed.schedule.shift == 6.0 and typed.optim.lr == 1e-5
    assert (typed.sampler.guidance.w_text, typed.sampler.guidance.w_motion) == (3.0, 1.5)
    ft = _built("teacher_wan1.3b_480p_finetune")["config"]
    assert ft.stage.mid_frame_mask_prob == 0.2 and ft.optim.lr == 1e-6


@pytest.mark.slow
def test_official_1_3b_param_count_plus_track_head():
    built = _built("teacher_wan1.3b_480p")
    # Fun-1.3B-Control DiT (1,564,502,336) + track head 256 -> 16 (no bias); UMT5 width = text_dim
    assert built["num_params"] == 1_564_502_336 + 64 * 4 * 16


@pytest.mark.slow
@pytest.mark.parametrize("parallel", PARALLEL)
def test_every_parallel_preset_composes(parallel, tmp_path):
    built = instantiate(_compose(tmp_path, "experiment=tiny_teacher", f"parallel={parallel}"))
    if parallel.startswith("deepspeed"):
        ds = built["deepspeed"]
        assert ds["zero_optimization"]["stage"] == built["config"].parallel.zero_stage
        assert ds["train_batch_size"] == ds["train_micro_batch_size_per_gpu"] * ds["gradient_accumulation_steps"]


@pytest.mark.parametrize(
    "override, field",
    [
        ("optim.lr=-1", "optim.lr"),
        ("trainer.max_steps=0", "trainer.max_steps"),
        ("stage.p_drop_text=1.5", "stage.p_drop_text"),
        ("data.num_frames=16", "data.num_frames"),
        ("parallel.strategy=tp", "parallel.strategy"),
        ("sampler.guidance.mode=cfgpp", "sampler.guidance.mode"),
        ("model.flavor=wan3", "model flavor"),
        ("ema.decay=1.0", "ema.decay"),
        ("codec.fit.crop=100", "codec.fit.crop"),
        ("schedule.shift=0", "schedule.shift"),
    ],
)
@pytest.mark.slow
def test_invalid_values_raise_value_error_naming_the_field(override, field):
    cfg = _tiny_teacher(override)
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        validate(cfg)


def test_unknown_keys_are_rejected_by_the_schema(tmp_path):
    with pytest.raises(Exception, match="trainer.max_stepz|max_stepz"):
        _compose(tmp_path, "experiment=tiny_teacher", "trainer.max_stepz=3")


def test_codec_names_are_one_list_and_each_builds():
    from trackstream.models.codec_names import CODEC_NAMES
    from trackstream.models.codecs import CODEC_NAMES as PACKAGE
    from trackstream.models.codecs import build_codec

    assert PACKAGE is CODEC_NAMES
    with pytest.raises(ValueError, match="is not a codec name"):
        build_codec("no-such-codec")


def test_each_codec_has_one_spelling_the_conf_files_included(tmp_path):
    """conf/codec/<stem>.yaml: the stems are the registry's names (``codec=wan2.1-vae`` selects the codec whose
    ``codec.name`` is wan2.1-vae); an old spelling is one line naming the new one, wherever it is given."""
    import yaml

    from trackstream.models.codec_names import CODEC_NAMES
    from trackstream.trainer.codec import CodecConfig

    files = sorted((ROOT / "conf" / "codec").glob("*.yaml"))
    assert sorted(p.stem for p in files) == sorted(CODEC_NAMES)
    assert all(yaml.safe_load(p.read_text())["name"] == p.stem for p in files)
    for old, new in (("wan2.1_vae", "wan2.1-vae"), ("taehv_wan2.2", "taehv-wan2.2"), ("tiny_ae", "tiny-ae")):
        with pytest.raises(ValueError, match=f"codec.name='{old}' is not a codec name; it is spelled {new} ") as err:
            CodecConfig(name=old, checkpoint="x")
        assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="it is spelled taehv-wan2.1 or taehv-wan2.2"):
        CodecConfig(name="taehv", checkpoint="x")


@pytest.mark.slow
def test_cli_prints_the_resolved_job_config(run_module):
    from forkserver import AT_IMPORT, HANDLED

    from conftest import cli_env

    # a bare environment: nothing else needed; with the suite's variables read at import (OpenMP's wait
    # policy, Hugging Face's offline flag: nothing a command needs), so that it starts warm from the fork server
    imported = {k: v for k, v in cli_env().items() if k.startswith(AT_IMPORT) and k not in HANDLED}
    r = run_module(
        "trackstream.train",
        "experiment=tiny_teacher",
        "--cfg",
        "job",
        timeout=120,
        env={**imported, "PYTHONPATH": str(ROOT), "PATH": "/usr/bin"},
    )
    assert "task_name: tiny_teacher" in r.stdout and "guidance:" in r.stdout and "mode: joint" in r.stdout


@pytest.mark.slow
def test_stage_keys_are_checked_against_the_stage_schema(tmp_path):
    cfg = _compose(tmp_path, "experiment=tiny_teacher", "+stage.no_such_key=1")
    with pytest.raises(Exception, match="no_such_key"):
        validate(cfg)


@pytest.mark.slow
def test_a_stage_is_a_schema_and_a_builder_named_by_stage_name():
    from trackstream.train.registry import STAGES
    from trackstream.train.teacher.build import STAGE, build_teacher

    typed = validate(_tiny_teacher())
    assert STAGES[typed.stage.name] is STAGE and type(typed.stage) is STAGE.schema and STAGE.builder is build_teacher
    # each stage is one unit named after it: a folder with its schema and objective (objective.py) and its
    # builder, record and plan cost (build.py); the codec's fit is one file; the schema's default name is the record's
    for name, stage in STAGES.items():
        unit = f"trackstream.train.{name}"
        if name == "codec":
            assert stage.builder.__module__ == stage.schema.__module__ == unit
        else:
            assert stage.builder.__module__ == f"{unit}.build" and stage.schema.__module__ == f"{unit}.objective"
            # the tiny decoder's convolutional networks have a plan of their own (bench/plan_tiny_decoder.py)
            assert name == "tiny_decoder" or stage.cost.__module__ == f"{unit}.build"
        assert stage.schema().name == name
    with pytest.raises(ValueError, match="stage.name='nope' is no stage"):
        validate(_tiny_teacher("stage.name=nope"))


def _yaml_restatements(raw: dict, default, path: str = "") -> list[str]:
    """Keys of a stage yaml that equal their dataclass default or that the dataclass lacks."""
    from omegaconf import OmegaConf

    found = []
    for key, value in raw.items():
        where = f"{path}.{key}" if path else key
        if key == "defaults":
            continue
        if key not in default:
            found.append(f"{where} (no such field)")
        elif isinstance(value, dict) and OmegaConf.is_dict(default[key]):
            found.extend(_yaml_restatements(value, default[key], where))
        else:
            have = default[key]
            have = OmegaConf.to_container(have) if OmegaConf.is_config(have) else have
            if value == have and type(value) is type(have) or (value is None and have is None):
                found.append(f"{where}={value!r} (the default)")
    return found


def test_no_stage_yaml_restates_a_default_or_names_a_missing_field():
    import yaml
    from omegaconf import OmegaConf

    from trackstream.train.registry import STAGES

    SCHEMAS = {name: stage.schema for name, stage in STAGES.items()}
    files = sorted((ROOT / "conf" / "stage").glob("*.yaml"))
    assert {f.stem for f in files} >= set(SCHEMAS)
    for path in files:
        raw = yaml.safe_load(path.read_text()) or {}
        bases = [d for d in raw.get("defaults", []) if isinstance(d, str) and d != "_self_"]
        schema = next((n[: -len("_schema")] for n in bases if n.endswith("_schema")), None)
        parent = next((n for n in bases if not n.endswith("_schema")), None)
        assert schema or parent, f"{path.name}: extends neither <name>_schema nor another stage file"
        name = schema or yaml.safe_load((path.parent / f"{parent}.yaml").read_text())["defaults"][0][: -len("_schema")]
        assert not _yaml_restatements(raw, OmegaConf.structured(SCHEMAS[name])), path.name
    # the check itself fails on both kinds of line
    probe = OmegaConf.structured(SCHEMAS["dmd"])
    assert _yaml_restatements({"update_ratio": 5, "generator_optim": {"lr": 2.0e-6}, "nope": 1}, probe) == [
        "update_ratio=5 (the default)",
        "generator_optim.lr=2e-06 (the default)",
        "nope (no such field)",
    ]
    assert _yaml_restatements({"update_ratio": 4, "teacher": "t"}, probe) == []


def test_a_recorded_config_with_an_earlier_trackstreams_stage_keys_is_refused(tmp_path):
    """Run directories of an earlier TrackStream record ``stage._schema_`` / ``_builder_`` and a root
    ``stage_builder`` from before stages were named by ``stage.name``: reading them back is a one-line error."""
    from omegaconf import OmegaConf

    recorded = OmegaConf.load(ROOT / "assets" / "tiny-teacher" / "config.yaml")
    assert type(validate(recorded).stage).__name__ == "TeacherConfig"  # today's record reads back
    recorded.stage._schema_ = "trackstream.train.teacher.objective:TeacherConfig"
    recorded.stage._builder_ = "trackstream.trainer.teacher_stage:build_teacher"
    recorded.stage_builder = None
    want = r"^stage._schema_, stage._builder_, stage_builder: a config recorded by an earlier TrackStream .*new run"
    with pytest.raises(ValueError, match=want):
        validate(recorded)


@pytest.mark.slow
def test_one_causal_config_for_ode_init_and_dmd(tmp_path):
    from trackstream.models.streaming import CausalConfig

    dmd = validate(
        _compose(tmp_path, "experiment=tiny_dmd", "stage.teacher=t", "stage.pairs=p", "stage.causal.window_chunks=2")
    )
    assert dmd.stage.causal == CausalConfig(3, 1, 2, first_chunk_frames=1)
    ode = validate(_compose(tmp_path, "experiment=tiny_ode_init", "stage.teacher=t"))
    assert ode.stage.causal == CausalConfig(3, 1, 1, first_chunk_frames=1)
    with pytest.raises(ValueError, match="first_chunk_frames"):
        validate(
            _compose(
                tmp_path, "experiment=tiny_dmd", "stage.teacher=t", "stage.pairs=p", "stage.causal.first_chunk_frames=3"
            )
        )


def test_global_batch_derives_grad_accum_and_rejects_contradictions():
    from trackstream.train.app import derive_grad_accum

    assert derive_grad_accum(global_batch=128, batch_size=1, world_size=32, grad_accum=1) == 4
    assert derive_grad_accum(global_batch=128, batch_size=1, world_size=8, grad_accum=1) == 16
    assert derive_grad_accum(global_batch=None, batch_size=2, world_size=8, grad_accum=3) == 3
    assert derive_grad_accum(global_batch=64, batch_size=2, world_size=8, grad_accum=4) == 4  # consistent: kept
    with pytest.raises(ValueError, match="not a multiple of data.batch_size x processes"):
        derive_grad_accum(global_batch=128, batch_size=1, world_size=48, grad_accum=1)
    with pytest.raises(ValueError, match="trainer.grad_accum=2 contradicts trainer.global_batch=128"):
        derive_grad_accum(global_batch=128, batch_size=1, world_size=32, grad_accum=2)


@pytest.mark.parametrize(
    "name,batch",
    [
        ("teacher_wan1.3b_480p", 128),
        ("teacher_wan2.2_5b_704p", 128),
        ("ode_init_wan1.3b_480p", 128),
        ("dmd_wan1.3b_480p", 64),
        ("dmd_wan2.2_5b_704p", 64),
    ],
)
@pytest.mark.slow
def test_real_recipes_keep_the_papers_global_batch(name, batch):
    typed = _built(name)["config"]
    assert typed.trainer.global_batch == batch and typed.data.batch_size == 1 and typed.trainer.grad_accum == 1


def test_the_shipped_students_recorded_config_validates_as_a_dmd_stage_with_snapshots():
    from omegaconf import OmegaConf

    recorded = OmegaConf.load(ROOT / "assets" / "tiny-student" / "config.yaml")
    typed = validate(recorded)
    assert type(typed.stage).__name__ == "DMDConfig" and typed.stage.snapshot_every == recorded.stage.snapshot_every


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, says",
    [
        ("data.num_frames=100001", "data.num_frames=100001 x data.height=64 x data.width=64: the clips held at once"),
        ("data.fps=0", "data.fps=0 must be >= 1"),
        ("model.overrides.num_heads=0", "model.overrides.num_heads=0 must be an int >= 1"),
        ("model.overrides.num_heads=3", "the head size must be a whole, even number"),
    ],
)
def test_absurd_sizes_are_refused_before_anything_is_allocated(override, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        instantiate(validate(_tiny_teacher(override)))


REAL = [p.stem for p in (ROOT / "conf" / "experiment").glob("*_wan*.yaml") if not p.stem.endswith("_finetune")]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_every_real_recipe_has_a_one_gpu_debug_preset(name, tmp_path):
    """``trackstream train experiment=<recipe> debug=<stage>_1gpu``: one process, real shapes, a small batch."""
    from trackstream.train.app import derive_grad_accum

    stage = name.split("_wan")[0]
    cfg = _compose(tmp_path, f"experiment={name}", f"debug={stage}_1gpu")
    cfg.trainer.grad_accum = derive_grad_accum(
        global_batch=cfg.trainer.global_batch, batch_size=cfg.data.batch_size, world_size=1, grad_accum=1
    )
    typed = validate(cfg)
    full = _built(name)["config"]
    assert typed.stage.name == stage and typed.trainer.grad_accum <= 2 and typed.trainer.max_steps <= 20
    assert (typed.data.height, typed.data.width, typed.data.num_frames) == (
        full.data.height,
        full.data.width,
        full.data.num_frames,
    )  # the real shapes and chunking: only the batch, steps and workers shrink
    assert typed.data.num_workers <= 1 and typed.data.eval_samples <= 2
    instantiate(typed)


@pytest.mark.slow
def test_an_outside_stage_registers_its_record(tmp_path):
    from dataclasses import dataclass

    from trackstream.train.registry import STAGES, register_stage

    @dataclass
    class OutsideConfig:
        name: str = "outside"
        steps: int = 3

    def build_outside(cfg, runtime, run_dir):
        raise AssertionError("not built here")

    try:
        stage = register_stage("outside", OutsideConfig, build_outside, planned=False)
        assert STAGES["outside"] is stage and stage.builder is build_outside
        typed = validate(_compose(tmp_path, "stage=outside_schema"))
        assert typed.stage == OutsideConfig()
        with pytest.raises(ValueError, match="registered already"):
            register_stage("outside", OutsideConfig, build_outside)
    finally:
        STAGES.pop("outside", None)


@pytest.mark.slow
def test_a_debug_preset_keeps_the_recipes_name():
    """``debug=*`` shrinks a recipe; its name (task_name: the W&B group and tags, the default run folder) stays the
    recipe's."""
    from trackstream.train.recipes import compose_recipe

    for recipe, debug in (("dmd_wan1.3b_480p", "dmd_1gpu"), ("tiny_teacher", "tiny"), ("rl_wan1.3b_480p", "rl_1gpu")):
        assert compose_recipe([f"experiment={recipe}", f"debug={debug}"]).task_name == recipe
