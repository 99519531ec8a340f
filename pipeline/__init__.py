"""TrackStream: the end-to-end ``make run`` orchestration (``python -m pipeline``), top floor."""
