"""``stage=tiny_decoder`` (MotionStream appendix A): a TAEHV decoder trained on a frozen full codec's latents with
reconstruction + LPIPS + a PatchGAN discriminator. The losses on known cases, TAEHV's 4x layout for the embedded
world's codec, a short embedded run that raises the held-out PSNR and exports a file the codec factory loads (its
streamed decode equal to its whole-clip decode), exact resume, and a CPU rehearsal of the Wan 2.1 recipe at its
real clip length from a fake release folder in the official layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra_helpers import typed
from release_helpers import write_release_folder
from test_docs_run import TINY_DECODER, TINY_DECODER_STREAM, reader_folder, run_documented

from conftest import stopped_at
from trackstream.data.video_io import tensor_to_frames
from trackstream.eval.metrics import video_psnr
from trackstream.models.codecs import TAEHV, TAEHVConfig, build_codec
from trackstream.models.patch_discriminator import PatchDiscriminator
from trackstream.train.tiny_decoder.objective import (
    DecoderModel,
    GANConfig,
    LPIPSLossConfig,
    TinyDecoderConfig,
    TinyDecoderObjective,
    discriminator_loss,
    generator_loss,
)
from trackstream.trainer.codec import CodecConfig, build_codec_module

ROOT = Path(__file__).resolve().parents[1]
FOUR_X = [True, True, False]  # TAEHV's spatial stages for the tiny codec's 4x latents
QUIET = ["trainer.num_threads=1", "logger.progress_bar=false", "logger.wandb.enabled=false"]


@pytest.fixture(autouse=True)
def _clear_hydra():
    yield
    GlobalHydra.instance().clear()


def _rows(run: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())}


# ----------------------------------------------------------------------------- the losses on known cases


@pytest.mark.slow
def test_reconstruction_loss_is_zero_for_the_codecs_own_decoder():
    """Decoding latents with the very decoder that made the target frames costs nothing and moves nothing."""
    torch.manual_seed(0)
    taehv = TAEHV(TAEHVConfig(spatial_stages=(True, True, False)))
    z = torch.randn(1, 16, 2, 4, 4)
    with torch.no_grad():
        target = taehv.decode(z, clamp=False)  # what the decoder makes of these latents (the loss is unclamped)
    cfg = TinyDecoderConfig(crop=16, num_frames=5, gan=GANConfig(weight=0.0))
    objective = TinyDecoderObjective(
        DecoderModel(taehv), None, taehv, None, cfg=cfg, device=torch.device("cpu"), seed=0
    )
    loss, extras = objective.decoder_loss({"video": target, "latents": z}, step=0)
    loss.backward()
    assert loss.item() == 0.0 and extras["tiny_decoder/reconstruction"] == 0.0
    assert all(p.grad is None or not p.grad.any() for p in taehv.decoder.parameters())
    assert objective.updates(0) == ["decoder"] and objective.networks == ("decoder",)


@pytest.mark.parametrize("kind", ["hinge", "non_saturating"])
def test_discriminator_loss_sign_and_gradient_direction(kind):
    real = torch.zeros(4, 1, 2, 2, requires_grad=True)
    fake = torch.zeros(4, 1, 2, 2, requires_grad=True)
    discriminator_loss(real, fake, kind).backward()
    # descending the loss raises the real logits and lowers the fake ones
    assert (real.grad < 0).all() and (fake.grad > 0).all()
    sure = discriminator_loss(torch.full((4,), 3.0), torch.full((4,), -3.0), kind)
    unsure = discriminator_loss(torch.full((4,), -3.0), torch.full((4,), 3.0), kind)
    assert sure < discriminator_loss(torch.zeros(4), torch.zeros(4), kind) < unsure
    if kind == "hinge":
        assert sure == 0 and discriminator_loss(torch.zeros(4), torch.zeros(4), kind) == 1.0
    fooled = torch.zeros(4, requires_grad=True)
    generator_loss(fooled, kind).backward()
    assert (fooled.grad < 0).all()  # the decoder's term pushes its frames' logits up


def test_a_discriminator_trained_on_its_loss_tells_real_from_fake():
    torch.manual_seed(0)
    disc = PatchDiscriminator(width=8, layers=2)
    opt = torch.optim.Adam(disc.parameters(), lr=2e-3)
    real = torch.rand(8, 3, 24, 24) * 0.2 - 0.1  # smooth grey
    fake = torch.rand(8, 3, 24, 24) * 2 - 1  # noise
    for _ in range(30):
        loss = discriminator_loss(disc(real), disc(fake), "hinge")
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert disc(real).mean() > 0 > disc(fake).mean() and loss < 0.5


def test_the_decoders_adversarial_term_leaves_no_gradient_in_the_discriminator():
    torch.manual_seed(0)
    taehv = TAEHV(TAEHVConfig(spatial_stages=(True, True, False)))
    disc = PatchDiscriminator(width=8, layers=2)
    cfg = TinyDecoderConfig(crop=16, num_frames=5, gan=GANConfig(weight=0.5, layers=2))
    objective = TinyDecoderObjective(
        DecoderModel(taehv), disc, taehv, None, cfg=cfg, device=torch.device("cpu"), seed=0
    )
    batch = {"video": torch.rand(1, 3, 5, 16, 16) * 2 - 1, "latents": torch.randn(1, 16, 2, 4, 4)}
    loss, extras = objective.decoder_loss(batch, step=0)
    loss.backward()
    assert all(p.grad is None for p in disc.parameters())
    assert taehv.decoder[-1].weight.grad.abs().sum() > 0 and extras["tiny_decoder/gan_weight"] > 0
    d_loss, _ = objective.discriminator_loss(batch)  # scores the reconstruction the decoder's loss left
    d_loss.backward()
    assert all(p.grad is not None for p in disc.parameters()) and batch["fake"].requires_grad is False


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="stage.num_frames=20"):
        TinyDecoderConfig(num_frames=20)
    with pytest.raises(ValueError, match="stage.crop=16 .* stage.gan.layers"):
        TinyDecoderConfig(crop=16)
    with pytest.raises(ValueError, match="stage.lpips.backbone"):
        LPIPSLossConfig(weight=1.0)
    with pytest.raises(ValueError, match="stage.decoder='tiny-ae'"):
        TinyDecoderConfig(decoder="tiny-ae")
    with pytest.raises(ValueError, match="stage.gan.loss"):
        GANConfig(loss="wasserstein")


def test_taehv_at_4x_keeps_the_official_layout_and_streams_like_a_whole_decode():
    torch.manual_seed(0)
    four, eight = TAEHV(TAEHVConfig(spatial_stages=(True, True, False))), TAEHV()
    assert four.spatial_factor == 4 and eight.spatial_factor == 8
    assert {k: v.shape for k, v in four.state_dict().items()} == {k: v.shape for k, v in eight.state_dict().items()}
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    z = four.encode(video)
    assert z.shape == (1, 16, 3, 4, 4) and four.decode(z).shape == video.shape
    with pytest.raises(ValueError, match="spatial_stages"):
        TAEHVConfig(spatial_stages=(True, True))


@pytest.mark.slow
def test_the_memory_plan_holds_both_trained_networks_and_the_frozen_ones():
    from trackstream.bench.plan import plan_of

    plan = plan_of(["experiment=tiny_decoder_wan2.1_480p"], gpus=8, gpu="h100")
    rows = {r["component"]: r for r in plan.rows}
    for name in ("decoder", "discriminator"):
        assert rows[f"parameters: {name}"]["bytes"] > 0 and rows[f"optimizer (AdamW): {name}"]["bytes"] > 0
    assert rows["parameters: decoder"]["count"] > rows["gradients: decoder"]["count"]  # the encoder is held, frozen
    assert "frozen codec (wan2.1-vae)" in rows and "frozen LPIPS (vgg)" in rows
    assert plan.fits and plan.total == pytest.approx(sum(r["bytes"] for r in plan.rows))
    with pytest.raises(ValueError, match="parallel.strategy=fsdp: stage tiny_decoder"):
        plan_of(["experiment=tiny_decoder_wan2.1_480p", "parallel=fsdp"], gpus=8, gpu="h100")


# ----------------------------------------------------------------------------- the embedded world, end to end


@pytest.fixture(scope="module")
def embedded_run(tmp_path_factory) -> Path:
    """docs/tiny-decoder.md's command as written, in a reader's folder, shrunk by overrides after its own
    to 12 steps (the discriminator from step 6) on a small pool: its run directory ``RUN``."""
    folder = reader_folder(tmp_path_factory.mktemp("tiny_decoder"))
    run_documented(
        TINY_DECODER, folder, *QUIET, "trainer.max_steps=12", "trainer.sample_every=6", "trainer.ckpt_every=6",
        "stage.gan.start_step=6", "trainer.log_every=2", "data.pool_size=16", "data.batch_size=2", "data.eval_samples=2",
        "stage.eval_clips=2",
    )  # fmt: skip
    return folder / "RUN"


@pytest.mark.slow
@pytest.mark.docs
def test_the_documented_stream_decodes_with_the_trained_decoder(embedded_run):
    """docs/tiny-decoder.md's generate line, as written, on the run above: the shipped student streams the
    reader's 81 frames of tracks in whole chunks (73 frames, the rest said) and the TAEHV decodes them."""
    from trackstream.data.video_io import probe_video

    r = run_documented(TINY_DECODER_STREAM, embedded_run.parent)
    assert probe_video(embedded_run.parent / "out.mp4").num_frames == 73
    assert "frames 73-80 are past the last whole chunk" in r.stdout + r.stderr


