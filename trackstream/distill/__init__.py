"""Causal distillation of the motion-conditioned teacher (MotionStream §3.2): the objectives and their maths.

* ``distill.ode_pairs``  teacher trajectories with joint guidance at the student's steps, in shards;
* ``distill.pair_shards`` their folder format: safetensors shards + index.json, read lazily (``PairSet``);
* ``distill.ode_init``   ODE init: block-causal regression, per-chunk steps, random sink/window;
* ``distill.dmd``        Self-Forcing DMD: rolling-cache self-rollout, joint-guided real score,
                         critic 5:1, gradient truncation;
* ``distill.horizons``   rollouts past the teacher's horizon, scored in horizon-sized windows;
* ``distill.rl``         AR-Drag's RL stage: GRPO with one SDE step per chunk (``distill.grpo``: its maths;
                         rewards in ``eval.rewards``).
The stages that build them from a config are ``train.ode_init``, ``train.dmd``, ``train.teacher_forcing``, ``train.consistency`` and ``train.rl``.
"""
