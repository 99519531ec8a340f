"""The small world's whole chain in ONE device command (docs/small-world.md, "One command"):

    python -m lab.small_world oneshot --run-dir RUN --out $OUT --budget-min 9 [--set ...] [--stage-set ...]

One driver process runs teacher (codec fit first) -> ODE pairs + ODE init -> DMD -> RL -> ship, each with its
own time budget: ``SHARES`` of ``--budget-min`` minus ``--pack-reserve-s``, as cumulative deadlines, so time a
stage leaves unused passes to the next. A stage still training at its deadline minus ``--finish-s`` gets the
training loop's stop signal (``small_world.run_training``: checkpoint at the next step boundary), then is
finished from that checkpoint with ``trainer.max_steps`` set to its step: the loop has nothing left to do, so
the stage only exports (and the teacher runs its final held-out evaluation) and the next stage starts from it.

``--out`` receives, whatever happens (a stage that fails, overruns or is killed leaves the earlier ones' results):
  oneshot.json   the plan (each stage's seconds), each stage's status, seconds, steps and last losses, the
                 machine, then ship's held-out figures and targets; rewritten after every stage
  logs.tar.gz    every stage's metrics.jsonl (the curves), eval.jsonl / eval.json, results.json, config.yaml,
                 console.log and the chain's log; rewritten after every stage
  release-NNN.part + release.json   ship's release (teacher + RL student in bf16, files < 20 MB, manifest
                 with the held-out figures), ``small_world_ship.pack_release``'s pieces: 4 of 15 MiB at most,
                 the rest by ``small_world release --out $OUT --first-part 4`` on the still-warm machine
  state-NN.pack + state.json   only where ship did not finish: the run's state (``small_world_state.pack``;
                 finished exports in bf16 when float32 is too big) within the files left
The device command's own log (tee) is the 8th file at most.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from lab.small_world_chain import environment, record_chain, run_training, stage_overrides
from lab.small_world_state import MAX_FILES, PART_MIB, STAGES, ChainError, last_losses, pack, progress, stage_done

__all__ = ["SHARES", "plan", "oneshot", "LOG_FILES"]

# The budget split (docs/small-world.md sizes each stage's steps to it from measured H200 step times). What
# is not shared out (startup of the driver) is the remainder; --pack-reserve-s is kept apart for the last pack.
SHARES = {"teacher": 0.44, "ode_init": 0.18, "dmd": 0.14, "rl": 0.07, "ship": 0.13}
OWN_FILES = ("oneshot.json", "logs.tar.gz", "oneshot.log")  # the last: the device command's tee
LOG_FILES = ("metrics.jsonl", "eval.jsonl", "eval.json", "results.json", "config.yaml", "console.log")


def plan(budget_s: float, *, pack_reserve_s: float, shares: dict[str, float] = SHARES) -> dict[str, float]:
    """Each stage's seconds (``shares`` of the budget less the pack reserve)."""
    assert abs(sum(shares.values()) - 1.0) < 0.05, shares
    usable = budget_s - pack_reserve_s
    if usable <= 0:
        raise ValueError(f"--budget-min {budget_s / 60:g}: no time left after --pack-reserve-s {pack_reserve_s:g}")
    return {name: round(usable * share, 1) for name, share in shares.items()}


def _write_logs(run_dir: Path, out: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in ("chain.json", "chain.log", "calls.jsonl"):
            if (run_dir / name).is_file():
                tar.add(run_dir / name, arcname=name)
        for stage in (*STAGES, "teacher/codec"):
            for f in LOG_FILES:
                if (run_dir / stage / f).is_file():
                    tar.add(run_dir / stage / f, arcname=f"{stage}/{f}")
    tmp = out / "logs.tar.gz.tmp"
    tmp.write_bytes(buf.getvalue())
    tmp.replace(out / "logs.tar.gz")


def _record(run_dir: Path, out: Path, summary: dict) -> None:
    """What the call has so far, in ``out`` at once (the command may be killed at any moment after this)."""
    summary["seconds"] = round(time.time() - summary["t0"], 1)
    (out / "oneshot.json").write_text(json.dumps({k: v for k, v in summary.items() if k != "t0"}, indent=1))
    _write_logs(run_dir, out)


def _train_stage(run_dir: Path, name: str, chain, *, end: float, hard_end: float, finish_s: float, grace_s: float):
    """Run one stage until done or its deadline; a stopped stage is finished (exported) from its checkpoint."""
    over = stage_overrides(run_dir, name, chain)
    log = run_dir / "chain.log"
    status = run_training(run_dir / name, over, deadline=end - finish_s, grace_s=grace_s, log_file=log)
    row = {"status": status}
    if status == "stopped":
        step = progress(run_dir)["step"]
        row["stopped_at"] = step
        if step == 0:  # stopped before its first checkpoint (inside the codec fit, the pairs): nothing to export
            raise ChainError(f"{name} was stopped at its budget before its first training checkpoint")
        print(f"[small_world] {name}: finishing at step {step} (export)", flush=True)
        finish = [*over, f"trainer.max_steps={step}"]
        if run_training(run_dir / name, finish, deadline=hard_end, grace_s=grace_s, log_file=log) != "done":
            raise ChainError(f"{name}: its export from step {step} did not finish before the call's end")
        row["status"] = "stopped at budget, exported"
    return row


def _ship(run_dir: Path, out: Path, *, end: float, options: list[str]) -> dict:
    """``small_world ship`` (scoring + the bf16 release + its pieces into ``out``) as a process killed at ``end``."""
    dest = run_dir / "release"
    cmd = [sys.executable, "-m", "lab.small_world", "ship", "--run-dir", str(run_dir), "--dest", str(dest)]
    cmd += ["--out", str(out), *options]
    with open(run_dir / "ship.log", "w") as log:
        try:
            code = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, timeout=max(1.0, end - time.time())
            ).returncode
        except subprocess.TimeoutExpired:
            return {"status": "over its budget: killed"}
    if code != 0:
        tail = (run_dir / "ship.log").read_text(errors="replace").strip().splitlines()[-1:]
        return {"status": f"failed (exit {code}): {tail[0] if tail else ''}"}
    manifest = json.loads((dest / "manifest.json").read_text())
    return {"status": "done", "held_out": manifest["held_out"], "targets": manifest["targets"]}


