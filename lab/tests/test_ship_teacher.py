"""The release machinery (lab/ship_teacher.py): manifest + sha256 checks, the resume bundle, export."""

import json
import os
import tarfile

import pytest
import torch
from test_docs_run import documented_line, run_documented, setting

from lab.release_records import logged_losses, training_seconds
from lab.ship_teacher import export_teacher, pack_resume, session_command, unpack_resume
from trackstream.models.formats.files import sha256
from trackstream.pipeline.releases import AssetError, teacher_training_curve, verify_asset

# docs/embedded-world.md's candidate run: the release recipe at texture scale S, its codec fitted 1600 steps
TEXTURE_CANDIDATE = documented_line("docs/embedded-world.md", "lab.ship_teacher start", "data.world.texture_scale=S")


def _fake_run(root, *, done=True):
    run = root / "run"
    (run / "export" / "teacher" / "dit").mkdir(parents=True)
    (run / "export" / "teacher" / "network.json").write_text(json.dumps({"model": {}}))
    (run / "export" / "teacher" / "dit" / "model.safetensors").write_bytes(b"weights" * 10)
    (run / "export" / "teacher" / "heads.pt").write_bytes(b"heads")
    (run / "codec").mkdir()
    (run / "codec" / "codec.pt").write_bytes(b"codec")
    (run / "codec" / "metrics.jsonl").write_text(
        "".join(json.dumps({"step": s, "train/loss": 1.0 / s, "perf/step_time_s": 0.5}) + "\n" for s in range(1, 31))
    )
    (run / "config.yaml").write_text("data: {seed: 0, eval_seed: 7}\ntrainer: {seed: 3}\n")
    rows = [{"step": s, "train/loss": 2.0 / s, "perf/step_time_s": 1.0} for s in range(1, 26)]
    rows.insert(5, {"step": 5, "train/loss": 2.0 / 5})  # a re-logged step after a crash: counted once
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "results.json").write_text(json.dumps({"status": "done" if done else "preempted", "step": 25}))
    (run / "eval.json").write_text(json.dumps({"epe_with_tracks": 3.0, "epe_without_tracks": 12.0, "per_sample": {}}))
    (run / "release_run.json").write_text(
        json.dumps(
            {"command": ["python", "-m", "trackstream.train", "experiment=x"], "git_commit": "abc", "sessions": []}
        )
    )
    step = run / "checkpoints" / "step_00000020"
    step.mkdir(parents=True)
    for name in ("dit.pt", "rank_00000.pt", "meta.pt"):
        torch.save({"name": name}, step / name)
    return run


def test_logged_losses_and_training_seconds(tmp_path):
    run = _fake_run(tmp_path)
    losses = logged_losses(run / "metrics.jsonl", limit=20)
    assert [s for s, _ in losses] == list(range(1, 21)) and losses[4][1] == pytest.approx(0.4)
    assert training_seconds(run / "metrics.jsonl") == pytest.approx(25.0)


def test_export_writes_a_manifest_that_verifies(tmp_path):
    run = _fake_run(tmp_path)
    dest = tmp_path / "asset"
    m = export_teacher(run, dest, floors={"epe_codec_round_trip": 1.0})  # the fake codec cannot run
    assert m["floors"] == {"epe_codec_round_trip": 1.0}
    assert m["steps"] == 25 and m["git_commit"] == "abc" and m["command"] == "python -m trackstream.train experiment=x"
    assert m["seeds"] == {"data.seed": 0, "data.eval_seed": 7, "trainer.seed": 3}
    assert len(m["first_losses"]["teacher"]) == 20 and len(m["first_losses"]["codec"]) == 20
    assert m["held_out"] == {"epe_with_tracks": 3.0, "epe_without_tracks": 12.0}
    assert set(m["sha256"]) == {
        "teacher/network.json",
        "teacher/dit/model.safetensors",
        "teacher/heads.pt",
        "codec.pt",
        "config.yaml",
        "curve.json",
    }
    curve = teacher_training_curve(dest)  # mean loss per 25 logged steps (the re-logged step counted once)
    assert [r["step"] for r in curve] == [25] and curve[0]["train/loss"] == pytest.approx(
        sum(2.0 / s for s in range(1, 26)) / 25, abs=1e-5
    )
    assert m["sha256"]["codec.pt"] == sha256(dest / "codec.pt")
    assert verify_asset(dest)["steps"] == 25


