"""Device and dtype on every user path, on the CPU: each command takes --device / --dtype (Hydra:
generate.device / generate.dtype), loads its export through ``Network.for_inference`` in that dtype, refuses CUDA
where there is none with a one-line error naming the flag, and keeps every input on the network's
device (the ``python -m trackstream.eval generate.device=cuda`` crash, reproduced with the ``meta`` device standing
in for a GPU). A tiny student streamed in bf16 stays close to fp32; DragStream optimises fp32 latents
through a bf16 DiT."""

import json

import numpy as np
import pytest
import torch

import trackstream.models.conditioner as conditioner_mod
from trackstream.models.codecs import build_codec
from trackstream.models.motion_wan import ModelConfig, build_motion_wan, save_network
from trackstream.models.network import Network

CFG = {
    "flavor": "tiny",
    "layout": "wan_i2v",
    "track_channels": 8,
    "text_encoder": "minilm",
    "overrides": {"num_heads": 2, "num_layers": 1},
}
CAUSAL = {"chunk_frames": 3, "sink_chunks": 1, "window_chunks": 1, "first_chunk_frames": 1, "steps": 2, "shift": 3.0}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal of CUDA where there is none")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """A random tiny student (64x64, 25 frames), the same weights as a teacher export, a codec (each export
    records it: no run around them), an image and 25 frames of 5 tracks."""
    import cv2

    root = tmp_path_factory.mktemp("device_paths")
    torch.save(build_codec("tiny-ae", width=16, patch=4).checkpoint_dict(), root / "codec.pt")
    codec = {"name": "tiny-ae", "checkpoint": root / "codec.pt"}
    torch.manual_seed(0)
    net = build_motion_wan(ModelConfig(**CFG), text_encoder_dim=384)
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
    base = {"height": 64, "width": 64, "num_frames": 25}
    student = save_network(
        net.state_dict(),
        root / "student",
        model_cfg=CFG,
        text_encoder_dim=384,
        ema=False,
        conventions={**base, "causal": CAUSAL},
        codec=codec,
    )
    teacher = save_network(
        net.state_dict(),
        root / "teacher",
        model_cfg=CFG,
        text_encoder_dim=384,
        ema=False,
        conventions={**base, "schedule_shift": 3.0},
        codec=codec,
    )
    rng = np.random.default_rng(0)
    cv2.imwrite(str(root / "image.png"), rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    np.save(root / "tracks.npy", (rng.random((25, 5, 2)) * 63).astype(np.float32))
    return {"root": root, "student": student, "teacher": teacher, "codec": root / "codec.pt"}


@pytest.fixture
def loads(monkeypatch):
    """Every Network.for_inference call's device / dtype and the dtype of the DiT it handed out."""
    calls, real = [], Network.for_inference

    def spy(self, **kwargs):
        net, codec, cond = real(self, **kwargs)
        calls.append(
            {
                "device": kwargs.get("device"),
                "dtype": kwargs.get("dtype"),
                "dit": net.dit.blocks[0].self_attn.q.weight.dtype,
                "on": next(net.parameters()).device,
                "text_encoder": next(cond.text_encoder.parameters()).dtype,
            }
        )
        return net, codec, cond

    monkeypatch.setattr(Network, "for_inference", spy)
    return calls


def _samples(n=1):
    from trackstream.eval.sample import Sample

    rng = np.random.default_rng(1)
    return [
        Sample(
            id=f"s{i}",
            frames=rng.integers(0, 256, (25, 64, 64, 3), dtype=np.uint8),
            tracks=(rng.random((25, 4, 2)) * 63).astype(np.float32),
            visibility=np.ones((25, 4), bool),
            caption="a red square",
        )
        for i in range(n)
    ]


@pytest.mark.slow
def test_stream_generate_runs_end_to_end_in_bf16(export, loads, tmp_path, capsys):
    from trackstream.stream.generate import main

    out = tmp_path / "video.mp4"
    assert (
        main(
            [
                "--student",
                str(export["student"]),
                "--codec",
                str(export["codec"]),
                "--image",
                str(export["root"] / "image.png"),
                "--tracks",
                str(export["root"] / "tracks.npy"),
                "--prompt",
                "a cat",
                "--out",
                str(out),
                "--device",
                "cpu",
                "--dtype",
                "bf16",
                "--chunks",
                "5",
            ]
        )
        == 0
    )
    assert out.stat().st_size > 0
    (call,) = loads
    assert call["device"] == torch.device("cpu") and call["dtype"] == torch.bfloat16 and call["dit"] == torch.bfloat16
    assert call["text_encoder"] == torch.bfloat16  # the encoders run where and as the network does
    text = capsys.readouterr().out
    assert "cpu, bfloat16" in text and "ms (synchronised)" in text
    assert "frames/s" in text and "chunks 3-4: each chunk layout" in text  # c3s1w1: 3 layouts, chunks 3-4 timed


