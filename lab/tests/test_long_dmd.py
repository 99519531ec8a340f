"""The long DMD run (lab/long_dmd.py): its DMD stage is make run's with snapshots and more
steps, and its packed state continues bit-exactly on another run directory: DMD to step 10 in
one go == DMD to step 5, pack, unpack elsewhere, resume to 10 (weights, both optimizers, the EMA
and the snapshots compared bit for bit)."""

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from distill_helpers import tiny_teacher_run
from hydra_helpers import typed

from lab.long_dmd import UPDATE_RATIO, dmd_overrides, long_sizes, pack, unpack
from lab.run_pack import entry_object, read_pack
from trackstream.distill.pair_shards import load_shard
from trackstream.pipeline.presets import FULL, SCRATCH
from trackstream.pipeline.run import DISTILL
from trackstream.train.dmd.objective import DMDConfig
from trackstream.train.snapshots import list_snapshots, read_snapshot

RATIO = UPDATE_RATIO


def test_the_long_dmd_stage_is_make_runs_with_snapshots_and_400_updates(tmp_path):
    sizes = long_sizes()
    assert (sizes.teacher, sizes.ode_init) == (FULL.teacher, SCRATCH.ode_init)  # a DMD start worth hours of DMD
    long = typed(tmp_path, *dmd_overrides(sizes))
    full = typed(tmp_path, "experiment=tiny_dmd", *DISTILL, *FULL.dmd)
    assert type(long.stage) is DMDConfig and full.stage.snapshot_every is None
    assert long.stage.update_ratio == RATIO and long.stage.snapshot_every == 50
    assert long.trainer.max_steps // RATIO == 400 and long.trainer.max_steps % RATIO == 0
    stage = asdict(long.stage)
    assert stage["snapshot_every"] == 50 and stage == {**asdict(full.stage), "snapshot_every": 50}  # same DMD
    for part in ("model", "data", "schedule", "codec"):
        assert getattr(long, part) == getattr(full, part), part
    assert asdict(long.trainer) == {**asdict(full.trainer), "max_steps": 2000, "ckpt_every": 25}
    with pytest.raises(ValueError, match="stage.snapshot_every"):
        typed(tmp_path, *dmd_overrides(sizes), "stage.snapshot_every=0")


def test_a_run_directory_records_its_sizes_without_this_checkouts_paths(tmp_path):
    """sizes.json holds what a resume must keep but not the run's length: a packed run continues longer."""
    import json

    from lab.long_dmd import _recorded
    from trackstream.pipeline.run import check_preset

    check_preset(tmp_path, _recorded(long_sizes(updates=10)))
    recorded = json.loads((tmp_path / "sizes.json").read_text())
    assert recorded["dmd"][0] == "stage.snapshot_every=50"
    assert not any(o.startswith("trainer.max_steps=") for o in recorded["dmd"])
    check_preset(tmp_path, _recorded(long_sizes(updates=20)))  # a longer run: same record


# ----------------------------------------------------------------------------- pack -> unpack -> resume


def _run_dir(src: Path, dest: Path) -> Path:
    """A run directory laid out like make run's (teacher and ODE-init exports, pairs) from ``src``."""
    shutil.copytree(src, dest)
    (dest / "sizes.json").write_text("{}")
    return dest


def _dmd(tmp_path, run_dir: Path, steps: int) -> dict:
    from trackstream.train.app import run_stage
    from trackstream.trainer.dist import init_runtime, seed_everything

    cfg = typed(
        tmp_path,
        "experiment=tiny_dmd",
        "debug=tiny",
        "stage.snapshot_every=1",
        "data.num_frames=25",
        f"trainer.max_steps={steps}",
        "trainer.ckpt_every=5",
        "trainer.log_every=1",
        f"stage.teacher={run_dir / 'teacher/export/teacher'}",
        f"stage.student={run_dir / 'ode_init/export/student'}",
        f"stage.pairs={run_dir / 'ode_init/ode_pairs'}",
    )
    seed_everything(cfg.trainer.seed)  # as train.app.start_run does
    return run_stage(cfg, init_runtime("single"), run_dir / "dmd")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """Tiny teacher export (with its codec), an ODE-init student (the teacher, slightly moved), 4 pairs."""
    root = tmp_path_factory.mktemp("src")
    tiny_teacher_run(root, student="ode_init/export/student", pairs="ode_init/ode_pairs", nudge=1e-3)
    return root


