"""The step benchmarks of stage=teacher_forcing, stage=consistency and stage=tiny_decoder
(trackstream/bench/distill_stages.py, run by ``trackstream bench-distill``) end to end on CPU: the tiny recipes as
configured (one sample), and the real recipes cut down (narrow one-block DiT, small frames; frame count and
chunking as the recipe's), which the GPU call runs at full size. Each is docs/performance.md's command as written,
cut down by options after its own (one update, no warm-up, one sample, ``--override`` sizes)."""

from __future__ import annotations

import json
import math

import pytest
from docs_lines import RECORDS_1_3B
from test_docs_run import documented_line, run_documented

from trackstream.bench.distill import main as bench_distill


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


ONE_UPDATE = ("--batch", "1", "--steps", "1", "--warmup", "0")


def _run(tmp_path, configs: str, overrides=()) -> list[dict]:
    argv = ["--configs", configs, *ONE_UPDATE, "--out", str(tmp_path / "d.json")]
    return bench_distill([*argv, *[f"--override={o}" for o in overrides]])["results"]


# the real recipes cut down: a 64-wide, one-block DiT at 64x128 (frame counts and chunking as the recipe's)
SMALL_DIT = (
    "+model.overrides.dim=64",
    "+model.overrides.ffn_dim=128",
    "+model.overrides.num_heads=2",
    "+model.overrides.num_layers=1",
    "data.height=64",
    "data.width=128",
)


def run_distill_line(cwd, *words: str, overrides=(), line: tuple[str, str] | None = None) -> list[dict]:
    """docs/performance.md's ``bench.distill`` command holding ``words`` (none: the bare command), or ``line``, run
    as written in ``cwd``, cut down to one update of one sample and the ``overrides`` (options after its own): the
    rows of the JSON it writes."""
    bare = ("docs/performance.md", "python -m trackstream.bench.distill")
    line = line or (documented_line(*bare, *words) if words else bare)
    run_documented(line, cwd, args=(*ONE_UPDATE, *[f"--override={o}" for o in overrides]))
    return json.loads((cwd / "outputs" / "bench_distill.json").read_text())["results"]


@pytest.mark.slow
def test_the_1_3b_distillation_records_rerun_cut_down_on_cpu(tmp_path):
    assert len(RECORDS_1_3B) == 5
    for line in RECORDS_1_3B:
        rows = run_distill_line(tmp_path, line=line, overrides=SMALL_DIT)
        assert [r["config"] for r in rows] == line[1].split("--configs ")[1].split()[0].split(","), line
        for r in rows:
            assert (r["frames"], r["latent_frames"], r["causal"]) == (81, 21, "c3s1w1") and "error" not in r, r
            _one_update(r, "generator")


def _one_update(r: dict, phase: str) -> None:
    p = r[phase]
    assert _positive(p["seconds"]) and p["calls"] == 1 and p["peak_memory_bytes"] is None  # CPU: not measured


@pytest.mark.slow
def test_tiny_teacher_forcing_consistency_and_decoder(tmp_path):
    tf, cd, td = run_distill_line(tmp_path, "--configs tiny_teacher_forcing,tiny_consistency,tiny_decoder")
    assert [(r["config"], r["stage"]) for r in (tf, cd, td)] == [
        ("tiny_teacher_forcing", "teacher_forcing"),
        ("tiny_consistency", "consistency"),
        ("tiny_decoder", "tiny_decoder"),
    ]
    for r in (tf, cd):
        _one_update(r, "generator")
        assert r["loop_step_s"] == r["generator"]["seconds"] and "critic" not in r
        assert (r["frames"], r["latent_frames"], r["causal"], r["batch"]) == (25, 7, "c3s1w1f1", 1)
    assert cd["grid_steps"] == 48 and cd["teacher_terms"] == 3  # joint guidance: three terms in one stream
    assert cd["ema_target"] == {"decay": 0.99, "start_step": 0}
    for phase in ("decoder", "discriminator"):  # tiny_decoder's PatchGAN is on (weight 0.1)
        _one_update(td, phase)
    assert td["loop_step_s"] == pytest.approx(td["decoder"]["seconds"] + td["discriminator"]["seconds"])
    assert _positive(td["prepare_batch_s"]) and td["lpips"] is None and td["gan_adaptive"]
    assert (td["frames"], td["crop"], td["latents"]) == (9, 32, [16, 3, 8, 8])  # 9 frames -> 3 latents, 4x


@pytest.mark.slow
def test_cut_down_real_teacher_forcing_and_consistency(tmp_path):
    """The 1.3B recipes (81 frames, c3s1w1, no given first chunk) with a 64-wide, one-block DiT at 64x128."""
    tf, cd = run_distill_line(tmp_path, "--configs teacher_forcing_wan1.3b_480p,consistency_wan1.3b_480p", "--batch 1")
    for r in (tf, cd):
        _one_update(r, "generator")
        assert (r["frames"], r["latent_frames"], r["causal"]) == (81, 21, "c3s1w1")
        assert r["tokens_per_sample"] == 21 * 4 * 8  # 64x128 / 8 -> 8x16 latents -> 4x8 tokens per frame
        assert r["activation_checkpointing"] is True
    assert cd["grid_steps"] == 48 and cd["ema_target"]["start_step"] == 0


@pytest.mark.slow
def test_cut_down_real_tiny_decoder(tmp_path):
    """tiny_decoder_wan2.1_480p (the random Wan 2.1 VAE, random VGG LPIPS, 3-layer PatchGAN) on 5x32x32 crops."""
    small = ["data.height=64", "data.width=64", "data.num_frames=9", "stage.crop=32", "stage.num_frames=5"]
    (td,) = _run(tmp_path, "tiny_decoder_wan2.1_480p", small)
    for phase in ("decoder", "discriminator"):
        _one_update(td, phase)
    assert (td["full_codec"], td["lpips"], td["clip"], td["latents"]) == (
        "wan2.1-vae",
        "vgg",
        [9, 64, 64],
        [16, 2, 4, 4],
    )


@pytest.mark.slow
def test_a_stage_without_a_step_benchmark_is_named_with_the_supported_ones(tmp_path):
    with pytest.raises(ValueError, match="teacher_forcing, consistency, tiny_decoder") as err:
        _run(tmp_path, "tiny_teacher")
    assert "dmd, ode_init" in str(err.value) and "bench-train" in str(err.value)
