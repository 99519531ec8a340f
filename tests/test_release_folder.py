"""Release folders as users download them (DiT + VAE / T5 / CLIP .pth side by side), and the I2V
image branch (CLIP tokens) through the network, the teacher's loss, the sampler and the stream."""

import json
import shutil

import cv2
import numpy as np
import pytest
import torch
from release_helpers import RELEASE_CLIP, RELEASE_VAE, TINY_UMT5, write_release_folder

from trackstream.diffusion.samplers import Condition, SamplerConfig, sample
from trackstream.models.clip_image import load_image_encoder
from trackstream.models.codecs import build_codec
from trackstream.models.conditioner import Conditioner, encode_motion
from trackstream.models.flavors import build_wan
from trackstream.models.formats.checkpoint import read_state_dict
from trackstream.models.formats.release_folder import find_release
from trackstream.models.formats.wan_formats import CheckpointError
from trackstream.models.motion_wan import ModelConfig, build_motion_wan
from trackstream.models.streaming import StreamConfig
from trackstream.models.text_encoders import build_text_encoder
from trackstream.models.tracks import sample_track_ids
from trackstream.models.wan_io import load_wan
from trackstream.stream.engine import StreamingGenerator
from trackstream.train.teacher.objective import FlowMatchingObjective, TeacherConfig
from trackstream.trainer.weights import initialise

H = W = 32


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    return write_release_folder(tmp_path_factory.mktemp("rel") / "Wan2.1-Fun-1.3B-InP")


def test_parts_are_found_by_their_official_names(release):
    rel = find_release(release)
    assert [p.name for p in rel.dit] == ["diffusion_pytorch_model.safetensors"]
    assert (rel.vae.name, rel.t5.name, rel.t5_tokenizer.name) == (
        "Wan2.1_VAE.pth",
        "models_t5_umt5-xxl-enc-bf16.pth",
        "umt5-xxl",
    )
    assert rel.clip.name.startswith("models_clip_open-clip") and rel.dit_config.name == "config.json"


@pytest.mark.slow
def test_the_dit_loads_from_the_folder_whole_or_sharded(release, tmp_path):
    torch.manual_seed(0)
    ref = build_wan("tiny-i2v")
    for folder in (release, write_release_folder(tmp_path / "sharded", max_shard_bytes=200_000)):
        sd, cfg = read_state_dict(folder)  # the .pth files beside it are not the DiT
        assert cfg["model_type"] == "i2v" and set(sd) == set(ref.state_dict())
        model = load_wan(folder)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), ref.state_dict().values()))
    assert len(find_release(tmp_path / "sharded").dit) == 1  # the index json


def test_renamed_files_are_recognised_by_their_keys(release, tmp_path):
    folder = tmp_path / "renamed"
    shutil.copytree(release, folder)
    (folder / "Wan2.1_VAE.pth").rename(folder / "vae.pth")
    (folder / "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth").rename(folder / "image_encoder.pth")
    (folder / "models_t5_umt5-xxl-enc-bf16.pth").rename(folder / "t5.pth")
    rel = find_release(folder)
    assert (rel.vae.name, rel.clip.name, rel.t5.name) == ("vae.pth", "image_encoder.pth", "t5.pth")


def test_incomplete_or_ambiguous_folders_say_what_was_found_and_what_is_missing(release, tmp_path):
    folder = tmp_path / "no_t5"
    shutil.copytree(release, folder)
    (folder / "models_t5_umt5-xxl-enc-bf16.pth").unlink()
    torch.save({"whatever.weight": torch.zeros(2)}, folder / "notes.pth")
    with pytest.raises(
        ValueError,
        match=r"model\.text_encoder_path.*without \['t5'\].*models_t5_umt5.*found.*"
        r"Wan2\.1_VAE\.pth.*unrecognised weight files \['notes\.pth'\]",
    ):
        build_text_encoder("umt5", path=str(folder))
    shutil.copy(folder / "Wan2.1_VAE.pth", folder / "vae_copy.pth")
    with pytest.raises(CheckpointError, match="several vae files"):
        read_state_dict(folder)
    with pytest.raises(ValueError, match="does not exist"):
        find_release(tmp_path / "nowhere")


