"""TrackStream's top floor: the end-to-end ``make run`` orchestration (``python -m trackstream.pipeline``) and
its report, the shipped assets' tooling (the teacher release, shipping the student: ``release``,
``ship_student``), the stage runner and the long DMD run."""
