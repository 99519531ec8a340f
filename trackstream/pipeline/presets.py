"""``--sizes`` presets of ``make run`` (trackstream/pipeline/run.py): how much each stage does.

``full`` (the default) fits 2 CPU cores and 12 minutes and has no RL stage: ``make run`` takes 10 min 23 s
of its 12 (docs/results.md) and a useful ``rl_tiny`` run (>= 100 steps of ~4.3 s) does not fit; ``long``
runs one after DMD.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sizes", "FULL", "LONG", "SCRATCH", "SMOKE", "SIZES"]


@dataclass(frozen=True)
class Sizes:
    """How much each stage does. ``teacher_from``: "shipped" fine-tunes the shipped teacher (its
    ``teacher`` overrides go to experiment=tiny_teacher_finetune); "scratch" trains
    experiment=tiny_teacher_release from nothing first. ``rl``: overrides of experiment=rl_tiny, AR-Drag's
    GRPO stage on the DMD student (None: no RL stage). ``SMOKE`` runs every stage for a few steps to
    check the wiring (tests/test_pipeline.py); its figures mean nothing."""

    name: str = "full"
    teacher_from: str = "shipped"
    teacher: tuple[str, ...] = ()  # extra Hydra overrides per training stage
    ode_init: tuple[str, ...] = ()
    dmd: tuple[str, ...] = ()
    teacher_steps: int = 24  # the teacher's Euler steps in its evaluation (a multiple of the student's 3)
    eval_samples: int = 16  # held-out clips
    long_factor: int = 10  # long rollout = factor x the training horizon
    long_clips: int = 2
    long_students: str = "all"  # whose long streams are scored per window: "all" students or the "last" (DMD)
    timing_repeats: int = 25
    rl: tuple[str, ...] | None = None  # experiment=rl_tiny overrides; None: no RL stage (added later: last)


# make run on 2 CPU cores in under 12 minutes, from the shipped teacher (4-px DiT tokens: one
# 25-frame clip forward is ~5x the 8-px teacher's, so the student stages are short). No RL stage.
FULL = Sizes(
    teacher=("trainer.max_steps=20", "trainer.ckpt_every=20"),
    ode_init=(
        "stage.ode_pairs.num_pairs=24",
        "stage.ode_pairs.teacher_steps=24",
        "trainer.max_steps=80",
        "trainer.ckpt_every=40",
    ),
    # 4 generator updates at 5:1: each DMD step rolls out two teacher horizons (49 frames) and scores two
    # windows, 2.2x the cost of a one-horizon step (docs/long-horizon.md)
    dmd=("trainer.max_steps=24", "trainer.ckpt_every=12"),
    timing_repeats=10,
)
# More student compute than the 12-minute budget: the tiny_ode_init / tiny_dmd defaults (128 pairs
# on the 48-step grid, 300 ODE-init steps, 200 DMD steps = 40 generator updates), then 100 RL steps
# (50 rounds of 2 updates, 2 conditions x G = 4 rollouts each: rl_tiny's defaults).
LONG = Sizes(
    name="long",
    teacher=("trainer.ckpt_every=20",),
    ode_init=("stage.ode_pairs.num_pairs=128",),
    dmd=("trainer.ckpt_every=50",),
    teacher_steps=48,
    rl=("trainer.max_steps=100", "trainer.ckpt_every=50"),
)
# The teacher from nothing (experiment=tiny_teacher_release: hours on 2 CPU cores), then FULL.
SCRATCH = Sizes(
    name="scratch",
    teacher_from="scratch",
    teacher=("eval.enabled=false",),
    ode_init=FULL.ode_init,
    dmd=FULL.dmd,
    timing_repeats=FULL.timing_repeats,
)
_SMALL = ("data.batch_size=2", "trainer.ckpt_every=2", "trainer.log_every=1")
SMOKE = Sizes(
    name="smoke",
    teacher=_SMALL + ("trainer.max_steps=2", "data.pool_size=4"),
    ode_init=_SMALL
    + (
        "trainer.max_steps=3",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=6",
        "stage.ode_pairs.batch_size=2",
    ),  # 2 batches per shard
    dmd=_SMALL + ("trainer.max_steps=5",),  # one generator update at the 5:1 phase
    teacher_steps=6,
    eval_samples=2,
    long_factor=2,
    long_clips=1,
    timing_repeats=2,
    # 2 rounds of 2 updates, 1 condition x G = 2 rollouts each (G >= 2: advantages are relative to the group)
    rl=(
        "data.batch_size=1",
        "stage.group_size=2",
        "trainer.max_steps=4",
        "trainer.ckpt_every=2",
        "trainer.log_every=1",
    ),
)

SIZES = {"full": FULL, "long": LONG, "scratch": SCRATCH, "smoke": SMOKE}