def _state(ckpt: Path) -> dict:
    return {name: torch.load(ckpt / f"{name}.pt", weights_only=False) for name in ("generator", "critic")}


def _assert_equal(a, b, where=""):
    if torch.is_tensor(a):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


@pytest.mark.slow
def test_pack_unpack_resume_equals_the_uninterrupted_run(source, tmp_path):
    whole = _run_dir(source, tmp_path / "whole")
    assert _dmd(tmp_path, whole, 10)["generator_updates"] == 2
    first = _run_dir(source, tmp_path / "first")
    _dmd(tmp_path, first, 5)

    pack_dir = tmp_path / "repo" / "runs" / "dmd-long"
    rl = first / "rl"  # a finished RL stage: its export and records travel with the pack, its checkpoints not
    (rl / "export" / "student").mkdir(parents=True)
    (rl / "export" / "student" / "network.json").write_text('{"rl": 1}')
    (rl / "checkpoints").mkdir()
    (rl / "checkpoints" / "step.bin").write_bytes(b"x")
    (rl / "results.json").write_text('{"status": "done"}')
    info = pack(first, pack_dir)
    assert (info["step"], info["generator_updates"]) == (5, 1)
    from lab.long_dmd import PART_BYTES, _state_file

    state = _state_file(pack_dir)  # state.pt, or its parts (each under 20 MB) joined
    assert all(p.stat().st_size <= PART_BYTES for p in pack_dir.glob("state.pt*"))
    packed = read_pack(state)  # safetensors + JSON: no pickle
    assert packed["run_dir"] == str(first.resolve())
    stored = sum(e["zlib"].numel() for e in packed["files"].values())
    assert state.stat().st_size < 1.02 * stored + 2**16  # no pickling overhead on the payloads
    shard = load_shard(whole / "ode_init/ode_pairs/pairs_00000.safetensors")
    assert "trajectory" in shard  # ... and the pack leaves it out (DMD reads conditions only)
    gen = entry_object(packed, "dmd/checkpoints/step_00000005/generator.pt")
    moments = [s["exp_avg"] for s in gen["optimizer"]["state"].values()]
    assert moments and all(m == {"__zeros_like__": "exp_avg_sq"} for m in moments)  # beta1 = 0: not stored
    assert sorted(p.name for p in (pack_dir / "snapshots").iterdir()) == ["gen_00000.pt", "gen_00001.pt"]
    assert "generator" not in read_snapshot(pack_dir / "snapshots" / "gen_00001.pt")  # EMA only in the repo

    moved = tmp_path / "elsewhere" / "run"  # a fresh machine: only the repo's pack, another path
    unpack(moved, pack_dir)
    assert "trajectory" not in load_shard(moved / "ode_init/ode_pairs/pairs_00000.safetensors")
    assert (moved / "rl/export/student/network.json").read_text() == '{"rl": 1}'
    assert (moved / "rl/results.json").is_file() and not (moved / "rl/checkpoints").exists()
    with pytest.raises(Exception, match="already at step_00000005"):
        unpack(moved, pack_dir)
    summary = _dmd(tmp_path, moved, 10)
    assert summary["resumed_from"].endswith("step_00000005") and summary["generator_updates"] == 2

    expected, got = _state(whole / "dmd/checkpoints/step_00000010"), _state(moved / "dmd/checkpoints/step_00000010")
    _assert_equal(expected, got)  # model, both optimizers (exp_avg included), EMA: bit for bit
    moved_5 = _state(first / "dmd/checkpoints/step_00000005")
    assert not torch.equal(
        expected["generator"]["model"]["dit.head.head.weight"], moved_5["generator"]["model"]["dit.head.head.weight"]
    )  # the comparison is not vacuous
    assert not torch.equal(
        expected["critic"]["model"]["dit.head.head.weight"], moved_5["critic"]["model"]["dit.head.head.weight"]
    )
    a, b = list_snapshots(whole / "dmd/snapshots"), list_snapshots(moved / "dmd/snapshots")
    assert sorted(a) == sorted(b) == [0, 1, 2]
    for n in a:
        sa, sb = read_snapshot(a[n]), read_snapshot(b[n])
        _assert_equal(sa["ema"], sb["ema"], f"snapshot {n}")
    _assert_equal(read_snapshot(a[2])["generator"], read_snapshot(b[2])["generator"])


