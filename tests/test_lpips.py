"""LPIPS v0.1 (trackstream/eval/lpips.py): official key names, shapes and parameter counts, loading of files in
the official formats (random weights), the metric's properties, and its formulas by hand."""

import math

import pytest
import torch

from trackstream.eval.lpips import (
    BACKBONE_FEATURE_PARAMS,
    CHANNELS,
    HEAD_PARAMS,
    LPIPS,
    MIN_SIDE,
    SCALING_SCALE,
    SCALING_SHIFT,
    ScalingLayer,
    load_lpips,
    normalize_tensor,
)

# The convolutions of torchvision's `features` as (index, out, in, kernel), written out from
# torchvision models/alexnet.py and models/vgg.py (configuration "D") independently of the module.
OFFICIAL_CONVS = {
    "alex": [(0, 64, 3, 11), (3, 192, 64, 5), (6, 384, 192, 3), (8, 256, 384, 3), (10, 256, 256, 3)],
    "vgg": [
        (0, 64, 3, 3), (2, 64, 64, 3), (5, 128, 64, 3), (7, 128, 128, 3), (10, 256, 128, 3), (12, 256, 256, 3),
        (14, 256, 256, 3), (17, 512, 256, 3), (19, 512, 512, 3), (21, 512, 512, 3), (24, 512, 512, 3),
        (26, 512, 512, 3), (28, 512, 512, 3),
    ],
}  # fmt: skip


def official_backbone(net: str) -> dict[str, torch.Tensor]:
    """A torchvision-style full state dict with random weights: `features.*` plus a (shrunken)
    classifier key that the loader must ignore."""
    g = torch.Generator().manual_seed(1)
    sd = {}
    for i, out_ch, in_ch, k in OFFICIAL_CONVS[net]:
        fan_in = in_ch * k * k
        sd[f"features.{i}.weight"] = torch.randn(out_ch, in_ch, k, k, generator=g) * math.sqrt(2 / fan_in)
        sd[f"features.{i}.bias"] = torch.randn(out_ch, generator=g) * 0.01
    sd["classifier.1.weight"] = torch.randn(8, 4, generator=g)  # real: [4096, 9216] / [4096, 25088]
    return sd


def official_heads(net: str) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(CHANNELS[net])}


