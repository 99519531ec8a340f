"""Every bad input a one-line error naming the file or field and the fix, losing nothing.

One test (or parametrised case) per row of the issue's table. The bad files live in tests/data/bad/
(README.md there says what each one is); a good export to break is the shipped tiny student, copied to tmp.
Each test checks the error is one line, names the file / field, says the fix, and where it applies that
nothing was written, lost or left behind.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BAD = Path(__file__).parent / "data" / "bad"
STUDENT = ROOT / "assets" / "tiny-student" / "student"
CODEC = ROOT / "assets" / "tiny-teacher" / "codec.pt"


def _one_line(msg: str) -> str:
    msg = str(msg)
    assert "\n" not in msg.strip(), f"not one line: {msg!r}"
    assert "Traceback" not in msg and "weights_only=False" not in msg
    return msg


# -- row 1 and row 7: stream.generate with a broken export, codec or tracks ----------------------------------


@pytest.fixture
def inputs(tmp_path):
    """A copy of the shipped student (a bare export: no release around it records its codec), the shipped codec,
    a 64x64 image and 17 frames of 4 good tracks."""
    import cv2

    student = tmp_path / "student"
    shutil.copytree(STUDENT, student)
    codec = tmp_path / "codec.pt"
    shutil.copy2(CODEC, codec)
    rng = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "image.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "tracks.npy", (rng.random((17, 4, 2)) * 63).astype(np.float32))
    return {"root": tmp_path, "student": student, "codec": codec}


def _generate(inputs, capsys, **flags) -> str:
    """stream.generate's main in-process: it must refuse (exit 2) before writing the video; its error line."""
    from trackstream.stream.generate import main

    args = {
        "--student": inputs["student"],
        "--codec": inputs["codec"],
        "--codec-name": "tiny-ae",  # the bare copy names no codec: a typed checkpoint is named too
        "--image": inputs["root"] / "image.png",
        "--tracks": inputs["root"] / "tracks.npy",
        "--out": inputs["root"] / "out.mp4",
        "--device": "cpu",
        "--dtype": "float32",
        **flags,
    }
    argv = [str(x) for kv in args.items() for x in kv]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert not (inputs["root"] / "out.mp4").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err  # the refusal alone: no usage block
    return _one_line(err[0].removeprefix("error: "))


BROKEN_EXPORT = {  # file of the export (or the codec) replaced by a bad one -> what the error must say
    "dit/diffusion_pytorch_model.safetensors": ("truncated.safetensors", "truncated or not a safetensors file"),
    "heads.pt": ("heads.pt", "not a torch checkpoint of tensors"),
    "network.json": ("network.json", "not valid JSON"),
    "codec.pt": ("codec.pt", "truncated or corrupt"),
}


@pytest.mark.parametrize("target", list(BROKEN_EXPORT))
def test_row1_a_broken_export_or_codec_is_a_one_line_error_naming_the_file(inputs, capsys, target):
    bad, what = BROKEN_EXPORT[target]
    dest = inputs["codec"] if target == "codec.pt" else inputs["student"] / target
    shutil.copy2(BAD / bad, dest)
    msg = _generate(inputs, capsys)
    assert str(dest) in msg and what in msg, msg
    # the fix: which command writes the file again
    fix = "codec fit" if target == "codec.pt" else "export it again"
    assert fix in msg and "git checkout assets/" in msg, msg


def test_row1_a_checkpoint_of_another_network_as_codec_is_one_line(inputs, capsys):
    shutil.copy2(STUDENT / "heads.pt", inputs["codec"])  # a real torch checkpoint, of the wrong network
    msg = _generate(inputs, capsys)
    assert str(inputs["codec"]) in msg and "does not match TinyAE: missing keys" in msg and "--codec-name" in msg


def test_row1_a_bare_export_names_no_codec_and_is_refused_in_one_line(inputs, capsys):
    """No release or run around the copy records its codec: none given is refused, and so is a checkpoint given
    without its name; each before anything is loaded, naming the flag."""
    from trackstream.stream.generate import main

    base = ["--student", inputs["student"], "--image", inputs["root"] / "image.png"]
    base += ["--tracks", inputs["root"] / "tracks.npy", "--out", inputs["root"] / "out.mp4", "--device", "cpu"]
    for extra, says in [
        ([], f"no codec is recorded with {inputs['student']} "),
        (["--codec", inputs["codec"]], f"--codec={inputs['codec']}: name its codec too (--codec-name;"),
    ]:
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in [*base, *extra]])
        assert exit_.value.code == 2 and not (inputs["root"] / "out.mp4").exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0] and "--codec" in err[0], err


