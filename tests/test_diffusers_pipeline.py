"""``trackstream export --format pipeline``: a folder the real diffusers library loads
(``DiffusionPipeline.from_pretrained(..., trust_remote_code=True)``) whose whole-clip call and chunk-by-chunk
``prepare`` / ``step`` give ``trackstream generate``'s frames (the frames generate computes, caught before its
mp4 encoding), a prompt switch in ``step`` included; bad inputs are one-line ValueErrors naming the argument;
tiny Wan 2.1 (with the CLIP image encoder) and Wan 2.2 students load and stream."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from test_docs_run import PIPELINE_EXPORT, run_documented

diffusers = pytest.importorskip("diffusers")

ROOT = Path(__file__).resolve().parents[1]
STUDENT = ROOT / "assets" / "tiny-student" / "student"
CODEC = ROOT / "assets" / "tiny-teacher" / "codec.pt"
TOL = 2 / 255  # the task's bound; measured: 0.5 / 255, generate's uint8 rounding


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    return msg


def _export(network, out, codec=CODEC, codec_name="tiny-ae") -> Path:
    from trackstream.pipeline.export_network import main

    argv = ["--network", network, "--format", "pipeline", "--codec", codec, "--codec-name", codec_name, "--out", out]
    assert main([str(a) for a in argv]) == 0
    return Path(out)


def _generate(root: Path, *flags, student=STUDENT, codec=CODEC, codec_name="tiny-ae") -> np.ndarray:
    """``trackstream generate``'s frames [T, H, W, 3] uint8, as it hands them to its mp4 writer."""
    import trackstream.data.video_io as video_io
    from trackstream.stream.generate import main

    got = []
    argv = ["--student", student, "--codec", codec, "--codec-name", codec_name, "--image", root / "image.png"]
    # no --device / --dtype: generate's defaults (CUDA + bf16 with a GPU, else CPU + fp32) are the pipeline's too
    argv += ["--tracks", root / "tracks.npy", "--out", root / "unused.mp4"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(video_io, "write_mp4", lambda path, frames, fps=16: got.append(frames))
        assert main([str(a) for a in [*argv, *flags]]) == 0
    return got[0]


def _inputs(root: Path, height: int, width: int, frames: int = 25, tracks: int = 4):
    import cv2

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "image.png"), image[:, :, ::-1])  # generate reads BGR
    xy = (rng.random((frames, tracks, 2)) * [width - 1, height - 1]).astype(np.float32)
    np.save(root / "tracks.npy", xy)
    return image, xy


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped student exported as a pipeline (docs/diffusers.md's run-directory line as written, the shipped
    student where a run keeps its export, its run's config naming its teacher's run, whose fitted codec is the
    shipped one: the codec found as a run finds it) and loaded by diffusers; an image and 25 frames of 4 tracks."""
    import yaml

    root = tmp_path_factory.mktemp("diffusers_pipeline")
    image, tracks = _inputs(root, 64, 64)
    teacher = ROOT / "assets" / "tiny-teacher" / "teacher"
    links = (("runs/x/export/student", STUDENT), ("runs/t/export/teacher", teacher), ("runs/t/codec/codec.pt", CODEC))
    for link, target in links:
        (root / link).parent.mkdir(parents=True, exist_ok=True)
        (root / link).symlink_to(target)
    recorded = yaml.safe_load((STUDENT.parent / "config.yaml").read_text())
    recorded["codec"]["checkpoint"] = None  # a student run names no codec file: its teacher's is its latent space
    recorded["stage"]["teacher"] = str(root / "runs" / "t" / "export" / "teacher")
    (root / "runs" / "x" / "config.yaml").write_text(yaml.safe_dump(recorded))
    run_documented(PIPELINE_EXPORT, root)
    folder = root / "my-pipeline"
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    return {"root": root, "folder": folder, "pipe": pipe, "image": image, "tracks": tracks}


def _stream(pipe, image, tracks, chunks, *, seed=3, prompt="a ball", switch=None):
    """``prepare`` once, then ``step`` per chunk with that chunk's tracks; ``switch``: {chunk: new prompt}."""
    state = pipe.prepare(
        image=image, prompt=prompt, num_tracks=tracks.shape[1], generator=torch.Generator().manual_seed(seed)
    )
    out = []
    for i in range(chunks):
        lo, hi = state.frame_range
        out.append(pipe.step(state, tracks=tracks[lo:hi], prompt=(switch or {}).get(i)))
    return np.concatenate(out)


