"""TrackStream data package.

Sample schema shared by every stage (a dict): `video` float32 [3, T, H, W] in [-1, 1]; `tracks`
float32 [T, N, 2] pixel (x, y), x horizontal, pixel centres at integers; `visibility` bool [T, N];
`caption` str; `meta` dict (id, fps, source, seed, ...); optionally cached `latents` [C, F, h, w] and
`text_emb` [L, D] with `text_len`. Batches (data.batching.collate_samples) add a leading B, pad tracks
with `track_mask` [B, N] and text with `text_len` [B].

Modules:
* synthetic  - procedural world with exact ground-truth tracks (SyntheticWorld, SyntheticVideoDataset)
* sprites    - textures and sprite bitmaps for the synthetic world
* trackers   - the tracker registry and build_tracker (names, TrackerConfig); tracker_base: the Tracker
               interface, grid_queries; lk_tracker: LucasKanadeTracker and the plain one; cotracker3_tracker
* video_io   - decord decoding / fps resampling, PyAV (libx264) encoding, resize + centre crop, to_uint8
* shards     - webdataset sample encoding, atomic shard writing, shard listing and index.json
* batching   - exactly resumable batch streams (StreamLoader), track subsampling, collation
* clips      - DataConfig, the synthetic world's clip pools (training, held-out), pool streams
* loader     - ShardStream: webdataset streaming with a shuffle buffer and exact resume
* prepare_shards - real video -> shard pipeline (PrepareConfig, run_prepare); prepare_worker is its worker side
* progress   - progress_bar: a tqdm bar on a terminal, plain lines every 30 s in a log (Slurm .out, nohup, CI)
* prepare    - Hydra CLI: `python -m trackstream.data.prepare input=... output=...` (conf/prepare.yaml)

Submodules are not imported here so that `import data` stays cheap.
"""