def test_offloaded_encoders_stay_on_the_cpu_in_fp32(export):
    _, _, cond = Network.open(export["student"]).for_inference(device="cpu", dtype="bf16", offload_encoders=True)
    p = next(cond.text_encoder.parameters())
    assert (p.device.type, p.dtype) == ("cpu", torch.float32) and cond.null_text.dtype == torch.float32


@pytest.mark.slow
def test_bf16_stream_is_finite_and_close_to_fp32(export):
    """Tolerance: frames in [-1, 1] within 0.05 max / 0.01 mean of fp32 (measured 0.007 / 0.0007)."""
    from trackstream.models.tracks import sample_track_ids
    from trackstream.stream.chunk_io import collect, tracks_from_array
    from trackstream.stream.engine import StreamingGenerator

    frames = {}
    tracks = torch.from_numpy(np.load(export["root"] / "tracks.npy"))[None]
    for dtype in (torch.float32, torch.bfloat16):
        net, codec, cond = Network.open(export["student"]).for_inference(device="cpu", dtype=dtype)
        engine = StreamingGenerator(
            net, codec, config=net.conventions.stream_config("student"), image_features_fn=cond.image_features
        )
        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
        text, lens = cond.text(["a cat"])
        ids = sample_track_ids(1, 5, generator=torch.Generator().manual_seed(0))
        state = engine.start(image, text, lens, track_ids=ids)
        source = tracks_from_array(tracks, torch.ones(tracks.shape[:3], dtype=torch.bool))
        frames[dtype], _, _ = collect(engine.stream(state, source, num_chunks=3))
    a, b = frames[torch.float32], frames[torch.bfloat16]
    assert b.dtype == torch.float32 and torch.isfinite(b).all() and a.shape == b.shape
    diff = (a - b).abs()
    assert diff.max() < 0.05 and diff.mean() < 0.01, (float(diff.max()), float(diff.mean()))
    assert diff.max() > 0  # bf16 did run


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["student", "teacher"])
def test_eval_generation_honours_device_and_dtype(export, loads, kind):
    from trackstream.diffusion.samplers import SamplerConfig
    from trackstream.eval.generate import GenerateConfig, generate_videos

    cfg = GenerateConfig(device="cpu", dtype="bf16", sampler=SamplerConfig(steps=2))  # the codec its export records
    videos = generate_videos(export[kind], _samples(), mode="with_tracks", cfg=cfg)
    assert videos["s0"].shape == (25, 64, 64, 3) and videos["s0"].dtype == np.uint8
    (call,) = loads
    assert call["device"] == torch.device("cpu") and call["dtype"] == torch.bfloat16 and call["dit"] == torch.bfloat16


@pytest.mark.slow
def test_eval_teacher_videos_with_and_without_tracks_start_from_the_same_noise(export, monkeypatch):
    """The eval command's teacher draws a clip's track ids in both modes, so its with- and without-tracks videos
    start from the same noise (as make run's evaluation and the student path do): their EPE ratio is the tracks'."""
    import trackstream.diffusion.samplers as samplers
    from trackstream.diffusion.samplers import SamplerConfig
    from trackstream.eval.generate import GenerateConfig, generate_videos

    noises = {}

    def record(net, noise, cond, **kw):
        noises[mode] = noise.clone()
        return noise

    monkeypatch.setattr(samplers, "sample", record)
    cfg = GenerateConfig(device="cpu", dtype="fp32", sampler=SamplerConfig(steps=2))
    for mode in ("with_tracks", "without_tracks"):
        generate_videos(export["teacher"], _samples(), mode=mode, cfg=cfg)
    assert torch.equal(noises["with_tracks"], noises["without_tracks"])


def test_eval_config_takes_device_and_dtype_and_names_a_bad_one():
    from omegaconf import OmegaConf

    from trackstream.eval.command import EvalCommandConfig

    conf = OmegaConf.load("conf/eval.yaml")
    assert conf.generate.device == "auto" and conf.generate.dtype == "auto"
    gen = EvalCommandConfig(run="x", generate={"device": "cpu", "dtype": "bf16"}).generate
    assert gen.precision() == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(ValueError, match="generate.dtype='fp4'"):
        EvalCommandConfig(run="x", generate={"dtype": "fp4"})
    with pytest.raises(ValueError, match="generate.device='gpu'"):
        EvalCommandConfig(run="x", generate={"device": "gpu"})


