"""FID Inception-v3 (trackstream/eval/inception.py): official key names and shapes, strict loading of a file in the
official format, the resize path, and uint8/float input equivalence. Random weights only: the real
file is not available offline."""

import numpy as np
import pytest
import torch

from trackstream.eval.inception import (
    FID_WEIGHTS_FILE,
    OFFICIAL_FID_INCEPTION_PARAMS,
    OFFICIAL_FID_INCEPTION_TENSORS,
    FIDInceptionV3,
    _tf_avg_pool,
    inception_features,
    load_fid_inception,
)

# Names and shapes as torchvision's inception_v3(num_classes=1008, aux_logits=False) writes them.
OFFICIAL_SHAPES = {
    "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
    "Conv2d_1a_3x3.bn.running_mean": (32,),
    "Conv2d_2a_3x3.conv.weight": (32, 32, 3, 3),
    "Conv2d_2b_3x3.bn.weight": (64,),
    "Conv2d_3b_1x1.conv.weight": (80, 64, 1, 1),
    "Conv2d_4a_3x3.bn.running_var": (192,),
    "Mixed_5b.branch1x1.conv.weight": (64, 192, 1, 1),
    "Mixed_5b.branch5x5_2.conv.weight": (64, 48, 5, 5),
    "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
    "Mixed_5d.branch3x3dbl_3.bn.bias": (96,),
    "Mixed_6a.branch3x3.conv.weight": (384, 288, 3, 3),
    "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
    "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
    "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
    "Mixed_7b.branch3x3_2b.conv.weight": (384, 384, 3, 1),
    "Mixed_7c.branch3x3dbl_1.conv.weight": (448, 2048, 1, 1),
    "Mixed_7c.branch_pool.bn.num_batches_tracked": (),
    "fc.weight": (1008, 2048),
    "fc.bias": (1008,),
}


@pytest.fixture(scope="module")
def model():
    return FIDInceptionV3()


def _official_format_file(tmp_path):
    """A file like the official one: torch.save of a module's state_dict() (an OrderedDict carrying
    torch's per-module version metadata) with random values (running_var kept positive)."""
    source = FIDInceptionV3()
    g = torch.Generator().manual_seed(1)
    for k, v in source.state_dict().items():  # views of the module's tensors: filled in place
        if v.is_floating_point():
            r = torch.randn(v.shape, generator=g)
            v.copy_(r.abs() + 0.5 if k.endswith("running_var") else r)
    path = tmp_path / FID_WEIGHTS_FILE
    torch.save(source.state_dict(), path)
    return path, source.state_dict()


@pytest.mark.slow
def test_state_dict_has_the_official_names_shapes_and_count(model):
    sd = model.state_dict()
    for name, shape in OFFICIAL_SHAPES.items():
        assert tuple(sd[name].shape) == shape, name
    assert not any(k.startswith("AuxLogits") for k in sd)  # pytorch-fid builds with aux_logits=False
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL_FID_INCEPTION_PARAMS == 23_850_960
    assert len(sd) == OFFICIAL_FID_INCEPTION_TENSORS
    assert model.Mixed_7c.branch_pool.bn.eps == 0.001 and model.Conv2d_1a_3x3.conv.bias is None
    assert model.Mixed_7c.max_pool and not model.Mixed_7b.max_pool  # TF graph: max pool only in the last block
    model.train()
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_tf_average_pool_ignores_the_padding():
    out = _tf_avg_pool(torch.ones(1, 1, 5, 5))
    assert torch.equal(out, torch.ones(1, 1, 5, 5))  # corners average 4 real pixels, not 4/9


@pytest.mark.slow
def test_official_format_loads_strictly(tmp_path):
    path, sd = _official_format_file(tmp_path)
    loaded = load_fid_inception(path)
    for k in ("Conv2d_1a_3x3.conv.weight", "Mixed_6c.branch7x7dbl_3.bn.running_var", "fc.weight"):
        assert torch.equal(loaded.state_dict()[k], sd[k])
    assert not loaded.training
    # A file written by torch < 0.4.1 has no BatchNorm batch counters; it must load too.
    old = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    assert len(old) == OFFICIAL_FID_INCEPTION_TENSORS - 94
    torch.save(old, tmp_path / "old.pth")
    assert torch.equal(load_fid_inception(tmp_path / "old.pth").fc.bias, sd["fc.bias"])


@pytest.mark.slow
def test_wrong_or_missing_file_raises_value_error(model, tmp_path):
    with pytest.raises(ValueError, match=FID_WEIGHTS_FILE.replace(".", r"\.")) as e:
        load_fid_inception(tmp_path / "nowhere.pth")
    assert "mseitzer/pytorch-fid" in str(e.value) and "Nothing is downloaded" in str(e.value)

    sd = dict(model.state_dict())
    del sd["fc.bias"]
    sd["AuxLogits.fc.weight"] = torch.zeros(1008, 768)  # torchvision's default aux head
    path = tmp_path / "wrong.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match="missing") as e:
        load_fid_inception(path)
    assert "fc.bias" in str(e.value) and "AuxLogits.fc.weight" in str(e.value)

    sd = dict(model.state_dict())
    sd["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's 1000-class head
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"fc\.weight: \(1000, 2048\)"):
        load_fid_inception(path)


@pytest.mark.slow
def test_forward_resizes_small_images_to_pool3_features(model):
    shapes = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
        for n in ("Mixed_5b", "Mixed_5d", "Mixed_6a", "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")
    ]
    try:
        feats = model(torch.rand(2, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert shapes == {  # torchvision's shape comments for a 299x299 input
        "Mixed_5b": (2, 256, 35, 35),
        "Mixed_5d": (2, 288, 35, 35),
        "Mixed_6a": (2, 768, 17, 17),
        "Mixed_6e": (2, 768, 17, 17),
        "Mixed_7a": (2, 1280, 8, 8),
        "Mixed_7b": (2, 2048, 8, 8),
        "Mixed_7c": (2, 2048, 8, 8),
    }
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.rand(2, 64, 64, 3))


@pytest.mark.slow
def test_uint8_and_float_frames_give_identical_features(model):
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 40, 48, 3), dtype=np.uint8)
    as_float = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255  # [2, 3, 40, 48] in [0, 1]
    a = inception_features(model, frames, batch_size=2)
    b = inception_features(model, as_float, batch_size=2)
    assert a.shape == (2, 2048) and a.dtype == np.float64
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match=r"uint8 frames must be \[N, H, W, 3\]"):
        inception_features(model, frames.transpose(0, 3, 1, 2))
