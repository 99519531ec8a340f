"""``trackstream plan``: every real recipe gets a plan, the byte model moves the right way under FSDP,
sequence parallelism and LoRA, it reproduces the measured teacher steps (docs/bench/h200/train.json) within
10 % and the measured rolling KV cache (docs/bench/h200/stream_wan2.1-t2v-1.3b.json) exactly, and bad
input is refused in one line. CPU only: the networks are built on meta."""

import json
from pathlib import Path

import pytest
from docs_lines import PLAN_TABLE as TABLE
from test_docs_run import run_documented

from trackstream.bench.plan import calibration, plan_of, real_recipes
from trackstream.bench.plan_model import (
    PREEMPT_MARGIN_S,
    WRITE_GBS_PER_NODE,
    NetFacts,
    kv_cache_bytes,
    preemption_lead,
)
from trackstream.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[1]
TEACHER = "experiment=teacher_wan1.3b_480p"
# cli.main runs the module already imported here through runpy, as ``python -m`` would; runpy warns about that
pytestmark = pytest.mark.filterwarnings("ignore:.*found in sys.modules after import:RuntimeWarning")


def _row(plan, prefix: str) -> float:
    return sum(r["bytes"] for r in plan.rows if r["component"].startswith(prefix))


@pytest.mark.slow
def test_calibration_within_ten_percent_of_the_measured_teacher_steps():
    measured = {m["config"]: m["max_memory_gib"] for m in json.loads((ROOT / "docs/bench/h200/train.json").read_text())}
    rows = {r["config"]: r["computed_gib"] for r in calibration()}
    assert set(rows) == {"teacher_wan1.3b_480p", "teacher_wan2.2_5b_704p"} <= set(measured)
    for name, computed in rows.items():
        assert abs(computed / measured[name] - 1) < 0.10, (name, computed, measured[name])


@pytest.mark.slow
def test_tokens_and_parameters_match_the_measured_bench_rows():
    for m in json.loads((ROOT / "docs/bench/h200/train.json").read_text()):
        plan = plan_of([f"experiment={m['config']}"], gpus=1, gpu="h200")
        assert plan.tokens == m["tokens_per_sample"] and plan.facts.params == m["params"]
        assert plan.facts.flops_per_sample / 1e12 == pytest.approx(m["model_tflops_per_step"], rel=1e-6)


@pytest.mark.slow
def test_fsdp_on_8_gpus_needs_less_per_gpu_than_on_1():
    one, eight = (plan_of([TEACHER, "parallel=fsdp"], gpus=n, gpu="h100") for n in (1, 8))
    assert eight.total < one.total
    for part in ("parameters", "gradients", "optimizer", "EMA"):
        assert _row(eight, part) < _row(one, part) / 4


@pytest.mark.slow
def test_sequence_parallel_2_halves_the_activation_term():
    one, two = (plan_of([TEACHER, f"parallel.sequence_parallel={k}"], gpus=8, gpu="h100") for k in (1, 2))
    ratio = _row(two, "activations") / _row(one, "activations")
    assert 0.48 < ratio < 0.53, ratio  # the cross-attention context K/V is not split: a little over a half
    assert _row(two, "optimizer") == _row(one, "optimizer")  # FSDP shards over all 8 ranks either way


@pytest.mark.slow
def test_lora_rank_16_cuts_gradients_and_optimizer_by_over_90_percent():
    full, lora = (plan_of([TEACHER, f"model.lora.rank={r}"], gpus=1, gpu="h100") for r in (0, 16))
    before = _row(full, "gradients") + _row(full, "optimizer")
    after = _row(lora, "gradients") + _row(lora, "optimizer")
    assert after < 0.1 * before
    assert _row(lora, "parameters") >= _row(full, "parameters")  # the frozen base stays


