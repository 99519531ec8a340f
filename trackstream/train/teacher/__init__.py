"""``stage=teacher``: the track-conditioned bidirectional DiT trained with flow matching (MotionStream §3.1).

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