@pytest.mark.slow
def test_the_folder_is_a_diffusers_pipeline_with_remote_code(shipped):
    from trackstream.stream.diffusers_components import TrackStreamCodec, TrackStreamTextEncoder, TrackStreamTransformer
    from trackstream.stream.diffusers_pipeline import TrackStreamPipeline

    folder, pipe = shipped["folder"], shipped["pipe"]
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == ["trackstream_pipeline", "TrackStreamPipeline"]
    assert index["transformer"] == ["trackstream_components", "TrackStreamTransformer"]
    assert index["image_encoder"] == [None, None]  # the tiny flavor has no image branch
    assert (folder / "transformer" / "network.json").is_file() and (folder / "vae" / "codec.pt").is_file()
    assert type(pipe).__name__ == "TrackStreamPipeline" and isinstance(pipe, TrackStreamPipeline)
    assert isinstance(pipe.transformer, TrackStreamTransformer) and isinstance(pipe.vae, TrackStreamCodec)
    assert isinstance(pipe.text_encoder, TrackStreamTextEncoder) and pipe.image_encoder is None
    assert isinstance(pipe.scheduler, diffusers.FlowMatchEulerDiscreteScheduler) and pipe.scheduler.config.shift == 3.0
    # the project's default precision: CUDA + bf16 where a GPU is present, else CPU + fp32
    cuda = torch.cuda.is_available()
    weight = pipe.transformer.network.dit.patch_embedding.weight
    assert (weight.device.type, weight.dtype) == (("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32))
    # the other documented way in: the pipeline file named as custom_pipeline
    other = diffusers.DiffusionPipeline.from_pretrained(
        folder, custom_pipeline="trackstream_pipeline", trust_remote_code=True
    )
    assert type(other) is type(pipe)


@pytest.mark.slow
def test_the_whole_clip_and_the_stream_equal_generate(shipped):
    pipe, image, tracks = shipped["pipe"], shipped["image"], shipped["tracks"]
    want = _generate(shipped["root"], "--seed", "3", "--prompt", "a ball").astype(np.float32) / 255
    assert want.shape == (25, 64, 64, 3)  # 3 chunks: the given first frame, then 12 frames each
    clip = pipe(image=image, tracks=tracks, prompt="a ball", generator=torch.Generator().manual_seed(3)).frames
    assert clip.shape == (1, 25, 64, 64, 3) and clip.dtype == np.float32 and 0 <= clip.min() and clip.max() <= 1
    assert np.abs(clip[0] - want).max() <= TOL
    assert np.abs(_stream(pipe, image, tracks, 3) - want).max() <= TOL
    pil = pipe(image=image, tracks=tracks, prompt="a ball", generator=3, output_type="pil").frames[0]
    assert len(pil) == 25 and np.array_equal(np.stack([np.asarray(p) for p in pil]), np.round(want * 255))
    cut = pipe(image=image, tracks=tracks, prompt="a ball", num_frames=5, generator=3).frames  # chunk 1 cut
    assert cut.shape[1] == 5 and np.abs(cut[0] - want[:5]).max() <= TOL


@pytest.mark.slow
def test_a_prompt_switch_in_step_equals_generate_with_a_prompt_schedule(shipped):
    pipe, root = shipped["pipe"], shipped["root"]
    (root / "schedule.txt").write_text("13\ta green cube\n")  # frame 13 = chunk 2's first frame
    want = _generate(root, "--seed", "3", "--prompt", "a ball", "--prompt-schedule", root / "schedule.txt") / 255
    got = _stream(pipe, shipped["image"], shipped["tracks"], 3, switch={2: "a green cube"})
    kept = _stream(pipe, shipped["image"], shipped["tracks"], 3)
    assert np.abs(got - want).max() <= TOL
    assert np.array_equal(got[:13], kept[:13]) and not np.array_equal(got[13:], kept[13:])  # only later chunks move


@pytest.mark.slow
@pytest.mark.parametrize(
    "call, names",
    [
        (lambda p, i, t: p(image=i, tracks=t[..., 0]), "tracks"),
        (lambda p, i, t: p(image=i, tracks=t / 64), "tracks"),  # normalised
        (lambda p, i, t: p(image=i, tracks=t, visibility=np.ones((25, 3), bool)), "visibility"),
        (lambda p, i, t: p(image=i[:32], tracks=t), "image"),
        (lambda p, i, t: p(image=i, tracks=t[:4]), "tracks"),  # too short for one chunk after the image
        (lambda p, i, t: p(image=i, tracks=t, num_frames=0), "num_frames"),
        (lambda p, i, t: p(image=i, tracks=t, output_type="latent"), "output_type"),
        (lambda p, i, t: p(image=i, tracks=t, generator="seed"), "generator"),
        (lambda p, i, t: p.prepare(image=i, num_tracks=0), "num_tracks"),
        (lambda p, i, t: p.step(p.prepare(image=i, num_tracks=4), tracks=t[:3]), "tracks"),  # chunk 0 is 1 frame
        (lambda p, i, t: p.step(p.prepare(image=i, num_tracks=5), tracks=t[:1]), "tracks"),  # 4 tracks, not 5
        (lambda p, i, t: p.step(p.prepare(image=i, num_tracks=4), tracks=t[:1], prompt=["a", "b"]), "prompt"),
    ],
)
def test_bad_inputs_are_one_line_value_errors_naming_the_argument(shipped, call, names):
    with pytest.raises(ValueError) as err:
        call(shipped["pipe"], shipped["image"], shipped["tracks"])
    assert _one_line(err).startswith(names), str(err.value)


@pytest.mark.slow
def test_the_export_refuses_a_teacher_a_missing_codec_and_a_used_folder(tmp_path, capsys):
    from trackstream.pipeline.export_network import main

    teacher = ROOT / "assets" / "tiny-teacher" / "teacher"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    bare = shutil.copytree(STUDENT, tmp_path / "bare" / "student")  # no run, release or record of its codec
    cases = [
        (["--network", teacher, "--codec", CODEC, "--out", tmp_path / "a"], "records no streaming configuration"),
        (["--network", bare, "--out", tmp_path / "b"], f"no codec is recorded with {bare} "),
        (["--network", STUDENT, "--codec", CODEC, "--out", tmp_path / "used"], "--out"),
        (["--network", STUDENT, "--codec", tmp_path / "none.pt", "--out", tmp_path / "c"], "--codec="),
    ]
    for argv, says in cases:
        assert main([str(a) for a in ["--format", "pipeline", *argv]]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and says in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bare", "used"]  # nothing half-written
    # the shipped student's codec is the one its release records: no --codec to type
    assert main([str(a) for a in ["--format", "pipeline", "--network", STUDENT, "--out", tmp_path / "b"]]) == 0


@pytest.mark.slow
def test_bf16_loads_as_load_export_casts_and_equals_generate_in_bf16(shipped):
    pipe = diffusers.DiffusionPipeline.from_pretrained(
        shipped["folder"], trust_remote_code=True, torch_dtype=torch.bfloat16
    ).to("cpu")  # bf16 on the CPU, as generate below: the same numbers on any machine
    pipe.set_progress_bar_config(disable=True)
    dit = pipe.transformer.network.dit
    assert dit.patch_embedding.weight.dtype == torch.bfloat16
    assert next(dit.time_embedding.parameters()).dtype == torch.float32  # kept fp32, as Network.for_inference keeps it
    moved = diffusers.DiffusionPipeline.from_pretrained(shipped["folder"], trust_remote_code=True).to(torch.bfloat16)
    moved_dit = moved.transformer.network.dit  # pipe.to(dtype) casts as loading in that dtype does
    assert moved_dit.patch_embedding.weight.dtype == torch.bfloat16
    assert next(moved_dit.time_embedding.parameters()).dtype == torch.float32
    want = _generate(shipped["root"], "--seed", "3", "--prompt", "a ball", "--device", "cpu", "--dtype", "bf16") / 255
    clip = pipe(image=shipped["image"], tracks=shipped["tracks"], prompt="a ball", generator=3).frames[0]
    assert np.abs(clip - want).max() <= TOL


# -- tiny real flavors: a shrunk Wan release (umT5, Wan VAE, CLIP) and a random student on it ----------------

REAL = {  # flavor, release parts, codec, layout, frame size
    "wan2.1": ("wan2.1-fun-1.3b-control", ("vae", "t5", "clip"), "wan2.1-vae", "wan_i2v", (64, 112)),
    "wan2.2": ("wan2.2-ti2v-5b", ("vae22", "t5"), "wan2.2-vae", "ti2v", (64, 128)),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(REAL))
def test_a_tiny_real_flavor_student_loads_and_streams_two_chunks(tmp_path, name):
    from release_helpers import TINY_UMT5, write_release_folder

    from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network

    flavor, parts, codec, layout, (h, w) = REAL[name]
    dims = dict(dim=64, ffn_dim=128, num_heads=2, num_layers=2)
    release = write_release_folder(tmp_path / "release", flavor=flavor, parts=parts, **dims)
    cfg = dict(flavor=flavor, layout=layout, track_channels=8, text_encoder="umt5", text_encoder_path=str(release))
    cfg.update(overrides=dims, image_encoder_path=str(release) if "clip" in parts else None)
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(**cfg), text_encoder_dim=TINY_UMT5["d_model"], device="cpu")
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
    causal = dict(chunk_frames=3, sink_chunks=1, window_chunks=1, first_chunk_frames=1, steps=2, shift=3.0)
    student = save_network(
        net.state_dict(),
        tmp_path / "student",
        model_cfg=cfg,
        text_encoder_dim=TINY_UMT5["d_model"],
        ema=False,
        conventions={"height": h, "width": w, "num_frames": 25, "causal": causal},
    )
    folder = _export(student, tmp_path / "pipe", codec=release, codec_name=codec)
    image, tracks = _inputs(tmp_path, h, w, frames=13, tracks=5)
    want = _generate(tmp_path, "--seed", "1", "--prompt", "a cat", student=student, codec=release, codec_name=codec)
    shutil.rmtree(release)  # the folder holds every part: nothing is read from the release any more
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)
    assert (pipe.image_encoder is not None) == ("clip" in parts)
    got = _stream(pipe, image, tracks, 2, seed=1, prompt="a cat")
    assert got.shape == want.shape == (13, h, w, 3)
    assert np.abs(got - want / 255).max() <= TOL
