"""TrackStream: flow-matching schedules, targets and samplers (joint text-motion guidance).

* ``diffusion.schedule``  shift, sigma grids (training, sampling, the student's steps), first-frame
                          sigmas, flow-matching targets (add_noise, velocity_target, x0_from_velocity)
* ``diffusion.samplers``  Euler / Heun integration with joint text-motion guidance (MotionStream eq. 2)
"""
