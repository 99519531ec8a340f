"""``stage=tiny_decoder``: a TAEHV decoder trained on the full codec's latents with a PatchGAN.

``objective.py``: the stage's schema and loss; ``build.py``: its record (``STAGE``: builder and plan cost)."""
