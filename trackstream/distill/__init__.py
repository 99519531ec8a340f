"""The distillation stages' shared machinery (MotionStream §3.2); each stage's objective lives with its builder
in ``train/<stage>/``.

* ``distill.ode_pairs``   teacher trajectories with joint guidance at the student's steps, in shards;
* ``distill.pair_shards`` their folder format: safetensors shards + index.json, read lazily (``PairSet``);
* ``distill.masks``       the sparse causal masks the causal starts draw per batch (sink x window choices);
* ``distill.horizons``    rollouts past the teacher's horizon, scored in horizon-sized windows;
* ``distill.grpo``        GRPO's maths for AR-Drag's RL stage (``train.rl.objective``; rewards in ``eval.rewards``).
"""