@pytest.mark.slow
def test_a_few_steps_raise_the_held_out_psnr_over_a_random_decoder(embedded_run):
    from trackstream.data.clips import heldout_clips

    figures = json.loads((embedded_run / "tiny_decoder.json").read_text())
    cfg = typed(embedded_run, "experiment=tiny_decoder", "data.eval_samples=2")
    videos = heldout_clips(cfg.data).videos([0, 1])
    full = build_codec_module(cfg.codec).eval()
    torch.manual_seed(1)
    random = build_codec("taehv-wan2.1", spatial_stages=FOUR_X).eval()
    with torch.no_grad():
        recon = random.decode(full.encode(videos)).clamp(-1, 1)
    before = np.mean([video_psnr(tensor_to_frames(r), tensor_to_frames(v), first=0) for r, v in zip(recon, videos)])
    assert figures["psnr_tiny_decoder"] > before + 5, (figures, before)
    # 12 steps do not reach the codec's own decoder, by PSNR or SSIM; both decoders timed
    assert figures["psnr_full_codec"] > figures["psnr_tiny_decoder"]
    assert 1 > figures["ssim_full_codec"] > figures["ssim_tiny_decoder"] > 0
    assert figures["decode_seconds_per_clip_tiny_decoder"] > 0 and figures["decode_seconds_per_clip_full_codec"] > 0
    rows = _rows(embedded_run)
    assert "train/tiny_decoder/d_real" in rows[12] and "train/loss/discriminator" in rows[12]
    assert "train/loss/discriminator" not in rows[4]  # the discriminator starts at stage.gan.start_step
    assert (embedded_run / "reconstructions" / "step_00000006.png").is_file()
    assert (embedded_run / "reconstructions" / "final.mp4").stat().st_size > 0


