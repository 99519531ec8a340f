"""The real experiments' arithmetic at their REAL frame count, size and chunking, with the real networks
built on ``meta`` (shapes propagate, nothing is computed or allocated): latent frames, chunks, pixel
spans, tokens, the cache's bound, the DMD rollout at every exit step, the ODE-init forward and the
ODE-pair shapes. The CPU rehearsal (tests/test_real_path.py) shrinks widths and pixels; this is where
the full-size chunk arithmetic is checked. (The 1.3B recipe once crashed at its first DMD step: 81
frames = 21 latents do not split into a given one-latent chunk 0 + chunks of 3.)"""

from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from hydra_helpers import compose_job, instantiate

from trackstream.diffusion.schedule import sampling_sigmas
from trackstream.models.block_causal import BlockCausalAttention
from trackstream.models.codecs.base import VideoCodec
from trackstream.models.motion_wan import TEXT_ENCODER_DIMS
from trackstream.models.precision import DTYPES
from trackstream.models.streaming import CausalConfig, StreamConfig, first_chunk_given
from trackstream.models.tracks import latent_frames
from trackstream.models.wan import CLIP_DIM, CLIP_TOKENS
from trackstream.stream.chunks import chunk_pixel_frames, whole_chunks
from trackstream.train.dmd.objective import DMDObjective
from trackstream.train.ode_init.objective import per_chunk_indices

META = torch.device("meta")
# recipe -> (experiments, pixels (T, H, W), the codec's spatial factor, latent channels, chunks, chunk 0 given)
REAL = {
    "wan2.1-1.3b": (("ode_init_wan1.3b_480p", "dmd_wan1.3b_480p"), (81, 480, 832), 8, 16, 7, False),
    "wan2.2-5b": (("ode_init_wan2.2_5b_704p", "dmd_wan2.2_5b_704p"), (121, 704, 1280), 16, 48, 11, True),
}


def _typed(tmp_path: Path, experiment: str, *overrides):
    cfg = compose_job(tmp_path, f"experiment={experiment}", *overrides)
    try:
        return instantiate(cfg)
    finally:
        GlobalHydra.instance().clear()


def _meta_batch(net, typed, *, F: int, h: int, w: int, C: int, T: int, N: int = 8) -> dict:
    """A DMD / ODE-init batch of the real shapes, on meta (track IDs are real: they index a table)."""
    layout = typed.model.layout
    # the layout's image channels (Conditioner.image): I2V mask + latent, Fun-Control's start latent, none
    img_channels = {"wan_i2v": 4 + C, "fun_control": C}.get(layout, 0)
    batch = {
        "text_emb": torch.empty(1, 512, TEXT_ENCODER_DIMS[typed.model.text_encoder], device=META),
        "text_len": torch.tensor([512]),
        "image_latent": torch.empty(1, C, 1, h, w, device=META),
        "image": torch.empty(1, img_channels, F, h, w, device=META) if img_channels else None,
        "track_ids": torch.arange(N)[None],
        "motion": torch.empty(1, net.track_embed_dim, T, h, w, device=META),  # c_m on the latent grid
    }
    if net.needs_image_features:
        batch["image_features"] = torch.empty(1, CLIP_TOKENS, CLIP_DIM, device=META)
    return batch


class _CountPasses:
    """Counts the DiT's streaming passes (each is one patch embedding) and their latent frames."""

    def __init__(self, dit):
        self.frames: list[int] = []
        dit.patch_embedding.register_forward_hook(lambda m, i, o: self.frames.append(int(o.shape[2])))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", sorted(REAL))
