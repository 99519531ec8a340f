"""TrackStream's top floor: the end-to-end ``make run`` orchestration (``python -m trackstream.pipeline``) and
its report and stage runner, the shipped releases it starts from (``releases``) and ``trackstream export``."""
