"""Speed benchmarks (floor 6): the streaming engine in real time, the rolling cache, DragStream,
the teacher and distillation steps, codecs, trackers, the evaluation harness; one timer (``timing``)."""
