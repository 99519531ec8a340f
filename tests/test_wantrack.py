"""FastVideo's WanTrack bundles: the shrunk bundle in their layout, its loader, and their track encoding as an
option of ours, checked against a plain re-statement of their maths (../shared/reference/wantrack.md §3)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from release_helpers import write_wantrack_bundle
from safetensors.torch import load_file, save_file

from trackstream.models.formats.wantrack import find_wantrack, fold_track_convs
from trackstream.models.motion_wan import load_wantrack
from trackstream.models.tracks import TrackEncoder
from trackstream.pipeline import rehearsal_wantrack

# --------------------------------------------------------------------------- their maths, re-stated


def their_embedding(ids, id_dim):
    half = id_dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = ids.float()[..., None] * freqs
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def their_track_map(points, visibility, ids, h_lat, w_lat, tw, tb, pw, pb):
    """points [B, T, N, 2] normalised (x, y); visibility [B, T, N] float; ids [B, N] -> [B, C, 1 + (T-1)//4, h, w]."""
    B, T, N, _ = points.shape
    phi = their_embedding(ids, tw.shape[1])  # [B, N, D]
    c_m = torch.zeros(B, T, h_lat * w_lat, phi.shape[-1])
    for b in range(B):
        for t in range(T):
            for n in range(N):
                x = torch.round(points[b, t, n, 0].clamp(0, 1) * (w_lat - 1)).long()
                y = torch.round(points[b, t, n, 1].clamp(0, 1) * (h_lat - 1)).long()
                c_m[b, t, y * w_lat + x] += visibility[b, t, n] * phi[b, n]
    c_m = c_m.view(B, T, h_lat, w_lat, -1).permute(0, 4, 1, 2, 3)
    c_m = F.pad(c_m, (0, 0, 0, 0, 3, 0))  # three zero frames before frame 0
    return F.conv3d(F.conv3d(c_m, tw, tb, stride=(4, 1, 1)), pw, pb)


def _inputs(B=2, T=9, N=7, H=48, W=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    px = torch.rand(B, T, N, 2, generator=g) * torch.tensor([W * 1.3, H * 1.3]) - torch.tensor([W * 0.15, H * 0.15])
    px[:, :, 0] = px[:, :, 1]  # two tracks on one cell: collisions add up
    vis = torch.rand(B, T, N, generator=g)  # fractional visibility is a weight
    vis[:, 2] = 0.0
    ids = torch.randperm(100000, generator=g)[: B * N].view(B, N)
    ids[0, 0] = 99999
    return px, vis, ids, H, W


@pytest.mark.parametrize("bias", [True, False])
def test_track_map_equals_their_maths(bias):
    px, vis, ids, H, W = _inputs()
    g = torch.Generator().manual_seed(1)
    tw, pw = torch.randn(16, 64, 4, 1, 1, generator=g), torch.randn(16, 16, 1, 1, 1, generator=g)
    tb, pb = (torch.randn(16, generator=g), torch.randn(16, generator=g)) if bias else (None, None)
    theirs = {"temporal_conv.weight": tw, "proj.weight": pw}
    if bias:
        theirs.update({"temporal_conv.bias": tb, "proj.bias": pb})
    enc = TrackEncoder(16, embed_dim=64, bias=bias, convention="fastvideo")
    enc.head.load_state_dict(fold_track_convs(theirs, "test"))
    points = px / torch.tensor([W, H])  # their normalised coordinates over the full frame
    want = their_track_map(points, vis, ids, H // 8, W // 8, tw, tb, pw, pb)
    feats = enc.rasterize(px, vis, height=H, width=W, ids=ids)
    got = enc.head(feats)
    assert got.shape == want.shape == (2, 16, 3, H // 8, W // 8)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4 * want.abs().max().item())


def test_fastvideo_embedding_order_and_range():
    enc = TrackEncoder(16, convention="fastvideo")
    assert enc.id_range == 100000 and TrackEncoder(16).id_range == 4096
    ids = torch.tensor([0, 7, 99999])
    from trackstream.models.tracks import fastvideo_id_embedding

    assert torch.equal(fastvideo_id_embedding(ids, 64), their_embedding(ids, 64))
    assert torch.equal(fastvideo_id_embedding(ids, 64)[0, :32], torch.ones(32))  # cos first
    with pytest.raises(ValueError, match="convention"):
        TrackEncoder(16, convention="motionstream")


# --------------------------------------------------------------------------- bundles


@pytest.mark.slow
def test_student_bundle_layout(tmp_path):
    root = write_wantrack_bundle(tmp_path / "Track-v0", role="student")
    sd = load_file(str(root / "transformer" / "model.safetensors"))
    cfg = json.loads((root / "transformer" / "config.json").read_text())
    assert sd["patch_embedding.weight"].shape[1] == cfg["in_channels"] == 52
    assert sd["track_encoder.temporal_conv.weight"].shape == (16, 64, 4, 1, 1)
    assert {"track_encoder.temporal_conv.bias", "track_encoder.proj.bias", "blocks.1.attn2.norm_added_q.weight"} <= set(
        sd
    )
    assert cfg["track_config"]["use_bias"] is True and "CausalTrackWan" in cfg["_class_name"]
    assert "CausalTrackWan" in json.loads((root / "model_index.json").read_text())["transformer"][1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "role,file_name,bias",
    [
        ("student", "model.safetensors", None),
        ("teacher", "diffusion_pytorch_model.safetensors", None),
        ("teacher", "model.safetensors", False),
    ],
)
def test_bundle_loads_and_runs(tmp_path, role, file_name, bias):
    root = write_wantrack_bundle(tmp_path / role, role=role, file_name=file_name, bias=bias)
    cfg = json.loads((root / "transformer" / "config.json").read_text())
    assert ("use_bias" in cfg["track_config"]) == (role == "student")  # the teacher's config omits it
    assert find_wantrack(root) == root / "transformer" == find_wantrack(root / "transformer")
    net = load_wantrack(root)
    sd = load_file(str(root / "transformer" / file_name))
    assert torch.equal(net.dit.patch_embedding.weight, sd["patch_embedding.weight"])
    assert (net.track_encoder.head.proj.bias is not None) == (bias is not False)
    assert net.track_encoder.convention == "fastvideo" and net.track_encoder.embed_dim == 64

    B, T, H, W = 1, 9, 32, 48
    g = torch.Generator().manual_seed(0)
    px = torch.rand(B, T, 5, 2, generator=g) * torch.tensor([W, H])
    motion = net.track_encoder.rasterize(px, torch.ones(B, T, 5), height=H, width=W, ids=torch.arange(5)[None])
    x = torch.randn(B, 16, 3, H // 8, W // 8, generator=g)
    image = torch.randn(B, 20, 3, H // 8, W // 8, generator=g)
    seen = {}
    net.dit.patch_embedding.register_forward_pre_hook(lambda m, a: seen.setdefault("x", a[0]))
    with torch.no_grad():
        out = net(
            x,
            torch.tensor([500.0]),
            text=torch.randn(B, 8, net.dit.text_dim, generator=g),
            text_lengths=torch.tensor([8]),
            image=image,
            motion=motion,
            image_features=torch.randn(B, 257, 1280, generator=g),
        )
    assert out.shape == x.shape and torch.isfinite(out).all()
    # their 52-channel order: noisy 0:16 | mask 16:20 | first-frame latent 20:36 | track map 36:52
    assert torch.equal(seen["x"][:, :16], x) and torch.equal(seen["x"][:, 16:36], image)
    torch.testing.assert_close(seen["x"][:, 36:], net.track_encoder.head(motion))


def test_plain_wan_folder_is_not_a_wantrack_bundle(tmp_path):
    from trackstream.models.flavors import build_wan
    from trackstream.models.wan_io import save_wan

    save_wan(build_wan("tiny-i2v"), tmp_path / "wan", fmt="diffusers")
    assert find_wantrack(tmp_path / "wan") is None
    with pytest.raises(ValueError, match="not a WanTrack bundle"):
        load_wantrack(tmp_path / "wan")


def _one_line_error(root, match):
    with pytest.raises(ValueError) as err:
        load_wantrack(root)
    assert "\n" not in str(err.value) and match in str(err.value), str(err.value)


@pytest.mark.slow
def test_damaged_bundles_are_one_line(tmp_path):
    root = write_wantrack_bundle(tmp_path / "b", role="student")
    weights = root / "transformer" / "model.safetensors"
    sd = load_file(str(weights))
    save_file({k: v for k, v in sd.items() if k != "track_encoder.proj.weight"}, str(weights))
    _one_line_error(root, str(weights))  # a track conv missing

    save_file({**sd, "patch_embedding.weight": sd["patch_embedding.weight"][:, :48].contiguous()}, str(weights))
    _one_line_error(root, str(weights))  # the 52-channel input cut

    save_file({k: v for k, v in sd.items() if not k.startswith("blocks.1.ffn")}, str(weights))
    _one_line_error(root, str(weights))  # a DiT tensor missing

    save_file(sd, str(weights))
    config = root / "transformer" / "config.json"
    config.write_text("{ not json")
    _one_line_error(root, str(config))


def test_truncated_weights_are_one_line(tmp_path):
    root = write_wantrack_bundle(tmp_path / "b", role="teacher")
    weights = root / "transformer" / "diffusion_pytorch_model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    _one_line_error(root, str(weights))


@pytest.mark.slow
def test_rehearsal_wantrack_command(tmp_path, capsys):
    out = tmp_path / "Track-v0"
    assert rehearsal_wantrack.main(["--role", "student", "--out", str(out), "--no-bias"]) == 0
    assert load_wantrack(out).track_encoder.head.proj.bias is None
    assert rehearsal_wantrack.main(["--role", "student", "--out", str(out)]) == 2
    assert "exists" in capsys.readouterr().err


# --------------------------------------------------------------------------- the bundle as a network


TRACK_V0_SIGMAS = (1.0, 0.94770, 0.85836, 0.67105)  # their four timesteps / 1000 (reference section 4.4)


@pytest.mark.parametrize("shift,steps", [(6.0, (1000, 750, 500, 250)), (3.0, (1000, 500)), (5.0, (999, 600, 1))])
def test_sigmas_are_diffusers_schedulers(shift, steps):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from trackstream.models.formats.wantrack import fastvideo_sigmas

    scheduler = FlowMatchEulerDiscreteScheduler(shift=shift)
    scheduler.set_timesteps(1000)
    grid = torch.cat([scheduler.timesteps, torch.zeros(1)])
    want = [grid[1000 - t].item() / 1000 for t in steps]
    assert list(fastvideo_sigmas(shift, steps)) == pytest.approx(want, abs=1e-7)
    assert fastvideo_sigmas(shift, steps, warp=False) == tuple(t / 1000 for t in steps)


@pytest.mark.slow
def test_bundle_describes_itself(tmp_path):
    from trackstream.models.motion_wan import Conventions, ModelConfig, read_network_json
    from trackstream.models.streaming import CausalConfig, StreamConfig

    student = write_wantrack_bundle(tmp_path / "s", role="student")
    meta = read_network_json(student)
    model = ModelConfig(**meta["model"])
    assert (model.flavor, model.layout, model.track_convention, model.track_bias) == (
        "wan2.1-fun-1.3b-inp",
        "wan_i2v",
        "fastvideo",
        True,
    )
    assert model.overrides == {"dim": 64, "ffn_dim": 128, "num_heads": 2, "num_layers": 2, "text_dim": 16}
    assert meta["text_encoder_dim"] == 16 and model.image_feature_mode == "clip"
    conv = Conventions.from_dict(meta["conventions"])
    assert (conv.height, conv.width, conv.num_frames, conv.schedule_shift) == (480, 832, 121, 6.0)
    want = StreamConfig(
        CausalConfig(
            chunk_frames=3,
            sink_chunks=1,
            window_chunks=None,
            window_frames=2,
            first_chunk_frames=1,
            first_chunk_sampled=True,
            rope="relativistic",
        ),
        steps=4,
        shift=6.0,
    )
    assert dataclasses.replace(conv.streaming, sigma_list=None) == want  # equal but for the levels
    assert conv.streaming.sigma_list == pytest.approx(TRACK_V0_SIGMAS, abs=1e-5)
    teacher = read_network_json(write_wantrack_bundle(tmp_path / "t", role="teacher"))
    assert teacher["conventions"] == {
        "clean_first_frame": False,
        "schedule_shift": 6.0,
        "num_frames": 121,
        "height": 480,
        "width": 832,
    }  # no training_config.yaml: FastVideo's published defaults, and no causal recipe

    yaml = student / "training_config.yaml"
    text = yaml.read_text()
    yaml.write_text(
        text.replace("local_attn_size: 6", "local_attn_size: -1").replace("num_height: 480", "num_height: 64")
    )
    conv = read_network_json(student)["conventions"]
    assert conv["height"] == 64 and conv["causal"].get("window_frames") is None
    yaml.write_text(text.replace("local_attn_size: 6", "local_attn_size: 3"))
    with pytest.raises(ValueError, match="training_config.yaml.*local_attn_size=3"):
        read_network_json(student)
    yaml.write_text("models: [\n")
    with pytest.raises(ValueError, match="training_config.yaml is not valid YAML"):
        read_network_json(student)


@pytest.mark.slow
def test_bundle_runs_where_an_export_does(tmp_path):
    """load_network, read_init and Network.for_inference take the bundle folder itself; the codec defaults to its
    vae/."""
    from trackstream.models.motion_wan import load_network, read_init
    from trackstream.models.network import Network

    root = write_wantrack_bundle(tmp_path / "s", role="student")
    net = load_network(root)
    assert net.conventions.streaming is not None and net.track_convention == "fastvideo"
    sd = read_init(str(root), net.required_in_dim)
    assert set(sd) == set(net.state_dict()) and torch.equal(
        sd["dit.patch_embedding.weight"], net.dit.patch_embedding.weight
    )
    net, codec, cond = Network.open(root).for_inference(device="cpu", dtype="fp32")
    assert type(codec).__name__ == "WanVAE" and cond.image_feature_mode == "clip"
    text, lengths = cond.text(["the cat"])
    assert text.shape[-1] == net.dit.text_dim and int(lengths[0]) > 0
    assert cond.image_features(torch.zeros(1, 3, 32, 48)).shape[-1] == 1280  # CLIP's penultimate tokens
    (root / "text_encoder" / "config.json").write_text("{")
    with pytest.raises(ValueError, match="text_encoder/config.json"):
        load_network(root)


@pytest.mark.slow
def test_the_pages_bundles_load_as_it_says(tmp_path):
    """docs/wantrack.md: its two commands as written, then its Python block on what they wrote."""
    from docs_lines import WANTRACK_BUNDLES
    from test_docs_run import ROOT, run_documented

    for line in WANTRACK_BUNDLES:
        run_documented(line, tmp_path)
    page = (ROOT / "docs" / "wantrack.md").read_text()
    block = next(b.split("```", 1)[0] for b in page.split("```python\n")[1:] if "load_wantrack" in b)
    for folder in ("Track-v0", "TrackWan-1.3B-I2V-synth-stage2"):
        scope = {}
        exec(block.replace('"Track-v0"', repr(str(tmp_path / folder))), scope)
        assert scope["net"].track_encoder.convention == "fastvideo"


# --------------------------------------------------------------------------- their track files


def test_their_track_files_read_as_pixels_with_their_ids(tmp_path):
    from trackstream.data.track_inputs import load_track_inputs

    g = torch.Generator().manual_seed(0)
    points, vis = torch.rand(1, 9, 4, 2, generator=g), torch.tensor([1.0, 0.0, 1.0, 1.0]).repeat(9, 1)
    ids = torch.tensor([5, 99999, 0, 42])
    torch.save({"track_points": points, "track_visibility": vis, "track_ids": ids}, tmp_path / "t.pt")
    np.savez(tmp_path / "t.npz", track_points=points[0].numpy(), track_visibility=vis.numpy())
    (tmp_path / "d").mkdir()
    np.save(tmp_path / "d" / "track_points.npy", points[0].numpy())
    torch.save(vis, tmp_path / "d" / "track_visibility.pt")
    H, W = 48, 64
    want = (points[0].double() * torch.tensor([W, H])).float().numpy()
    for name, want_ids in (("t.pt", ids.numpy()), ("t.npz", np.arange(4)), ("d", np.arange(4))):
        tracks, visible, got_ids = load_track_inputs(tmp_path / name, None, height=H, width=W)
        np.testing.assert_array_equal(tracks, want)
        assert visible.dtype == bool and not visible[:, 1].any() and visible[:, 0].all()
        np.testing.assert_array_equal(got_ids, want_ids)
    # the pixels rasterise exactly where their normalised points do
    enc = TrackEncoder(16, convention="fastvideo")
    ours = enc.rasterize(torch.from_numpy(want)[None], vis[None], height=H, width=W, ids=ids[None])
    theirs = enc.rasterize(points * torch.tensor([W, H]), vis[None], height=H, width=W, ids=ids[None])
    assert torch.equal(ours, theirs)

    torch.save({"track_points": points}, tmp_path / "bad.pt")
    torch.save({"track_points": points[0, :, :, :1], "track_visibility": vis}, tmp_path / "shape.pt")
    torch.save({"track_points": points, "track_visibility": vis, "track_ids": ids[:2]}, tmp_path / "ids.pt")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    for name, match in (
        ("bad.pt", "lacks the key 'track_visibility'"),
        ("shape.pt", "track_points has shape"),
        ("ids.pt", "track_ids has shape"),
        ("junk.npz", "not a readable"),
    ):
        with pytest.raises(ValueError, match=match) as err:
            load_track_inputs(tmp_path / name, None, height=H, width=W)
        assert "\n" not in str(err.value)


@pytest.mark.slow
def test_a_bundles_clip_tokens_take_its_image_processor(tmp_path):
    """As FastVideo's pipeline feeds CLIP (the bundle's CLIPImageProcessor on the 8-bit picture: shortest side to the
    tower's size, a centre crop), not Wan's squash of the whole picture; a network without one keeps Wan's."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    from trackstream.models.clip_image import load_image_encoder, preprocess_clip_image
    from trackstream.models.motion_wan import read_network_json

    model = read_network_json(write_wantrack_bundle(tmp_path / "Track-v0", role="student"))["model"]
    assert model["image_processor"] == str(tmp_path / "Track-v0" / "image_processor")
    encoder = load_image_encoder(model["image_encoder_path"], processor=model["image_processor"])
    g = torch.Generator().manual_seed(0)
    picture = torch.randint(0, 256, (2, 3, 48, 84), generator=g, dtype=torch.uint8)  # a wide 8-bit picture
    image = picture.float() / 127.5 - 1
    ours = encoder(image)

    processor = CLIPImageProcessor.from_pretrained(model["image_processor"])  # transformers' own, as theirs loads it
    pixels = processor(images=list(picture.permute(0, 2, 3, 1).numpy()), return_tensors="pt")["pixel_values"]
    tower = CLIPVisionModelWithProjection.from_pretrained(model["image_encoder_path"]).eval()
    with torch.no_grad():
        theirs = tower(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    side = encoder.image_size
    squashed = preprocess_clip_image(image, side)  # Wan's: the whole picture, no crop
    assert not torch.allclose(squashed, pixels, atol=0.1)
    assert load_image_encoder(model["image_encoder_path"]).processor is None
