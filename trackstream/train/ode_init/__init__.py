"""``stage=ode_init``: the causal student's first start, regressing the teacher's ODE pairs block-causally.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