@pytest.mark.slow
def test_an_rl_stage_under_way_travels_with_the_pack_and_resumes_from_its_checkpoint(source, tmp_path):
    """An unfinished RL stage: its latest checkpoint (bit for bit), its Hydra records and its log up to that step
    go in the pack; a checkpoint after the newest readable one and the log's later rows do not."""
    first = _run_dir(source, tmp_path / "first")
    _dmd(tmp_path, first, 5)
    rl = first / "rl"
    shutil.copytree(first / "dmd/checkpoints/step_00000005", rl / "checkpoints/step_00000003")  # a real checkpoint
    (rl / "checkpoints/step_00000004").mkdir()  # incomplete (no meta.pt): not the latest readable one
    (rl / ".hydra").mkdir()
    (rl / ".hydra/overrides.yaml").write_text(f"- stage.student={first}/dmd/export/student\n")
    (rl / "config.yaml").write_text(f"stage:\n  student: {first}/dmd/export/student\n")
    (rl / "metrics.jsonl").write_text("".join(json.dumps({"step": k, "train/loss": k}) + "\n" for k in range(1, 6)))
    info = pack(first, tmp_path / "pack")
    assert info["rl_checkpoint"] == "step_00000003"
    moved = tmp_path / "elsewhere" / "run"
    unpack(moved, tmp_path / "pack")
    ckpt = moved / "rl/checkpoints/step_00000003"
    assert sorted(p.name for p in ckpt.iterdir()) == sorted(
        p.name for p in (rl / "checkpoints/step_00000003").iterdir()
    )
    was, now = _state(rl / "checkpoints/step_00000003"), _state(ckpt)
    for net in ("generator", "critic"):  # weights bit for bit (a beta1 = 0 first moment comes back as its zeros)
        _assert_equal(was[net]["model"], now[net]["model"], net)
    assert not (moved / "rl/checkpoints/step_00000004").exists() and not (moved / "rl/results.json").exists()
    assert [json.loads(r)["step"] for r in (moved / "rl/metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    assert (moved / "rl/.hydra/overrides.yaml").read_text() == f"- stage.student={moved.resolve()}/dmd/export/student\n"
    assert str(moved.resolve()) in (moved / "rl/config.yaml").read_text()


@pytest.mark.slow
def test_the_curve_study_scores_each_snapshot_by_make_runs_protocol(source, tmp_path):
    """python -m lab.dmd_curve on a run's snapshots: one row per snapshot, the ODE-init
    start (0 updates) scored exactly as the stream evaluation scores the ODE-init export, and a second
    run compared at the update counts it has; an existing curve.json is reused, not re-measured."""
    import json

    from omegaconf import OmegaConf

    from lab.dmd_curve import main

    run = _run_dir(source, tmp_path / "run")
    _dmd(tmp_path, run, 5)  # snapshots after 0 and 1 generator updates
    train_cfg = typed(tmp_path, "experiment=tiny_dmd", "debug=tiny", "data.num_frames=25")
    cfg = OmegaConf.structured(train_cfg)
    cfg.codec.checkpoint = str(run / "teacher/codec/codec.pt")
    for stage in ("dmd", "teacher"):
        OmegaConf.save(cfg, run / stage / "config.yaml")
    # the fixture's ODE-init export records no streaming conventions; the stage's would (train.ode_init.build)
    from trackstream.models.streaming import StreamConfig

    meta_path = run / "ode_init/export/student/network.json"
    meta = json.loads(meta_path.read_text())
    stream = StreamConfig(
        causal=train_cfg.stage.causal, steps=train_cfg.schedule.student_steps, shift=train_cfg.schedule.shift
    )
    meta["conventions"] = {**meta.get("conventions", {}), "clean_first_frame": True, "causal": stream.to_dict()}
    meta_path.write_text(json.dumps(meta))
    other = tmp_path / "other"
    shutil.copytree(run, other)
    out = tmp_path / "curve"
    args = ["--run-dir", str(run), "--out", str(out), "--clips", "2", "--long-clips", "1", "--long-factor", "2"]
    assert main([*args, "--compare", f"other={other}", "--updates", "0,1"]) == 0
    curve = json.loads((out / "curve.json").read_text())
    assert sorted(curve["runs"]) == ["other", "self_forcing"] and sorted(curve["runs"]["other"]) == ["0", "1"]
    row0 = curve["runs"]["self_forcing"]["0"]
    assert curve["runs"]["other"]["0"] == {**row0, "seconds": curve["runs"]["other"]["0"]["seconds"]}
    assert all(0 < row0[k] < 64 for k in ("epe_with_tracks", "long_epe")) and 0 < row0["ssim_with_tracks"] <= 1
    assert (out / "curve.png").stat().st_size > 0 and "| self_forcing | 1 |" in (out / "curve.md").read_text()

    # the 0-update snapshot is the ODE-init export's weights: the same figures as scoring that export
    assert main([*args, "--updates", "0", "--network", f"start={run / 'ode_init/export/student'}"]) == 0
    start = json.loads((out / "curve.json").read_text())["networks"]["start"]
    for key in ("epe_with_tracks", "long_epe", "psnr_with_tracks", "drift"):
        assert start[key] == pytest.approx(row0[key], abs=1e-6), key
    assert "| start (`" in (out / "curve.md").read_text()

    (out / "curve.json").write_text(json.dumps({**curve, "runs": {"self_forcing": {"0": {**row0, "seconds": -1}}}}))
    assert main([*args, "--updates", "0"]) == 0  # reused, not evaluated again
    assert json.loads((out / "curve.json").read_text())["runs"]["self_forcing"]["0"]["seconds"] == -1


def test_a_pack_over_the_file_limit_is_committed_in_parts_and_read_back_whole(tmp_path, monkeypatch):
    import lab.long_dmd as long_dmd

    monkeypatch.setattr(long_dmd, "PART_BYTES", 10)
    data = bytes(range(256)) * 3
    (tmp_path / "state.pt").write_bytes(data)
    (tmp_path / "state.pt.part99").write_bytes(b"stale")  # from an earlier, larger pack
    parts = long_dmd._split_state(tmp_path)
    assert [p.name for p in parts] == [f"state.pt.part{i:02d}" for i in range(77)]
    assert not (tmp_path / "state.pt").exists() and not (tmp_path / "state.pt.part99").exists()
    assert long_dmd._has_state(tmp_path) and long_dmd._state_file(tmp_path).read_bytes() == data
    (tmp_path / "state.pt").write_bytes(data[:10])  # a small pack stays one file, its old parts removed
    assert long_dmd._split_state(tmp_path) == [tmp_path / "state.pt"] and not list(tmp_path.glob("*.part*"))