def test_text_encoder_vae_and_clip_load_by_pointing_at_the_folder(release):
    # sizes read off the files' shapes: pointing a config at the folder is enough
    enc = build_text_encoder("umt5", path=str(release), dtype=None)
    emb, lens = enc.encode(["a cat", "the"])
    assert emb.shape[0] == 2 and int(lens.max()) <= emb.shape[1]
    assert enc.dim == TINY_UMT5["d_model"]
    vae = build_codec("wan2.1-vae", checkpoint=str(release))
    assert vae.encode(torch.zeros(1, 3, 5, 16, 16)).shape == (1, 16, 2, 2, 2)
    assert vae.vae.config.base_dim == RELEASE_VAE.base_dim
    clip = load_image_encoder(release)  # config read off the .pth shapes
    tokens = clip(torch.zeros(2, 3, H, W))
    n = (RELEASE_CLIP["image_size"] // RELEASE_CLIP["patch_size"]) ** 2 + 1
    assert tokens.shape == (2, n, 1280)


def test_image_features_setting_is_checked():
    with pytest.raises(ValueError, match="image_features"):
        ModelConfig(flavor="tiny", image_features="clip")  # t2v: no CLIP branch
    with pytest.raises(ValueError, match="image_features"):
        ModelConfig(flavor="tiny-i2v", image_features="pixels")
    assert ModelConfig(flavor="tiny-i2v").image_feature_mode == "clip"
    assert ModelConfig(flavor="tiny").image_feature_mode == "none"


def _i2v_setup(release):
    model = ModelConfig(flavor="tiny-i2v", layout="wan_i2v", image_encoder_path=str(release), init_from=str(release))
    text = build_text_encoder("minilm")
    net = build_motion_wan(model, text_encoder_dim=text.dim)
    initialise(net, init_from=model.init_from)  # the DiT from the folder, its patch embedding grown for the tracks
    torch.nn.init.normal_(net.dit.head.head.weight, std=0.05)  # the official init zeroes the head
    codec = build_codec("tiny-ae", width=16).eval()
    cond = Conditioner.for_network(model, codec=codec, text_encoder=text, device=torch.device("cpu"))
    return model, net, codec, cond


@pytest.mark.slow
def test_an_i2v_flavor_runs_through_loss_sampler_and_stream(release):
    model, net, codec, cond = _i2v_setup(release)
    assert net.needs_image_features and cond.image_feature_mode == "clip"
    g = torch.Generator().manual_seed(0)
    B, T, N = 2, 9, 4
    video = torch.rand(B, 3, T, H, W, generator=g) * 2 - 1
    tracks = torch.rand(B, T, N, 2, generator=g) * (W - 1)
    batch = {
        "video": video,
        "tracks": tracks,
        "visibility": torch.ones(B, T, N, dtype=torch.bool),
        "track_mask": torch.ones(B, N, dtype=torch.bool),
        "caption": ["a", "b"],
    }
    obj = FlowMatchingObjective(
        net,
        cfg=TeacherConfig(),
        shift=3.0,
        null_text=cond.null_text,
        null_lengths=cond.null_lengths,
        embed_dim=net.track_embed_dim,
        height=H,
        width=W,
        seed=0,
        device=torch.device("cpu"),
        conditioner=cond,
    )
    prepared = obj.prepare_batch(dict(batch))
    assert prepared["image_features"].shape == (B, 5, 1280)  # 28 px CLIP, 14 px patches: 1 + 2 x 2 tokens
    loss, _ = obj.loss("dit", prepared, step=0)
    loss.backward()
    assert net.dit.img_emb.proj[1].weight.grad.abs().sum() > 0  # the image branch is trained

    text, lens = cond.text(batch["caption"])
    motion = encode_motion(
        tracks,
        batch["visibility"],
        sample_track_ids(B, N),
        embed_dim=net.track_embed_dim,
        height=H,
        width=W,
        latent_height=H // codec.spatial_factor,
    )
    c = Condition(
        text=text,
        text_lengths=lens,
        null_text=cond.null_text,
        null_text_lengths=cond.null_lengths,
        image=cond.image(video[:, :, 0], num_frames=T),
        motion=motion,
        image_features=cond.image_features(video[:, :, 0]),
    )
    sf = codec.spatial_factor
    noise = torch.randn(B, 16, 3, H // sf, W // sf, generator=g)
    assert sample(net.eval(), noise, c, cfg=SamplerConfig(steps=2), shift=3.0).shape == noise.shape
    with pytest.raises(ValueError, match="clip_fea"):
        sample(net, noise, Condition(**{**c.__dict__, "image_features": None}), cfg=SamplerConfig(steps=2), shift=3.0)

    engine = StreamingGenerator(net, codec, config=StreamConfig(shift=3.0), image_features_fn=cond.image_features)
    state = engine.start(video[:1, :, 0], text[:1], lens[:1], track_ids=sample_track_ids(1, N))
    chunk = next(iter(engine.stream(state, None, num_chunks=2)))
    assert torch.isfinite(chunk.frames).all()
    with pytest.raises(ValueError, match="image branch"):
        StreamingGenerator(net, codec, config=StreamConfig(shift=3.0)).start(video[:1, :, 0], text[:1], lens[:1])


@pytest.mark.slow
def test_an_i2v_release_runs_teacher_ode_init_dmd_and_stream_through_the_cli(tmp_path, run_module):
    """The stack end to end on an I2V-type flavor from a release folder (the DiT, and its CLIP .pth for
    the image branch): every stage carries the first frame's CLIP tokens."""
    rel = write_release_folder(tmp_path / "release", parts=("clip",), num_heads=2, text_len=64)
    common = [
        "debug=tiny",
        "data.num_frames=25",
        "trainer.num_threads=1",
        "eval.enabled=false",
        "logger.progress_bar=false",
    ]

    def cli(*args):
        run_module("trackstream.train", *common, *args, timeout=600)

    t, o, d = tmp_path / "teacher", tmp_path / "ode", tmp_path / "dmd"
    cli(
        "experiment=tiny_teacher",
        "model.flavor=tiny-i2v",
        f"model.init_from={rel}",
        f"model.image_encoder_path={rel}",
        "trainer.max_steps=1",
        f"hydra.run.dir={t}",
    )
    teacher = t / "export" / "teacher"
    cli(
        "experiment=tiny_ode_init",
        f"stage.teacher={teacher}",
        "stage.ode_pairs.num_pairs=2",
        "stage.ode_pairs.teacher_steps=3",
        "stage.ode_pairs.batch_size=2",
        "trainer.max_steps=1",
        f"hydra.run.dir={o}",
    )
    from trackstream.distill.pair_shards import load_shard

    pairs = load_shard(o / "ode_pairs" / "pairs_00000.safetensors")
    assert pairs["image_features"].shape == (2, 5, 1280)
    cli(
        "experiment=tiny_dmd",
        f"stage.teacher={teacher}",
        f"stage.student={o / 'export' / 'student'}",
        f"stage.pairs={o / 'ode_pairs'}",
        "stage.update_ratio=1",  # a critic and a generator update in one step
        "trainer.max_steps=1",
        f"hydra.run.dir={d}",
    )
    res = json.loads((d / "results.json").read_text())
    assert res["generator_updates"] == 1 and res["critic_updates"] == 1

    g = np.random.default_rng(0)
    np.save(tmp_path / "tracks.npy", g.uniform(0, 63, (25, 4, 2)).astype(np.float32))
    cv2.imwrite(str(tmp_path / "first.png"), g.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    run_module(
        "trackstream.stream.generate",
        "--student",
        str(d / "export" / "student"),
        "--codec",
        str(t / "codec" / "codec.pt"),
        "--image",
        str(tmp_path / "first.png"),
        "--tracks",
        str(tmp_path / "tracks.npy"),
        "--out",
        str(tmp_path / "out.mp4"),
        timeout=300,
    )
    assert (tmp_path / "out.mp4").stat().st_size > 0


def test_read_off_sizes_are_the_released_ones_on_the_real_shapes():
    """On meta tensors with the real files' shapes the inferred configs are UMT5-XXL and the Wan 2.1 VAE."""
    from release_helpers import umt5_to_wan_keys
    from transformers import UMT5Config, UMT5EncoderModel

    from trackstream.models.codecs import WanVAEConfig
    from trackstream.models.text_encoders import UMT5_XXL_CONFIG, umt5_config_from_state_dict

    with torch.device("meta"):
        t5 = UMT5EncoderModel(UMT5Config(**UMT5_XXL_CONFIG))
    got = umt5_config_from_state_dict(umt5_to_wan_keys(t5.state_dict()))
    assert got == {k: UMT5_XXL_CONFIG[k] for k in got}
    from diffusers import AutoencoderKLWan

    from trackstream.models.codecs.wan_vae import convert_diffusers_to_official, wan_vae_config_from_state_dict

    with torch.device("meta"):
        vae = AutoencoderKLWan(**WanVAEConfig().diffusers_kwargs())
    assert wan_vae_config_from_state_dict(convert_diffusers_to_official(vae.state_dict())) == WanVAEConfig()


def test_the_rehearsal_release_command_writes_a_real_flavor_shrunk_and_says_its_overrides(tmp_path, capsys):
    from trackstream.models.flavors import flavor_config
    from trackstream.models.wan_io import load_wan
    from trackstream.pipeline.rehearsal_release import main

    out = tmp_path / "Wan2.1-Fun-1.3B-Control"
    assert main(["--flavor", "wan2.1-fun-1.3b-control", "--out", str(out), "--dim", "64"]) == 0
    said = capsys.readouterr().out
    assert "+model.overrides.dim=64 +model.overrides.ffn_dim=128" in said
    names = {p.name for p in out.iterdir()}
    assert {"Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google", "xlm-roberta-large"} <= names
    assert "models_clip_open-clip-xlm-roberta-large-vit-huge-14.pth" in names  # the Fun-Control image branch
    dit = load_wan(out)
    assert dit.dim == 64 and dit.in_dim == flavor_config("wan2.1-fun-1.3b-control")["in_dim"]
    assert main(["--flavor", "wan2.1-fun-1.3b-control", "--out", str(out)]) == 2  # never over a folder
    assert "exists" in capsys.readouterr().err
