"""``stage=dmd``: Self-Forcing distribution matching distillation through the rolling KV cache.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