@pytest.mark.slow
def test_the_export_loads_through_the_codec_factory_and_streams_like_a_whole_decode(embedded_run, tmp_path):
    export = embedded_run / "export" / "taehv.pth"
    sd = torch.load(export, weights_only=True)
    assert set(sd) == set(TAEHV().state_dict())  # the official layout: encoder.*, decoder.*
    # wherever a TAEHV codec is named: codec=taehv-wan2.1 codec.checkpoint=<file> (+ the 4x option here)
    cfg = typed(
        tmp_path, "codec=taehv-wan2.1", f"codec.checkpoint={export}", "+codec.options.spatial_stages=[true,true,false]"
    )
    codec = build_codec_module(cfg.codec).eval()
    again = build_codec_module(
        CodecConfig(name="taehv-wan2.1", checkpoint=str(export), options={"spatial_stages": FOUR_X})
    )
    assert torch.equal(codec.decoder[-1].weight, sd["decoder.22.weight"]) and torch.equal(
        again.decoder[1].weight, sd["decoder.1.weight"]
    )
    # ... and from its name alone: its options travel beside it (taehv.json)
    alone = build_codec("taehv-wan2.1", checkpoint=str(export))
    assert alone.spatial_factor == 4 and torch.equal(alone.decoder[-1].weight, sd["decoder.22.weight"])
    torch.manual_seed(0)
    z = torch.randn(1, 16, 6, 16, 16)
    with torch.no_grad():
        whole = codec.decode(z)
        streamed = codec.decode_streaming(z, [1, 3, 2])
    assert whole.shape == (1, 3, 21, 64, 64)
    torch.testing.assert_close(streamed, whole, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_resume_reproduces_the_losses_exactly(tmp_path, run_module):
    """Resumed at step 2 to 4: the decoder's and the discriminator's losses equal the uninterrupted run's."""
    args = [
        "experiment=tiny_decoder", *QUIET, "data.pool_size=8", "data.batch_size=2", "stage.gan.start_step=1",
        "trainer.log_every=1", "trainer.ckpt_every=2", "eval.enabled=false",
    ]  # fmt: skip
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    run_module("trackstream.train", *args, "trainer.max_steps=4", f"hydra.run.dir={whole}")
    stopped_at(whole, parts, 2)
    run_module("trackstream.train", *args, "trainer.max_steps=4", f"hydra.run.dir={parts}")
    a, b = _rows(whole), _rows(parts)
    for step in (3, 4):
        for key in ("train/loss/decoder", "train/loss/discriminator", "train/tiny_decoder/psnr"):
            assert a[step][key] == b[step][key], (step, key)


# ----------------------------------------------------------------------------- the real recipe, rehearsed on CPU


def _fake_lpips(folder: Path) -> None:
    """The two LPIPS weight files in their official layouts, random values (nothing is downloaded); the heads
    non-negative, as LPIPS trains them, so the distance is too."""
    from trackstream.eval.lpips import LPIPS

    folder.mkdir(parents=True)
    net = LPIPS("vgg")
    torch.save({f"features.{k}": v for k, v in net.features.state_dict().items()}, folder / "vgg16-397923af.pth")
    torch.save({k: v.abs() for k, v in net.state_dict().items() if k.startswith("lin")}, folder / "vgg.pth")


@pytest.mark.slow
def test_the_wan21_recipe_runs_at_its_real_clip_length_from_an_official_release_folder(tmp_path, run_module):
    """experiment=tiny_decoder_wan2.1_480p as written (Wan 2.1 VAE from the release folder, LPIPS, PatchGAN, DDP,
    81-frame clips, 21-frame crops, a taew2_1 file to start from), only the pixels, widths and steps shrunk."""
    data = tmp_path / "data"
    write_release_folder(
        data / "Wan2.1-Fun-1.3B-Control", flavor="wan2.1-fun-1.3b-control", parts=("vae",), device="cpu", dim=64,
        ffn_dim=128, num_heads=2, num_layers=2,
    )  # fmt: skip
    _fake_lpips(data / "lpips")
    torch.manual_seed(3)
    init = TAEHV().state_dict()
    torch.save(init, data / "taew2_1.pth")
    run = tmp_path / "run"
    run_module(
        "trackstream.train", "experiment=tiny_decoder_wan2.1_480p", *QUIET, f"paths.data_dir={data}",
        "data=synthetic", "data.pool_size=2", "data.height=32", "data.width=64", "data.eval_samples=1",
        "data.batch_size=1", "trainer.global_batch=2", "trainer.max_steps=2", "trainer.log_every=1",
        "trainer.ckpt_every=2", "trainer.sample_every=0", f"stage.init={data / 'taew2_1.pth'}", "stage.crop=32",
        "stage.gan.start_step=1", "stage.eval_clips=1", "stage.image_clips=1", f"hydra.run.dir={run}",
    )  # fmt: skip
    log = (run / "train.log").read_text()
    assert "stage tiny_decoder | ddp x 1" in log and "2 accumulated" in log, log[:2000]
    rows = _rows(run)
    assert rows[2]["train/tiny_decoder/lpips"] > 0 and "train/loss/discriminator" in rows[2]
    sd = torch.load(run / "export" / "taehv.pth", weights_only=True)
    assert all(torch.equal(sd[k], v) for k, v in init.items() if k.startswith("encoder."))  # kept as loaded
    assert not torch.equal(sd["decoder.22.weight"], init["decoder.22.weight"])  # trained
    figures = json.loads((run / "tiny_decoder.json").read_text())
    assert figures["eval_clips"] == 1 and (run / "reconstructions" / "final.png").is_file()
    cfg = typed(run, "experiment=tiny_decoder_wan2.1_480p", f"paths.data_dir={data}")
    assert (cfg.data.num_frames, cfg.stage.num_frames, cfg.stage.crop) == (81, 21, 144)  # the recipe's, as run


@pytest.mark.slow
def test_a_tiny_decoder_decodes_what_the_full_codec_encoded_in_generate(tmp_path, capsys):
    """``--decoder``: the full codec encodes (the first frame's latent the network knows), the tiny decoder
    decodes, whole clips and streams alike; a decoder of another latent space is refused in one line."""
    import cv2
    import numpy as np

    from trackstream.models.codecs.split import SplitCodec
    from trackstream.stream.generate import main

    torch.manual_seed(0)
    tiny = build_codec("taehv-wan2.1", spatial_stages=FOUR_X).eval()  # random weights stand in for a trained one
    torch.save(tiny.state_dict(), tmp_path / "taehv.pth")
    (tmp_path / "taehv.json").write_text(json.dumps({"taehv_options": {"spatial_stages": FOUR_X}}))
    full = build_codec_module(CodecConfig(name="tiny-ae", checkpoint=str(ROOT / "assets/tiny-teacher/codec.pt")))
    split = SplitCodec(full.eval(), build_codec("taehv-wan2.1", checkpoint=str(tmp_path / "taehv.pth")).eval())
    video = torch.rand(1, 3, 9, 64, 64) * 2 - 1
    with torch.no_grad():
        z = split.encode(video)
        torch.testing.assert_close(z, full.encode(video))
        torch.testing.assert_close(split.decode(z), tiny.decode(z))
        torch.testing.assert_close(split.decode_streaming(z, [1, 2]), tiny.decode(z), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="its spatial_factor is 8"):
        SplitCodec(full, build_codec("taehv-wan2.1"))

    g = np.random.default_rng(0)
    cv2.imwrite(str(tmp_path / "first.png"), g.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    np.save(tmp_path / "tracks.npy", g.uniform(2, 60, (13, 4, 2)).astype(np.float32))
    args = ["--image", tmp_path / "first.png", "--tracks", tmp_path / "tracks.npy", "--device", "cpu"]
    assert main([str(a) for a in [*args, "--decoder", tmp_path / "taehv.pth", "--out", tmp_path / "tiny.mp4"]]) == 0
    assert main([str(a) for a in [*args, "--out", tmp_path / "own.mp4"]]) == 0
    from trackstream.data.video_io import decode_video

    a, b = decode_video(str(tmp_path / "tiny.mp4"))[0], decode_video(str(tmp_path / "own.mp4"))[0]
    assert a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).mean() > 5  # another decoder decoded it