def test_row1_network_json_with_a_bad_model_config_names_the_file(inputs, capsys):
    import json

    meta = json.loads((inputs["student"] / "network.json").read_text())
    meta["model"]["layout"] = "sideways"
    (inputs["student"] / "network.json").write_text(json.dumps(meta))
    msg = _generate(inputs, capsys)
    assert str(inputs["student"] / "network.json") in msg and "model.layout='sideways'" in msg, msg


@pytest.mark.parametrize(
    "flags, names, says",
    [
        ({"--tracks": BAD / "tracks_nan.npy"}, "--tracks", "not finite (first: frame 5, track 2"),
        ({"--tracks": BAD / "tracks_1e9.npy"}, "--tracks", "more than 1 frame size(s) outside the 64x64 frame"),
        ({"--visibility": BAD / "visibility_17x3.npy"}, "--visibility", "needs (17, 4)"),
        ({"--tracks": BAD / "heads.pt"}, "--tracks", "heads.pt is not a readable torch file"),
    ],
)
def test_row7_bad_tracks_are_refused_on_load(inputs, capsys, flags, names, says):
    msg = _generate(inputs, capsys, **flags)
    assert msg.startswith(names) and says in msg, msg


def test_row7_normalised_tracks_are_refused_naming_the_fix(inputs, capsys):
    g = np.random.default_rng(0)
    np.save(inputs["root"] / "unit.npy", g.uniform(0, 1, (17, 4, 2)).astype(np.float32))  # x / W, y / H
    msg = _generate(inputs, capsys, **{"--tracks": inputs["root"] / "unit.npy"})
    assert msg.startswith("--tracks: every coordinate is within [-1, 1]") and "multiply x by the width" in msg, msg


def test_row7_an_image_at_another_size_is_fitted_with_its_tracks(inputs, capsys):
    from trackstream.stream.generate import _parser, fit_to_student

    class Conv:
        height, width = 64, 64

    image, tracks = np.zeros((48, 96, 3), np.uint8), np.array([[[95.0, 47.0], [48.0, 24.0]]], np.float32)
    vis = np.ones((1, 2), bool)
    bgr, fitted, seen = fit_to_student(image, tracks, vis, Conv, mode="crop")  # the default: cover, keep the centre
    assert bgr.shape == (64, 64, 3) and seen.tolist() == [[False, True]]  # the corner is cut away
    np.testing.assert_allclose(fitted[0, 1], [(48.5 * 4 / 3) - 0.5 - 32, 24.5 * 4 / 3 - 0.5], rtol=1e-6)
    out = capsys.readouterr().out
    assert "fitting the image 96x48 -> 64x64 by crop" in out and "1 of 2 leave the frame (invisible)" in out, out
    bgr, fitted, seen = fit_to_student(image, tracks, vis, Conv, mode="resize")  # squashed: nothing leaves
    assert bgr.shape == (64, 64, 3) and seen.all()
    np.testing.assert_allclose(fitted[0, 0], [95.5 * 2 / 3 - 0.5, 47.5 * 4 / 3 - 0.5], rtol=1e-6)
    assert _parser().parse_args(["--image", "i", "--tracks", "t", "--out", "o", "--resize"]).fit == "resize"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--image", "i", "--tracks", "t", "--out", "o", "--fit", "squash"])


def test_row7_tracks_saved_as_n_t_2_are_refused_not_streamed_as_one_frame(inputs, capsys):
    np.save(inputs["root"] / "nt2.npy", np.full((4, 17, 2), 30.0, np.float32))  # 4 tracks x 17 frames, transposed
    msg = _generate(inputs, capsys, **{"--tracks": inputs["root"] / "nt2.npy"})
    assert msg.startswith("--tracks covers 4 frames (read as [T, N, 2] = [4, 17, 2])") and "[N, T, 2]" in msg, msg