def oneshot(
    run_dir: Path,
    out: Path,
    chain,
    *,
    budget_s: float,
    pack_reserve_s: float = 25.0,
    finish_s: float = 30.0,
    grace_s: float = 20.0,
    min_stage_s: float = 20.0,
    ship_options: list[str] = (),
    shares: dict[str, float] = SHARES,
) -> dict:
    """The chain and ship within ``budget_s`` seconds, everything packed into ``out`` (module docstring)."""
    t0 = time.time()
    seconds = plan(budget_s, pack_reserve_s=pack_reserve_s, shares=shares)
    run_dir, out = Path(run_dir).resolve(), Path(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    record_chain(run_dir, chain)
    hard_end = t0 + budget_s - pack_reserve_s
    summary = {"t0": t0, "budget_s": budget_s, "plan_s": seconds, **environment(), "stages": {}}
    ends, acc = {}, t0
    for name in (*STAGES, "ship"):
        acc += seconds[name]
        ends[name] = acc
    for name in STAGES:
        t = time.time()
        if stage_done(run_dir / name):
            summary["stages"][name] = {"status": "done before this call"}
            continue
        if ends[name] - finish_s - t < min_stage_s:
            summary["stages"][name] = {"status": f"not started: {ends[name] - t:.0f} s left of its budget"}
            break
        print(f"[small_world] {name}: running, {ends[name] - t:.0f} s to its deadline", flush=True)
        try:
            row = _train_stage(
                run_dir, name, chain, end=ends[name], hard_end=hard_end, finish_s=finish_s, grace_s=grace_s
            )
        except ChainError as e:
            row = {"status": f"failed: {e}"}
        row |= {"seconds": round(time.time() - t, 1), "last": last_losses(run_dir / name)}
        summary["stages"][name] = row
        print(f"[small_world] {name}: {row['status']} after {row['seconds']:.0f} s; {row['last']}", flush=True)
        _record(run_dir, out, summary)
        if not stage_done(run_dir / name):
            break
    with open(run_dir / "calls.jsonl", "a") as f:  # ship's manifest names the machine that trained it
        f.write(json.dumps({k: summary[k] for k in ("device", "torch", "cuda", "budget_s")} | {"oneshot": True}) + "\n")
    t = time.time()
    if all(stage_done(run_dir / s) for s in STAGES):
        row = _ship(run_dir, out, end=min(ends["ship"], hard_end), options=list(ship_options))
    else:
        row = {"status": "not started: the chain did not finish"}
    summary["stages"]["ship"] = row | {"seconds": round(time.time() - t, 1)}
    print(f"[small_world] ship: {row['status']}", flush=True)
    if row["status"] != "done":  # the weights travel as the run's state instead, in the files left
        for old in (*out.glob("release-*.part"), out / "release.json"):
            old.unlink(missing_ok=True)
        left = MAX_FILES - len(OWN_FILES) - 1  # state.json
        try:
            meta = pack(run_dir, out, part_mib=PART_MIB, max_mib=left * PART_MIB * 0.9)
            summary["state"] = {"mode": meta["mode"], "parts": meta["parts"]}
        except ChainError as e:
            summary["state"] = {"error": str(e)}
    summary["progress"] = progress(run_dir)
    _record(run_dir, out, summary)
    return summary