@NO_CUDA
def test_eval_refuses_cuda_without_a_gpu_naming_the_field():
    from trackstream.eval.generate import GenerateConfig

    with pytest.raises(ValueError, match="generate.device='cuda' but no CUDA device") as err:
        GenerateConfig(device="cuda")
    assert "\n" not in str(err.value)


@NO_CUDA
@pytest.mark.parametrize(
    "module",
    [
        "trackstream.stream.generate",
        "trackstream.stream.drag.__main__",
        "trackstream.eval.drag_bench",
        "trackstream.bench.drag",
        "trackstream.bench.train",
        "trackstream.bench.distill",
    ],
)
def test_clis_refuse_cuda_without_a_gpu_naming_the_flag(module, capsys):
    import importlib

    main = importlib.import_module(module).main
    required = {
        "trackstream.stream.generate": [
            "--student",
            "s",
            "--codec",
            "c",
            "--image",
            "i",
            "--tracks",
            "t",
            "--out",
            "o",
        ],
        "trackstream.stream.drag.__main__": [
            "--student",
            "s",
            "--codec",
            "c",
            "--image",
            "i",
            "--instruction",
            "j",
            "--out",
            "o",
        ],
        "trackstream.eval.drag_bench": ["--student", "s", "--codec", "c", "--out", "o"],
        "trackstream.bench.drag": [],
        "trackstream.bench.train": [],
        "trackstream.bench.distill": [],
    }[module]
    with pytest.raises(SystemExit) as stop:
        main([*required, "--device", "cuda"])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--device='cuda' but no CUDA device is available" in err
    with pytest.raises(SystemExit):
        main([*required, "--dtype", "fp4"])
    assert "--dtype='fp4'" in capsys.readouterr().err


@pytest.mark.slow
def test_drag_cli_optimises_fp32_latents_through_a_bf16_dit(export, loads, tmp_path, monkeypatch):
    """The latent optimisation runs through the bf16 DiT: gradients reach the fp32 latent, which moves."""
    import trackstream.stream.drag.editor as editor_mod
    from trackstream.eval.drag_scenes import make_scenes, write_scene
    from trackstream.stream.drag.__main__ import main

    seen, real = [], editor_mod.optimise_latent

    def spy(network, cache, z, *args, **kwargs):
        out, log = real(network, cache, z, *args, **kwargs)
        seen.append((z, out, log))
        return out, log

    monkeypatch.setattr(editor_mod, "optimise_latent", spy)
    scene = next(s for s in make_scenes(8, seed=2) if s.kind == "translate" and s.instruction.mode == "animate")
    folder = write_scene(scene, tmp_path / "scene")
    assert (
        main(
            [
                "--student",
                str(export["student"]),
                "--codec",
                str(export["codec"]),
                "--image",
                str(folder / "image.png"),
                "--instruction",
                str(folder / "drag_trajectory.json"),
                "--method",
                "latent",  # the optimisation under test; the default on this track-conditioned student is tracks
                "--iterations",
                "1",
                "--after",
                "0",
                "--out",
                str(tmp_path / "out"),
                "--device",
                "cpu",
                "--dtype",
                "bf16",
            ]
        )
        == 0
    )
    assert loads[0]["dit"] == torch.bfloat16
    assert seen
    for z, out, log in seen:
        assert out.dtype == torch.float32 and torch.isfinite(out).all()
        assert log.forwards >= 1 and all(np.isfinite(f) and np.isfinite(k) for f, k in log.losses)
        assert not torch.equal(out, z.float())  # the gradient through the bf16 DiT moved the latent
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["method"] == "latent"


@pytest.mark.slow
def test_drag_bench_and_bench_drag_honour_device_and_dtype(export, loads, monkeypatch, tmp_path):
    import trackstream.eval.drag_bench as drag_bench
    from trackstream.bench.drag import main as bench

    class Loaded(Exception):
        pass

    def stop(*args, **kwargs):  # the benchmark itself is covered elsewhere: only how it loads
        raise Loaded

    monkeypatch.setattr(drag_bench, "run_benchmark", stop)
    with pytest.raises(Loaded):
        drag_bench.main(
            [
                "--student",
                str(export["student"]),
                "--codec",
                str(export["codec"]),
                "--scenes",
                "1",
                "--out",
                str(tmp_path / "bench"),
                "--device",
                "cpu",
                "--dtype",
                "bf16",
            ]
        )
    assert loads[0]["dtype"] == torch.bfloat16 and loads[0]["dit"] == torch.bfloat16
    result = bench(
        [
            "--device",
            "cpu",
            "--dtype",
            "bf16",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--iterations",
            "1",
            "--keep",
            "latent",
            "--out",
            str(tmp_path / "bench_drag.json"),
        ]
    )
    assert result["dtype"] == "bfloat16" and result["device"].startswith("cpu")