@pytest.mark.slow
def test_row7_generate_with_a_seed_is_reproducible(inputs, capsys):
    from trackstream.data.video_io import decode_video
    from trackstream.stream.generate import main

    outs = []
    for k in range(2):
        out = inputs["root"] / f"seeded{k}.mp4"
        argv = ["--student", inputs["student"], "--codec", inputs["codec"], "--codec-name", "tiny-ae"]
        argv += ["--image", inputs["root"] / "image.png", "--tracks", inputs["root"] / "tracks.npy", "--out", out]
        argv += ["--device", "cpu", "--seed", "3"]
        assert main([str(a) for a in argv]) == 0
        outs.append(decode_video(out)[0])
    out = capsys.readouterr().out
    assert "64x64, 2 chunks" in out
    # 17 frames of tracks, 13 in whole chunks: the rest is said, not dropped silently
    assert "note: --tracks has 17 frames; frames 13-16 are past the last whole chunk" in out, out
    assert "frames/s (13 frames in" in out and "all 2 chunks: warm-up included" in out, out  # short: a rate still
    np.testing.assert_array_equal(outs[0], outs[1])


def test_row7_tracks_may_leave_the_frame_by_up_to_one_frame_size():
    from trackstream.data.track_inputs import check_tracks

    t = np.zeros((3, 2, 2), np.float32)
    t[1, 0] = (-63.0, 127.0)  # a point gone out of view, within one 64 px frame size: real data
    tracks, vis = check_tracks(t, None, height=64, width=64)
    assert tracks.dtype == np.float32 and vis.shape == (3, 2) and vis.all()
    t[2, 1] = (0.0, 129.0)
    with pytest.raises(ValueError, match=r"y in \[-64, 128\]"):
        check_tracks(t, None, height=64, width=64)


# -- rows 2 and 3: a training run refused before it writes anything -----------------------------------------


@pytest.fixture
def hydra_clean():
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    yield
    GlobalHydra.instance().clear()


def _train_cli(monkeypatch, capsys, *overrides) -> str:
    """``python -m trackstream.train ...`` in-process: refused with exit 2 and one line ``error: ...``."""
    import sys

    from trackstream.train.app import main

    monkeypatch.setattr(sys, "argv", ["train", *overrides])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return _one_line(err[-1][len("error: ") :])


@pytest.mark.slow
def test_row2_a_run_directory_of_another_experiment_is_refused_before_anything_is_written(
    tmp_path, hydra_clean, monkeypatch, capsys
):
    import torch
    from hydra_helpers import compose_job

    from trackstream.train.config import validate

    run = tmp_path / "run"
    theirs = validate(compose_job(run, "experiment=tiny_teacher"))
    step = run / "checkpoints" / "step_00000004"  # the other experiment's complete checkpoint (meta.pt last)
    step.mkdir(parents=True)
    torch.save({"step": 4, "world_size": 1, "fingerprint": theirs.fingerprint()}, step / "meta.pt")
    (run / "config.yaml").write_text("task_name: tiny_teacher  # the other run's record\n")
    (run / "train.log").write_text("their log\n")
    (run / ".hydra").mkdir()
    for name in ("config.yaml", "hydra.yaml", "overrides.yaml"):  # Hydra's records of their run
        (run / ".hydra" / name).write_text(f"their {name}\n")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    msg = _train_cli(monkeypatch, capsys, "experiment=tiny_teacher_patch1", f"hydra.run.dir={run}")
    assert str(step) in msg and "model.overrides.patch_size: saved" in msg and "use a new run directory" in msg, msg
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before  # config.yaml and .hydra/ byte-identical, no samples/, nothing appended to train.log


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, field",
    [
        ("model.init_from={missing}", "model.init_from"),
        ("codec.checkpoint={missing}", "codec.checkpoint"),
        ("stage.teacher={missing}", "stage.teacher"),  # with experiment=tiny_dmd: a stage's input (INPUT_PATHS)
    ],
)
def test_row3_a_missing_input_file_is_one_line_and_leaves_no_run_directory(
    tmp_path, hydra_clean, monkeypatch, capsys, override, field
):
    run, missing = tmp_path / "new_run", tmp_path / "nowhere" / "weights.safetensors"
    experiment = "tiny_dmd" if field.startswith("stage.") else "tiny_teacher"
    msg = _train_cli(
        monkeypatch, capsys, f"experiment={experiment}", override.format(missing=missing), f"hydra.run.dir={run}"
    )
    assert msg.startswith(f"{field}='{missing}' does not exist") and "fix the path" in msg, msg
    assert not run.exists()  # Hydra made it (.hydra/); the refused run removed it again


