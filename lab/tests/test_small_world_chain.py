"""The small world's chain (lab/small_world.py) and its release (lab/small_world_ship.py), rehearsed on CPU
at shrunk widths, all on one chain run: stopped inside ODE init, packed, unpacked into a fresh run directory
and finished, the chain ends with the same exported weights as the uninterrupted one; the chain run by the
driver records its machine, ``ship`` scores the teacher (its run's held-out figures and
the oracle copier's) and the three students by the one protocol, computes the issue's targets, and writes a
bf16 release whose every file is under 20 MB and whose sha256 are in the manifest; the release's first
losses are reproduced by re-running its recipe; a bf16 release network loads back in float32 as its
export rounded to bf16, sharded with an index when over the file limit."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from conftest import launch_forked
from lab.small_world import main
from lab.small_world_chain import Chain, run
from lab.small_world_ship import MAX_FILE_BYTES, first_losses, release_network
from lab.small_world_state import STAGES
from trackstream.models.motion_wan import load_network
from trackstream.pipeline.releases import verify_asset
from trackstream.pipeline.stage_calls import PipelineError

SHRINK = Chain(
    common=[
        "debug=tiny",
        "model.overrides.dim=32",
        "model.overrides.ffn_dim=64",
        "model.overrides.num_layers=2",
        "model.overrides.num_heads=1",
        "model.track_channels=8",
        "trainer.num_threads=1",
        "eval.enabled=false",
    ],
    stages={
        "ode_init": [
            "stage.ode_pairs.num_pairs=4",
            "stage.ode_pairs.teacher_steps=3",
            "stage.ode_pairs.batch_size=2",
            "trainer.max_steps=30",  # long enough for the stop to land inside it
        ],
        "dmd": ["trainer.max_steps=10"],  # 2 generator updates
        "rl": ["data.batch_size=1", "stage.group_size=2"],
    },
)
BUDGET = dict(budget_s=1800, min_stage_s=1, grace_s=60, pack_reserve_s=0)


def _weights(export: Path) -> dict:
    from safetensors.torch import load_file

    out = {f"dit/{k}": v for k, v in load_file(export / "dit/diffusion_pytorch_model.safetensors").items()}
    return {**out, **torch.load(export / "heads.pt", weights_only=True)}


# the rehearsal chain with the teacher's final held-out evaluation on (ship reads it); ODE init long enough for
# a stop to land inside it
CHAIN = replace(
    SHRINK,
    common=[o for o in SHRINK.common if o != "eval.enabled=false"],
    stages={
        "teacher": ["eval.enabled=true", "eval.periodic_clips=0", "eval.save_videos=0"],
        **{s: [*SHRINK.stages.get(s, []), "eval.enabled=false"] for s in ("ode_init", "dmd", "rl")},
    },
)


@pytest.fixture(scope="module")
def chain_run(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("OMP_NUM_THREADS", "1")
    launch_forked(mp)  # the chain's stage commands start warm
    root = tmp_path_factory.mktemp("small_world_chain")
    where = run(root / "run", CHAIN, **BUDGET)
    assert where["done"] == list(STAGES)
    yield root / "run"
    mp.undo()


@pytest.mark.slow
def test_a_stopped_packed_and_continued_chain_equals_the_uninterrupted_one(
    chain_run, tmp_path, monkeypatch, forked_launches
):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    first = run(tmp_path / "first", CHAIN, out=tmp_path / "state", stop_at=("ode_init", 1), **BUDGET)
    assert first["done"] == ["teacher"] and first["stage"] == "ode_init" and 0 < first["step"] < 30
    meta = json.loads((tmp_path / "state/state.json").read_text())
    assert meta["mode"] == "exact" and meta["progress"] == first
    assert len(meta["parts"]) <= 7 and all(b <= 16 * 2**20 for b in meta["bytes"].values())
    assert all((tmp_path / "state" / p).stat().st_size == meta["bytes"][p] for p in meta["parts"])

    moved = tmp_path / "elsewhere/run"  # a fresh machine: the pack only, another path
    done = run(moved, CHAIN, state=tmp_path / "state", **BUDGET)
    assert done["done"] == list(STAGES)
    resumed = json.loads((moved / "ode_init/results.json").read_text())["resumed_from"]
    assert resumed.endswith(f"step_{first['step']:08d}") and resumed.startswith(str(moved.resolve()))
    for stage, export in (("ode_init", "export/student"), ("dmd", "export/student"), ("rl", "export/student")):
        a, b = _weights(chain_run / stage / export), _weights(moved / stage / export)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), stage  # bit for bit
    assert not torch.equal(
        _weights(moved / "dmd/export/student")["dit/head.head.weight"],
        _weights(moved / "ode_init/export/student")["dit/head.head.weight"],
    )  # the comparison is not vacuous: DMD moved the weights
    again = run(moved, CHAIN, state=tmp_path / "state", **BUDGET)  # a warm machine ahead of the pack: kept
    assert again == done


@pytest.mark.slow
def test_ship_scores_the_chain_and_writes_a_bf16_release_under_the_file_limit(
    chain_run, tmp_path, capsys, monkeypatch, forked_launches
):
    (call,) = [json.loads(line) for line in (chain_run / "calls.jsonl").read_text().splitlines()]
    assert call["device"].startswith("cpu") and call["torch"] == torch.__version__ and "cuda" in call
    assert call["from"]["done"] == [] and call["to"]["done"] == list(STAGES)

    dest = tmp_path / "small-world"
    argv = ["ship", "--run-dir", str(chain_run), "--dest", str(dest), "--clips", "2", "--long-clips", "1"]
    assert main([*argv, "--long-factor", "2", "--device", "cpu", "--dtype", "float32"]) == 0
    printed = capsys.readouterr().out
    assert "teacher_epe_with_over_without" in printed and "dmd_epe_over_teacher" in printed
    m = verify_asset(dest)  # every file's sha256 as the manifest says
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert all(p.stat().st_size <= MAX_FILE_BYTES for p in files)
    assert {"teacher/network.json", "student/network.json", "codec.pt", "teacher_config.yaml"} <= set(m["sha256"])
    assert m["calls"] == [call] and m["steps"]["teacher"] == 4 and m["protocol"]["clips"] == 2
    teacher = m["held_out"]["teacher"]
    assert {"epe_with_tracks", "epe_ground_truth_video", "epe_frozen_video", "oracle_epe_copy@4px"} <= set(teacher)
    for stage in ("ode_init", "dmd", "rl"):
        assert {"epe_with_tracks", "epe_without_tracks", "psnr_with_tracks", "drift"} <= set(m["held_out"][stage])
    t = m["targets"]["dmd_epe_over_teacher"]
    assert t["value"] == pytest.approx(m["held_out"]["dmd"]["epe_with_tracks"] / teacher["epe_with_tracks"])
    assert t["met"] == (t["value"] <= 1.3)
    from safetensors import safe_open

    with safe_open(str(dest / "student/dit/diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
    # the shipped student is the RL export rounded to bf16, read back in float32
    shipped, export = load_network(dest / "student"), load_network(chain_run / "rl/export/student")
    a, b = shipped.state_dict(), export.state_dict()
    assert all(a[k].dtype == torch.float32 and torch.equal(a[k], b[k].bfloat16().float()) for k in b)

    # the demo streams the release: its world from the release's config.yaml (the chain's world)
    from trackstream.stream.demo.session import world_for

    world = world_for(dest / "student", 64, 64)
    assert world.camera_pan_prob == 0.5 and world.rotation_speed == 60.0  # small_teacher's, not the default

    # the trip back from the device: 15 MiB pieces, 7 a call; joined from two calls' folders, byte for byte
    import lab.small_world_ship as sws

    monkeypatch.setattr(sws, "RELEASE_PART", 2**17)
    monkeypatch.setattr(sws, "PARTS_PER_CALL", 3)
    first = sws.pack_release(dest, tmp_path / "call1")
    assert len(first["here"]) == 3 < len(first["parts"]) <= 6, len(first["parts"])
    with pytest.raises(ValueError, match="missing: bring them back with .* --first-part 3"):
        sws.unpack_release([tmp_path / "call1"], tmp_path / "back")
    assert main(["release", "--dest", str(dest), "--out", str(tmp_path / "call2"), "--first-part", "3"]) == 0
    argv = ["release", "--dest", str(tmp_path / "back"), "--state", str(tmp_path / "call1")]
    assert main([*argv, "--state", str(tmp_path / "call2")]) == 0
    assert verify_asset(tmp_path / "back") == m
    back = {p.relative_to(tmp_path / "back"): p.read_bytes() for p in (tmp_path / "back").rglob("*") if p.is_file()}
    assert back == {p.relative_to(dest): p.read_bytes() for p in files}

    # the recipe's first losses, re-run from the release (same machine: exactly)
    got = first_losses(dest, tmp_path / "repro", steps=len(m["first_losses"]["teacher"]))
    assert got == {k: m["first_losses"][k] for k in ("codec", "teacher")}


@pytest.mark.slow
def test_a_release_network_over_the_file_limit_is_sharded_with_an_index(chain_run, tmp_path):
    out = release_network(chain_run / "dmd/export/student", tmp_path / "net", max_shard_bytes=4096)
    shards = sorted((out / "dit").glob("diffusion_pytorch_model-*.safetensors"))
    assert len(shards) > 2 and (out / "dit/diffusion_pytorch_model.safetensors.index.json").is_file()
    net = load_network(out)
    ref = load_network(chain_run / "dmd/export/student").state_dict()
    assert all(torch.equal(v, ref[k].bfloat16().float()) for k, v in net.state_dict().items())


def test_ship_refuses_an_unfinished_chain_in_one_line(tmp_path, capsys):
    (tmp_path / "run/teacher").mkdir(parents=True)
    from lab.small_world_ship import ship_small_world

    with pytest.raises(PipelineError, match="stage teacher is not done"):
        ship_small_world(tmp_path / "run", tmp_path / "dest")
    assert main(["ship", "--run-dir", str(tmp_path / "run"), "--dest", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "continue the chain first" in err[0]
    assert not Path(tmp_path / "d").exists()
