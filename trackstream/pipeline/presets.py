"""``--sizes`` presets of ``make run`` (trackstream/pipeline/run.py): how much each stage does.

``full`` (the default) is sized for minutes on a small CPU and has no RL stage: a useful ``rl_tiny`` run (>= 100
steps of several seconds) would take longer than all the other stages together (measured times: docs/results.md);
``long`` runs one after DMD.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Sizes", "FULL", "LONG", "SCRATCH", "SMOKE", "SIZES", "RELEASE_RECIPE", "RELEASE_FINETUNE"]

# The shipped teacher's recipe, in two runs (assets/tiny-teacher's manifest: its base release's command, then its
# own): the objects world at the students' 25-frame horizon with clean context chunks, 4 layers, bilinear track
# splatting, on one lattice of track start points; then that network fine-tuned on the placements people give
# (data.placement's mixture). --sizes scratch trains both
RELEASE_RECIPE = ("experiment=tiny_teacher_objects", "model.track_splat=bilinear", "+model.overrides.num_layers=4")
RELEASE_FINETUNE = ("experiment=tiny_teacher_placements",)


@dataclass(frozen=True)
class Sizes:
    """How much each stage does. ``teacher_from``: "shipped" fine-tunes the shipped teacher (its
    ``teacher`` overrides go to experiment=tiny_teacher_finetune); "scratch" trains
    the release recipe (``RELEASE_RECIPE``) from nothing first. ``dmd_from``: "ode_init" distils from this run's
    ODE-init student; "shipped" continues the shipped student's DMD checkpoint (assets/tiny-student/dmd,
    made from the same teacher release: hours of ODE init and 200 generator updates) with a fresh critic,
    while the ODE-init stage is still trained here from nothing (the report's ``ode_init`` row; its pairs are
    the DMD stage's conditions). ``rl``: overrides of experiment=rl_tiny, AR-Drag's
    GRPO stage on the DMD student (None: no RL stage). ``SMOKE`` runs every stage for a few steps to
    check the wiring (tests/test_pipeline.py); its figures mean nothing."""

    name: str = "full"
    teacher_from: str = "shipped"
    dmd_from: str = "ode_init"
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


# The student stages of a run that distils from its own ODE-init student in minutes (--sizes scratch):
# 4 generator updates at 5:1; each DMD step rolls out two teacher horizons (49 frames) and scores two windows,
# 2.2x the cost of a one-horizon step (docs/results.md)
_ODE_INIT = (
    "stage.ode_pairs.num_pairs=24",
    "stage.ode_pairs.teacher_steps=24",
    "trainer.max_steps=80",
    "trainer.ckpt_every=40",
)
_DMD = ("trainer.max_steps=24", "trainer.ckpt_every=12")
# make run on a small CPU in minutes, from the shipped teacher (4 layers, 4-px DiT tokens) and the
# shipped student's DMD checkpoint: minutes of DMD from minutes of ODE init leave a student that darkens in
# its second chunk (docs/results.md), so the DMD stage continues the shipped one (one more generator update
# after 5 of a critic started here) while the ODE-init stage shows what two minutes of it give. No RL stage.
FULL = Sizes(
    dmd_from="shipped",
    teacher=("trainer.max_steps=10", "trainer.ckpt_every=10"),
    ode_init=(
        "stage.ode_pairs.num_pairs=8",
        "stage.ode_pairs.teacher_steps=24",
        "trainer.max_steps=24",
        "trainer.ckpt_every=12",
    ),
    dmd=("trainer.max_steps=6", "trainer.ckpt_every=6"),
    timing_repeats=10,
)
# More student compute than ``full``: the tiny_ode_init / tiny_dmd defaults (128 pairs
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
# The teacher from nothing (RELEASE_RECIPE then RELEASE_FINETUNE: hours on a CPU), then make run's student stages
# distilled from this run's own ODE-init student (the shipped student's DMD is another teacher's).
SCRATCH = Sizes(
    name="scratch",
    teacher_from="scratch",
    teacher=("eval.enabled=false",),
    ode_init=_ODE_INIT,
    dmd=_DMD,
    timing_repeats=FULL.timing_repeats,
)
_SMALL = ("data.batch_size=2", "trainer.ckpt_every=2", "trainer.log_every=1")
SMOKE = Sizes(
    name="smoke",
    dmd_from=FULL.dmd_from,
    teacher=_SMALL + ("trainer.max_steps=2", "data.pool_size=4"),
    ode_init=_SMALL
    + (
        "trainer.max_steps=3",
        "stage.ode_pairs.num_pairs=4",
        "stage.ode_pairs.teacher_steps=3",  # one per student step
        "stage.ode_pairs.batch_size=2",
    ),  # 2 batches per shard
    # one step holding a critic and a generator update, one rollout
    dmd=(
        "data.batch_size=1",
        "stage.update_ratio=1",
        "trainer.ckpt_every=1",
        "trainer.log_every=1",
        "trainer.max_steps=1",
    ),
    teacher_steps=3,
    eval_samples=2,
    long_factor=2,
    long_clips=1,
    long_students="last",  # the other students' long streams: the chain's ship scores them (student_chain)
    timing_repeats=2,
    # a round of 2 updates, 1 condition x G = 2 rollouts (G >= 2: advantages are relative to the group)
    rl=(
        "data.batch_size=1",
        "stage.group_size=2",
        "trainer.max_steps=2",
        "trainer.ckpt_every=2",
        "trainer.log_every=1",
    ),
)

SIZES = {"full": FULL, "long": LONG, "scratch": SCRATCH, "smoke": SMOKE}