@pytest.mark.slow
def test_row3_more_tracks_than_the_shards_hold_is_one_line_and_leaves_no_run_directory(
    tmp_path, hydra_clean, monkeypatch, capsys
):
    """data.num_tracks above a shard clip's tracks (a 6 x 6 grid: 36) is refused before anything loads, not capped
    at 36 by every draw."""
    from trackstream.data.shards import write_synthetic_shards
    from trackstream.data.synthetic import SyntheticWorld

    shards = tmp_path / "shards"
    write_synthetic_shards(SyntheticWorld(height=32, width=32, num_frames=5, grid_size=6), str(shards), num_samples=2,
                           samples_per_shard=2)  # fmt: skip
    run = tmp_path / "new_run"
    msg = _train_cli(
        monkeypatch, capsys, "experiment=tiny_teacher", "data.source=shards", f"data.shards={shards}",
        "data.num_tracks=[1000,2500]", f"hydra.run.dir={run}",
    )  # fmt: skip
    assert msg.startswith("data.num_tracks=[1000, 2500] asks for up to 2500 tracks, but the shards hold 36 per"), msg
    assert "grid_size" in msg and not run.exists()


# -- rows 4 and 6: python -m trackstream.eval refuses before generating ------------------------------------


def _eval_cli(monkeypatch, capsys, *overrides) -> str:
    """``python -m trackstream.eval ...`` in-process: refused with exit 2 and one line ``error: ...``."""
    import sys

    from trackstream.eval.__main__ import main

    monkeypatch.setattr(sys, "argv", ["eval", *overrides])
    with pytest.raises(SystemExit) as exit_:
        main()
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("error: "), err
    return _one_line(err[-1][len("error: ") :])


@pytest.mark.slow
@pytest.mark.parametrize(
    "override, says",
    [
        ("benchmark.num_samples=abc", "benchmark.num_samples='abc' must be an integer or null"),
        ("fps=fast", "fps='fast' must be an integer"),
        ("benchmark.name=videos benchmark.path={tmp}/no_such_benchmark", "no_such_benchmark' does not exist"),
    ],
)
def test_row4_a_mistyped_eval_field_is_one_line_naming_it_and_leaves_no_output(
    tmp_path, hydra_clean, monkeypatch, capsys, override, says
):
    out = tmp_path / "eval_out"
    args = override.format(tmp=tmp_path).split()
    msg = _eval_cli(monkeypatch, capsys, f"run={STUDENT}", *args, f"out={out}")
    assert says in msg, msg
    assert not out.exists()  # Hydra made it (hydra.run.dir = out); the refused evaluation removed it


@pytest.mark.parametrize(
    "weights, says",
    [
        ({}, "metric 'fid' needs weights.inception"),
        ({"inception": "{tmp}/pt_inception.pth"}, "pt_inception.pth"),
    ],
)
def test_row6_missing_feature_weights_are_reported_before_any_generation(tmp_path, monkeypatch, weights, says):
    import trackstream.eval.command as command

    def no_generation(*args, **kwargs):
        raise AssertionError("generated before checking the metrics' weights")

    monkeypatch.setattr(command, "generate_videos", no_generation)
    cfg = command.EvalCommandConfig(
        run=str(STUDENT),
        metrics=["epe", "fid"],
        weights={k: v.format(tmp=tmp_path) for k, v in weights.items()},
        generate={"codec": {"checkpoint": str(CODEC)}, "device": "cpu"},
        benchmark={"num_samples": 1},
        out=str(tmp_path / "out"),
    )
    with pytest.raises(command.EvalRefused) as err:
        command.evaluate(cfg, data={})
    assert says in _one_line(err.value)
    assert not (tmp_path / "out").exists()


# -- row 5: data.prepare fails up front ----------------------------------------------------------------------


