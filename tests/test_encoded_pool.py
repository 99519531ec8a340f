"""The teacher's encoded clip pool (``train.encoders.EncodedPool``): a clip is encoded on its first use and only
then, alone, so its tensors are the same whichever clips were drawn before it (a resumed run, which starts
with an empty pool, reads the values the uninterrupted one did), and they are what the conditioner gives for
that clip."""

import pytest
import torch

from trackstream.data.clips import ClipPool, DataConfig, make_world
from trackstream.models.conditioner import Conditioner
from trackstream.models.text_encoders import build_text_encoder
from trackstream.train.encoders import EncodedPool


@pytest.mark.slow
def test_a_clip_is_encoded_on_first_use_alone_and_the_same_in_any_order(tiny_codec):
    pool = ClipPool(make_world(DataConfig(num_frames=9)), [11, 12, 13, 14])
    conditioner = Conditioner(
        codec=tiny_codec, text_encoder=build_text_encoder("minilm"), layout="wan_i2v", device=torch.device("cpu")
    )
    encoded_batches = []
    latents = conditioner.latents
    conditioner.latents = lambda video: encoded_batches.append(video.shape[0]) or latents(video)

    first, later = EncodedPool(pool, conditioner), EncodedPool(pool, conditioner)
    assert len(first) == 4 and not encoded_batches  # nothing is encoded up front
    a = first[2]
    assert first[2] is a and encoded_batches == [1]  # once, alone
    for i in (3, 1, 2, 0):
        later[i]
    assert encoded_batches == [1, 1, 1, 1, 1]
    b = later[2]
    assert a.keys() == b.keys() >= {"latents", "text_emb", "text_len", "tracks", "visibility", "caption", "image"}
    for key in ("latents", "text_emb", "image", "tracks", "visibility"):
        assert torch.equal(a[key], b[key]), key
    video = pool.videos([2])  # [1, 3, T, H, W]
    torch.testing.assert_close(a["latents"], latents(video)[0], rtol=0, atol=0)
    assert a["caption"] == pool.clips[2]["caption"] and a["text_emb"].shape[0] == a["text_len"]


@pytest.mark.slow
def test_hold_none_trains_a_sample_without_tracks_on_its_first_frame_held(tiny_codec):
    """data.placement.hold_none: the teacher's batches give a sample drawn with no track the latents of its clip's
    first frame held; every other sample keeps its clip's own."""
    from trackstream.data.placements import Placement
    from trackstream.train.encoders import training_data
    from trackstream.trainer.dist import Runtime

    world = DataConfig(num_frames=9, batch_size=4, pool_size=6, placement={"none": 0.5})
    pool = ClipPool(make_world(world), list(range(6)))
    conditioner = Conditioner(
        codec=tiny_codec, text_encoder=build_text_encoder("minilm"), layout="wan_i2v", device=torch.device("cpu")
    )
    rt = Runtime(
        accelerator=None,
        strategy="single",
        device=torch.device("cpu"),
        rank=0,
        world_size=1,
        local_rank=0,
        precision="fp32",
    )
    plain = iter(training_data(world, rt, pool, conditioner))
    held_cfg = DataConfig(**{**world.__dict__, "placement": {"none": 0.5, "hold_none": True}})
    held = iter(training_data(held_cfg, rt, pool, conditioner))
    seen = {"none": 0, "other": 0}
    for _ in range(3):
        a, b = next(plain), next(held)
        assert torch.equal(a["tracks"], b["tracks"]) and a["caption"] == b["caption"]
        for j, meta in enumerate(a["meta"]):
            i = [c["meta"]["seed"] for c in pool.clips].index(meta["seed"])
            if a["track_mask"][j].any():
                seen["other"] += 1
                assert torch.equal(a["latents"][j], b["latents"][j])
            else:
                seen["none"] += 1
                still = pool.videos([i])[:, :, :1].expand(-1, -1, 9, -1, -1)
                assert torch.equal(b["latents"][j], conditioner.latents(still.contiguous())[0])
                assert not torch.equal(a["latents"][j], b["latents"][j])
    assert seen["none"] and seen["other"]
    assert Placement(hold_none=True).hold_none