def smooth_images(batch: int, side: int = 64) -> torch.Tensor:
    """Low-frequency colour gradients in [-0.8, 0.8], different per image."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, side), torch.linspace(0, 1, side), indexing="ij")
    imgs = []
    for b in range(batch):
        phase = 0.7 * b
        r = torch.sin(2 * math.pi * (xx + phase))
        gch = torch.cos(2 * math.pi * (yy - phase))
        bch = torch.sin(math.pi * (xx + yy) + phase)
        imgs.append(0.8 * torch.stack([r, gch, bch]))
    return torch.stack(imgs)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_official_key_names_shapes_and_parameter_counts(net):
    model = LPIPS(net)
    sd = model.state_dict()
    feats = {k: v for k, v in sd.items() if k.startswith("features.")}
    expected = {}
    for i, out_ch, in_ch, k in OFFICIAL_CONVS[net]:
        expected[f"features.{i}.weight"] = (out_ch, in_ch, k, k)
        expected[f"features.{i}.bias"] = (out_ch,)
    assert {k: tuple(v.shape) for k, v in feats.items()} == expected
    heads = {k: tuple(v.shape) for k, v in sd.items() if k.startswith("lin")}
    assert heads == {f"lin{k}.model.1.weight": (1, c, 1, 1) for k, c in enumerate(CHANNELS[net])}
    assert set(sd) == set(feats) | set(heads)  # nothing else: the scaling constants are not stored
    assert sum(v.numel() for v in feats.values()) == BACKBONE_FEATURE_PARAMS[net]
    assert sum(math.prod(shape) for shape in heads.values()) == HEAD_PARAMS[net] == sum(CHANNELS[net])
    assert not any(p.requires_grad for p in model.parameters())


def test_parameter_count_constants_match_the_official_totals():
    # torchvision's metadata: AlexNet 61,100,840 and VGG16 138,357,544 parameters in total; the
    # classifiers are Linear(256*6*6|512*7*7, 4096), Linear(4096, 4096), Linear(4096, 1000).
    def classifier(flat: int) -> int:
        return flat * 4096 + 4096 + 4096 * 4096 + 4096 + 4096 * 1000 + 1000

    assert BACKBONE_FEATURE_PARAMS["alex"] + classifier(256 * 6 * 6) == 61_100_840
    assert BACKBONE_FEATURE_PARAMS["vgg"] + classifier(512 * 7 * 7) == 138_357_544


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_tap_shapes(net):
    taps = LPIPS(net).tap_features(torch.zeros(1, 3, 64, 64))
    assert [t.shape[1] for t in taps] == list(CHANNELS[net])
    sides = {"alex": [15, 7, 3, 3, 3], "vgg": [64, 32, 16, 8, 4]}[net]
    assert [t.shape[-1] for t in taps] == sides


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_load_official_formats(tmp_path, net):
    backbone, heads = official_backbone(net), official_heads(net)
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(heads, tmp_path / "heads.pth")
    model = load_lpips(net, backbone=tmp_path / "backbone.pth", heads=tmp_path / "heads.pth")
    sd = model.state_dict()
    for k, v in backbone.items():
        if k.startswith("features."):
            assert torch.equal(sd[k], v)
    for k, v in heads.items():
        assert torch.equal(sd[k], v)
    assert not model.training


def test_load_errors(tmp_path):
    torch.save(official_backbone("alex"), tmp_path / "bb.pth")
    torch.save(official_heads("alex"), tmp_path / "heads.pth")
    with pytest.raises(ValueError, match=r"alexnet-owt-7be5be79\.pth.*Nothing is downloaded"):
        load_lpips("alex", backbone=tmp_path / "nope.pth", heads=tmp_path / "heads.pth")
    with pytest.raises(ValueError, match=r"vgg16-397923af\.pth.*Nothing is downloaded"):
        load_lpips("vgg", backbone=tmp_path / "nope.pth", heads=tmp_path / "heads.pth")
    with pytest.raises(ValueError, match=r"alex\.pth from the lpips package's weights/v0\.1.*Nothing is downloaded"):
        load_lpips("alex", backbone=tmp_path / "bb.pth", heads=tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="net='squeeze'"):
        load_lpips("squeeze", backbone=tmp_path / "bb.pth", heads=tmp_path / "heads.pth")

    bad = official_backbone("alex")
    bad["features.1.weight"] = bad.pop("features.0.weight")  # shifted index
    torch.save(bad, tmp_path / "bad_bb.pth")
    with pytest.raises(ValueError, match=r"missing 1: \['features.0.weight'\]; unexpected 1: \['features.1.weight'\]"):
        load_lpips("alex", backbone=tmp_path / "bad_bb.pth", heads=tmp_path / "heads.pth")

    wrong = official_backbone("alex")
    wrong["features.0.weight"] = torch.zeros(64, 3, 3, 3)  # VGG's first conv in AlexNet's place
    torch.save(wrong, tmp_path / "wrong_bb.pth")
    with pytest.raises(
        ValueError, match=r"wrong shape 1: \['features.0.weight \(64, 3, 3, 3\) != \(64, 3, 11, 11\)'\]"
    ):
        load_lpips("alex", backbone=tmp_path / "wrong_bb.pth", heads=tmp_path / "heads.pth")

    heads = official_heads("alex")
    heads["lins.0.model.1.weight"] = heads.pop("lin0.model.1.weight")
    torch.save(heads, tmp_path / "bad_heads.pth")
    with pytest.raises(ValueError, match=r"heads \(alex\.pth\).*missing 1: \['lin0.model.1.weight'\]"):
        load_lpips("alex", backbone=tmp_path / "bb.pth", heads=tmp_path / "bad_heads.pth")


def test_input_errors():
    model = LPIPS("alex")
    with pytest.raises(ValueError, match="equal shape"):
        model(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 32))
    with pytest.raises(ValueError, match=r"H and W >= 31"):
        model(torch.zeros(1, 3, 30, 64), torch.zeros(1, 3, 30, 64))
    with pytest.raises(ValueError, match="spatial=True"):
        LPIPS("alex", spatial=True)


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_min_side_is_tight(net):
    model = LPIPS(net)
    side = MIN_SIDE[net]
    assert model(torch.zeros(1, 3, side, side), torch.ones(1, 3, side, side)).shape == (1,)
    with pytest.raises(RuntimeError):  # one pixel less: the deepest tap would be empty
        model.tap_features(torch.zeros(1, 3, side - 1, side - 1))


def _with_official_weights(net: str) -> LPIPS:
    model = LPIPS(net)
    model.features.load_state_dict({k[9:]: v for k, v in official_backbone(net).items() if k.startswith("features.")})
    for k, head in enumerate(model.heads):
        head.model[1].weight.copy_(official_heads(net)[f"lin{k}.model.1.weight"])  # >= 0 like the release
    return model


@pytest.mark.slow
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_identity_zero_symmetry_shape(net):
    model = _with_official_weights(net)
    x = smooth_images(2)
    y = (x + 0.2 * torch.randn_like(x)).clamp(-1, 1)
    d = model(x, y)
    assert d.shape == (2,) and d.dtype == torch.float32
    assert torch.equal(model(x, x), torch.zeros(2))
    assert torch.equal(d, model(y, x))
    assert (d > 0).all()


@pytest.mark.slow
@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_monotone_in_noise(net):
    model = _with_official_weights(net)
    seeds, stds = 4, (0.05, 0.1, 0.2, 0.4)
    x = smooth_images(seeds)
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(seeds, *x.shape[1:], generator=g)
    # The same noise pattern at each std, so only the amplitude changes between the rows.
    d = torch.stack([model(x, (x + s * noise).clamp(-1, 1)) for s in stds]).mean(dim=1)
    assert (d[1:] > d[:-1]).all(), d


def test_dropout_stays_off_in_train_mode():
    model = _with_official_weights("alex")
    x, y = smooth_images(1), smooth_images(1).flip(-1)
    ref = model(x, y)
    torch.nn.Sequential(model).train()  # as a parent module would
    assert not model.training and torch.equal(model(x, y), ref)


def test_normalize_tensor_by_hand():
    feat = torch.tensor([[[[3.0, 0.0]], [[4.0, 0.0]]]])  # [1, 2, 1, 2]: vectors (3, 4) and (0, 0)
    out = normalize_tensor(feat)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([0.6, 0.8]), atol=1e-7)
    assert torch.equal(out[0, :, 0, 1], torch.zeros(2))  # eps keeps the zero vector finite
    assert out[0, 0, 0, 0].item() == pytest.approx(3.0 / (5.0 + 1e-10), rel=1e-7)


def test_scaling_layer_by_hand():
    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 1, 1, 3).expand(1, 3, 1, 3)
    out = ScalingLayer()(x)
    for c in range(3):
        for j, v in enumerate((-1.0, 0.0, 1.0)):
            assert out[0, c, 0, j].item() == pytest.approx((v - SCALING_SHIFT[c]) / SCALING_SCALE[c], rel=1e-6)
    assert SCALING_SHIFT == (-0.030, -0.088, -0.188) and SCALING_SCALE == (0.458, 0.448, 0.450)


def test_distance_is_the_sum_of_head_weighted_spatial_means():
    # The pipeline after the backbone, recomputed from the tapped features with the paper's formula:
    # d = sum_l mean_hw sum_c w_lc (n(f_l(x)) - n(f_l(y)))_c^2.
    model = _with_official_weights("alex")
    x, y = smooth_images(2), smooth_images(2).flip(-2)
    fx, fy = model.tap_features(x), model.tap_features(y)
    expected = torch.zeros(2)
    for k, (a, b) in enumerate(zip(fx, fy)):
        w = model.heads[k].model[1].weight.view(1, -1, 1, 1)
        na = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = b / (b.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        expected += (w * (na - nb) ** 2).sum(1).mean(dim=(1, 2))
    assert torch.allclose(model(x, y), expected, rtol=1e-5)
    # Heads are linear: doubling their weights doubles the distance exactly (power-of-two scaling).
    before = model(x, y)
    for head in model.heads:
        head.model[1].weight.mul_(2)
    assert torch.equal(model(x, y), 2 * before)
