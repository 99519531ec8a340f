"""TrackStream: the end-to-end ``make run`` orchestration (``python -m trackstream.pipeline``), top floor."""
