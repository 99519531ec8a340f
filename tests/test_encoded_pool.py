"""The teacher's encoded clip pool (``train.encoders.EncodedPool``): a clip is encoded on its first use and only
then, alone, so its tensors are the same whichever clips were drawn before it (a resumed run, which starts
with an empty pool, reads the values the uninterrupted one did), and they are what the conditioner gives for
that clip."""

import torch

from trackstream.data.clips import ClipPool, DataConfig, make_world
from trackstream.models.conditioner import Conditioner
from trackstream.models.text_encoders import build_text_encoder
from trackstream.train.encoders import EncodedPool


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
