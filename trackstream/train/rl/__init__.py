"""``stage=rl``: AR-Drag's RL stage, GRPO with one SDE step per chunk.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