def test_real_recipe_chunk_arithmetic_at_full_size(recipe, tmp_path):
    (ode_name, dmd_name), (T, H, W), sf, C, n_chunks, given = REAL[recipe]
    # real width, heads, size and frames; 1 of the 30 blocks (depth changes no shape, and meta passes cost time)
    built = _typed(tmp_path / "dmd", dmd_name, "+model.overrides.num_layers=1")
    typed, net = built["config"], built["network"]
    causal: CausalConfig = typed.stage.causal
    assert (typed.data.num_frames, typed.data.height, typed.data.width) == (T, H, W)
    assert first_chunk_given(causal) is given and causal.name.startswith("c3s1w1")

    # latent frames, chunks, pixel spans (they tile the clip exactly), tokens
    F, h, w = latent_frames(T), H // sf, W // sf
    assert causal.num_chunks(F) == whole_chunks(causal, F) == n_chunks
    spans = [chunk_pixel_frames(causal, i) for i in range(n_chunks)]
    assert spans[0][0] == 0 and spans[-1][1] == T and all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    assert VideoCodec.num_pixel_frames(VideoCodec, causal.chunk_len(0)) == spans[0][1]
    tpf = (h // net.dit.patch_size[1]) * (w // net.dit.patch_size[2])
    assert tpf == {"wan2.1-1.3b": 1560, "wan2.2-5b": 880}[recipe]
    # the rolling cache is bounded: sink + window + the current chunk, whatever the chunk index
    widest = max(causal.cache_start(i) + causal.chunk_len(i) for i in range(200))
    assert widest == (9 if not given else 7) and widest * tpf <= 9 * 1560

    # the streaming configuration the student will export, and its NFE per chunk
    K = typed.schedule.student_steps
    sc = StreamConfig(causal=causal, steps=K, shift=typed.schedule.shift)
    assert sc.nfe_per_chunk(0) == (1 if given else K + 1) and sc.nfe_per_chunk(1) == K + 1

    # the DMD self-rollout at full size on meta, at every exit step: output [1, C, F, h, w] and the passes
    # (exit step k: k + 1 noisy passes per sampled chunk, then its clean commit; a given chunk 0: commit only)
    sigmas = sampling_sigmas(K, shift=typed.schedule.shift)
    obj = DMDObjective(
        net,
        net,
        net,
        cfg=typed.stage,
        sigmas=sigmas,
        shift=typed.schedule.shift,
        null_text=torch.zeros(1, 1, TEXT_ENCODER_DIMS[typed.model.text_encoder]),
        null_text_lengths=torch.tensor([1]),
        embed_dim=net.track_embed_dim,
        height=H,
        width=W,
        seed=0,
        device=torch.device("cpu"),
    )
    obj.device = META  # noise is drawn on meta from the CPU generators
    batch = _meta_batch(net, typed, F=F, h=h, w=w, C=C, T=T)
    count = _CountPasses(net.dit)
    for k in range(K):
        count.frames.clear()
        with torch.no_grad():
            x = obj.rollout(batch, grad=False, exit_step=k)
        assert tuple(x.shape) == (1, C, F, h, w)
        sampled = n_chunks - 1 if given else n_chunks
        per_chunk = [causal.chunk_len(i) for i in range(n_chunks)]
        expected = ([1] if given else []) + [f for f in per_chunk[1 if given else 0 :] for _ in range(k + 2)]
        assert len(count.frames) == sampled * (k + 2) + (1 if given else 0)
        assert count.frames == expected

    # ODE init: per-chunk step indices and one block-causal forward of the whole clip, full size on meta
    ode = _typed(tmp_path / "ode", ode_name)["config"]
    assert ode.stage.causal == causal and ode.data.num_frames == T
    k_idx = per_chunk_indices(causal, 2, F, K, torch.Generator().manual_seed(0))
    assert k_idx.shape == (2, F)
    assert bool((k_idx[:, 0] == K).all()) is given  # a given chunk 0 is clean; a sampled one is noised
    # its block-causal mask over the real frame count (one token per frame here: the mask of the full
    # token grid is [F*tpf]^2 = 1e9 entries for the 1.3B); chunk ids per frame follow the chunking
    attn = BlockCausalAttention(causal, (F, 1, 1), net.dit.head_dim, backend="sdpa")
    chunk_of_frame = [i for i in range(n_chunks) for _ in range(causal.chunk_len(i))]
    assert attn.tok_chunk.tolist() == chunk_of_frame and attn.mask.shape == (F, F)
    assert attn.mask[F - 1].sum() == (causal.chunk_len(0) if causal.sink_chunks else 0) + 2 * causal.chunk_frames
    # the ODE pairs this recipe trains on: [K + 1, C, F, h, w] per pair, in the configured dtype
    pair_bytes = (K + 1) * C * F * h * w * DTYPES[ode.stage.ode_pairs.dtype].itemsize
    assert pair_bytes == {"wan2.1-1.3b": 4 * 16 * 21 * 60 * 104 * 2, "wan2.2-5b": 4 * 48 * 31 * 44 * 80 * 2}[recipe]


@pytest.mark.slow
def test_a_chunking_that_does_not_tile_the_clip_is_refused_at_validation(tmp_path):
    with pytest.raises(ValueError, match=r"data.num_frames=81 = 21 latent frames do not split into chunks"):
        _typed(tmp_path, "dmd_wan1.3b_480p", "stage.causal.first_chunk_frames=1")
    with pytest.raises(ValueError, match=r"stage.causal.first_chunk_frames=None with layout 'ti2v'"):
        _typed(tmp_path, "ode_init_wan2.2_5b_704p", "stage.causal.first_chunk_frames=null")


@pytest.mark.slow
def test_a_14b_real_score_over_a_1_3b_student_at_full_size(tmp_path):
    """dmd_wan14b_to_1.3b_480p at its real 832x480x81 on meta: the 1.3B generator's rollout, the critic of its
    size and the 14B teacher's guided real score meet in one latent space ([1, 16, 21, 60, 104]); one whole
    generator and critic loss. 1 of each network's blocks (depth changes no shape)."""
    from trackstream.models.motion_wan import ModelConfig, build_motion_wan

    built = _typed(tmp_path, "dmd_wan14b_to_1.3b_480p", "+model.overrides.num_layers=1")
    typed, student = built["config"], built["network"]
    meta = {**asdict_model(typed.model), "flavor": "wan2.1-fun-14b-control", "overrides": {"num_layers": 1}}
    teacher = build_motion_wan(ModelConfig(**meta), text_encoder_dim=TEXT_ENCODER_DIMS["umt5"], device=META)
    assert (student.dit.dim, teacher.dit.dim) == (1536, 5120) and student.dit.in_dim == teacher.dit.in_dim == 48
    assert student.track_embed_dim == teacher.track_embed_dim  # one track embedding feeds both
    K = typed.schedule.student_steps
    obj = DMDObjective(
        student,
        student,
        teacher,
        cfg=typed.stage,
        sigmas=sampling_sigmas(K, shift=typed.schedule.shift),
        shift=typed.schedule.shift,
        null_text=torch.zeros(1, 1, TEXT_ENCODER_DIMS["umt5"]),
        null_text_lengths=torch.tensor([1]),
        embed_dim=student.track_embed_dim,
        height=480,
        width=832,
        seed=0,
        device=torch.device("cpu"),
    )
    obj.device, obj.null_text = META, obj.null_text.to(META)
    batch = _meta_batch(student, typed, F=21, h=60, w=104, C=16, T=81)
    calls = []  # the teacher's passes: (batch, latent frames, DiT width)
    teacher.dit.patch_embedding.register_forward_hook(
        lambda m, i, o: calls.append((o.shape[0], o.shape[2], o.shape[1]))
    )
    loss, logs = obj.generator_loss(batch)
    # one batched pass of eq. 4's three terms (full condition, no text, no tracks) at the 14B's width
    assert loss.shape == () and calls == [(3, 21, 5120)]
    loss, _ = obj.critic_loss(batch)
    assert loss.shape == ()


def asdict_model(cfg) -> dict:
    from dataclasses import asdict

    return asdict(cfg)
