"""Each shared setting has one definition: the chunking (c3s1w1 and the kind of chunk 0) and the
joint-guidance weights are dataclass defaults that every stage, the engine, the Hydra configs and the
eval command read; no config file or module restates them."""

import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra_helpers import compose_job
from omegaconf import OmegaConf

from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
from trackstream.eval.conf_nodes import NODES, register_nodes
from trackstream.models.streaming import CausalConfig, StreamConfig
from trackstream.train.config import NODES as TRAIN_NODES
from trackstream.train.dmd.objective import DMDConfig
from trackstream.train.ode_init.objective import ODEInitConfig
from trackstream.train.recipes import CONFIG_DIR
from trackstream.train.rl.objective import RLConfig

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("trackstream", "lab") for p in (ROOT / d).rglob("*.py")]
CONFIGS = [p for d in ("conf", "lab/conf") for p in (ROOT / d).rglob("*.yaml")]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def test_c3s1w1_is_the_dataclass_default_everywhere():
    c = CausalConfig()
    assert (c.chunk_frames, c.sink_chunks, c.window_chunks, c.first_chunk_frames) == (3, 1, 1, 1)
    assert c.name == "c3s1w1f1"
    assert DMDConfig().causal == ODEInitConfig().causal == RLConfig().causal == StreamConfig().causal == c


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["ode_init", "dmd", "rl"])
def test_stage_files_place_the_node_not_a_copy(stage, tmp_path):
    cfg = compose_job(tmp_path, f"stage={stage}")
    assert OmegaConf.to_object(cfg.stage.causal) == CausalConfig()
    text = (ROOT / "conf" / "stage" / f"{stage}.yaml").read_text()
    assert "/causal@causal: c3s1w1" in text
    if stage == "dmd":
        assert OmegaConf.to_object(cfg.stage.guidance) == GuidanceConfig()
    if stage == "ode_init":
        assert OmegaConf.to_object(cfg.stage.ode_pairs.guidance) == GuidanceConfig()
    # a recipe overrides one field and keeps the rest of the definition
    moved = compose_job(tmp_path, f"stage={stage}", "stage.causal.window_chunks=2")
    assert OmegaConf.to_object(moved.stage.causal) == CausalConfig(window_chunks=2)


def test_eval_command_sampler_is_the_dataclass_default():
    register_nodes()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=["run=x", "generate.sampler.guidance.w_text=4"])
    assert OmegaConf.to_object(cfg.generate.sampler) == SamplerConfig(guidance=GuidanceConfig(w_text=4.0))


def test_no_config_file_restates_a_node():
    """The node groups have no YAML twin and no config file writes the guidance weights or c3s1w1's
    chunk sizes: the fields real layouts differ in (the kind of chunk 0, the window) are their family's
    (conf/family), which the stage files interpolate."""
    for group, _ in [*NODES, *TRAIN_NODES]:
        assert not (ROOT / "conf" / group).exists(), f"conf/{group}/ would be a second home of its node"
    keys = re.compile(r"^\s*(w_text|w_motion|chunk_frames|sink_chunks|window_chunks)\s*:(?!\s*\$\{family\.)", re.M)
    family = ROOT / "conf" / "family"
    offenders = [str(p.relative_to(ROOT)) for p in CONFIGS if p.parent != family and keys.search(p.read_text())]
    assert not offenders, offenders


def test_no_module_restates_the_defaults():
    causal_literal = re.compile(r"CausalConfig\(\s*3\s*,\s*1\s*,\s*1|chunk_frames=3,\s*sink_chunks=1")
    weights = re.compile(r"w_text\s*(:\s*float)?\s*=\s*3\.0|w_motion\s*(:\s*float)?\s*=\s*1\.5")
    found = []
    for p in SOURCES:
        text = p.read_text()
        if causal_literal.search(text) or (weights.search(text) and p.name != "samplers.py"):
            found.append(str(p.relative_to(ROOT)))
    assert not found, found


def test_first_chunk_checked_once():
    """The value of first_chunk_frames is CausalConfig's check; the layout rule is the train config's."""
    with pytest.raises(ValueError, match="first_chunk_frames=2"):
        CausalConfig(first_chunk_frames=2)
    assert CausalConfig(first_chunk_frames=None).first_chunk_frames is None
    assert CausalConfig(first_chunk_frames=3).chunk_len(0) == 3
    calls = [p for p in SOURCES for _ in re.finditer(r"\bcheck_first_chunk\(", p.read_text())]
    assert sorted(str(p.relative_to(ROOT)) for p in calls) == [
        "trackstream/models/streaming.py",  # the definition
        "trackstream/train/config.py",  # the one call: stage.causal against model.layout
    ]


