"""TrackStream evaluation: metrics with their protocols (EPE, PSNR, SSIM, ObjMC, DAI, LPIPS, FID, FVD and
the labelled codec proxy), ``python -m trackstream.eval`` (benchmarks, generation, scoring, tables and plots), the
teacher's and the streaming student's held-out evaluations, the oracle copier baseline, the ``make run``
report, and benchmarks."""
