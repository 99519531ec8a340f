"""The realtime streaming benchmark and the distillation step benchmarks run end to end on CPU (their
figures are not asserted: speed is measured by running them on the target GPU, docs/performance.md).
Checked here: the JSON's structure, finite positive figures, the per-phase breakdown adding up to the
chunk's wall time, a mode the engine does not offer degrading to one line, the analytic FLOPs of a
streaming pass against torch's FLOP counter, and the real setups against the recipes they stand for."""

import dataclasses
import json
import math

import pytest
import torch
from test_bench_distill_stages import SMALL_DIT, run_distill_line
from test_docs_run import documented_line, run_documented

from trackstream.bench.realtime import REAL_SETUPS, SETUPS, LiveTracks
from trackstream.bench.realtime import main as bench_realtime

PERF = "docs/performance.md"
# the smallest request that still has a chunk-5+ window: chunks 5 and 6 timed, 2 chunks broken down
FAST = ["--first", "5", "--last", "6", "--breakdown-chunks", "2", "--matmul-size", "128"]
ONE = ["--first", "1", "--last", "1", "--breakdown-chunks", "1", "--matmul-size", "128"]  # one chunk timed


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_realtime_bench_tiny_smoke(tmp_path):
    out = tmp_path / "realtime.json"
    result = bench_realtime(["--setup", "tiny", "--mode", "reference,eager", *FAST, "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(result))
    meta = result["meta"]
    assert {"device", "device_name", "dtype", "torch", "date", "commit", "peak_memory"} <= set(meta)
    assert meta["device"] == "cpu" and meta["peak_memory"] == "not measured on CPU"
    assert _positive(result["matmul"]["tflops"])
    rows = {r["mode"]: r for r in result["results"]}
    assert set(rows) == {"reference", "eager"}
    for mode, r in rows.items():
        assert "error" not in r and "unavailable" not in r, (mode, r)
        assert r["setup"] == "tiny" and r["stream"] == "c3s1w1k3" and r["window"] == [5, 6]
        assert r["window_frames"] == 2 * 12  # two chunks of 3 latents = 12 pixel frames each
        for key in ("frames_per_s", "window_s", "first_frames_s", "first_output_s", "window_tflops"):
            assert _positive(r[key]), (mode, key, r[key])
        # the given chunk 0 is the image; the first generated frames come with chunk 1, after it
        assert r["first_output_s"] <= r["first_frames_s"]
        assert r["peak_memory_bytes"] is None
        b = r["breakdown"]
        assert "unavailable" not in b, b
        assert b["chunks"] == 2
        assert all(_positive(b[k]) for k in ("condition", "dit", "decode", "track_source", "chunk_s", "wall_s"))
        assert b["host"] >= 0
        # condition + DiT + decode + host is the engine's chunk time, and with the track source the wall
        # time of the same chunks measured by the bench (a phase lost or counted twice would show here)
        assert b["sum_over_chunk"] == pytest.approx(1.0, abs=0.05)
        assert b["sum_over_wall"] == pytest.approx(1.0, abs=0.15)
        assert _positive(b["dit_tflops"]) and _positive(r["dit_over_matmul"])


@pytest.mark.slow
def test_the_documented_cpu_sizes_run_as_written(tmp_path):
    """docs/bench/cpu/realtime_small_sizes.md's two commands as written, shortened by options after their own to one
    timed chunk (the small student also cut to 2 x 128): each writes its setup's eager row, with the options it
    ran with recorded."""
    page = "docs/bench/cpu/realtime_small_sizes.md"
    for setup, more in (("tiny-student", ()), ("small", ("--layers", "2", "--dim", "128"))):
        run_documented(documented_line(page, f"--setup {setup}"), tmp_path, args=(*ONE, *more))
        result = json.loads((tmp_path / "outputs" / "bench_realtime.json").read_text())
        (r,) = result["results"]
        assert (r["setup"], r["mode"], r["window"]) == (setup, "eager", [1, 1]) and "error" not in r, r
        assert (
            _positive(r["frames_per_s"]) and result["meta"]["device"] == "cpu" and "--tracks" in result["meta"]["argv"]
        )
        assert result["meta"]["argv"][-len(ONE + list(more)) :] == ONE + list(more)  # what ran, env options too


@pytest.mark.slow
def test_realtime_bench_rehearses_a_real_setup_cut_down(tmp_path):
    """The 1.3B student's real wiring (Fun-Control channels, CLIP tokens, UMT5 width, a SAMPLED first
    chunk, TAEHV) with one block at 64x64, one chunk per request (a 1536-wide block is slow on 2 cores)."""
    result = bench_realtime(
        [
            "--setup",
            "wan1.3b-480p-taehv",
            "--mode",
            "reference",
            "--layers",
            "1",
            "--height",
            "64",
            "--width",
            "64",
            "--tracks",
            "50",
            "--first",
            "1",
            "--last",
            "1",
            "--breakdown-chunks",
            "1",
            "--matmul-size",
            "128",
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    (r,) = result["results"]
    assert "error" not in r, r
    assert r["stream"] == "c3s1w1k3f3" and r["window_frames"] == 9  # chunk 0: 3 latents = 1 + 4 x 2 frames
    assert _positive(r["frames_per_s"]) and r["first_frames_s"] == r["first_output_s"]  # chunk 0 is sampled


class _OldEngine:
    """An engine with no fast / compile / timings keywords (as before the static-buffer step)."""

    def __init__(self, network, codec, *, config, device=None, image_features_fn=None):
        raise AssertionError("never built: the bench must see the missing keywords first")


@pytest.mark.slow
def test_a_mode_the_engine_lacks_is_one_table_line(tmp_path, monkeypatch, capsys):
    import trackstream.bench.realtime as br

    monkeypatch.setattr(br, "StreamingGenerator", _OldEngine)
    result = bench_realtime(["--setup", "tiny", "--mode", "eager,compiled", *FAST, "--out", str(tmp_path / "r.json")])
    rows = result["results"]
    assert [r["mode"] for r in rows] == ["eager", "compiled"]
    assert all("has no fast=" in r["unavailable"] for r in rows)
    printed = capsys.readouterr().out
    assert "| tiny | compiled | unavailable: StreamingGenerator has no fast=" in printed


@pytest.mark.slow
def test_a_mode_the_engine_refuses_is_one_table_line(tmp_path, monkeypatch):
    import trackstream.bench.realtime as br

    class Refusing:
        def __init__(self, network, codec, *, config, fast=True, compile=False, overlap_decode=False, timings=False):
            raise ValueError("compile=True: the compiled step is not built yet\nmore detail")

    monkeypatch.setattr(br, "StreamingGenerator", Refusing)
    result = bench_realtime(["--setup", "tiny", "--mode", "compiled", *FAST, "--out", str(tmp_path / "r.json")])
    (row,) = result["results"]
    assert row["unavailable"] == "compile=True: the compiled step is not built yet"


def test_pass_flops_agree_with_torchs_flop_counter():
    """The analytic FLOPs of one streaming pass (image-branch DiT, sampled first chunk, steady-state cache)
    against torch's counter of the same pass (math attention, so the attention products are counted)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    from trackstream.bench.throughput import chunk_flops
    from trackstream.models.causal import new_cache, stream_step
    from trackstream.models.flavors import build_wan
    from trackstream.models.streaming import CausalConfig

    model = build_wan("tiny-i2v").eval()
    cfg = CausalConfig(3, 1, 1, first_chunk_frames=None)
    with torch.no_grad():
        cache = new_cache(model, cfg, torch.randn(1, 32, 64), torch.randn(1, 257, 1280))
        for i in range(3):  # sink, then the window rolls
            _, kv = stream_step(model, cache, torch.randn(1, 36, 3, 16, 16), torch.zeros(1))
            cache = cache.append(kv)
        with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            stream_step(model, cache, torch.randn(1, 36, 3, 16, 16), torch.zeros(1))
    analytic = chunk_flops(model, cfg, 3, tokens_per_frame=64, passes=1)
    # the counter also sees the per-frame time embedding, which the analytic count leaves out (< 1 %)
    assert analytic == pytest.approx(counter.get_total_flops(), rel=0.01)


def test_live_tracks_cover_each_chunks_frames_inside_the_frame():
    source = LiveTracks(1000, height=48, width=80, seed=0)
    tracks, vis = source(3, (9, 21))
    assert tracks.shape == (1, 12, 1000, 2) and vis.shape == (1, 12, 1000) and bool(vis.all())
    assert float(tracks[..., 0].min()) >= 0 and float(tracks[..., 0].max()) <= 79
    assert float(tracks[..., 1].min()) >= 0 and float(tracks[..., 1].max()) <= 47
    again, _ = source(3, (9, 21))
    assert torch.equal(tracks, again)  # a function of the frame index: a replayed chunk sees the same tracks


@pytest.mark.slow
def test_the_track_v0_setup_is_what_a_track_v0_bundle_describes(tmp_path):
    """Architecture conventions and stream of the random-weight Track-v0 setup equal what a bundle written in
    FastVideo's layout (with Track-v0's training_config.yaml) reads as; only the DiT's sizes are shrunk there."""
    from trackstream.models.motion_wan import Conventions, read_network_json
    from trackstream.pipeline.rehearsal_wantrack import write_wantrack_bundle

    setup = SETUPS["trackv0-480p-taehv"]
    meta = read_network_json(write_wantrack_bundle(tmp_path / "Track-v0", role="student"))
    for key in ("flavor", "layout", "track_channels", "track_embed_dim", "track_convention", "track_bias"):
        assert getattr(setup.model, key) == meta["model"][key], key
    conv = Conventions.from_dict(meta["conventions"])
    assert setup.stream_config == conv.streaming and setup.stream_config.name == "c3s1w2frk4f1"
    assert (setup.height, setup.width) == (conv.height, conv.width) == (480, 832)
    assert setup.stream_config.sigmas()[:4].tolist() == pytest.approx([1.0, 0.94770, 0.85836, 0.67105], abs=5e-6)


@pytest.mark.slow
def test_realtime_bench_streams_a_bundle_with_its_own_weights(tmp_path):
    """--network: a FastVideo bundle streamed as it records (its frame window, sampled one-latent chunk 0, four
    steps + the commit), each mode a row; a cut it cannot take is refused."""
    from trackstream.pipeline.rehearsal_wantrack import write_wantrack_bundle

    write_wantrack_bundle(tmp_path / "Track-v0", role="student", size=(64, 112))
    line = documented_line(PERF, "python -m trackstream.bench.realtime --network Track-v0")
    run_documented(line, tmp_path, args=("--mode", "reference,eager", "--tracks", "8", "--device", "cpu", *ONE))
    rows = json.loads((tmp_path / "outputs" / "realtime_trackv0_weights.json").read_text())["results"]
    assert [r["mode"] for r in rows] == ["reference", "eager"]
    for r in rows:
        assert "error" not in r and r["stream"] == "c3s1w2frk4f1" and _positive(r["frames_per_s"]), r
    with pytest.raises(SystemExit):
        bench_realtime(["--device", "cpu", "--network", str(tmp_path / "Track-v0"), "--layers", "1"])


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in REAL_SETUPS if SETUPS[n].recipe is not None])
def test_real_setups_are_the_recipes_students(name):
    """Network, size, chunking, steps and shift of each real setup are its DMD recipe's; the codec works in
    the recipe codec's latent space (the tiny decoder or the VAE of the same family)."""
    from trackstream.bench.distill import compose
    from trackstream.models.codec_names import codec_latent_channels, codec_spatial_factor

    setup = SETUPS[name]
    typed = compose(setup.recipe)
    for key in ("flavor", "layout", "track_channels", "track_embed_dim", "text_encoder", "overrides"):
        assert getattr(setup.model, key) == getattr(typed.model, key), key
    assert (setup.height, setup.width) == (typed.data.height, typed.data.width)  # read from the recipe
    causal = typed.stage.causal
    assert (causal.chunk_frames, causal.sink_chunks, causal.window_chunks) == (3, 1, 1) and setup.causal == causal
    assert (setup.steps, setup.shift) == (typed.schedule.student_steps, typed.schedule.shift)
    assert dataclasses.replace(setup, size=(64, 128)).width == 128  # --height / --width replace the size only
    recipe_codec = (typed.codec.name, dict(typed.codec.options))
    assert codec_latent_channels(setup.codec, setup.codec_options) == codec_latent_channels(*recipe_codec)
    assert codec_spatial_factor(setup.codec, setup.codec_options) == codec_spatial_factor(*recipe_codec)


@pytest.mark.slow
def test_distill_step_bench_tiny_and_a_cut_down_5b_dmd(tmp_path):
    """docs/performance.md's bare command (on CPU: tiny_dmd and tiny_ode_init as configured, one sample) and its 5B
    line (DMD: ti2v, given first chunk, 121 frames, clean first frame; ODE init) with a 64-wide, one-block DiT at
    64x128."""
    tiny = run_distill_line(tmp_path)
    meta = json.loads((tmp_path / "outputs" / "bench_distill.json").read_text())["meta"]
    assert {"device", "torch", "date", "commit", "argv", "overrides"} <= set(meta) and meta["argv"][:2] == [
        "--batch",
        "1",
    ]
    real = run_distill_line(tmp_path, "--configs dmd_wan2.2_5b_704p,ode_init_wan2.2_5b_704p", overrides=SMALL_DIT)
    assert [r["config"] for r in real] == ["dmd_wan2.2_5b_704p", "ode_init_wan2.2_5b_704p"]
    assert all((r["frames"], r["latent_frames"]) == (121, 31) and "error" not in r for r in real), real
    dmd, ode, big = [*tiny, real[0]]
    assert (dmd["config"], dmd["stage"]) == ("tiny_dmd", "dmd")
    assert (ode["config"], ode["stage"]) == ("tiny_ode_init", "ode_init")
    for r in (dmd, big):
        assert r["update_ratio"] == 5 and _positive(r["prepare_batch_s"])
        for phase in ("critic", "generator"):
            assert _positive(r[phase]["seconds"]) and r[phase]["calls"] == 1 and r[phase]["peak_memory_bytes"] is None
        assert r["loop_step_s"] == pytest.approx(r["critic"]["seconds"] + r["generator"]["seconds"] / 5)
    assert _positive(ode["generator"]["seconds"]) and "critic" not in ode
    assert (big["frames"], big["latent_frames"], big["causal"]) == (121, 31, "c3s1w1f1")
    assert big["tokens_per_sample"] == 31 * 2 * 4  # 64x128 pixels / 16 -> 4x8 latents -> 2x4 tokens per frame


@pytest.mark.slow
def test_cpu_setups_are_the_students_they_stand_for():
    """``tiny-student`` is the shipped student (its release config), ``small`` the small world model's
    network (small_teacher, which the chain's students inherit) streamed as small_dmd streams it: a size
    changed in conf/model/small.yaml must be changed in the bench too."""
    import yaml

    from trackstream.bench.distill import compose

    shipped = yaml.safe_load(open("assets/tiny-student/config.yaml"))
    setup = SETUPS["tiny-student"]
    for key in ("flavor", "layout", "track_channels", "track_embed_dim", "text_encoder", "overrides"):
        assert getattr(setup.model, key) == shipped["model"][key], key
    assert setup.codec == shipped["codec"]["name"] and setup.codec_options == shipped["codec"]["options"]
    small, teacher = SETUPS["small"], compose("small_teacher")
    for key in ("flavor", "layout", "track_channels", "track_embed_dim", "text_encoder", "overrides"):
        assert getattr(small.model, key) == getattr(teacher.model, key), key
    assert (small.codec, small.codec_options) == (teacher.codec.name, dict(teacher.codec.options))
    dmd = compose("small_dmd")
    assert (small.height, small.width) == (teacher.data.height, teacher.data.width)
    assert (small.steps, small.shift) == (dmd.schedule.student_steps, dmd.schedule.shift)
    assert small.causal == dmd.stage.causal