@pytest.mark.slow
def test_trackers_have_one_list_of_names_and_one_spelling_of_their_options(tmp_path):
    """``data.trackers.TRACKERS`` is the one list of names (no aliases), ``TrackerConfig`` the one set of
    options: prepare and eval take ``tracker=NAME tracker.checkpoint=...``, the flag commands
    ``--tracker NAME --tracker-checkpoint ...``, all reaching the same TrackerConfig."""
    import argparse

    from trackstream.data.prepare import CONFIG_DIR as PREPARE_DIR
    from trackstream.data.trackers import TRACKERS, TrackerConfig
    from trackstream.eval.metrics import EPE_TRACKERS
    from trackstream.stream.options import add_tracker_args, tracker_config

    assert set(EPE_TRACKERS) < set(TRACKERS)
    want = TrackerConfig(name="cotracker3_offline", checkpoint="/ckpt/scaled_offline.pth")
    register_nodes()
    for primary, extra in (("eval", ["run=x"]), ("prepare", ["input=/in", "output=/out"])):
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=PREPARE_DIR if primary == "prepare" else CONFIG_DIR, version_base="1.3"):
            cfg = compose(
                primary, overrides=[*extra, "tracker=cotracker3_offline", f"tracker.checkpoint={want.checkpoint}"]
            )
        assert OmegaConf.to_object(cfg.tracker) == want, primary
    ap = argparse.ArgumentParser()
    add_tracker_args(ap, default="lk")
    assert tracker_config(ap.parse_args(["--tracker", want.name, "--tracker-checkpoint", want.checkpoint])) == want
    with pytest.raises(ValueError, match="is not a tracker"):
        TrackerConfig(name="cotracker3")  # a spelling that is not one of the names
    spelled = re.compile(r"checkpoint_path|(?<!args\.)tracker_checkpoint|lucas_kanade")
    found = [str(p.relative_to(ROOT)) for p in [*SOURCES, *CONFIGS] if spelled.search(p.read_text())]
    assert not found, found


@pytest.mark.slow
def test_the_model_families_facts_live_in_conf_family_only():
    """Size, length, fps, shift, student steps and the kind of chunk 0 of the real recipes come from their
    family (conf/family): no real recipe writes them, every real recipe composes one family, and the
    benchmarks read the same facts (``train.recipes.family_facts``)."""
    from trackstream.train.recipes import compose_recipe, family_facts

    facts = re.compile(r"^\s*(height|width|num_frames|fps|shift|student_steps|first_chunk_frames)\s*:", re.M)
    real = sorted((ROOT / "conf" / "experiment").glob("*_wan*.yaml"))
    assert len(real) == 19
    assert not [p.name for p in real if facts.search(p.read_text())]
    for name, family in (("dmd_wan14b_to_1.3b_480p", "wan2.1_480p"), ("rl_wan2.2_5b_704p", "wan2.2_5b_704p")):
        typed, f = compose_recipe([f"experiment={name}"]), family_facts(family)
        assert (typed.data.height, typed.data.width, typed.data.num_frames, typed.data.fps) == (
            f.height,
            f.width,
            f.num_frames,
            f.fps,
        )
        assert (typed.schedule.shift, typed.schedule.student_steps) == (f.shift, f.student_steps)
        assert typed.stage.causal.first_chunk_frames == f.first_chunk_frames
    assert family_facts("wan2.1_480p").first_chunk_frames is None and family_facts("wan2.2_5b_704p").fps == 24
    with pytest.raises(ValueError, match="family 'wan3': no .*; known: tiny_64, wan2.1_480p, wan2.2_5b_704p"):
        family_facts("wan3")
    # the embedded world's recipes: the frame size and shift are tiny_64's, which a stage given a teacher reads
    # from the teacher instead (train/teacher_record.py); no tiny or small recipe restates them
    restated = re.compile(r"^\s*(height|width|shift)\s*:", re.M)
    tiny = [p for p in (ROOT / "conf" / "experiment").glob("*.yaml") if re.match(r"(tiny|small|rl_tiny)", p.stem)]
    assert len(tiny) > 10 and not [p.name for p in tiny if restated.search(p.read_text())]
    typed = compose_recipe(["experiment=tiny_dmd"])
    assert (typed.data.height, typed.data.width, typed.schedule.shift) == (64, 64, 3.0)


def test_the_pixel_to_latent_frame_rule_is_written_once():
    from trackstream.models.tracks import latent_frames

    rule = re.compile(r"1 \+ \([^\n]*- 1\) // (4|TEMPORAL_FACTOR)\b")
    found = [str(p.relative_to(ROOT)) for p in SOURCES if rule.search(p.read_text())]
    assert found == [], found  # models.tracks.latent_frames is the one place (its factor is a parameter)
    assert [latent_frames(t) for t in (1, 5, 25, 81, 121)] == [1, 2, 7, 21, 31]