def test_kv_cache_term_equals_the_measured_cache_bytes():
    from trackstream.models.flavors import flavor_config
    from trackstream.models.streaming import CausalConfig

    bench = json.loads((ROOT / "docs/bench/h200/stream_wan2.1-t2v-1.3b.json").read_text())
    c = bench["config"]
    base = flavor_config(c["flavor"])
    f = NetFacts(0, 0, 0, base["dim"], base["ffn_dim"], base["num_layers"], base["num_heads"], (1, 2, 2), 512, False)
    # the measurement's chunk 0 had chunk_frames latents (cache_frames 6 = sink 3 + window 3)
    causal = CausalConfig(c["chunk_frames"], c["sink"], c["window"], first_chunk_frames=None)
    for point in bench["runs"]["rolling"]["points"].values():
        assert causal.cache_start(c["sink"] + c["window"]) == point["cache_frames"]
        kv = kv_cache_bytes(
            f,
            causal,
            latents=c["chunks"] * c["chunk_frames"],
            tokens_per_frame=c["tokens_per_frame"],
            samples=1,
            half=True,
        )
        assert kv == point["cache_bytes"]


@pytest.mark.slow
def test_json_output_and_fit(capsys):
    assert cli_main(["plan", "--json", "--gpu", "h200", TEACHER]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kind"] == "computed" and out["gpu"] == "h200" and out["fits"] is True
    assert out["total_gib"] == pytest.approx(sum(r["gib"] for r in out["rows"]), abs=0.01)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, words",
    [
        (["--gpu", "h300", TEACHER], ["--gpu", "h100"]),
        (["--gpus", "3", TEACHER, "parallel.sequence_parallel=2"], ["--gpus 3", "sequence_parallel=2"]),
        (["experiment=no_such_recipe"], ["experiment"]),
        (["--write-gbs", "0", TEACHER], ["--write-gbs", "GB/s"]),
    ],
)
def test_bad_input_is_one_line_on_stderr(args, words, capsys):
    assert cli_main(["plan", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    assert all(w in err for w in words), err


@pytest.mark.slow
@pytest.mark.docs
def test_table_plans_every_real_recipe_and_is_the_one_in_the_docs(tmp_path):
    """docs/distributed.md pastes ``trackstream plan --table --gpus 1,8,32``: the line as written prints the page's
    table, and every real recipe has a plan (GiB and seconds, no n/a) on 1 and 8 GPUs."""
    out = run_documented(TABLE, tmp_path).stdout
    recipes = real_recipes()
    assert set(recipes) == {p.stem for p in (ROOT / "conf" / "experiment").glob("*_wan*.yaml")}
    assert "teacher_wan1.3b_480p" in recipes and "dmd_wan2.2_5b_704p" in recipes
    lines = [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| ")]
    rows, leads = {}, {}
    for cells in lines:  # the memory table first, then the preemption warnings: recipe -> its cells per GPU count
        (leads if cells[0] in rows else rows)[cells[0]] = cells[2:]
    for name in recipes:
        one, eight = rows[name][:2]
        for cell in (one, eight):
            assert "n/a" not in cell and float(cell.split("/")[0].rstrip(" !")) > 0, (name, cell)
    assert "(measured)" in out and "computed" in out
    for name in recipes:  # every recipe with a step time has its warning, longer on fewer GPUs
        if name.startswith("tiny_decoder"):
            continue
        one, eight, many = (int(c.removesuffix(" s")) for c in leads[name])
        assert one >= eight >= many >= 60, (name, leads[name])
    assert out.strip() in (ROOT / "docs" / "distributed.md").read_text()


@pytest.mark.slow
def test_the_preemption_warning_covers_the_step_in_flight_and_the_checkpoint_write(capsys):
    """The lead a recipe needs: its step + its whole checkpoint (fp32 weights, AdamW moments, EMA) written at the
    per-node rate + the margin, in 30 s steps; the 14B teacher on 32 GPUs needs more than the files' 120 s, a
    slower file system more still; the CLI says it with the SIGNAL_LEAD to set."""
    plan = plan_of(["experiment=teacher_wan14b_480p"], gpus=32, gpu="h100")
    assert plan.facts.params > 14e9 and plan.facts.trained == plan.facts.params  # the whole DiT trains
    assert plan.checkpoint_bytes == 16 * plan.facts.params  # weights 4 + moments 8 + EMA 4 bytes
    need = plan.step_s + plan.checkpoint_bytes / (WRITE_GBS_PER_NODE * 1e9 * 4) + PREEMPT_MARGIN_S
    assert need <= plan.preemption_lead < need + 30 and plan.preemption_lead % 30 == 0 and plan.preemption_lead > 120
    assert preemption_lead(plan.step_s, plan.checkpoint_bytes, 32, write_gbs=0.25) > plan.preemption_lead
    assert preemption_lead(1.0, 1e6, 8) == 60  # a tiny job: the floor
    assert cli_main(["plan", "--gpus", "32", "--write-gbs", "0.25", "experiment=teacher_wan14b_480p"]) == 0
    out = capsys.readouterr().out
    slow = preemption_lead(plan.step_s, plan.checkpoint_bytes, 32, write_gbs=0.25)
    assert f"--signal lead >= {slow} s" in out and f"SIGNAL_LEAD={slow} slurm/submit.sh" in out, out


def _rows_add_up(plan) -> None:
    """A plan's rows: none negative, the CUDA context last, the total their sum."""
    assert plan.total > 0 and plan.rows[-1]["component"].startswith("CUDA context")
    assert plan.total == pytest.approx(sum(r["bytes"] for r in plan.rows))
    assert all(r["bytes"] >= 0 for r in plan.rows)


@pytest.mark.slow
def test_a_14b_teacher_over_a_1_3b_student_counts_each_at_its_size():
    """dmd_wan14b_to_1.3b_480p: stage.teacher_flavor makes the frozen real score the 14B; stage.critic=student
    keeps the critic at the generator's size. With stage.critic=null the critic is the teacher's copy (14B)."""
    plan = plan_of(["experiment=dmd_wan14b_to_1.3b_480p"], gpus=8, gpu="h100")
    counts = {r["component"]: r.get("count") for r in plan.rows}
    assert counts["frozen teacher (real score)"] == 16_395_128_640
    assert counts["parameters: generator"] == counts["parameters: critic"] == plan.facts.params < 2e9
    big = plan_of(["experiment=dmd_wan14b_to_1.3b_480p", "stage.critic=null"], gpus=8, gpu="h100")
    _rows_add_up(plan), _rows_add_up(big)
    assert {r["component"]: r.get("count") for r in big.rows}["parameters: critic"] == 16_395_128_640
    assert big.total > plan.total


@pytest.mark.slow
def test_sequence_parallel_divides_the_dmd_kv_cache():
    one, two = (
        plan_of(["experiment=dmd_wan1.3b_480p", f"parallel.sequence_parallel={k}"], gpus=8, gpu="h100") for k in (1, 2)
    )
    assert _row(two, "rolling KV cache") == pytest.approx(_row(one, "rolling KV cache") / 2)


@pytest.mark.slow
def test_the_plan_counts_what_the_stage_record_states(monkeypatch):
    """The plan holds no stage of its own: a record whose cost trains two networks (one with an EMA), holds a
    frozen DiT of the trained size and the text encoder from the first sample, makes 2 samples of a clip and
    does 3 units of work each is counted as exactly that, on the teacher recipe's shapes."""
    import dataclasses

    from trackstream.train.registry import STAGES
    from trackstream.train.stage import Cost, Held, Trained

    base = plan_of([TEACHER], gpus=1, gpu="h200")
    seen = []

    def cost(st, run):
        seen.append(run)
        return Cost(
            trained=(Trained("dit", ema=True), Trained("judge", ema=False)),
            frozen=(Held("student", "frozen judge", shardable=True), Held("text", later=True)),
            passes=3.0,
            rollouts=2,
            notes=("counted from the record",),
        )

    monkeypatch.setitem(STAGES, "teacher", dataclasses.replace(STAGES["teacher"], cost=cost))
    plan = plan_of([TEACHER], gpus=1, gpu="h200")
    counts = {r["component"]: r.get("count") for r in plan.rows}
    assert counts["parameters: judge"] == counts["frozen judge"] == plan.facts.params
    assert "EMA: dit" in counts and "EMA: judge" not in counts
    assert "frozen text encoder (from the first periodic sample)" in counts and not any("codec" in c for c in counts)
    assert plan.samples == 2 * base.samples and "counted from the record" in plan.notes
    assert plan.step_s == pytest.approx(base.step_s * 2 * 3)
    assert seen[0].student_steps == plan.cfg.schedule.student_steps and seen[0].teacher_cost == 1.0
    _rows_add_up(plan)
