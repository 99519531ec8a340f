"""``stage=consistency``: the student distilled from an autoregressive teacher through its cache.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
