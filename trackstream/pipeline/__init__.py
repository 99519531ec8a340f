"""TrackStream's top floor: the end-to-end ``make run`` orchestration (``python -m trackstream.pipeline``) and
its report, the shipped assets' tooling (training, packing and exporting the shipped teacher: ``ship_teacher``;
shipping a make-run student: ``ship_student``), the stage runner and the long DMD run."""