def test_verify_names_missing_and_altered_files(tmp_path):
    dest = tmp_path / "asset"
    export_teacher(_fake_run(tmp_path), dest, floors={})
    (dest / "codec.pt").write_bytes(b"other codec")
    (dest / "teacher" / "heads.pt").unlink()
    with pytest.raises(AssetError) as err:
        verify_asset(dest)
    msg = str(err.value)
    assert "missing ['teacher/heads.pt']" in msg and "altered" in msg and "codec.pt" in msg and "git checkout" in msg
    with pytest.raises(AssetError, match="no manifest.json"):
        verify_asset(tmp_path / "nowhere")


def test_export_refuses_an_unfinished_run(tmp_path):
    with pytest.raises(AssetError, match="has not finished"):
        export_teacher(_fake_run(tmp_path, done=False), tmp_path / "asset")


def test_resume_bundle_round_trip(tmp_path):
    run = _fake_run(tmp_path)
    tar = pack_resume(run, tmp_path / "resume.tar.gz")
    with tarfile.open(tar) as t:
        names = set(t.getnames())
    assert {
        "checkpoints/step_00000020/meta.pt",
        "codec/codec.pt",
        "config.yaml",
        "metrics.jsonl",
        "release_run.json",
    } <= names
    assert not any(n.startswith("export") for n in names)
    again = pack_resume(run, tmp_path / "resume2.tar.gz")
    assert sha256(tar) == sha256(again)  # reproducible bytes: re-packing an unchanged run changes nothing
    out = unpack_resume(tmp_path / "new", tar)
    assert torch.load(out / "checkpoints" / "step_00000020" / "dit.pt") == {"name": "dit.pt"}
    assert (out / "codec" / "codec.pt").read_bytes() == b"codec"


def test_a_fine_tune_of_a_release_packs_without_a_codec_of_its_own(tmp_path):
    """A run given its codec (codec.checkpoint outside the run, a release's) packs without one; a run with neither
    its fitted codec nor a given one is refused."""
    import shutil

    run = _fake_run(tmp_path)
    given = tmp_path / "release" / "codec.pt"
    given.parent.mkdir()
    shutil.move(run / "codec" / "codec.pt", given)
    (run / "config.yaml").write_text(f"codec: {{checkpoint: {given}}}\ndata: {{seed: 0}}\n")
    with tarfile.open(pack_resume(run, tmp_path / "resume.tar.gz")) as t:
        assert "checkpoints/step_00000020/meta.pt" in t.getnames() and "codec/codec.pt" not in t.getnames()
    given.unlink()
    with pytest.raises(AssetError, match="has not fitted its codec yet"):
        pack_resume(run, tmp_path / "resume2.tar.gz")


def test_a_fine_tune_ships_with_its_lineage_and_a_config_naming_no_file_of_its_machine(tmp_path):
    """Exported over the release it started from: the manifest names that release (its network files matched by
    sha256) and the placement figures given; the shipped config clears model.init_from and codec.checkpoint."""
    import shutil

    from omegaconf import OmegaConf

    dest = tmp_path / "asset"
    export_teacher(_fake_run(tmp_path), dest, floors={})  # the release the fine-tune starts from
    base = json.loads((dest / "manifest.json").read_text())
    init = tmp_path / "init"
    shutil.copytree(dest, init)
    run = _fake_run(tmp_path / "tune")
    shutil.move(run / "codec" / "codec.pt", tmp_path / "given.pt")
    (run / "export" / "teacher" / "heads.pt").write_bytes(b"tuned heads")
    (run / "config.yaml").write_text(
        f"model: {{init_from: {init / 'teacher'}}}\ncodec: {{checkpoint: {tmp_path / 'given.pt'}}}\n"
        "data: {seed: 0, eval_seed: 7}\ntrainer: {seed: 3}\n"
    )
    beside = export_teacher(run, tmp_path / "beside", floors={}, base=dest)  # shipped beside the release it tuned
    m = export_teacher(run, dest, floors={}, placements={"teacher": {"lattice": {"epe": 1.0}}})
    assert beside["fine_tuned_from"] == m["fine_tuned_from"]
    assert m["fine_tuned_from"] == {
        "init_from": str(init / "teacher"),
        "release": {k: base[k] for k in ("name", "command", "git_commit", "steps")},
    }
    assert m["placements"] == {"teacher": {"lattice": {"epe": 1.0}}}
    cfg = OmegaConf.load(dest / "config.yaml")
    assert cfg.model.init_from is None and cfg.codec.checkpoint is None and cfg.trainer.seed == 3
    assert (dest / "codec.pt").read_bytes() == b"codec" and verify_asset(dest)["steps"] == 25
    (init / "teacher" / "heads.pt").write_bytes(b"other")  # not the release in the destination: none named
    (tmp_path / "d1").mkdir()
    shutil.copy2(init / "manifest.json", tmp_path / "d1" / "manifest.json")
    assert export_teacher(run, tmp_path / "d1", floors={})["fine_tuned_from"] == {"init_from": str(init / "teacher")}
    assert "fine_tuned_from" not in export_teacher(_fake_run(tmp_path / "scratch"), tmp_path / "d2", floors={})


