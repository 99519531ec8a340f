"""TrackStream evaluation: metrics (EPE, PSNR, SSIM), the teacher's and the streaming student's
held-out evaluations, the oracle copier baseline, the ``make run`` report, and benchmarks."""