def _prepare(tmp_path, monkeypatch, inputs: Path, *overrides) -> str:
    """``python -m trackstream.data.prepare ...`` in-process: exits non-zero with one line ``error: ...``
    before writing anything to the output folder."""
    import sys

    from trackstream.data.prepare import main

    out = tmp_path / "shards"
    monkeypatch.setattr(sys, "argv", ["prepare", f"input={inputs}", f"output={out}", "progress=false", *overrides])
    with pytest.raises(SystemExit) as exit_:
        main()
    msg = str(exit_.value.code)
    assert msg.startswith("error: "), msg
    assert not out.exists()  # Hydra made <output>/logs/<time>/.hydra for the run; the refused run removed it
    import logging

    handlers = [
        h
        for lg in [logging.getLogger(), *logging.Logger.manager.loggerDict.values()]
        for h in getattr(lg, "handlers", [])
    ]
    left = [h.baseFilename for h in handlers if str(getattr(h, "baseFilename", "")).startswith(str(out))]
    assert not left, left  # no log handler writes into the removed folder (it would fail at the next message)
    return _one_line(msg[len("error: ") :])


def test_row5_prepare_on_an_empty_folder_names_the_folder(tmp_path, hydra_clean, monkeypatch):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "notes.txt").write_text("no video here")
    msg = _prepare(tmp_path, monkeypatch, tmp_path / "videos")
    assert msg.startswith(f"input='{tmp_path / 'videos'}' holds no video") and ".mp4" in msg, msg


@pytest.mark.slow
@pytest.mark.parametrize("installed", [False, True])
def test_row5_prepare_with_cotracker3_unusable_fails_up_front(tmp_path, hydra_clean, monkeypatch, installed):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # as if the co-tracker package were (not) installed, whatever this machine has
        importlib.util,
        "find_spec",
        lambda name, *a: (object() if installed else None) if name == "cotracker" else real(name, *a),
    )
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "clip.mp4").write_bytes(b"never decoded: refused before")
    ckpt = tmp_path / "scaled_offline.pth"
    msg = _prepare(
        tmp_path,
        monkeypatch,
        tmp_path / "videos",
        "tracker=cotracker3_offline",
        f"tracker.checkpoint={ckpt}",
        "tracker.device=cpu",
    )
    if installed:
        assert msg.startswith(f"tracker.checkpoint='{ckpt}' (cotracker3_offline) does not exist"), msg
        assert "huggingface.co/facebook/cotracker3" in msg
    else:
        assert msg.startswith("tracker=cotracker3_offline: the `cotracker` package is not installed"), msg
        assert "pip install" in msg and "tracker=lk" in msg


# -- damaged shards: one line naming the shard and the sample, never a silent sample -------------------------


@pytest.mark.parametrize(
    "shard, says",
    [
        ("shard_truncated.tar", "is damaged after sample clip0"),
        ("shard_tracks_shape.tar", "sample clip1: tracks.npy has shape (5, 3) (float32), expected float [T, N, 2]"),
        ("shard_tracks_nan.tar", "sample clip1: tracks.npy holds non-finite points (first: frame 2, track 1)"),
        ("shard_text_as_mp4.tar", "sample clip1: its mp4 does not decode"),
    ],
)
def test_a_damaged_shard_names_the_shard_and_the_sample(shard, says):
    from trackstream.data.loader import read_tar_shard
    from trackstream.data.shards import DamagedSample, decode_sample

    decoded = []
    with pytest.raises(DamagedSample) as err:
        for raw in read_tar_shard(str(BAD / shard)):
            decoded.append(decode_sample(raw)["caption"])
    msg = _one_line(err.value)
    assert says in msg and shard in msg and "trackstream prepare" in msg, msg
    assert decoded == (["a ball"] if shard != "shard_truncated.tar" else decoded)  # clip0 is fine


def test_drag_commands_refuse_a_broken_export_in_one_line(inputs, tmp_path, capsys):
    """``trackstream drag-bench`` / ``drag`` with a broken export: the file named on one line, exit 2."""
    from trackstream.eval.drag_bench import main

    shutil.copy2(BAD / "network.json", inputs["student"] / "network.json")
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "--student",
                str(inputs["student"]),
                "--codec",
                str(inputs["codec"]),
                "--out",
                str(tmp_path / "o"),
                "--scenes",
                "1",
                "--device",
                "cpu",
            ]
        )
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1 and err[0].startswith("error: ") and "network.json" in err[0], err
