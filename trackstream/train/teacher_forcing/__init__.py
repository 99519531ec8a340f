"""``stage=teacher_forcing``: the student trained on the teacher's own data with clean context.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