def test_a_resume_bundle_over_the_file_limit_is_refused_and_the_old_one_kept(tmp_path, monkeypatch):
    import lab.ship_teacher as st

    run = _fake_run(tmp_path)
    tar = pack_resume(run, tmp_path / "resume.tar.gz")
    before = tar.read_bytes()
    (run / "metrics.jsonl").write_bytes(os.urandom(4096))  # grows past the (shrunk) limit
    monkeypatch.setattr(st, "MAX_BYTES", len(before) + 1024)
    with pytest.raises(AssetError, match="over the .* a repository file may have"):
        pack_resume(run, tar)
    assert tar.read_bytes() == before and not tar.with_name(tar.name + ".tmp").exists()


def test_a_session_runs_the_recorded_recipe_in_the_given_run_directory(tmp_path):
    record = {"command": ["python", "-m", "trackstream.train", "experiment=x", "a=1", "hydra.run.dir=/old/place"]}
    cmd = session_command(record, tmp_path / "new", until=500, threads=2)
    assert cmd[1:] == [
        "-m",
        "trackstream.train",
        "experiment=x",
        "a=1",
        f"hydra.run.dir={tmp_path / 'new'}",
        "trainer.max_steps=500",
        "trainer.num_threads=2",
    ]
    more = ["data.batch_size=2", "trainer.max_steps=3"]  # --set: this session's, after everything else
    assert session_command(record, tmp_path, until=500, threads=2, more=more)[-3:] == ["trainer.num_threads=2", *more]
    record["command"][2] = "trackstream.stages"  # recorded while the application was trackstream.stages
    assert session_command(record, tmp_path, until=None, threads=None)[1:3] == ["-m", "trackstream.train"]


@pytest.mark.slow
def test_the_texture_candidate_line_trains_the_release_recipe_at_the_scale_given(tmp_path):
    """The line as written (RUN: a folder here), S given after the line's own overrides (the recipe's), the
    session shrunk (``--set``) to a 2-step codec fit and one teacher step of batch 2: the run holds what the
    page's next lines read, and its record the recipe without the session's overrides."""
    sizes = ("codec.fit.steps=2", "codec.fit.batch_size=2", "data.batch_size=2")
    quiet = ("eval.enabled=false", "trainer.sample_every=0", "logger.progress_bar=false")
    session = ("--until", "1", *setting(*sizes, *quiet))
    run_documented(TEXTURE_CANDIDATE, tmp_path, "data.world.texture_scale=3", args=session)
    from omegaconf import OmegaConf

    run = tmp_path / "RUN"
    cfg = OmegaConf.load(run / "config.yaml")
    assert cfg.data.world.texture_scale == 3 and cfg.trainer.num_threads == 1 and cfg.trainer.max_steps == 1
    record = json.loads((run / "release_run.json").read_text())
    assert record["command"][-3:-1] == ["codec.fit.steps=1600", "data.world.texture_scale=3"]
    assert record["sessions"][-1]["set"] == [*sizes, *quiet] and "data.batch_size=2" not in record["command"]
    assert json.loads((run / "results.json").read_text())["status"] == "done"
    assert (run / "codec" / "codec.pt").is_file() and (run / "checkpoints" / "step_00000001").is_dir()
    record = json.loads((run / "release_run.json").read_text())  # the recipe as the line gives it, to resume
    assert record["command"][3:6] == [
        "experiment=tiny_teacher_release",
        "data.world.texture_scale=S",
        "codec.fit.steps=1600",
    ]
    assert record["sessions"][-1]["until"] == 1 and record["sessions"][-1]["threads"] == 1
