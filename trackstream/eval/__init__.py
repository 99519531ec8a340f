"""TrackStream evaluation: metrics with their protocols (EPE, PSNR, SSIM, ObjMC, DAI, LPIPS, FID, FVD and
the labelled codec proxy), ``python -m trackstream.eval`` (benchmarks, generation, scoring, tables and plots), the
teacher's and the streaming student's held-out evaluations (one per-video scorer for every table:
``scorebook.ScoreBook``), the oracle copier baseline and the drag benchmark. Speed benchmarks live in
``trackstream.bench``, the make-run report in ``trackstream.pipeline``."""
