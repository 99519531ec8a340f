"""The quality of what the lab ships (assets/, made by ``python -m lab.ship_teacher`` and ``python -m
lab.student_chain ship``), on held-out clips of their world: the teacher follows tracks (on 4 clips its EPE with
tracks, the one EPE protocol eval.metrics.motion_epe, sampled in 6 steps, is below 0.6 x its EPE without tracks and
below the frozen frame's); the student holds its picture (the darkening guard, by lab/targets.py). That the assets
are intact and load is tests/test_teacher_asset.py's and tests/test_student_asset.py's."""

import json

import pytest

from trackstream.pipeline.releases import ASSET_DIR, STUDENT_DIR

# the teacher samples in 6 Euler steps here (a multiple of the student's 3): its EPE ratio then is 0.41, at 10
# steps 0.41 too, well inside the bound, in a quarter of the time
SAMPLE_STEPS = 6


@pytest.mark.slow
def test_the_shipped_teacher_follows_tracks():
    import dataclasses

    import torch
    from omegaconf import OmegaConf

    from trackstream.data.clips import DataConfig, heldout_clips
    from trackstream.diffusion.samplers import GuidanceConfig, SamplerConfig
    from trackstream.eval.teacher_eval import EvalConfig, evaluate_motion
    from trackstream.models.codecs import build_codec
    from trackstream.models.conditioner import Conditioner
    from trackstream.models.text_encoders import build_text_encoder
    from trackstream.pipeline.releases import load_shipped_teacher

    net, codec_path, manifest = load_shipped_teacher(ASSET_DIR)
    net.eval().requires_grad_(False)
    cfg = OmegaConf.to_container(OmegaConf.load(ASSET_DIR / "config.yaml"), resolve=True)
    data = DataConfig(**{**cfg["data"], "eval_samples": 4})
    data = dataclasses.replace(data, num_frames=cfg["eval"].get("num_frames") or data.num_frames)
    codec = build_codec(cfg["codec"]["name"], checkpoint=str(codec_path)).eval()
    conditioner = Conditioner(
        codec=codec,
        text_encoder=build_text_encoder(cfg["model"]["text_encoder"]),
        layout=net.layout,
        device=torch.device("cpu"),
    )
    figures = evaluate_motion(
        net,
        conditioner=conditioner,
        clips=heldout_clips(data),
        shift=cfg["schedule"]["shift"],
        sampler=SamplerConfig(steps=SAMPLE_STEPS, solver="euler", guidance=GuidanceConfig(mode="joint")),
        cfg=EvalConfig(batch_size=4, save_videos=0, num_tracks=cfg["eval"]["num_tracks"]),
        embed_dim=net.track_embed_dim,
        device=torch.device("cpu"),
    )
    print(json.dumps({k: v for k, v in figures.items() if k.startswith("epe_")}))
    # measured 5.42 / 13.17 = 0.41 (the release's 48-step figure on 16 clips: 0.33)
    assert figures["epe_with_tracks"] < 0.6 * figures["epe_without_tracks"]
    assert figures["epe_with_tracks"] < figures["epe_frozen_video"]


@pytest.mark.slow  # streams the 4-layer student on 16 clips with and without tracks (~25 s)
def test_the_shipped_student_holds_its_picture_on_held_out_clips():
    """The darkening guard: streamed on held-out clips of its world with their tracks, the shipped student's
    last 8 frames keep the ground truth's brightness and detail and its motion beats the frozen first frame,
    by the report's quality columns (judged by the project's targets, lab/targets.py; a student that goes dark or
    to a block mosaic in its second chunk fails them, tests/test_quality_columns.py)."""
    from omegaconf import OmegaConf

    from lab.targets import LATE_BRIGHTNESS_MAX, LATE_TEXTURE_BAND, NO_HOLD_RATIO_MAX
    from trackstream.data.clips import DataConfig, heldout_clips
    from trackstream.eval.stream_scoring import StreamEvalConfig, evaluate_stream_motion
    from trackstream.models.network import Network
    from trackstream.stream.engine import StreamingGenerator

    cfg = OmegaConf.to_container(OmegaConf.load(STUDENT_DIR / "config.yaml"), resolve=True)
    teacher = OmegaConf.load(ASSET_DIR / "config.yaml")
    # the protocol's 16 clips: the late texture of 8 is a noisy figure (the shipped student's: 1.38 on the first 8,
    # 1.15 on all 16, as its manifest records)
    data = DataConfig(**{**cfg["data"], "eval_samples": 16})
    net, codec, cond = Network.open(STUDENT_DIR / "student").for_inference(device="cpu", dtype="fp32")
    engine = StreamingGenerator(
        net, codec, config=net.conventions.stream_config("student"), image_features_fn=cond.image_features
    )
    ev = StreamEvalConfig(num_tracks=teacher.eval.num_tracks, preview_clips=0)
    sf = evaluate_stream_motion(
        engine, clips=heldout_clips(data).clips, text_fn=cond.text, cfg=ev, out_dir=None, fps=data.fps
    )
    gap, texture = sf["late_brightness_gap_with_tracks"], sf["late_texture_ratio_with_tracks"]
    assert abs(gap) <= LATE_BRIGHTNESS_MAX, f"late brightness {gap:+.1f}/255 off the ground truth's"
    assert LATE_TEXTURE_BAND[0] <= texture <= LATE_TEXTURE_BAND[1], f"late texture energy x{texture:.2f}"
    assert sf["no_hold_ratio_with_tracks"] <= NO_HOLD_RATIO_MAX, sf["no_hold_ratio_with_tracks"]
