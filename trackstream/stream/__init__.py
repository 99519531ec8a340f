"""Streaming inference of the causal student (MotionStream §3.2, §4.4).

* ``stream.chunks``    per-chunk conditioning, K-step denoising and the clean cache re-run,
                       shared with the DMD rollout (training simulates inference exactly);
* ``stream.engine``    ``StreamingGenerator``: first frame -> chunk by chunk, tracks per chunk,
                       streaming decode, frames yielded as soon as ready, constant memory;
* ``stream.recache``   the KV re-cache of a prompt switch (``StreamingGenerator.switch_prompt``);
* ``stream.prompts``   ``generate --prompt-schedule``: the schedule file, the switches per chunk;
* ``stream.chunk_io``  track sources in, ``ChunkOutput`` out;
* ``eval.stream_eval``  held-out EPE through the engine, long rollouts (drift), per-chunk latency.
"""