# -- the eval crash (python -m trackstream.eval generate.device=cuda), on the CPU ------------------------------
# The GPU is played by the meta device: the export is loaded, then moved there. An input left on the CPU
# (the old engine's default device, the text encoder's output) would meet the network on another device.


class _Stop(Exception):
    pass


def _on_meta(monkeypatch):
    real = Network.for_inference

    def load(self, **kwargs):
        net, codec, cond = real(self, **kwargs)
        meta = torch.device("meta")
        cond = conditioner_mod.Conditioner.for_network(
            ModelConfig(**CFG), codec=codec.to(meta), text_encoder=cond.text_encoder, device=meta
        )
        return net.to(meta), cond.codec, cond

    monkeypatch.setattr(Network, "for_inference", load)


def _tensors(obj):
    if torch.is_tensor(obj):
        yield obj
    elif hasattr(obj, "__dataclass_fields__"):
        for name in obj.__dataclass_fields__:
            yield from _tensors(getattr(obj, name))


def test_eval_student_engine_follows_the_network_device(export, monkeypatch):
    from trackstream.eval.generate import GenerateConfig, generate_videos
    from trackstream.stream.engine import StreamingGenerator

    _on_meta(monkeypatch)
    seen = {}

    def start(self, image, text, text_lengths, **kwargs):
        seen["engine"] = self.device
        raise _Stop

    monkeypatch.setattr(StreamingGenerator, "start", start)
    with pytest.raises(_Stop):
        cfg = GenerateConfig(codec={"checkpoint": str(export["codec"])}, device="cpu")
        generate_videos(export["student"], _samples(), mode="with_tracks", cfg=cfg)
    assert seen["engine"] == torch.device("meta")  # the old engine: its own default, the CPU


def test_eval_teacher_inputs_follow_the_network_device(export, monkeypatch):
    import trackstream.diffusion.samplers as samplers
    from trackstream.eval.generate import GenerateConfig, generate_videos

    _on_meta(monkeypatch)
    seen = {}

    def sample(net, noise, cond, **kwargs):
        seen.update(net=next(net.parameters()).device, inputs={t.device for t in [noise, *_tensors(cond)]})
        raise _Stop

    monkeypatch.setattr(samplers, "sample", sample)
    with pytest.raises(_Stop):
        cfg = GenerateConfig(codec={"checkpoint": str(export["codec"])}, device="cpu")
        generate_videos(export["teacher"], _samples(), mode="with_tracks", cfg=cfg)
    assert seen["net"] == torch.device("meta") and seen["inputs"] == {torch.device("meta")}, seen


# -- distill.pairs: the teacher samples in ode_pairs.sample_dtype on the run's device -----------------


def test_ode_pairs_sample_in_the_chosen_dtype_and_record_it(tmp_path):
    from tests.distill_helpers import H, W, make_conditions, null_text, tiny_codec, tiny_network
    from trackstream.distill.ode_pairs import ODEPairsConfig, generate_ode_pairs
    from trackstream.distill.pair_shards import load_ode_pairs

    with pytest.raises(ValueError, match="ode_pairs.sample_dtype='fp4'"):
        ODEPairsConfig(sample_dtype="fp4")
    assert ODEPairsConfig().sample_dtype == "auto"  # bf16 on CUDA, fp32 on the CPU
    runs = {}
    for name in ("auto", "bfloat16"):
        teacher = tiny_network(0).eval()
        cfg = ODEPairsConfig(num_pairs=2, teacher_steps=3, batch_size=2, shard_size=2, sample_dtype=name)
        generate_ode_pairs(
            teacher,
            conditions=make_conditions(tiny_codec()),
            cfg=cfg,
            student_steps=3,
            shift=3.0,
            null_text=null_text()[0],
            null_text_lengths=null_text()[1],
            height=H,
            width=W,
            embed_dim=teacher.track_embed_dim,
            out_dir=tmp_path / name,
            device=torch.device("cpu"),
        )
        runs[name] = load_ode_pairs(tmp_path / name, student_steps=3, shift=3.0)
        assert teacher.dit.blocks[0].self_attn.q.weight.dtype == (torch.float32 if name == "auto" else torch.bfloat16)
    assert runs["auto"]["index"]["sample_dtype"] == "float32"
    assert runs["bfloat16"]["index"]["sample_dtype"] == "bfloat16"
    assert runs["bfloat16"]["index"]["device"] == "cpu"
    a, b = runs["auto"]["trajectory"], runs["bfloat16"]["trajectory"]
    assert b.dtype == torch.float32 and torch.isfinite(b).all()  # stored as ode_pairs.dtype (float32)
    assert (a - b).abs().max() > 0  # the bf16 teacher did run
